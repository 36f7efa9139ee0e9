"""Fisher information of a fine-tuned classifier: mask nodes or the full diagonal.

Two methods, one command (``python -m workflow_scripts fisher``):

``--method mask`` (the paper's method)
    Multiplicative masks of ones sit on every attention head's output (before
    the attention output projection, Eq. 1) and on every FFN neuron; the Fisher
    of a mask is the mean squared gradient of the loss with respect to it.
    The masks are installed with hooks (:func:`mask_hooks`); transformers 5 has
    no ``head_mask`` argument.  The neuron mask acts after the activation (the
    released code, ``post-activation``, default) or inside it as Eq. 2 is typeset
    (``pre-activation``: ``GELU(m * W1 x + b1)``).

    Estimators: ``per-example`` (Eq. 4, default) is the mean over samples of each
    example's squared gradient, exact and batched: the masks get a batch
    dimension, the per-example losses are summed, and one backward pass yields
    every example's own gradient (examples do not interact); the model's weights
    are frozen so no weight gradient is computed.  ``per-batch`` is the released
    code's definition: the sum over consecutive batches (file order) of the
    squared gradient of the batch-mean loss.

``--method full`` (Matena & Raffel's baseline)
    The diagonal Fisher of every parameter of the shared body (the task head
    excluded): the mean over samples of the squared per-example gradient, with
    the dataset labels (``empirical``) or the exact expectation over the
    model's predicted classes (``expected``: sum_c p(c|x) (d log p(c|x)/dθ)^2).
    Per-example gradients are vectorised with ``torch.func`` (``functional_call``
    + ``vmap(grad)``), ``chunk_size`` examples at a time, each example carrying
    its own attention mask so that padding never changes its gradient.

Public API: :func:`mask_hooks`, :func:`frozen_parameters`, :func:`mask_fisher`,
:func:`full_fisher`, :func:`compute_fisher` (timing, FLOPs and metadata, used by
the command), :func:`register` / :func:`run` (the command).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import time
from dataclasses import asdict
from typing import Iterable, Sequence

# Large CPU tensors (activations, per-example gradients) on transparent huge
# pages.  PyTorch reads this once, at its first allocation; without it every
# fresh multi-megabyte tensor page-faults in 4 KiB pages, which made fresh
# allocations 2-5x slower on the development machine.  Set it to 0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from . import architectures as arch  # noqa: E402
from . import data as data_mod  # noqa: E402

log = logging.getLogger(__name__)

METHODS = ("mask", "full")
ESTIMATORS = ("per-example", "per-batch")
NEURON_MASKS = ("post-activation", "pre-activation")
LABEL_MODES = ("empirical", "expected")

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 128
# Per-example gradients in flight per vmap call of the full Fisher (examples,
# or examples x classes for the expected Fisher).  Each holds one copy of the
# body's gradient (|θ| floats: 0.35 GB for BERT-base in float32).  On the
# 2-core development CPU 2 was fastest for BERT-base (1, 4 and 8 were 5-30%
# slower); the GPU value is a guess that keeps BERT-large under 8 GB.
DEFAULT_CHUNK_SIZE = {"cpu": 2, "cuda": 8}


def tune_cpu_allocator() -> bool:
    """Let glibc keep freed memory for reuse instead of unmapping it (CPU runs).

    A backward pass keeps every activation alive, so each batch allocates
    hundreds of fresh megabyte-sized tensors; glibc serves any above 32 MB
    with a new ``mmap`` whose every page faults (and is zeroed) on first touch.
    With mmap off and trimming deferred the heap is reused instead: on the
    2-core development CPU this cut the mask Fisher of BERT-base from 2.9x to
    2.4x a forward pass.  The price: the process keeps its peak memory until it
    exits, so this is for a process that computes a Fisher and ends (the
    ``fisher`` command, the benchmark), not for library use.  Returns whether
    it applied (glibc only).
    """
    import ctypes
    import ctypes.util

    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    ok = mallopt(m_mmap_max, 0) == 1
    ok &= mallopt(m_trim_threshold, 2**31 - 1) == 1
    ok &= mallopt(m_top_pad, 64 << 20) == 1
    return bool(ok)


def default_chunk_size(device) -> int:
    return DEFAULT_CHUNK_SIZE.get(torch.device(device).type, DEFAULT_CHUNK_SIZE["cpu"])


# --------------------------------------------------------------------------- #
# Mask hooks
# --------------------------------------------------------------------------- #


def _check_mask(mask: torch.Tensor, layers: int, width: int, what: str) -> None:
    if mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != (layers, width):
        raise ValueError(
            f"{what} mask must have shape [layers, {width}] or [batch, layers, {width}] "
            f"with layers={layers}; got {tuple(mask.shape)}"
        )


def _per_token(mask_l: torch.Tensor, x: torch.Tensor, trailing: int) -> torch.Tensor:
    """Broadcast one layer's mask ([width] or [batch, width]) against ``x``.

    ``trailing`` singleton dimensions follow the width (1 for heads: head_dim).
    """
    if mask_l.dim() == 1:
        return mask_l.view(*mask_l.shape, *([1] * trailing))
    # [batch, width] -> [batch, 1 (tokens...), width, 1...]
    middle = x.dim() - 1 - 1 - trailing  # dims of x between batch and width
    return mask_l.view(mask_l.shape[0], *([1] * middle), mask_l.shape[1], *([1] * trailing))


class _UnitMask(torch.autograd.Function):
    """``y = m * (x - c) + c`` where ``m`` is known to be all ones (so ``y == x``).

    The forward pass costs nothing and the backward pass passes the gradient
    of ``x`` through untouched; only the mask's own gradient,
    ``sum (dL/dy) * (x - c)`` over the dimensions ``m`` is broadcast along, is
    computed.  At ``m == 1`` the gradient with respect to ``c`` is zero.
    """

    @staticmethod
    def forward(ctx, x, m, center):
        ctx.save_for_backward(x, center)
        ctx.mask_shape = m.shape
        return x.view_as(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, center = ctx.saved_tensors
        grad_m = None
        if ctx.needs_input_grad[1]:
            value = x if center is None else x - center
            grad_m = (grad * value).sum_to_size(ctx.mask_shape)
        return grad if ctx.needs_input_grad[0] else None, grad_m, None


def _apply(x: torch.Tensor, m: torch.Tensor, ones: bool, center: torch.Tensor | None = None):
    """``m * (x - c) + c`` (``m`` already broadcastable against ``x``)."""
    if ones:
        return _UnitMask.apply(x, m, center)
    if center is None:
        return x * m
    return m * (x - center) + center


def _all_ones(mask: torch.Tensor) -> bool:
    with torch.no_grad():
        return bool((mask == 1).all())


@contextlib.contextmanager
def mask_hooks(
    model: nn.Module,
    head_mask: torch.Tensor | None = None,
    neuron_mask: torch.Tensor | None = None,
    *,
    neuron_position: str = "post-activation",
):
    """Install multiplicative head and neuron masks on ``model`` while inside.

    ``head_mask``: ``[layers, heads]`` (shared by every example) or
    ``[batch, layers, heads]`` (one mask per example); it scales each head's
    attention output before the attention output projection, through a
    forward pre-hook on that projection (its input reshaped to
    ``[batch, tokens, heads, head_dim]``).

    ``neuron_mask``: ``[layers, intermediate]`` or ``[batch, layers, intermediate]``.
    ``neuron_position="post-activation"`` scales the input of the FFN output
    projection (released code); ``"pre-activation"`` scales the FFN input
    projection's output before its bias, ``act(m * W1 x + b1)`` (Eq. 2),
    through a forward hook returning ``m * (out - b1) + b1``.

    Masks are used as given (usually ones with ``requires_grad=True``); the
    gradient of a loss with respect to them is the mask gradient.  A mask of
    exactly ones (checked on entry; do not change the values inside) takes a
    fast path with the same gradients: no multiplication in the forward pass
    and none on the activations' gradients in the backward pass.
    """
    if neuron_position not in NEURON_MASKS:
        raise ValueError(f"neuron_position must be one of {NEURON_MASKS}, not {neuron_position!r}")
    d = arch.dims(model)
    handles = []
    try:
        if head_mask is not None:
            _check_mask(head_mask, d.layers, d.heads, "head")
            heads, head_ones = d.heads, _all_ones(head_mask)
            for l, proj in enumerate(arch.head_out_projections(model)):

                def pre_hook(module, args, l=l):
                    x = args[0]
                    m = head_mask[l] if head_mask.dim() == 2 else head_mask[:, l]
                    split = x.view(*x.shape[:-1], heads, x.shape[-1] // heads)
                    scaled = _apply(split, _per_token(m, split, 1), head_ones).view(x.shape)
                    return (scaled, *args[1:])

                handles.append(proj.register_forward_pre_hook(pre_hook))
        if neuron_mask is not None:
            _check_mask(neuron_mask, d.layers, d.intermediate, "neuron")
            neuron_ones = _all_ones(neuron_mask)
            if neuron_position == "post-activation":
                for l, proj in enumerate(arch.ffn_outputs(model)):

                    def post_act_hook(module, args, l=l):
                        x = args[0]
                        m = neuron_mask[l] if neuron_mask.dim() == 2 else neuron_mask[:, l]
                        return (_apply(x, _per_token(m, x, 0), neuron_ones), *args[1:])

                    handles.append(proj.register_forward_pre_hook(post_act_hook))
            else:
                for l, proj in enumerate(arch.ffn_inputs(model)):

                    def pre_act_hook(module, args, out, l=l):
                        m = neuron_mask[l] if neuron_mask.dim() == 2 else neuron_mask[:, l]
                        return _apply(out, _per_token(m, out, 0), neuron_ones, module.bias)

                    handles.append(proj.register_forward_hook(pre_act_hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def frozen_parameters(model: nn.Module):
    """Set ``requires_grad=False`` on every parameter while inside; restore after."""
    params = list(model.parameters())
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def attn_implementation(model: nn.Module, name: str | None):
    """Temporarily switch the model's attention implementation (e.g. ``"eager"``)."""
    current = getattr(model.config, "_attn_implementation", None)
    if name is None or name == current:
        yield
        return
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(current)


