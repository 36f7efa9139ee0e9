"""Fine-tune a pre-trained encoder on one task (sequence classification).

``finetune --base DIR_OR_ID --train TRAIN.parquet --info INFO.json
[--validation VALID.parquet] --out DIR [options]``

The base may be a bare encoder (e.g. a ``BertModel`` checkpoint without a
classification head): the head is then freshly initialised, which is
expected.  A base that already has a head of another size gets a new one.

Training: AdamW (no weight decay on biases and LayerNorm weights), linear
warm-up then linear decay to 0, gradient clipping at norm 1.0, seeded
shuffling, dynamic padding with length-grouped batches (``--no-group-by-length``
turns the grouping off), dropout on.  ``--max-steps`` (if given) sets the
number of optimiser steps, overriding ``--epochs`` (the data are reshuffled
each pass), as in Hugging Face's Trainer.  On CPU a seed gives bit-identical
weights (same machine, same thread count).

Output: a safetensors checkpoint with its tokenizer and the task's
``id2label``/``label2id``, written atomically (nothing is left at ``--out`` if
interrupted), plus ``finetune_info.json`` (base, steps, losses, validation
accuracy, seconds, hyper-parameters).
"""

from __future__ import annotations

import argparse
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
from .cli import UserError
from .data import Samples, check_labels, read_samples, tokenize
from .io import atomic_path
from .models import ModelLoadError, fingerprint, is_local, save_checkpoint
from .tasks import read_info

log = logging.getLogger(__name__)

INFO_FILE = "finetune_info.json"


def resolve_device(name: str | None) -> str:
    name = (name or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA device is available")
        return name
    if name != "cpu":
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda")
    return name


def load_base(base: str, num_labels: int, label_names: list[str], *, allow_pickle: bool = False,
              revision: str | None = None):
    """(model, tokenizer, loading_info) with a K-way head for the task."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    base = str(base)
    if not is_local(base) and (base.startswith((".", "/", "~")) or base.count("/") > 1):
        raise ModelLoadError(f"base model directory {base!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(base, revision=revision, trust_remote_code=False)
    except OSError as exc:
        raise ModelLoadError(f"cannot load the base model's config from {base!r}: {exc}") from exc
    arch.spec_for(config)  # unsupported architecture: clear error before loading weights
    if is_local(base) and not allow_pickle and not any(Path(base).glob("*.safetensors")):
        raise ModelLoadError(
            f"base model {base!r} has no .safetensors weights; pickle weights are refused unless "
            "you opt in (--allow-pickle / allow_pickle: true), or convert the checkpoint"
        )
    id2label = {i: name for i, name in enumerate(label_names)}
    label2id = {name: i for i, name in enumerate(label_names)}
    try:
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            base,
            revision=revision,
            num_labels=num_labels,
            id2label=id2label,
            label2id=label2id,
            problem_type="single_label_classification",
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=False,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
            dtype=torch.float32,
        )
        tokenizer = AutoTokenizer.from_pretrained(base, revision=revision, trust_remote_code=False)
    except OSError as exc:
        raise ModelLoadError(f"cannot load base model {base!r}: {exc}") from exc
    return model, tokenizer, loading


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


def _pad(tokenizer, encoded, rows, device):
    padded = tokenizer.pad([encoded[i] for i in rows], return_tensors="pt")
    return {k: v.to(device) for k, v in padded.items()}


@torch.inference_mode()
def accuracy(model, tokenizer, samples: Samples, max_length: int, batch_size: int, device) -> float:
    model.eval()
    encoded = tokenize(tokenizer, samples, max_length)
    order = sorted(range(len(samples)), key=lambda i: len(encoded[i]["input_ids"]))
    correct = 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        logits = model(**_pad(tokenizer, encoded, rows, device)).logits
        pred = logits.argmax(-1).cpu().tolist()
        correct += sum(int(p == samples.label[i]) for p, i in zip(pred, rows))
    return correct / len(samples)


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
    task_info = info if isinstance(info, dict) else read_info(info)
    num_labels = int(task_info["num_labels"])
    label_names = [str(n) for n in task_info.get("label_names") or range(num_labels)]
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

    torch.manual_seed(seed)  # the new head's initialisation
    model, tokenizer, loading = load_base(base, num_labels, label_names,
                                          allow_pickle=allow_pickle, revision=revision)
    new_keys = sorted(set(loading.get("missing_keys", [])) |
                      {k if isinstance(k, str) else k[0] for k in loading.get("mismatched_keys", [])})
    if new_keys:
        log.info("freshly initialised (expected for a new task head): %s", ", ".join(new_keys))
    limit = position_limit(model.config)
    if limit is not None and max_length > limit:
        log.warning("--max-length %d exceeds the model's %d positions; using %d",
                    max_length, limit, limit)
        max_length = limit
    model.to(device)

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
            inputs = _pad(tokenizer, encoded, rows, device)
            labels = torch.tensor([train.label[i] for i in rows], dtype=torch.long, device=device)
            loss = model(**inputs, labels=labels).loss
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
        "base_fingerprint": fingerprint(str(base), revision),
        "num_labels": num_labels,
        "label_names": label_names,
        "n_train_examples": n,
        "steps": step,
        "epochs_completed": round(step * batch_size / n, 4),
        "initial_train_loss": float(np.mean(losses[:window])),
        "final_train_loss": float(np.mean(losses[-window:])),
        "loss_window_steps": window,
        "train_loss_curve": [round(v, 5) for v in losses],
        "newly_initialised": new_keys,
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
        acc = accuracy(model, tokenizer, valid, max_length, max(64, batch_size), device)
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a base model on a task",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base", required=True, help="base checkpoint directory (or hub id)")
    p.add_argument("--train", required=True, help="train split (Parquet)")
    p.add_argument("--info", required=True, help="task info JSON from prepare-task")
    p.add_argument("--validation", default=None, help="validation split (Parquet), for accuracy")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data (default 1)")
    p.add_argument("--max-steps", type=_positive_int, default=None,
                   help="optimiser steps; overrides --epochs")
    p.add_argument("--max-train-examples", type=_positive_int, default=None,
                   help="use a seeded subsample of this many train examples")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-length", type=_positive_int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--revision", default=None, help="hub revision (hub ids only)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) base weights")
    p.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                   help="batch examples of similar length together (less padding; default on)")
    p.set_defaults(func=run)


def run(args) -> None:
    finetune(
        args.base, args.train, args.info, args.out, validation=args.validation,
        epochs=args.epochs, max_steps=args.max_steps, max_train_examples=args.max_train_examples,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio, max_length=args.max_length, seed=args.seed,
        device=args.device, allow_pickle=args.allow_pickle, revision=args.revision,
        group_by_length=args.group_by_length,
    )
