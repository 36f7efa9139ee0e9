"""``ties`` (Yadav et al. 2023, "TIES-Merging: resolving interference when merging models"):

1. trim: keep each task vector's top-k % entries by magnitude (``--ties-k``,
   default 20), set the rest to 0.  ``--ties-scope global`` (default, as the
   paper and its code: one threshold over the task vector's whole body) or
   ``tensor`` (one threshold per parameter tensor);
2. elect: gamma = sign(sum_j trimmed tau_j), per entry;
3. disjoint mean: the mean of the trimmed tau_j whose sign agrees with gamma
   (zeros never count; an entry without agreeing values gets 0);
4. theta* = theta_base + lambda * that mean (``--lambda``, default 1.0).

Trimming keeps int(d * k / 100) of a task vector's d entries: every entry whose
magnitude reaches the keep-th largest (ties at the threshold are all kept;
magnitudes are ranked in float32), found exactly whether the task vector is read whole
or in row blocks (:func:`kth_smallest`: two passes over the blocks).  The
authors' ``topk_values_mask`` compares with the (d - keep)-th smallest
magnitude instead, which keeps one entry more.
"""

from __future__ import annotations

import torch

from .taskvectors import VectorFn, option, rebase, task_vector


def threshold(magnitudes: torch.Tensor, k: float) -> float:
    """The smallest magnitude that the top-k % of ``magnitudes`` (1-D) keeps (inf: none)."""
    d = magnitudes.numel()
    keep = int(d * k / 100.0)
    if keep <= 0:
        return float("inf")
    if keep >= d:
        return 0.0
    return float(magnitudes.kthvalue(d - keep + 1).values)


def kth_smallest(chunks, rank: int) -> float:
    """The ``rank``-th smallest (1-based) of the non-negative float32 values of ``chunks()``
    (a fresh iterator of 1-D tensors each call), exactly, in two passes of 2^16-bin
    histograms over the values' bit patterns (ordered like the values for non-negative
    floats): memory does not grow with the number of values."""
    high_bits = torch.zeros(1 << 16, dtype=torch.int64)
    for chunk in chunks():
        bits = chunk.contiguous().view(torch.int32).to(torch.int64)
        high_bits += torch.bincount(bits >> 16, minlength=1 << 16)
    below = high_bits.cumsum(0)
    high = int(torch.searchsorted(below, rank))
    rank -= int(below[high - 1]) if high else 0
    low_bits = torch.zeros(1 << 16, dtype=torch.int64)
    for chunk in chunks():
        bits = chunk.contiguous().view(torch.int32).to(torch.int64)
        low_bits += torch.bincount(bits[(bits >> 16) == high] & 0xFFFF, minlength=1 << 16)
    low = int(torch.searchsorted(low_bits.cumsum(0), rank))
    return float(torch.tensor([(high << 16) | low], dtype=torch.int32).view(torch.float32))


def limit_of(d: int, k: float, chunks) -> float:
    """The smallest magnitude the top-k % of ``d`` magnitudes keeps (inf: none), the
    magnitudes given by ``chunks()`` (a fresh iterator of float32 1-D tensors each call)."""
    keep = int(d * k / 100.0)
    if keep <= 0:
        return float("inf")
    if keep >= d:
        return 0.0
    return kth_smallest(chunks, d - keep + 1)


def streamed_threshold(ctx, j: int, vector: VectorFn, k: float) -> float:
    """:func:`threshold` of model j's whole task vector (every parameter), read one
    parameter, or one block of its rows, at a time."""
    d = sum(torch.Size(s).numel() for s in ctx.shapes.values())

    def magnitudes():
        for name in ctx.shapes:
            for block in ctx.blocks(name):
                yield vector(block, j, name).abs().flatten().to(torch.float32)

    return limit_of(d, k, magnitudes)


def tensor_threshold(ctx, j: int, name: str, vector: VectorFn, k: float) -> float:
    """:func:`threshold` of model j's task vector of parameter ``name`` merged in row
    blocks: read block by block (two passes), once per model and parameter."""
    cached = ctx.state.get("ties_tensor_limits")
    if cached is None or cached[0] != name:
        cached = ctx.state["ties_tensor_limits"] = (name, {})
    if j not in cached[1]:
        def magnitudes():
            for block in ctx.blocks(name):
                yield vector(block, j, name).abs().flatten().to(torch.float32)

        cached[1][j] = limit_of(torch.Size(ctx.shapes[name]).numel(), k, magnitudes)
    return cached[1][j]


def prepare_thresholds(ctx, vector: VectorFn, k: float, scope: str) -> None:
    """Global scope: each model's trimming threshold over its whole task vector, one model
    at a time (``ctx.state["ties_limits"]``); tensor scope: per parameter, in :func:`trimmed`."""
    if scope == "global":
        ctx.state["ties_limits"] = [streamed_threshold(ctx, j, vector, k) for j in range(ctx.count)]


def trimmed(ctx, j: int, name: str, vector: VectorFn, k: float) -> torch.Tensor:
    """Model j's task vector of ``name`` (its rows ``ctx.rows``) with the entries below its
    threshold set to 0."""
    tau = vector(ctx, j, name)
    magnitude = tau.abs().to(torch.float32)
    limits = ctx.state.get("ties_limits")
    if limits is not None:
        limit = limits[j]
    elif ctx.rows is None:
        limit = threshold(magnitude.flatten(), k)
    else:
        limit = tensor_threshold(ctx, j, name, vector, k)
    return torch.where(magnitude >= limit, tau, torch.zeros_like(tau))


def disjoint_mean(ctx, name: str, vector: VectorFn, k: float) -> torch.Tensor:
    """Sign election over the trimmed task vectors, then the mean of the agreeing, non-zero
    entries; two passes over the models, one model at a time."""
    total = None
    for j in range(ctx.count):  # no reference kept to a model's vector once it is added
        if total is None:
            total = trimmed(ctx, j, name, vector, k)
        else:
            total.add_(trimmed(ctx, j, name, vector, k))
    sign = torch.sign(total)
    del total
    agreeing, count = torch.zeros_like(sign), torch.zeros(sign.shape, dtype=torch.int64)
    for j in range(ctx.count):
        t = trimmed(ctx, j, name, vector, k)
        agree = t * sign > 0  # same sign as the elected one, and not zero
        agreeing.add_(t * agree)
        count.add_(agree)
        del t, agree
    return agreeing / count.clamp_min(1)  # no agreeing entry: the total is 0


def prepare(ctx) -> None:
    prepare_thresholds(ctx, task_vector, option(ctx, "ties_k"), option(ctx, "ties_scope"))


def tensor(ctx, name: str) -> torch.Tensor:
    mean = disjoint_mean(ctx, name, task_vector, option(ctx, "ties_k"))
    return rebase(ctx, name, mean, option(ctx, "lam"))