# --------------------------------------------------------------------------- #
# Batching
# --------------------------------------------------------------------------- #


def _resolve_device(model: nn.Module, device) -> torch.device:
    if device is None:
        return next(model.parameters()).device
    return torch.device(device)


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


def _progress(items, desc: str, progress: bool):
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="batch", leave=False)


def _acc_dtype(model: nn.Module) -> torch.dtype:
    dtype = next(model.parameters()).dtype
    return torch.promote_types(dtype, torch.float32)


# --------------------------------------------------------------------------- #
# Mask Fisher
# --------------------------------------------------------------------------- #


def _mask_fisher_batches(
    model: nn.Module,
    batches: Sequence[data_mod.Batch],
    *,
    estimator: str,
    neuron_mask: str,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, not {estimator!r}")
    d = arch.dims(model)
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    acc = _acc_dtype(model)
    head = torch.zeros(d.layers, d.heads, dtype=acc, device=device)
    neuron = torch.zeros(d.layers, d.intermediate, dtype=acc, device=device)
    n = sum(len(b.rows) for b in batches)
    with _eval_mode(model), frozen_parameters(model), torch.enable_grad():
        if estimator == "per-batch":
            hm = torch.ones(d.layers, d.heads, dtype=dtype, device=device, requires_grad=True)
            nm = torch.ones(d.layers, d.intermediate, dtype=dtype, device=device, requires_grad=True)
        for batch in _progress(batches, f"mask fisher ({estimator})", progress):
            if estimator == "per-example":
                b = len(batch.rows)
                hm = torch.ones(b, d.layers, d.heads, dtype=dtype, device=device, requires_grad=True)
                nm = torch.ones(b, d.layers, d.intermediate, dtype=dtype, device=device, requires_grad=True)
            with mask_hooks(model, hm, nm, neuron_position=neuron_mask):
                logits = model(**batch.inputs).logits
            reduction = "sum" if estimator == "per-example" else "mean"
            loss = F.cross_entropy(logits, batch.labels, reduction=reduction)
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
) -> dict[str, torch.Tensor]:
    """Mask-node Fisher: ``{"head": [layers, heads], "neuron": [layers, intermediate]}``.

    ``estimator="per-example"``: mean over samples of the squared per-example
    gradient (Eq. 4), batched (batches sorted by length: the result does not
    depend on the grouping).  ``"per-batch"``: sum over consecutive batches of
    ``batch_size`` samples in file order of the squared gradient of the
    batch-mean loss (released code).  The losses use the samples' labels.
    """
    data_mod.check_labels(samples, int(model.config.num_labels))
    batches = prepare_batches(
        tokenizer, samples, batch_size=batch_size, max_length=max_length,
        sort_by_length=estimator == "per-example", device=_resolve_device(model, device),
    )
    return _mask_fisher_batches(
        model, batches, estimator=estimator, neuron_mask=neuron_mask, progress=progress
    )


