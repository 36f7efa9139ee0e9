"""Evaluation of sequence-classification checkpoints: predictions and their metrics.

The one metric code of the engine (:func:`compute_metrics`, scikit-learn), also
behind fine-tuning's validation accuracy; the metrics' names are
:data:`workflow_scripts.metrics.METRICS`.  Labels are int64 class ids, from
every task source; the ``evaluate`` command's help
(:mod:`workflow_scripts.cli.evaluate`) lists the metrics.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import architectures as arch
from . import objectives, outputs
from .data import Samples, batches, check_labels, read_samples, tokenize
from .devices import resolve_device
from .errors import UserError
from .io import write_json
from .metrics import ACCURACY, F1, MACRO_F1, MATTHEWS, computed
from .models import ModelSource, load_model
from .settings import EvaluateSettings

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class EvalRecord:
    """What an evaluation JSON records of the evaluated model: its source (path, hub id or a
    description), the samples file, its fingerprint and label map."""

    model: str
    data: str
    fingerprint: str | None = None
    label_map: list[int] | None = None


# evaluate_loaded's keywords that evaluate_checkpoint passes on
LOADED_KEYWORDS = ("num_labels", "task_info", "context", "out", "progress")


def evaluate_checkpoint(model_source: str, data_path: str, task: str,
                        settings: EvaluateSettings | None = None, *,
                        source: ModelSource | None = None, **given) -> dict:
    """Evaluate a checkpoint on a samples file; returns (and writes to ``out``) the result.

    ``settings`` (:class:`EvaluateSettings`); ``source``: the checkpoint's revision, pickle
    permission and label map; ``given``: :func:`evaluate_loaded`'s keywords
    (:data:`LOADED_KEYWORDS`: ``num_labels``, which, or else the ``num_labels`` of the
    ``task_info`` file, must equal the checkpoint's label count; ``context``, ``out``,
    ``progress``), any other a setting by name (``batch_size=8``).
    """
    passed = {k: given.pop(k) for k in LOADED_KEYWORDS if k in given}
    settings = EvaluateSettings.of(settings, **given)
    source = source or ModelSource()
    if passed.get("out") is not None:
        outputs.check_output(passed["out"], outputs.EVALUATION, "--out", outputs.inputs_of(
            model=model_source, data=data_path, task_info=passed.get("task_info")))
    device = resolve_device(settings.device)
    samples = read_samples(data_path, nonempty=True)
    model, tokenizer, info = load_model(model_source, revision=source.revision,
                                        allow_pickle=source.allow_pickle,
                                        label_map=source.label_map, device=device,
                                        dtype=settings.torch_dtype, objective=settings.objective)
    record = EvalRecord(str(model_source), str(data_path), info.fingerprint, source.label_map)
    return evaluate_loaded(model, tokenizer, samples, task, settings, record=record, **passed)


def expected_label_count(num_labels: int | None, task_info: str | None) -> int | None:
    """``num_labels``, else the ``num_labels`` of the task's info file, else None."""
    if num_labels is None and task_info:
        from .tasks.info import read_info

        return int(read_info(task_info)["num_labels"])
    return num_labels


def evaluate_loaded(
    model,
    tokenizer,
    samples: Samples,
    task: str,
    settings: EvaluateSettings | None = None,
    *,
    record: EvalRecord,
    num_labels: int | None = None,
    task_info: str | None = None,
    context: dict | None = None,
    out: str | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate a loaded model (on its device, in eval mode) on ``samples`` read from
    ``record.data``; the result of :func:`evaluate_checkpoint`, for a model in memory
    (``merge --eval-out`` evaluates its merged models without reloading them)."""
    settings = EvaluateSettings.of(settings)
    if objectives.of_model(model) == objectives.CAUSAL_LM:
        return _evaluate_lm(model, tokenizer, samples, task, settings, record, context, out,
                            progress)
    model_labels = int(model.config.num_labels)
    num_labels = expected_label_count(num_labels, task_info)
    if num_labels is not None and num_labels != model_labels:
        raise UserError(
            f"checkpoint {record.model} has {model_labels} labels but task {task} "
            f"needs {num_labels} (--num-labels); wrong checkpoint or task?"
        )
    if model_labels < 2:
        raise UserError(
            f"checkpoint {record.model} has {model_labels} output label; evaluation needs a "
            "classification head with >= 2 labels (regression heads are not supported)"
        )
    check_labels(samples, model_labels, where=f"{record.data} for checkpoint {record.model}")
    device = next(model.parameters()).device.type
    start = time.perf_counter()
    metrics = evaluate_model(model, tokenizer, samples, task, settings.batch_size,
                             settings.max_length, device, progress)
    seconds = time.perf_counter() - start
    result = {
        "task": task,
        "model": record.model,
        "fingerprint": record.fingerprint,
        "data": record.data,
        "label_map": record.label_map,
        "n_examples": len(samples),
        "num_labels": model_labels,
        "label_counts": label_counts(samples, model_labels),
        "metrics": metrics,
        "seconds": round(seconds, 4),
        "device": device,
        "batch_size": settings.batch_size,
        "max_length": settings.max_length,
        "context": dict(context or {}),
    }
    log.info("%s on %s: %s", record.model, task,
             ", ".join(f"{k}={v:.4f}" if v is not None else f"{k}=nan" for k, v in metrics.items()))
    if out is not None:
        write_json(out, result, outputs.EVALUATION, sort_keys=False)
    return result


def _evaluate_lm(model, tokenizer, samples, task, settings, record, context, out,
                 progress) -> dict:
    """A causal LM's evaluation JSON: its mean token loss and perplexity on the task's text."""
    from .lmeval import lm_metrics

    device = next(model.parameters()).device.type
    start = time.perf_counter()
    metrics, counts = lm_metrics(model, tokenizer, samples, settings.batch_size,
                                 settings.max_length, progress, where=f"{record.data}")
    result = {
        "task": task,
        "model": record.model,
        "fingerprint": record.fingerprint,
        "data": record.data,
        "objective": objectives.CAUSAL_LM,
        "n_examples": counts["examples"],
        "n_tokens": counts["tokens"],
        "dropped_examples": counts["dropped"],
        "metrics": metrics,
        "seconds": round(time.perf_counter() - start, 4),
        "device": device,
        "batch_size": settings.batch_size,
        "max_length": settings.max_length,
        "context": dict(context or {}),
    }
    log.info("%s on %s: loss %.4f, perplexity %s", record.model, task, metrics["loss"],
             f"{metrics['perplexity']:.2f}" if metrics["perplexity"] is not None else "inf")
    if out is not None:
        write_json(out, result, outputs.EVALUATION, sort_keys=False)
    return result
