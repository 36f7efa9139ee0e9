"""The mask-node Fisher: the mean squared gradient of the loss with respect to
multiplicative masks of ones on every attention head and FFN neuron.

Two estimators: ``per-example`` (Eq. 4) batches the exact per-example squared
gradients (each example gets its own masks, the per-example losses are
summed, and one backward pass yields every example's own gradient);
``per-batch`` (the released code) sums the squared gradients of batch-mean
losses over consecutive batches in file order.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import architectures as arch
from .. import data as data_mod
from .batches import drawn_labels, example_losses, model_batches, model_precision, progress_bar
from .hooks import eval_mode, frozen_parameters, mask_hooks
from .kinds import DEFAULT_BATCH_SIZE, DEFAULT_MAX_LENGTH, ESTIMATORS, check_choice


def mask_fisher_batches(
    model: nn.Module, batches: Sequence[data_mod.Batch], *, estimator: str, neuron_mask: str,
    progress: bool = False, labels: str = "empirical", kind="label",
) -> dict[str, torch.Tensor]:
    """Mask-node Fisher over prepared batches (see :func:`mask_fisher`); ``labels``
    ``empirical`` (the data's) or ``true`` (drawn from the model's predictions); ``kind``
    the task kind (:mod:`workflow_scripts.taskkinds`) whose per-example loss it
    differentiates."""
    check_choice("estimator", estimator, ESTIMATORS)
    check_choice("labels", labels, ("empirical", "true"))
    d = arch.dims(model)
    dtype, device, acc = model_precision(model)
    head = torch.zeros(d.layers, d.heads, dtype=acc, device=device)
    neuron = torch.zeros(d.layers, d.intermediate, dtype=acc, device=device)
    n = sum(len(b.rows) for b in batches)
    with eval_mode(model), frozen_parameters(model), torch.enable_grad():
        if estimator == "per-batch":
            hm = torch.ones(d.layers, d.heads, dtype=dtype, device=device, requires_grad=True)
            nm = torch.ones(d.layers, d.intermediate, dtype=dtype, device=device, requires_grad=True)
        for index, batch in enumerate(progress_bar(batches, f"mask fisher ({estimator})",
                                                   progress)):
            if estimator == "per-example":
                b = len(batch.rows)
                hm = torch.ones(b, d.layers, d.heads, dtype=dtype, device=device, requires_grad=True)
                nm = torch.ones(b, d.layers, d.intermediate, dtype=dtype, device=device, requires_grad=True)
            with mask_hooks(model, hm, nm, neuron_position=neuron_mask):
                logits = model(**batch.inputs).logits
            targets = batch.labels
            if labels == "true":
                targets = drawn_labels(kind, logits, batch.labels, index)
            losses = example_losses(kind, logits, targets)  # at least float32
            loss = losses.sum() if estimator == "per-example" else losses.mean()
            g_head, g_neuron = torch.autograd.grad(loss, (hm, nm))
            if estimator == "per-example":
                head += g_head.to(acc).square().sum(0)
                neuron += g_neuron.to(acc).square().sum(0)
            else:
                head += g_head.to(acc).square()
                neuron += g_neuron.to(acc).square()
    if estimator == "per-example":
        head /= n
        neuron /= n
    return {"head": head, "neuron": neuron}


def mask_fisher(
    model: nn.Module,
    tokenizer,
    samples: data_mod.Samples,
    *,
    estimator: str = "per-example",
    neuron_mask: str = "post-activation",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int = DEFAULT_MAX_LENGTH,
    device=None,
    progress: bool = False,
    kind="label",
) -> dict[str, torch.Tensor]:
    """Mask-node Fisher: ``{"head": [layers, heads], "neuron": [layers, intermediate]}``.

    ``estimator="per-example"``: mean over samples of the squared per-example
    gradient (Eq. 4), batched (batches sorted by length: the result does not
    depend on the grouping).  ``"per-batch"``: sum over consecutive batches of
    ``batch_size`` samples in file order of the squared gradient of the
    batch-mean loss (released code).  The losses use the samples' labels; ``kind`` is
    their task kind (``label``: a classifier's; ``text``: a causal LM's).
    """
    batches, _ = model_batches(
        model, tokenizer, samples, batch_size=batch_size, max_length=max_length,
        sort_by_length=estimator == "per-example", device=device, kind=kind,
    )
    return mask_fisher_batches(
        model, batches, estimator=estimator, neuron_mask=neuron_mask, progress=progress,
        kind=kind,
    )