# --------------------------------------------------------------------------- #
# Full diagonal Fisher
# --------------------------------------------------------------------------- #


def _trim(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop trailing columns that are padding for every row."""
    mask = inputs["attention_mask"]
    cols = torch.nonzero(mask.any(0)).flatten()
    length = int(cols.max()) + 1 if cols.numel() else mask.shape[1]
    if length == mask.shape[1]:
        return inputs
    return {k: v[:, :length] for k, v in inputs.items()}


def _word_embedding_name(model: nn.Module) -> str:
    """Full-model name of the input word-embedding matrix."""
    weight = model.get_input_embeddings().weight
    for name, p in model.named_parameters():
        if p is weight:
            return name
    raise ValueError("the model's input embedding matrix is not among its parameters")


def _full_fisher_batches(
    model: nn.Module,
    batches: Sequence[data_mod.Batch],
    *,
    labels: str,
    chunk_size: int,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Full diagonal Fisher over prepared batches (see :func:`full_fisher`).

    Every body parameter but the word-embedding matrix is differentiated
    directly: ``vmap`` over the examples of a chunk of ``grad`` (or ``vjp`` for
    the expected Fisher) of a ``functional_call`` that runs one example with a
    batch dimension of 1.  The word-embedding matrix (a quarter of BERT-base's
    body, of which an example touches a hundred rows) is handled sparsely: a
    zero offset added to the embedding lookup's output is differentiated
    instead, and each example's gradient of row ``v`` is the sum of that
    offset's gradient over the example's tokens equal to ``v`` (the padding
    row gets none, as ``nn.Embedding(padding_idx=...)`` does).  The squares go
    into float accumulators in place, example by example.
    """
    from torch.func import functional_call, grad, vjp, vmap

    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, not {labels!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk size must be positive, not {chunk_size}")
    prefix = arch.body_prefix(model)
    arch.body(model)  # unsupported architectures fail here
    embedding = model.get_input_embeddings()
    emb_name = _word_embedding_name(model)
    if not emb_name.startswith(prefix):
        raise ValueError(f"word embeddings {emb_name!r} lie outside the body {prefix!r}")
    named = dict(model.named_parameters())
    diff = {k: p.detach() for k, p in named.items() if k.startswith(prefix) and k != emb_name}
    fixed = {k: p.detach() for k, p in named.items() if k not in diff}
    fixed.update(dict(model.named_buffers()))
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    acc = _acc_dtype(model)
    fisher = {k: torch.zeros(p.shape, dtype=acc, device=device) for k, p in diff.items()}
    emb_fisher = torch.zeros(named[emb_name].shape, dtype=acc, device=device)
    vocab, width = emb_fisher.shape
    pad_row = embedding.padding_idx
    num_labels = int(model.config.num_labels)
    very_negative = torch.finfo(dtype).min
    expected = labels == "expected"
    # examples per vmap call: chunk_size per-example gradients in flight
    examples_per_call = max(1, chunk_size // num_labels) if expected else chunk_size
    offset = {}

    def add_offset(module, args, out):
        return out + offset["delta"]

    def logits_of(params, delta, inputs):
        # One example with a batch dimension of 1; its own additive attention
        # mask is already 4-D, so no mask preparation (data-dependent control
        # flow) runs under vmap, and padding only ever meets a masked key.
        offset["delta"] = delta
        kwargs = {k: v.unsqueeze(0) for k, v in inputs.items()}
        return functional_call(model, {**params, **fixed}, (), kwargs).logits[0]

    def empirical_grads(params, delta, inputs, label):
        def loss(p, dl):
            return F.cross_entropy(logits_of(p, dl, inputs).unsqueeze(0), label.unsqueeze(0))

        g, g_delta = grad(loss, argnums=(0, 1))(params, delta)
        one = torch.ones(1, dtype=dtype, device=device)
        # a class dimension of 1 with weight 1, as the expected form has C
        return {k: v.unsqueeze(0) for k, v in g.items()}, g_delta.unsqueeze(0), one

    eye = torch.eye(num_labels, dtype=dtype, device=device)

    def expected_grads(params, delta, inputs, label):
        del label

        def log_probs(p, dl):
            return torch.log_softmax(logits_of(p, dl, inputs), dim=-1)

        logp, pullback = vjp(log_probs, params, delta)
        g, g_delta = vmap(pullback)(eye)  # d log p(c|x) / dθ for every class c
        return g, g_delta, logp.exp()

    per_example = vmap(expected_grads if expected else empirical_grads, in_dims=(None, 0, 0, 0))

    def accumulate(grads, g_delta, weights, ids, valid):
        # grads[k]: [examples, classes, *shape]; weights: [examples, classes]
        w = weights.tolist()
        for k, g in grads.items():
            target = fisher[k]
            for e, row in enumerate(w):
                for c, weight in enumerate(row):
                    target.addcmul_(g[e, c], g[e, c], value=weight)
        # word embeddings: g_delta [examples, classes, 1, tokens, width]
        examples = ids.shape[0]
        keys = (torch.arange(examples, device=device)[:, None] * vocab + ids)[valid]
        per_token = g_delta[:, :, 0].transpose(1, 2)[valid]  # [K, classes, width]
        rows, where = torch.unique(keys, return_inverse=True)
        summed = torch.zeros(rows.numel(), *per_token.shape[1:], dtype=per_token.dtype, device=device)
        summed.index_add_(0, where, per_token)
        squares = (summed.square_() * weights[rows // vocab][:, :, None]).sum(1)
        emb_fisher.index_add_(0, rows % vocab, squares.to(acc))

    offset_handle = embedding.register_forward_hook(add_offset)
    n = 0
    try:
        with _eval_mode(model), attn_implementation(model, "eager"), torch.enable_grad():
            for batch in _progress(batches, f"full fisher ({labels})", progress):
                rows = len(batch.rows)
                n += rows
                for start in range(0, rows, examples_per_call):
                    stop = start + examples_per_call
                    inputs = _trim({k: v[start:stop] for k, v in batch.inputs.items()})
                    attn = inputs.pop("attention_mask")
                    additive = (1.0 - attn.to(dtype)) * very_negative
                    inputs["attention_mask"] = additive[:, None, None, :]  # [chunk, 1, 1, tokens]
                    ids = inputs["input_ids"]
                    delta = torch.zeros(*ids.shape[:1], 1, ids.shape[1], width, dtype=dtype, device=device)
                    grads, g_delta, weights = per_example(diff, delta, inputs, batch.labels[start:stop])
                    valid = attn.bool()
                    if pad_row is not None:
                        valid &= ids != pad_row
                    accumulate(grads, g_delta, weights, ids, valid)
                    del grads, g_delta
    finally:
        offset_handle.remove()
        offset.clear()
    fisher[emb_name] = emb_fisher
    body_names = [k for k, _ in model.base_model.named_parameters()]
    return {k: fisher[prefix + k] / n for k in body_names}


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
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of every body parameter, keyed as in ``model.base_model.state_dict()``.

    Mean over samples of the squared per-example gradient of ``log p(y|x)``:
    ``labels="empirical"`` uses the samples' labels; ``"expected"`` the exact
    expectation over the model's predictive distribution (Matena & Raffel).
    Samples are padded in batches of ``batch_size`` (sorted by length) and
    differentiated ``chunk_size`` at a time with ``torch.func.vmap``
    (``None``: :func:`default_chunk_size` of the device).
    """
    data_mod.check_labels(samples, int(model.config.num_labels))
    device = _resolve_device(model, device)
    if chunk_size is None:
        chunk_size = default_chunk_size(device)
    batches = prepare_batches(
        tokenizer, samples, batch_size=batch_size, max_length=max_length,
        sort_by_length=True, device=device,
    )
    return _full_fisher_batches(model, batches, labels=labels, chunk_size=chunk_size, progress=progress)


# --------------------------------------------------------------------------- #
# Timing, FLOPs, metadata
# --------------------------------------------------------------------------- #


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def compute_fisher(
    model: nn.Module,
    tokenizer,
    samples: data_mod.Samples,
    *,
    method: str,
    estimator: str = "per-example",
    neuron_mask: str = "post-activation",
    labels: str = "empirical",
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    device=None,
    count_flops: bool = True,
    info=None,
    task: str | None = None,
    n: int | None = None,
    seed: int | None = None,
    context: dict | None = None,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Compute a Fisher and the metadata of its artifact: ``(tensors, metadata)``.

    ``seconds`` times the Fisher computation alone (tokenisation and padding
    happen before, model loading is the caller's); ``flops`` are counted with
    ``FlopCounterMode`` in a second, untimed pass (``None`` if not counted).
    ``info`` is the ``ModelInfo`` of :func:`models.load_model` (source,
    fingerprint, revision).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    device = _resolve_device(model, device)
    data_mod.check_labels(samples, int(model.config.num_labels))
    if method == "full" and chunk_size is None:
        chunk_size = default_chunk_size(device)
    batches = prepare_batches(
        tokenizer, samples, batch_size=batch_size, max_length=max_length,
        sort_by_length=not (method == "mask" and estimator == "per-batch"), device=device,
    )

    def compute(show: bool):
        if method == "mask":
            return _mask_fisher_batches(
                model, batches, estimator=estimator, neuron_mask=neuron_mask, progress=show
            )
        return _full_fisher_batches(model, batches, labels=labels, chunk_size=chunk_size, progress=show)

    _sync(device)
    start = time.perf_counter()
    tensors = compute(progress)
    _sync(device)
    seconds = time.perf_counter() - start

    flops = None
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            compute(False)
        flops = int(counter.get_total_flops())

    import transformers

    d = arch.dims(model)
    metadata = {
        "model": getattr(info, "source", None),
        "fingerprint": getattr(info, "fingerprint", None),
        "revision": getattr(info, "revision", None),
        "model_type": model.config.model_type,
        "num_labels": int(model.config.num_labels),
        "label_map": getattr(info, "label_map", None),
        "task": task,
        "n": n,
        "num_samples": len(samples),
        "seed": seed,
        "method": method,
        "estimator": estimator if method == "mask" else "per-example",
        "labels": labels if method == "full" else "empirical",
        "neuron_mask": neuron_mask if method == "mask" else None,
        "max_length": max_length,
        "batch_size": batch_size,
        "chunk_size": chunk_size if method == "full" else None,
        "attn_implementation": "eager" if method == "full" else model.config._attn_implementation,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "seconds": seconds,
        "flops": flops,
        "device": str(device),
        "device_name": device_name(device),
        "torch_num_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dims": asdict(d),
        "context": dict(context or {}),
    }
    return tensors, metadata


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def _meta_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--meta expects KEY=VALUE, got {text!r}")
    return key, value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fisher",
        help="compute a mask-node or full diagonal Fisher artifact",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--revision", default=None, help="hub revision (commit, tag or branch)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights")
    p.add_argument("--label-map", default=None,
                   help="data-set label i is model output MAP[i], e.g. 2,0,1")
    p.add_argument("--data", required=True, help="samples Parquet file (idx, text_a, text_b, label)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--estimator", default="per-example", choices=ESTIMATORS,
                   help="mask Fisher: per-example (Eq. 4, default) or per-batch (released code)")
    p.add_argument("--neuron-mask", default="post-activation", choices=NEURON_MASKS,
                   help="mask Fisher: where the FFN neuron mask acts (default post-activation)")
    p.add_argument("--labels", default="empirical", choices=LABEL_MODES,
                   help="full Fisher: dataset labels (empirical, default) or expectation over "
                        "the model's predictions (expected)")
    p.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--chunk-size", type=_positive, default=None,
                   help="full Fisher: per-example gradients per vectorised call, bounding memory "
                        f"(default {DEFAULT_CHUNK_SIZE['cpu']} on CPU, {DEFAULT_CHUNK_SIZE['cuda']} on CUDA)")
    p.add_argument("--max-length", type=_positive, default=DEFAULT_MAX_LENGTH)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--task", default=None)
    p.add_argument("--n", type=int, default=None, help="requested number of samples (metadata)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (metadata)")
    p.add_argument("--meta", type=_meta_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="extra context recorded in the metadata (repeatable)")
    p.add_argument("--no-count-flops", dest="count_flops", action="store_false",
                   help="skip the FLOP-counting pass (flops recorded as null)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(func=run)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from .cli import UserError

        raise UserError("--device cuda was asked for but no CUDA device is available")
    return name


def run(args) -> None:
    from .artifacts import save_fisher
    from .cli import UserError
    from .models import load_model, parse_label_map

    if args.method == "full" and args.estimator != "per-example":
        raise UserError("--estimator applies to --method mask only (the full Fisher is per-example)")
    device = resolve_device(args.device)
    if device == "cpu":
        tune_cpu_allocator()
    samples = data_mod.read_samples(args.data)
    if len(samples) == 0:
        raise UserError(f"samples file {args.data} has no rows")
    model, tokenizer, info = load_model(
        args.model, revision=args.revision, allow_pickle=args.allow_pickle,
        label_map=parse_label_map(args.label_map), device=device,
    )
    data_mod.check_labels(samples, info.num_labels, where=str(args.data))
    log.info("%s Fisher of %s on %d samples (%s)", args.method, args.model, len(samples), device)
    tensors, metadata = compute_fisher(
        model, tokenizer, samples,
        method=args.method, estimator=args.estimator, neuron_mask=args.neuron_mask,
        labels=args.labels, batch_size=args.batch_size, chunk_size=args.chunk_size,
        max_length=args.max_length, device=device, count_flops=args.count_flops, info=info,
        task=args.task, n=args.n, seed=args.seed, context=dict(args.meta), progress=args.progress,
    )
    save_fisher(tensors, metadata, args.out)
    log.info("wrote %s (%.2f s, %s FLOPs)", args.out, metadata["seconds"], metadata["flops"])
