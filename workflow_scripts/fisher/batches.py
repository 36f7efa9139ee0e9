"""The batches a Fisher estimator runs over, and the model facts every estimator needs.

Tokenisation and padding happen here, up front, so that the Fisher timing of
:func:`.runner.compute_fisher` measures the gradients alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def model_batches(
    model: nn.Module, tokenizer, samples: data_mod.Samples, *, batch_size: int, max_length: int,
    sort_by_length: bool, device,
) -> tuple[list[data_mod.Batch], torch.device]:
    """The samples' batches for ``model`` and the device they are on.

    A classifier's labels are checked against its label count first; a causal LM's batches
    carry token labels (:mod:`workflow_scripts.lm`).  ``device`` ``None`` means the
    model's own device.
    """
    from .. import lm, objectives

    device = model_device(model, device)
    if objectives.of_model(model) == objectives.CAUSAL_LM:
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, not {batch_size}")
        batches = lm.batches(tokenizer, samples, batch_size, max_length,
                             sort_by_length=sort_by_length, device=device)
    else:
        data_mod.check_labels(samples, int(model.config.num_labels))
        batches = prepare_batches(
            tokenizer, samples, batch_size=batch_size, max_length=max_length,
            sort_by_length=sort_by_length, device=device,
        )
    for batch in batches:  # decoders: positions from the attention mask (left padding)
        batch.inputs = arch.model_inputs(model, batch.inputs)
    return batches, device


def example_losses(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's loss [B], in at least float32: the cross-entropy of its class (a
    classifier), or its mean next-token cross-entropy over the counted tokens (a causal LM)."""
    from .. import lm, objectives

    if objectives.of_model(model) == objectives.CAUSAL_LM:
        return lm.token_losses(logits, labels)[0]
    acc = torch.promote_types(logits.dtype, torch.float32)
    return F.cross_entropy(logits.to(acc), labels, reduction="none")


def drawn_labels(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor,
                 batch_index: int) -> torch.Tensor:
    """The true Fisher's labels: classes (a classifier), or each counted next token (a
    causal LM), drawn from the model's predictions with a seeded generator."""
    from .. import lm, objectives
    from .kinds import SAMPLING_SEED

    generator = torch.Generator(device=logits.device).manual_seed(SAMPLING_SEED + batch_index)
    if objectives.of_model(model) == objectives.CAUSAL_LM:
        return lm.sampled_labels(logits, labels, generator)
    probs = torch.softmax(logits.detach().float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def progress_bar(items, desc: str, progress: bool):
    """``items``, wrapped in a tqdm progress bar when ``progress``."""
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="batch", leave=False)
