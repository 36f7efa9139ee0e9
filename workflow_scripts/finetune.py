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
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import architectures as arch
from .data import Samples, check_labels, pad_batch, read_samples, tokenize
from .devices import resolve_device
from .errors import UserError
from .evaluate import compute_metrics, predict
from .io import atomic_path
from .models import load_model, save_checkpoint

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


def warn_unknown_tokens(tokenizer, encoded, limit: float = 0.5) -> float:
    """Share of non-special tokens that are unknown; warn above ``limit`` (a broken vocabulary)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return 0.0
    special = set(tokenizer.all_special_ids) - {unk}
    total = unknown = 0
    for e in encoded:
        for t in e["input_ids"]:
            if t not in special:
                total += 1
                unknown += t == unk
    share = unknown / total if total else 0.0
    if share > limit:
        log.warning("%.0f%% of the training tokens are the unknown token %r: the tokenizer's "
                    "vocabulary does not fit this text (or failed to load)", 100 * share,
                    tokenizer.unk_token)
    return share


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


def validation_accuracy(model, tokenizer, samples: Samples, task: str | None, max_length: int,
                        batch_size: int, device) -> float:
    """Accuracy on ``samples``: evaluate's :func:`predict` and :func:`compute_metrics`."""
    scores = predict(model, tokenizer, samples, batch_size, max_length, device, progress=False)
    return compute_metrics(task, samples.label, scores, model.config.num_labels)["accuracy"]


