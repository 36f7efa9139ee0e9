"""Gram matrices of the inputs of every linear layer of the body: RegMean's artifact.

The linear layers are the body's ``nn.Linear`` and GPT-2's ``Conv1D`` modules
(:func:`..architectures.linear_layers`).  For the layer with weight ``W`` (named
as in ``model.base_model.state_dict()``, e.g.
``encoder.layer.0.attention.self.query.weight`` or ``h.0.attn.c_attn.weight``),
the Gram is

    G = X^T X / T

with X the [T, in] matrix of that layer's inputs over the samples, one row per
non-padding token (padding rows are dropped with the attention mask), or one row
per example for a layer that sees one vector per example (the pooler); an input
that is not per token (DeBERTa's relative-position embeddings, projected once per
batch) counts every row, each time the layer sees it.  Dividing
by T makes G the mean outer product: each model's regression counts equally in
RegMean's sum however many samples or tokens its task has (long news articles
would otherwise outweigh short tweets), and Grams of different n are on one scale.
Each batch's product is computed in float32 (the activations' precision; a
float64 product costs 2-4x more on a CPU), summed over batches in float64 and
stored in float32.  Forward passes only,
under ``torch.inference_mode``, with the same sorted, dynamically padded batches
as the Fisher.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from . import architectures as arch
from . import objectives, taskkinds
from .artifacts import ArtifactContext, environment_metadata, source_metadata
from .devices import synchronize
from .fisher.batches import model_batches, progress_bar
from .settings import GramSettings

KIND = "gram"


def body_linears(model: nn.Module, objective: str = objectives.DEFAULT) -> dict[str, nn.Module]:
    """Every linear layer of the body (``nn.Linear``, GPT-2's ``Conv1D``), by its weight's body
    parameter name; where the objective's merges cover the whole model (a causal LM) also its
    output projection (``lm_head.weight``) unless it is tied to the embeddings (then it is
    merged with them, by their average)."""
    out = {name: layer.module for name, layer in arch.linear_layers(model).items()}
    if objectives.objective(objective).whole_model:
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            out[f"{arch.spec_for(model).lm_head}.weight"] = head
    return out


def gram_batches(model: nn.Module, batches, progress: bool = False,
                 objective: str = objectives.DEFAULT,
                 linears: dict[str, nn.Module] | None = None) -> tuple[dict, dict]:
    """(Grams, rows per layer) over ``batches``: sum of x x^T over non-padding rows / rows;
    ``linears`` the layers by weight name (default :func:`body_linears` of the objective; an
    adapted model's: :func:`workflow_scripts.lora.fisher.adapted_linears`)."""
    linears = body_linears(model, objective) if linears is None else linears
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {name: 0 for name in linears}
    state: dict = {"mask": None, "last": None}

    def hook_for(name):
        def hook(module, args):
            x = args[0]
            if x.dim() == 3 and x.shape[:2] == state["mask"].shape:  # [batch, tokens, in]
                x = x[state["mask"]]  # the non-padding tokens; other inputs: every row
            x = x.reshape(-1, x.shape[-1])
            last = state["last"]
            if last is not None and last[0] is args[0]:  # query/key/value share their input
                product = last[1]
            else:  # one batch's product in float32 (a float64 matmul costs 2-4x on CPU)
                xf = x.to(torch.float32)
                product = (xf.T @ xf).to(torch.float64)
                state["last"] = (args[0], product)
            sums[name] = product.clone() if name not in sums else sums[name] + product
            rows[name] += x.shape[0]
        return hook

    handles = [module.register_forward_pre_hook(hook_for(name)) for name, module in linears.items()]
    try:
        with torch.inference_mode():
            for batch in progress_bar(batches, "gram", progress):
                state["mask"] = batch.inputs["attention_mask"].bool()
                state["last"] = None
                model(**batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    state.clear()
    grams = {name: (sums[name] / max(rows[name], 1)).to(torch.float32) for name in linears
             if name in sums}
    return grams, rows


def compute_gram(model: nn.Module, tokenizer, samples, settings: GramSettings | None = None, *,
                 info=None, context: ArtifactContext | None = None, progress: bool = False,
                 **overrides):
    """(Grams, metadata of the artifact); ``seconds`` times the forward passes alone.
    ``settings`` (:class:`GramSettings`, or ``overrides`` by name); the model stays on its
    own device."""
    settings = GramSettings.of(settings, **overrides)
    batches, device = model_batches(model, tokenizer, samples, batch_size=settings.batch_size,
                                    max_length=settings.max_length, sort_by_length=True,
                                    device=None, kind=taskkinds.of_settings(settings))
    synchronize(device)
    start = time.perf_counter()
    grams, rows = gram_batches(model, batches, progress, settings.objective)
    synchronize(device)
    seconds = time.perf_counter() - start
    metadata = {
        **source_metadata(model, info, samples, context, batches, settings.objective),
        "method": KIND,
        "normalisation": "mean over non-padding tokens (per example for 2-D inputs)",
        "rows": rows,
        "max_length": settings.max_length,
        "batch_size": settings.batch_size,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "accumulator": "float64 sums of float32 products, stored in float32",
        "seconds": seconds,
        **environment_metadata(device),
    }
    return grams, metadata
