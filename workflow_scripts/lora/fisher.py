"""Mask Fisher and Grams of an unmerged ``PeftModel``, equal to those of its merged copy.

The hooks go on ``peft_model.get_base_model()``: the transformers model with PEFT's LoRA
layers in place of its projections.  A LoRA layer takes the same input as the projection it
wraps and returns ``W0 x + s B A x``, which is what the merged projection returns, so the
mask hooks (on the attention output projections' inputs and the FFN's activations) and the
Gram hooks (on each linear layer's input) see what they would see on the merged model.  A
Gram is named by the wrapped weight's body name (``layers.0.self_attn.q_proj.weight``),
as :mod:`workflow_scripts.gram` names a plain model's.  The full diagonal Fisher of an
adapted model is that of its dense weights: compute it on ``merge_and_unload()``'s copy.
"""

from __future__ import annotations

from torch import nn

from .. import architectures as arch
from .. import gram as gram_mod
from ..fisher import mask as mask_mod


def base_model(peft_model: nn.Module) -> nn.Module:
    """The transformers model inside a ``PeftModel`` (a plain model as it is)."""
    get = getattr(peft_model, "get_base_model", None)
    return get() if callable(get) else peft_model


def mask_fisher(peft_model: nn.Module, tokenizer, samples, **options):
    """:func:`workflow_scripts.fisher.mask.mask_fisher` of the adapted model (unmerged)."""
    return mask_mod.mask_fisher(base_model(peft_model), tokenizer, samples, **options)


def adapted_linears(model: nn.Module, causal: bool) -> dict[str, nn.Module]:
    """Every linear layer of the body by its weight's body name, a LoRA-wrapped one as its
    wrapper (whose input is the wrapped layer's); for a causal LM also ``lm_head.weight``
    unless tied to the embeddings."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers.pytorch_utils import Conv1D

    spec, out, inner = arch.spec_for(model), {}, ()
    for prefix, module in arch.body(model).named_modules():
        if inner and prefix.startswith(inner):
            continue  # PEFT's own modules inside a wrapper
        if isinstance(module, BaseTunerLayer):
            inner = (f"{prefix}.",)
            layer = module.get_base_layer()
        elif isinstance(module, (nn.Linear, Conv1D)):
            layer = module
        else:
            continue
        if isinstance(layer, (nn.Linear, Conv1D)):
            arch.weight_kind(spec, f"{prefix}.weight")  # a weight the table knows
            out[f"{prefix}.weight"] = module
    head = model.get_output_embeddings() if causal else None
    if head is not None:
        embeddings = model.get_input_embeddings()
        if _unwrapped(head).weight is not _unwrapped(embeddings).weight:  # not tied
            out[f"{spec.lm_head}.weight"] = head
    return out


def gram_batches(peft_model: nn.Module, batches, causal: bool, progress: bool = False):
    """(Grams, rows per layer) of the adapted model over ``batches``
    (:func:`workflow_scripts.gram.gram_batches`)."""
    model = base_model(peft_model)
    return gram_mod.gram_batches(model, batches, progress,
                                 linears=adapted_linears(model, causal))


def _unwrapped(module: nn.Module) -> nn.Module:
    get = getattr(module, "get_base_layer", None)
    return get() if callable(get) else module
