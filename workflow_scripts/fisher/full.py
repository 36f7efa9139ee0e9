"""The full diagonal Fisher of the shared body (Matena & Raffel's baseline).

The mean over samples of the squared per-example gradient of ``log p(y|x)``,
for every body parameter (the task head excluded), with the dataset labels
(``empirical``) or the exact expectation over the model's predicted classes
(``expected``).  Per-example gradients are vectorised with ``torch.func``
(``functional_call`` + ``vmap(grad)``), ``chunk_size`` examples at a time,
each example carrying its own attention mask so that padding never changes
its gradient.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import architectures as arch
from .. import data as data_mod
from .batches import model_batches, model_precision, progress_bar
from .hooks import attn_implementation, eval_mode
from .kinds import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_LENGTH,
    LABEL_MODES,
    check_choice,
    default_chunk_size,
)


def _trim(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop trailing columns that are padding for every row."""
    mask = inputs["attention_mask"]
    cols = torch.nonzero(mask.any(0)).flatten()
    length = int(cols.max()) + 1 if cols.numel() else mask.shape[1]
    if length == mask.shape[1]:
        return inputs
    return {k: v[:, :length] for k, v in inputs.items()}


def _vmap_mask(model: nn.Module, form: str, attn: torch.Tensor, dtype, very_negative):
    """The chunk's attention masks in the form a vmapped forward takes (``ArchSpec.full_fisher_mask``).

    Each example's mask is already prepared, so no mask preparation
    (data-dependent control flow) runs under vmap, and padding only ever
    meets a masked key.
    """
    if form == "keys":  # additive over keys, [chunk, 1, 1, tokens]
        return ((1.0 - attn.to(dtype)) * very_negative)[:, None, None, :]
    if form == "binary":  # the model's own vmap-safe mask code runs on [chunk, tokens]
        return attn
    tokens = attn.shape[1]
    # a padding query attends to itself: no row is fully masked (no NaN from an
    # all-masked softmax); a real query's own key is allowed anyway
    eye = torch.eye(tokens, dtype=torch.bool, device=attn.device)
    if form == "causal":  # additive [chunk, 1, T, T]: causal and padding
        causal = torch.tril(torch.ones(tokens, tokens, dtype=torch.bool, device=attn.device))
        allowed = (causal & attn.bool()[:, None, :]) | eye
        zero = torch.zeros((), dtype=dtype, device=attn.device)
        return torch.where(allowed, zero, torch.tensor(very_negative, dtype=dtype))[:, None]
    # "layer-types": one additive [chunk, 1, T, T] mask per attention type, by
    # transformers' own mask functions (eager attention is active here)
    from transformers import masking_utils

    makers = {
        "full_attention": masking_utils.create_bidirectional_mask,
        "sliding_attention": masking_utils.create_bidirectional_sliding_window_mask,
    }
    embeds = torch.empty(*attn.shape, 1, dtype=dtype, device=attn.device)
    masks = {}
    for kind in sorted(set(model.config.layer_types)):
        if kind not in makers:
            raise ValueError(f"attention layer type {kind!r} has no bidirectional mask function")
        mask = makers[kind](config=model.config, inputs_embeds=embeds, attention_mask=attn)
        if mask is None:  # no padding and no window: nothing masked
            mask = torch.zeros(attn.shape[0], 1, tokens, tokens, dtype=dtype, device=attn.device)
        elif mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=dtype, device=attn.device).masked_fill(~mask, very_negative)
        masks[kind] = mask.expand(attn.shape[0], 1, tokens, tokens).masked_fill(eye, 0.0)
    return masks


def _word_embedding_name(model: nn.Module) -> str:
    """Full-model name of the input word-embedding matrix."""
    weight = model.get_input_embeddings().weight
    for name, p in model.named_parameters():
        if p is weight:
            return name
    raise ValueError("the model's input embedding matrix is not among its parameters")


