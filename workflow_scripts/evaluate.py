"""Evaluate a sequence-classification checkpoint on a task's validation samples.

Metrics (all from scikit-learn / SciPy):

* classification: ``accuracy``; binary tasks also ``f1`` (positive class 1);
  tasks with more than two labels also ``macro_f1``; ``cola`` also ``matthews``
  (Matthews correlation);
* regression (a checkpoint with one output, e.g. ``stsb``): ``pearson`` and
  ``spearman`` (no accuracy).

Inference is batched with length-sorted dynamic padding under
``torch.inference_mode``; predictions are put back in file order.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .cli import UserError
from .data import Samples, batches, check_labels, read_samples, tokenize
from .io import atomic_path
from .models import load_model, parse_label_map

log = logging.getLogger(__name__)

REGRESSION_TASKS = ("stsb",)


def is_regression(num_labels: int) -> bool:
    return int(num_labels) == 1


def _float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def compute_metrics(task: str, y_true, y_pred_or_scores, num_labels: int) -> dict:
    """Metrics of predictions against labels.

    ``y_pred_or_scores`` is either predicted labels (1-D) or per-class scores /
    logits ([n, num_labels], argmax taken); for regression, predicted values
    ([n] or [n, 1]).  Undefined values (e.g. a correlation of constant
    predictions) are returned as None.
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    task = str(task).lower()
    num_labels = int(num_labels)
    y_true = np.asarray(y_true)
    pred = np.asarray(y_pred_or_scores)
    if len(y_true) == 0:
        raise ValueError("cannot compute metrics on zero examples")
    if len(pred) != len(y_true):
        raise ValueError(f"{len(y_true)} labels but {len(pred)} predictions")
    if is_regression(num_labels):
        values = pred.reshape(len(pred), -1)
        if values.shape[1] != 1:
            raise ValueError(f"regression needs one score per example, got shape {pred.shape}")
        values = values[:, 0].astype(np.float64)
        truth = y_true.astype(np.float64)
        with warnings.catch_warnings():  # constant input: undefined, reported as None
            warnings.simplefilter("ignore")
            return {
                "pearson": _float(pearsonr(truth, values).statistic),
                "spearman": _float(spearmanr(truth, values).statistic),
            }
    if task in REGRESSION_TASKS:
        raise ValueError(
            f"task {task!r} is a regression task but the checkpoint has {num_labels} labels "
            "(a regression head has exactly one output)"
        )
    if pred.ndim == 2:
        if pred.shape[1] != num_labels:
            raise ValueError(f"scores have {pred.shape[1]} columns but num_labels is {num_labels}")
        pred = pred.argmax(axis=1)
    elif pred.ndim != 1:
        raise ValueError(f"predictions must be labels [n] or scores [n, labels], got {pred.shape}")
    y_true = y_true.astype(np.int64)
    pred = pred.astype(np.int64)
    metrics = {"accuracy": _float(accuracy_score(y_true, pred))}
    if num_labels == 2:
        metrics["f1"] = _float(f1_score(y_true, pred, pos_label=1, average="binary", zero_division=0))
    elif num_labels > 2:
        metrics["macro_f1"] = _float(f1_score(y_true, pred, average="macro", zero_division=0))
    if task == "cola":
        metrics["matthews"] = _float(matthews_corrcoef(y_true, pred))
    return metrics


def predict(
    model,
    tokenizer,
    samples: Samples,
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Logits [n, num_labels] (float32) in the samples' file order."""
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
            logits = model(**batch.inputs).logits
            out[batch.rows] = logits.float().cpu().numpy()
            bar.update(len(batch.rows))
    return out


def evaluate_model(
    model,
    tokenizer,
    samples: Samples,
    task: str,
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Run the model on the samples and return its metrics for ``task``."""
    num_labels = int(model.config.num_labels)
    if not is_regression(num_labels):
        check_labels(samples, num_labels, where=f"task {task}")
    scores = predict(model, tokenizer, samples, batch_size, max_length, device, progress)
    return compute_metrics(task, samples.label, scores, num_labels)


def resolve_device(name: str) -> str:
    name = (name or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda")
    return name


_INT = re.compile(r"^[+-]?\d+$")


def parse_meta(items: list[str] | None) -> dict:
    """``["seed=1", "pair=mnli+rte"]`` -> {"seed": 1, "pair": "mnli+rte"}."""
    context = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--meta {item!r} must look like KEY=VALUE")
        if key in context:
            raise UserError(f"--meta key {key!r} is given twice")
        context[key] = int(value) if _INT.match(value) else value
    return context


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a task's validation samples",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="checkpoint directory (or hub id)")
    p.add_argument("--data", required=True, help="validation samples (Parquet)")
    p.add_argument("--task", required=True, help="task name (e.g. sst2, mnli, cola, stsb)")
    p.add_argument("--label-map", default=None,
                   help="data label i -> model output MAP[i], e.g. '2,0,1'")
    p.add_argument("--num-labels", type=int, default=None,
                   help="expected label count; an error if the checkpoint differs")
    p.add_argument("--task-info", default=None,
                   help="the task's info JSON (prepare-task): its num_labels must match the checkpoint")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--revision", default=None, help="hub revision (hub ids only)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights")
    p.add_argument("--meta", nargs="*", default=[], metavar="K=V",
                   help="context recorded in the output (ints parsed)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.set_defaults(func=run)


def run(args) -> None:
    context = parse_meta(args.meta)
    if args.batch_size < 1 or args.max_length < 2:
        raise UserError("--batch-size must be >= 1 and --max-length >= 2")
    device = resolve_device(args.device)
    label_map = parse_label_map(args.label_map)
    samples = read_samples(args.data)
    if len(samples) == 0:
        raise UserError(f"{args.data} has no samples")
    model, tokenizer, info = load_model(
        args.model, revision=args.revision, allow_pickle=args.allow_pickle,
        label_map=label_map, device=device,
    )
    if args.num_labels is None and args.task_info:
        args.num_labels = int(json.loads(Path(args.task_info).read_text())["num_labels"])
    if args.num_labels is not None and args.num_labels != info.num_labels:
        raise UserError(
            f"checkpoint {args.model} has {info.num_labels} labels but task {args.task} "
            f"needs {args.num_labels} (--num-labels); wrong checkpoint or task?"
        )
    if not is_regression(info.num_labels):
        check_labels(samples, info.num_labels, where=f"{args.data} for checkpoint {args.model}")
    start = time.perf_counter()
    metrics = evaluate_model(
        model, tokenizer, samples, args.task, args.batch_size, args.max_length, device
    )
    seconds = time.perf_counter() - start
    result = {
        "task": args.task,
        "model": str(args.model),
        "fingerprint": info.fingerprint,
        "data": str(args.data),
        "label_map": label_map,
        "n_examples": len(samples),
        "num_labels": info.num_labels,
        "metrics": metrics,
        "seconds": round(seconds, 4),
        "device": device,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "context": context,
    }
    log.info("%s on %s: %s", args.model, args.task,
             ", ".join(f"{k}={v:.4f}" if v is not None else f"{k}=nan" for k, v in metrics.items()))
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2, sort_keys=False, allow_nan=False) + "\n")
