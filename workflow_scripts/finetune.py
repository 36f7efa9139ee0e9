"""Fine-tuning a pre-trained encoder on one task (sequence classification).

The ``finetune`` command's help (:mod:`workflow_scripts.cli.finetune`)
describes the training recipe.  On CPU a seed gives bit-identical weights
(same machine, same thread count).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import architectures as arch
from .data import Samples, read_samples
from .devices import resolve_device
from .errors import UserError
from . import outputs, taskkinds
from .io import atomic_path
from .models import ModelSource, load_model, save_checkpoint
from .settings import EvaluateSettings, FinetuneSettings

log = logging.getLogger(__name__)

INFO_FILE = "finetune_info.json"


def position_limit(config) -> int | None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if config.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # positions start after the padding index
    return int(limit)


def _as_samples(value, what: str) -> Samples:
    return value if isinstance(value, Samples) else read_samples(value)


def _optimizer(model, lr: float, weight_decay: float):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel is several times faster than the default on CPU (and GPU)
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


def epoch_batches(lengths: list[int], batch_size: int, generator: torch.Generator,
                  group_by_length: bool = True, mega: int = 50) -> list[list[int]]:
    """One epoch's batches (row lists), shuffled with ``generator``.

    With ``group_by_length`` the shuffled rows are cut into mega-batches of
    ``mega`` batches, each sorted by length before it is split into batches, and
    the batches' order is shuffled again: batches hold examples of similar
    length, so dynamic padding wastes little (HF Trainer's ``group_by_length``).
    Kept rather than transformers' ``LengthGroupedSampler``: its different
    shuffling would change every fine-tuned weight of a given seed.
    """
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist()
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    size = batch_size * mega
    batches = []
    for start in range(0, n, size):
        chunk = sorted(order[start : start + size], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def finetune(
    base: str,
    train: Samples | str | os.PathLike,
    info: dict | str | os.PathLike,
    out: str | os.PathLike | None = None,
    settings: FinetuneSettings | None = None,
    *,
    validation: Samples | str | os.PathLike | None = None,
    source: ModelSource | None = None,
    progress: bool | None = None,
    **overrides,
):
    """Fine-tune ``base`` on ``train``; save to ``out`` (if given).

    ``settings`` (:class:`FinetuneSettings`, or ``overrides`` by name: ``max_steps=60``);
    ``source``: the base's revision and pickle permission.  ``progress`` None: a bar on a
    terminal, log lines in a log file.  Returns ``(model, tokenizer, finetune_info)``.
    """
    started = time.perf_counter()
    settings = FinetuneSettings.of(settings, **overrides)
    source = source or ModelSource()
    if out is not None:
        given = {k: v for k, v in (("base", base), ("train", train), ("info", info),
                                   ("validation", validation)) if isinstance(v, (str, os.PathLike))}
        outputs.check_output(out, outputs.FINETUNED, "--out", outputs.inputs_of(**given))
    task_info = _task_info(info)
    kind = taskkinds.of_task(settings.objective, task_info)  # the info's, else the objective's
    label_names = kind.label_names(task_info)
    train = _training_samples(train, label_names, settings, kind)
    valid = None
    if validation is not None:
        vwhere = str(validation) if not isinstance(validation, Samples) else "validation samples"
        valid = _as_samples(validation, "validation")
        kind.check_samples(valid, len(label_names or ()), where=vwhere)
    device = resolve_device(settings.device)
    # seed: the new head's initialisation draws from torch's RNG
    model, tokenizer, minfo = load_model(base, label_names=label_names, seed=settings.seed,
                                         allow_pickle=source.allow_pickle,
                                         revision=source.revision, device=device,
                                         objective=settings.objective)
    max_length = _fitted_max_length(model.config, settings.max_length)
    run = _train(model, tokenizer, train, settings, max_length, progress, kind)
    model.to(settings.torch_dtype)  # saved (and validated) in the compute dtype
    result = _record(run, settings, base, minfo, task_info, label_names, len(train), max_length,
                     device, source.allow_pickle)
    if valid is not None and len(valid):
        result["validation"] = _validation(model, tokenizer, valid, task_info, max_length,
                                           settings, kind)
    log.info("fine-tuned %d steps in %.1f s; train loss %.4f -> %.4f", run.steps, run.seconds,
             result["initial_train_loss"], result["final_train_loss"])
    result["seconds"] = round(time.perf_counter() - started, 3)
    if out is not None:
        model.to("cpu")
        with atomic_path(out, outputs.FINETUNED, "--out") as tmp:
            save_checkpoint(model, tokenizer, tmp)
            (Path(tmp) / INFO_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return model, tokenizer, result


def _task_info(info) -> dict:
    """The task's info: a dict, or its JSON file (checked)."""
    if isinstance(info, dict):
        return info
    from .tasks.info import read_info

    return read_info(info)


def _training_samples(train, label_names, settings: FinetuneSettings, kind) -> Samples:
    """The training samples (read, checked by the task kind, and subsampled to
    ``max_train_examples``)."""
    where = str(train) if not isinstance(train, Samples) else "train samples"
    train = _as_samples(train, "train")
    kind.check_samples(train, len(label_names or ()), where=where)
    if len(train) == 0:
        raise UserError(f"{where} has no rows")
    cap = settings.max_train_examples
    if cap is not None and cap < len(train):
        rows = np.random.default_rng([int(settings.seed), 5]).permutation(len(train))[:cap]
        train = train.subset(sorted(int(i) for i in rows))
    return train


def _validation(model, tokenizer, valid: Samples, task_info: dict, max_length: int,
                settings: FinetuneSettings, kind) -> dict:
    """The fine-tune's validation, its task kind's: a classifier's accuracy (evaluate's), a
    causal LM's mean token loss."""
    started = time.perf_counter()
    batch = max(EvaluateSettings().batch_size, settings.batch_size)
    result = kind.validation(model, tokenizer, valid, task_info, max_length, batch)
    if "accuracy" in result:
        log.info("validation accuracy %.4f on %d examples", result["accuracy"], len(valid))
    return {**result, "seconds": round(time.perf_counter() - started, 3)}


def _fitted_max_length(config, max_length: int) -> int:
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        log.warning("--max-length %d exceeds the model's %d positions; using %d",
                    max_length, limit, limit)
        return limit
    return max_length


@dataclass
class _Run:
    """What the training loop did: its steps, losses, warm-up and time."""

    steps: int
    losses: list[float]
    warmup: int
    seconds: float


def _train(model, tokenizer, train: Samples, settings: FinetuneSettings, max_length: int,
           progress: bool | None, kind) -> _Run:
    """The training loop: AdamW, linear warm-up and decay, clipping, seeded batches of the
    task kind's encoding; the loss is the model's own from the batch's labels."""
    device = next(model.parameters()).device
    lengths, make_batch = kind.training_batches(tokenizer, train, max_length, device)
    steps_per_epoch = math.ceil(len(lengths) / settings.batch_size)
    total = (int(settings.max_steps) if settings.max_steps is not None
             else max(1, math.ceil(settings.epochs * steps_per_epoch)))
    warmup = int(math.ceil(settings.warmup_ratio * total))
    optimizer = _optimizer(model, settings.lr, settings.weight_decay)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    generator = torch.Generator().manual_seed(int(settings.seed))
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    meter = _Progress(total, progress)
    precision = _Precision(settings, device)
    while len(losses) < total:
        for rows in epoch_batches(lengths, settings.batch_size, generator,
                                  settings.group_by_length):
            if len(losses) >= total:
                break
            inputs, labels = make_batch(rows)
            with precision.autocast():
                loss = model(**arch.model_inputs(model, inputs), labels=labels).loss
            if not torch.isfinite(loss):
                meter.close()
                raise UserError(
                    f"the training loss became {loss.item()} at step {len(losses) + 1}; "
                    "lower --lr or check the data"
                )
            precision.step(loss, model, optimizer)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.item()))
            meter.step(losses[-1], scheduler.get_last_lr()[0], started)
    meter.close()
    model.eval()
    return _Run(len(losses), losses, warmup, time.perf_counter() - started)