def full_fisher_batches(
    model: nn.Module, batches: Sequence[data_mod.Batch], *, labels: str, chunk_size: int,
    progress: bool = False, kind="label",
) -> dict[str, torch.Tensor]:
    """Full diagonal Fisher over prepared batches (see :func:`full_fisher`).

    Every parameter but the word-embedding matrix is differentiated directly: ``vmap``
    over the examples of a chunk of ``grad`` (or ``vjp`` for the expected Fisher) of a
    ``functional_call`` that runs one example with a batch dimension of 1.  The
    word-embedding matrix (a quarter of BERT-base's body, of which an example touches a
    hundred rows) is handled sparsely: a zero offset added to the embedding lookup's
    output is differentiated instead, and each example's gradient of row ``v`` is the sum
    of that offset's gradient over the example's tokens equal to ``v`` (the padding row
    gets none, as ``nn.Embedding(padding_idx=...)`` does).  A causal LM whose output
    projection is tied to its embeddings reads every row, so there the matrix is
    differentiated directly.  The squares go into float accumulators in place, example by
    example.  The loss is the task kind's (``kind``, :mod:`workflow_scripts.taskkinds`); the
    Fisher covers what a merge of the kind's objective covers: a classifier's body, a causal
    LM's whole model.
    """
    check_choice("labels", labels, LABEL_MODES)
    if chunk_size < 1:
        raise ValueError(f"chunk size must be positive, not {chunk_size}")
    state = _FullFisher(model, labels=labels, chunk_size=chunk_size, kind=kind)
    n = 0
    handle = state.embedding.register_forward_hook(state.add_offset) if state.sparse else None
    try:
        with eval_mode(model), attn_implementation(model, "eager"), torch.enable_grad():
            for index, batch in enumerate(progress_bar(batches, f"full fisher ({labels})",
                                                       progress)):
                n += len(batch.rows)
                targets = state.targets(batch, index)
                for start in range(0, len(batch.rows), state.examples_per_call):
                    state.add_chunk(batch, targets, start)
    finally:
        if handle is not None:
            handle.remove()
        state.offset.clear()
    return state.result(n)


