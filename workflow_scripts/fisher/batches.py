"""The batches a Fisher estimator runs over, and the model facts every estimator needs.

Tokenisation and padding happen here, up front, so that the Fisher timing of
:func:`.runner.compute_fisher` measures the gradients alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import architectures as arch
from .. import data as data_mod


def model_device(model: nn.Module, device) -> torch.device:
    """``device`` as a ``torch.device``; ``None``: the device of the model's parameters."""
    if device is None:
        return next(model.parameters()).device
    return torch.device(device)


def model_precision(model: nn.Module) -> tuple[torch.dtype, torch.device, torch.dtype]:
    """``(dtype, device, accumulator dtype)`` of the model's parameters.

    The squared gradients are summed in the accumulator dtype: the parameter
    dtype promoted to at least float32.
    """
    param = next(model.parameters())
    return param.dtype, param.device, torch.promote_types(param.dtype, torch.float32)


def prepare_batches(
    tokenizer,
    samples: data_mod.Samples,
    *,
    batch_size: int,
    max_length: int,
    sort_by_length: bool,
    device,
    encoded=None,
) -> list[data_mod.Batch]:
    """Tokenise and pad every batch up front (kept out of the Fisher timing)."""
    if len(samples) == 0:
        raise ValueError("no samples: the Fisher needs at least one example")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, not {batch_size}")
    return list(
        data_mod.batches(
            tokenizer, samples, batch_size, max_length,
            sort_by_length=sort_by_length, device=device, encoded=encoded,
        )
    )


def task_kind(kind):
    """The registered task kind ``kind`` (a name, or a kind as is)."""
    from ..taskkinds import kind as registered

    return registered(kind)


def model_batches(
    model: nn.Module, tokenizer, samples: data_mod.Samples, *, batch_size: int, max_length: int,
    sort_by_length: bool, device, kind="label",
) -> tuple[list[data_mod.Batch], torch.device]:
    """The samples' batches for ``model`` and the device they are on.

    ``kind`` (a task kind of :mod:`workflow_scripts.taskkinds`, or its name) encodes them:
    a classifier's labels are checked against its label count first; a causal LM's batches
    carry token labels (:mod:`workflow_scripts.lm`).  The model must be of the kind's
    objective.  ``device`` ``None`` means the model's own device.
    """
    from .. import objectives

    kind = task_kind(kind)
    objectives.check_model(model, kind.objective)
    device = model_device(model, device)
    batches = kind.batches(model, tokenizer, samples, batch_size=batch_size,
                           max_length=max_length, sort_by_length=sort_by_length, device=device)
    for batch in batches:  # decoders: positions from the attention mask (left padding)
        batch.inputs = arch.model_inputs(model, batch.inputs)
    return batches, device


def example_losses(kind, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's loss [B], in at least float32, as the task kind defines it: the
    cross-entropy of its class (``label``), its mean next-token cross-entropy over the
    counted tokens (``text``)."""
    return task_kind(kind).example_losses(logits, labels)


def drawn_labels(kind, logits: torch.Tensor, labels: torch.Tensor,
                 batch_index: int) -> torch.Tensor:
    """The true Fisher's labels, drawn by the task kind from the model's predictions with a
    generator seeded per batch: classes (``label``), each counted next token (``text``)."""
    from .kinds import SAMPLING_SEED

    generator = torch.Generator(device=logits.device).manual_seed(SAMPLING_SEED + batch_index)
    return task_kind(kind).drawn_labels(logits, labels, generator)


def progress_bar(items, desc: str, progress: bool):
    """``items``, wrapped in a tqdm progress bar when ``progress``."""
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="batch", leave=False)