class _Precision:
    """Float32 training, or mixed precision for ``--dtype bfloat16``/``float16``: float32
    master weights, the forward pass under autocast, float16 losses scaled."""

    def __init__(self, settings: FinetuneSettings, device):
        self.dtype = settings.torch_dtype
        self.device_type = torch.device(device).type
        self.scaler = None
        if self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device_type)

    def autocast(self):
        import contextlib

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, loss, model, optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.scaler.step(optimizer)
        self.scaler.update()


class _Progress:
    """A tqdm bar on a terminal; in a log file (Snakemake) a log line every 5 % of the steps."""

    def __init__(self, total: int, progress: bool | None):
        self.total, self.done, self.smooth = total, 0, None
        self.interactive = sys.stderr.isatty() if progress is None else bool(progress)
        self.log_lines = progress is None and not self.interactive
        self.every = max(1, total // 20)
        self.bar = tqdm(total=total, desc="finetune", unit="step", mininterval=1.0,
                        disable=not self.interactive)

    def step(self, loss: float, lr: float, started: float) -> None:
        self.done += 1
        self.smooth = loss if self.smooth is None else 0.9 * self.smooth + 0.1 * loss
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{self.smooth:.4f}", lr=f"{lr:.2e}", refresh=False)
        if self.log_lines and (self.done % self.every == 0 or self.done == self.total):
            log.info("step %d/%d  loss %.4f (smoothed %.4f)  %.1f s", self.done, self.total,
                     loss, self.smooth, time.perf_counter() - started)

    def close(self) -> None:
        self.bar.close()


def _record(run: _Run, settings: FinetuneSettings, base, minfo, task_info: dict,
            label_names: list[str], n: int, max_length: int, device, allow_pickle: bool) -> dict:
    """``finetune_info.json`` (validation filled in by the caller)."""
    window = max(1, len(run.losses) // 10)
    return {
        "task": task_info.get("task"),
        "base": str(base),
        "base_fingerprint": minfo.fingerprint,
        "objective": settings.objective,
        "num_labels": len(label_names) if label_names is not None else None,
        "label_names": label_names,
        "n_train_examples": n,
        "steps": run.steps,
        "epochs_completed": round(run.steps * settings.batch_size / n, 4),
        "initial_train_loss": float(np.mean(run.losses[:window])),
        "final_train_loss": float(np.mean(run.losses[-window:])),
        "loss_window_steps": window,
        "train_loss_curve": [round(v, 5) for v in run.losses],
        "newly_initialised": minfo.newly_initialised,
        "validation": None,
        "seconds_training": round(run.seconds, 3),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "hyperparameters": {
            "epochs": settings.epochs,
            "max_steps": settings.max_steps,
            "max_train_examples": settings.max_train_examples,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "weight_decay": settings.weight_decay,
            "warmup_ratio": settings.warmup_ratio,
            "warmup_steps": run.warmup,
            "max_length": max_length,
            "seed": settings.seed,
            "grad_clip_norm": 1.0,
            "group_by_length": settings.group_by_length,
            "dtype": settings.dtype,
            "allow_pickle": allow_pickle,
        },
    }
