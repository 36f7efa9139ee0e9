"""Classifiers' predictions and the metrics of predicted classes: the one metric code of
the engine (:func:`compute_metrics`, scikit-learn), behind evaluation
(:mod:`workflow_scripts.taskkinds.label`) and fine-tuning's validation accuracy; the
metrics' names are :data:`workflow_scripts.metrics.METRICS`.  Labels are int64 class ids,
from every task source.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from tqdm import tqdm

from . import architectures as arch
from .data import Samples, batches, check_labels, tokenize
from .metrics import ACCURACY, F1, MACRO_F1, MATTHEWS, computed
from .settings import EvaluateSettings


def _float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def compute_metrics(task: str, y_true, y_pred_or_scores, num_labels: int) -> dict:
    """Metrics of predicted class ids against labels.

    The metrics of :data:`workflow_scripts.metrics.METRICS` that apply to ``task``
    (:data:`~workflow_scripts.metrics.COMPUTED_FOR` says which), by name.
    ``y_pred_or_scores`` is either predicted labels (1-D) or per-class scores /
    logits ([n, num_labels], argmax taken).  Undefined values are returned as
    None.
    """
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    task = str(task).lower()
    num_labels = int(num_labels)
    y_true = np.asarray(y_true)
    pred = np.asarray(y_pred_or_scores)
    if len(y_true) == 0:
        raise ValueError("cannot compute metrics on zero examples")
    if len(pred) != len(y_true):
        raise ValueError(f"{len(y_true)} labels but {len(pred)} predictions")
    if num_labels < 2:
        raise ValueError(f"classification metrics need >= 2 labels, got {num_labels}")
    if pred.ndim == 2:
        if pred.shape[1] != num_labels:
            raise ValueError(f"scores have {pred.shape[1]} columns but num_labels is {num_labels}")
        pred = pred.argmax(axis=1)
    elif pred.ndim != 1:
        raise ValueError(f"predictions must be labels [n] or scores [n, labels], got {pred.shape}")
    y_true = y_true.astype(np.int64)
    pred = pred.astype(np.int64)
    compute = {
        ACCURACY: lambda: accuracy_score(y_true, pred),
        F1: lambda: f1_score(y_true, pred, pos_label=1, average="binary", zero_division=0),
        MACRO_F1: lambda: f1_score(y_true, pred, average="macro", zero_division=0),
        MATTHEWS: lambda: matthews_corrcoef(y_true, pred),
    }
    return {name: _float(compute[name]()) for name in computed(task, num_labels)}


_EVAL = EvaluateSettings()


def predict(
    model,
    tokenizer,
    samples: Samples,
    batch_size: int = _EVAL.batch_size,
    max_length: int = _EVAL.max_length,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Logits [n, num_labels] (float32) in the samples' file order.

    Batched with length-sorted dynamic padding under ``torch.inference_mode``.
    """
    if len(samples) == 0:
        raise ValueError("no samples to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    model.eval()
    num_labels = int(model.config.num_labels)
    out = np.zeros((len(samples), num_labels), dtype=np.float32)
    encoded = tokenize(tokenizer, samples, max_length)
    bar = tqdm(
        total=len(samples), unit="ex", desc="evaluate", file=sys.stderr,
        disable=not progress, mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
    with torch.inference_mode(), bar:
        for batch in batches(
            tokenizer, samples, batch_size, max_length, sort_by_length=True,
            device=device, encoded=encoded,
        ):
            logits = model(**arch.model_inputs(model, batch.inputs)).logits
            out[batch.rows] = logits.float().cpu().numpy()
            bar.update(len(batch.rows))
    return out


def evaluate_model(
    model,
    tokenizer,
    samples: Samples,
    task: str,
    batch_size: int = _EVAL.batch_size,
    max_length: int = _EVAL.max_length,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Run the model on the samples and return its metrics for ``task``."""
    num_labels = int(model.config.num_labels)
    check_labels(samples, num_labels, where=f"task {task}")
    scores = predict(model, tokenizer, samples, batch_size, max_length, device, progress)
    return compute_metrics(task, samples.label, scores, num_labels)


def label_counts(samples: Samples, num_labels: int) -> list[int]:
    """How many samples carry each label id 0..num_labels-1."""
    return np.bincount(np.asarray(samples.label, dtype=np.int64), minlength=num_labels).tolist()