def finetune(
    base: str,
    train: Samples | str | os.PathLike,
    info: dict | str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    validation: Samples | str | os.PathLike | None = None,
    epochs: float = 1,
    max_steps: int | None = None,
    max_train_examples: int | None = None,
    batch_size: int = 32,
    lr: float = 5e-5,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_length: int = 128,
    seed: int = 0,
    device: str = "auto",
    allow_pickle: bool = False,
    revision: str | None = None,
    group_by_length: bool = True,
    progress: bool | None = None,
):
    """Fine-tune ``base`` on ``train``; save to ``out`` (if given).

    Returns ``(model, tokenizer, finetune_info)``.
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if max_length < 2:
        raise UserError("--max-length must be at least 2")
    if max_steps is not None and max_steps < 1:
        raise UserError("--max-steps must be at least 1")
    if max_steps is None and not epochs > 0:
        raise UserError("--epochs must be positive (or give --max-steps)")
    if not 0 <= warmup_ratio < 1:
        raise UserError("--warmup-ratio must lie in [0, 1)")
    if lr <= 0:
        raise UserError("--lr must be positive")
    if isinstance(info, dict):
        task_info = info
    else:
        from .tasks.info import read_info

        task_info = read_info(info)
    num_labels = int(task_info["num_labels"])
    label_names = [str(n) for n in task_info.get("label_names") or range(num_labels)]
    if len(label_names) != num_labels:
        raise UserError(f"task info: {num_labels} labels but {len(label_names)} label names")
    if num_labels < 2:
        raise UserError(f"fine-tuning needs a classification task with >= 2 labels, got {num_labels}")
    where = str(train) if not isinstance(train, Samples) else "train samples"
    train = _as_samples(train, "train")
    check_labels(train, num_labels, where=where)
    if len(train) == 0:
        raise UserError(f"{where} has no rows")
    if max_train_examples is not None:
        if max_train_examples < 1:
            raise UserError("--max-train-examples must be at least 1")
        if max_train_examples < len(train):
            rows = np.random.default_rng([int(seed), 5]).permutation(len(train))[:max_train_examples]
            train = train.subset(sorted(int(i) for i in rows))
    valid = None
    if validation is not None:
        vwhere = str(validation) if not isinstance(validation, Samples) else "validation samples"
        valid = _as_samples(validation, "validation")
        check_labels(valid, num_labels, where=vwhere)
    device = resolve_device(device)

    # seed: the new head's initialisation draws from torch's RNG
    model, tokenizer, minfo = load_model(base, label_names=label_names, seed=seed,
                                         allow_pickle=allow_pickle, revision=revision, device=device)
    limit = position_limit(model.config)
    if limit is not None and max_length > limit:
        log.warning("--max-length %d exceeds the model's %d positions; using %d",
                    max_length, limit, limit)
        max_length = limit

    encoded = tokenize(tokenizer, train, max_length)
    lengths = [len(e["input_ids"]) for e in encoded]
    warn_unknown_tokens(tokenizer, encoded)
    n = len(train)
    steps_per_epoch = math.ceil(n / batch_size)
    total = int(max_steps) if max_steps is not None else max(1, math.ceil(epochs * steps_per_epoch))
    warmup = int(math.ceil(warmup_ratio * total))
    optimizer = _optimizer(model, lr, weight_decay)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    generator = torch.Generator().manual_seed(int(seed))

    model.train()
    losses: list[float] = []
    step = 0
    train_started = time.perf_counter()
    # a tqdm bar on a terminal; in a log file (Snakemake) a log line every 5% of the steps
    interactive = sys.stderr.isatty() if progress is None else bool(progress)
    bar = tqdm(total=total, desc="finetune", unit="step", mininterval=1.0, disable=not interactive)
    log_every = max(1, total // 20)
    smooth = None
    while step < total:
        for rows in epoch_batches(lengths, batch_size, generator, group_by_length):
            if step >= total:
                break
            inputs = pad_batch(tokenizer, encoded, rows, device)
            labels = torch.tensor([train.label[i] for i in rows], dtype=torch.long, device=device)
            loss = model(**arch.model_inputs(model, inputs), labels=labels).loss
            if not torch.isfinite(loss):
                bar.close()
                raise UserError(
                    f"the training loss became {loss.item()} at step {step + 1}; "
                    "lower --lr or check the data"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.item())
            losses.append(value)
            smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{smooth:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
            if progress is None and not interactive and (step % log_every == 0 or step == total):
                log.info("step %d/%d  loss %.4f (smoothed %.4f)  %.1f s", step, total, value,
                         smooth, time.perf_counter() - train_started)
    bar.close()
    train_seconds = time.perf_counter() - train_started
    model.eval()

    window = max(1, len(losses) // 10)
    result = {
        "task": task_info.get("task"),
        "base": str(base),
        "base_fingerprint": minfo.fingerprint,
        "num_labels": num_labels,
        "label_names": label_names,
        "n_train_examples": n,
        "steps": step,
        "epochs_completed": round(step * batch_size / n, 4),
        "initial_train_loss": float(np.mean(losses[:window])),
        "final_train_loss": float(np.mean(losses[-window:])),
        "loss_window_steps": window,
        "train_loss_curve": [round(v, 5) for v in losses],
        "newly_initialised": minfo.newly_initialised,
        "validation": None,
        "seconds_training": round(train_seconds, 3),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "hyperparameters": {
            "epochs": epochs,
            "max_steps": max_steps,
            "max_train_examples": max_train_examples,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "warmup_ratio": warmup_ratio,
            "warmup_steps": warmup,
            "max_length": max_length,
            "seed": seed,
            "grad_clip_norm": 1.0,
            "group_by_length": group_by_length,
            "allow_pickle": allow_pickle,
        },
    }
    if valid is not None and len(valid):
        eval_started = time.perf_counter()
        acc = validation_accuracy(model, tokenizer, valid, task_info.get("task"), max_length,
                                  max(64, batch_size), device)
        result["validation"] = {"accuracy": acc, "n": len(valid),
                                "seconds": round(time.perf_counter() - eval_started, 3)}
        log.info("validation accuracy %.4f on %d examples", acc, len(valid))
    log.info("fine-tuned %d steps in %.1f s; train loss %.4f -> %.4f", step, train_seconds,
             result["initial_train_loss"], result["final_train_loss"])
    result["seconds"] = round(time.perf_counter() - started, 3)
    if out is not None:
        model.to("cpu")
        with atomic_path(out) as tmp:
            save_checkpoint(model, tokenizer, tmp)
            (Path(tmp) / INFO_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return model, tokenizer, result
