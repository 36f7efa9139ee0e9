"""Evaluation of a checkpoint (or a model in memory) on a task: the record its task kind
(:mod:`workflow_scripts.taskkinds`: a classifier's metrics, a causal LM's token loss) fills,
written as the evaluation JSON the report reads.  The classifiers' predictions and metrics
are :mod:`workflow_scripts.classifier`'s (re-exported here); the ``evaluate`` command's
help (:mod:`workflow_scripts.cli.evaluate`) lists the metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from . import objectives, outputs, taskkinds
from .classifier import compute_metrics, evaluate_model, label_counts, predict
from .data import Samples, read_samples
from .devices import resolve_device
from .io import write_json
from .models import ModelSource, load_model
from .settings import EvaluateSettings

__all__ = ["EvalRecord", "compute_metrics", "evaluate_checkpoint", "evaluate_loaded",
           "evaluate_model", "expected_label_count", "label_counts", "predict"]

log = logging.getLogger(__name__)


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


def _read_info(task_info: str | None) -> dict | None:
    if not task_info:
        return None
    from .tasks.info import read_info

    return read_info(task_info)


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
    kind = taskkinds.of_task(settings.objective, _read_info(task_info))
    objectives.check_model(model, kind.objective)
    start = time.perf_counter()
    fields = kind.evaluate(model, tokenizer, samples, task, settings, record=record,
                           num_labels=expected_label_count(num_labels, task_info),
                           progress=progress)
    result = {
        "task": task,
        "model": record.model,
        "fingerprint": record.fingerprint,
        "data": record.data,
        **({"label_map": record.label_map} if kind.labels else {}),
        "objective": kind.objective,
        "task_kind": kind.name,
        **fields,
        "seconds": round(time.perf_counter() - start, 4),
        "device": next(model.parameters()).device.type,
        "batch_size": settings.batch_size,
        "max_length": settings.max_length,
        "context": dict(context or {}),
    }
    if kind.labels:
        log.info("%s on %s: %s", record.model, task, ", ".join(
            f"{k}={v:.4f}" if v is not None else f"{k}=nan"
            for k, v in fields["metrics"].items()))
    if out is not None:
        write_json(out, result, outputs.EVALUATION, sort_keys=False)
    return result