class _FullFisher:
    """The accumulators and the vmapped per-example gradient functions of one full Fisher
    (:func:`full_fisher_batches`)."""

    def __init__(self, model: nn.Module, *, labels: str, chunk_size: int, kind="label"):
        from torch.func import vmap

        from .. import objectives
        from .batches import task_kind

        self.model, self.labels, self.kind = model, labels, task_kind(kind)
        objectives.check_model(model, self.kind.objective)
        self.whole = objectives.objective(self.kind.objective).whole_model
        if labels == "expected" and not self.kind.expected_fisher:
            raise ValueError(f"the expected Fisher sums over a classifier's classes; a "
                             f"{self.kind.name} task takes labels empirical or true")
        self.prefix = arch.body_prefix(model)
        self.mask_form = arch.spec_for(model).full_fisher_mask  # unsupported architectures fail here
        self.embedding = model.get_input_embeddings()
        self.emb_name = _word_embedding_name(model)
        if not self.emb_name.startswith(self.prefix):
            raise ValueError(f"word embeddings {self.emb_name!r} lie outside the body {self.prefix!r}")
        output = model.get_output_embeddings() if self.whole else None
        self.sparse = output is None or output.weight is not self.embedding.weight
        named = dict(model.named_parameters())
        self.diff = {k: p.detach() for k, p in named.items()
                     if (self.whole or k.startswith(self.prefix))
                     and (k != self.emb_name or not self.sparse)}
        self.fixed = {k: p.detach() for k, p in named.items() if k not in self.diff}
        self.fixed.update(dict(model.named_buffers()))
        self.dtype, self.device, acc = model_precision(model)
        self.acc = acc
        self.fisher = {k: torch.zeros(p.shape, dtype=acc, device=self.device)
                       for k, p in self.diff.items()}
        self.emb_fisher = torch.zeros(named[self.emb_name].shape, dtype=acc, device=self.device)
        self.vocab, self.width = self.emb_fisher.shape
        self.pad_row = self.embedding.padding_idx
        num_labels = self.kind.classes(model)
        self.very_negative = torch.finfo(self.dtype).min
        # examples per vmap call: chunk_size per-example gradients in flight
        expected = labels == "expected"
        self.examples_per_call = max(1, chunk_size // num_labels) if expected else chunk_size
        self.eye = torch.eye(num_labels, dtype=self.dtype, device=self.device)
        self.offset: dict = {}
        self.per_example = vmap(self.expected_grads if expected else self.empirical_grads,
                                in_dims=(None, 0, 0, 0))

    def add_offset(self, module, args, out):
        return out + self.offset["delta"]

    def logits_of(self, params, delta, inputs):
        # One example with a batch dimension of 1; its own additive attention
        # mask is already 4-D, so no mask preparation (data-dependent control
        # flow) runs under vmap, and padding only ever meets a masked key.
        from torch.func import functional_call
        from torch.utils._pytree import tree_map

        self.offset["delta"] = delta
        kwargs = tree_map(lambda v: v.unsqueeze(0), inputs)
        out = functional_call(self.model, {**params, **self.fixed}, (), kwargs).logits[0]
        return out.to(self.acc)  # the loss in float32 at least (half-precision models)

    def loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """One example's loss, the task kind's: its class's cross-entropy, or its mean
        next-token loss."""
        return self.kind.example_losses(logits.unsqueeze(0), label.unsqueeze(0))[0]

    def empirical_grads(self, params, delta, inputs, label):
        from torch.func import grad

        def loss(p, dl):
            return self.loss(self.logits_of(p, dl, inputs), label)

        g, g_delta = grad(loss, argnums=(0, 1))(params, delta)
        one = torch.ones(1, dtype=self.dtype, device=self.device)
        # a class dimension of 1 with weight 1, as the expected form has C
        return {k: v.unsqueeze(0) for k, v in g.items()}, g_delta.unsqueeze(0), one

    def expected_grads(self, params, delta, inputs, label):
        from torch.func import vjp, vmap

        del label

        def log_probs(p, dl):
            return torch.log_softmax(self.logits_of(p, dl, inputs), dim=-1)

        logp, pullback = vjp(log_probs, params, delta)
        g, g_delta = vmap(pullback)(self.eye)  # d log p(c|x) / dθ for every class c
        return g, g_delta, logp.exp()

    def targets(self, batch: data_mod.Batch, index: int) -> torch.Tensor:
        """The batch's labels; for the true Fisher, drawn from one forward pass's predictions."""
        if self.labels != "true":
            return batch.labels
        from .batches import drawn_labels

        with torch.no_grad():
            logits = self.model(**batch.inputs).logits
        return drawn_labels(self.kind, logits, batch.labels, index)

    def add_chunk(self, batch: data_mod.Batch, targets: torch.Tensor, start: int) -> None:
        """Add the squared gradients of the batch's examples ``start:start+examples_per_call``."""
        stop = start + self.examples_per_call
        inputs = _trim({k: v[start:stop] for k, v in batch.inputs.items()})
        attn = inputs.pop("attention_mask")
        inputs["attention_mask"] = _vmap_mask(self.model, self.mask_form, attn, self.dtype,
                                              self.very_negative)
        ids = inputs["input_ids"]
        delta = torch.zeros(*ids.shape[:1], 1, ids.shape[1], self.width, dtype=self.dtype,
                            device=self.device)
        chunk_targets = self.kind.chunk_labels(targets[start:stop], ids.shape[1])
        grads, g_delta, weights = self.per_example(self.diff, delta, inputs, chunk_targets)
        valid = attn.bool()
        if self.pad_row is not None:
            valid &= ids != self.pad_row
        self.accumulate(grads, g_delta, weights, ids, valid)

    def accumulate(self, grads, g_delta, weights, ids, valid) -> None:
        # grads[k]: [examples, classes, *shape]; weights: [examples, classes]
        w = weights.tolist()
        for k, g in grads.items():
            target = self.fisher[k]
            for e, row in enumerate(w):
                for c, weight in enumerate(row):
                    target.addcmul_(g[e, c], g[e, c], value=weight)
        if not self.sparse:
            return
        # word embeddings: g_delta [examples, classes, 1, tokens, width]
        examples, vocab = ids.shape[0], self.vocab
        keys = (torch.arange(examples, device=self.device)[:, None] * vocab + ids)[valid]
        per_token = g_delta[:, :, 0].transpose(1, 2)[valid]  # [K, classes, width]
        rows, where = torch.unique(keys, return_inverse=True)
        summed = torch.zeros(rows.numel(), *per_token.shape[1:], dtype=per_token.dtype,
                             device=self.device)
        summed.index_add_(0, where, per_token)
        squares = (summed.square_() * weights[rows // vocab][:, :, None]).sum(1)
        self.emb_fisher.index_add_(0, rows % vocab, squares.to(self.emb_fisher.dtype))

    def result(self, n: int) -> dict[str, torch.Tensor]:
        """The mean over the ``n`` examples, keyed as the merge names the tensors: body
        parameters as in ``model.base_model.state_dict()``, a causal LM's (untied) output
        projection by its own name (``lm_head.weight``)."""
        if self.sparse:
            self.fisher[self.emb_name] = self.emb_fisher
        out = {}
        for name, value in self.fisher.items():
            key = name[len(self.prefix):] if name.startswith(self.prefix) else name
            out[key] = value / n
        order = [k for k, _ in self.model.base_model.named_parameters()]
        return {k: out[k] for k in order + [k for k in out if k not in order]}


def full_fisher(
    model: nn.Module,
    tokenizer,
    samples: data_mod.Samples,
    *,
    labels: str = "empirical",
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    device=None,
    progress: bool = False,
    kind="label",
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of every body parameter, keyed as in ``model.base_model.state_dict()``
    (a causal LM's, ``kind="text"``: every parameter, :func:`full_fisher_batches`).

    Mean over samples of the squared per-example gradient of ``log p(y|x)``:
    ``labels="empirical"`` uses the samples' labels; ``"expected"`` the exact
    expectation over the model's predictive distribution (Matena & Raffel).
    Samples are padded in batches of ``batch_size`` (sorted by length) and
    differentiated ``chunk_size`` at a time with ``torch.func.vmap``
    (``None``: :func:`default_chunk_size` of the device).
    """
    batches, device = model_batches(
        model, tokenizer, samples, batch_size=batch_size, max_length=max_length,
        sort_by_length=True, device=device, kind=kind,
    )
    if chunk_size is None:
        chunk_size = default_chunk_size(device)
    return full_fisher_batches(model, batches, labels=labels, chunk_size=chunk_size,
                               progress=progress, kind=kind)
