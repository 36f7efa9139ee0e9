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
magnitudes are ranked in float32).  The
authors' ``topk_values_mask`` compares with the (d - keep)-th smallest
magnitude instead, which keeps one entry more.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .taskvectors import option, rebase, task_vectors


def threshold(magnitudes: torch.Tensor, k: float) -> float:
    """The smallest magnitude that the top-k % of ``magnitudes`` (1-D) keeps (inf: none)."""
    d = magnitudes.numel()
    keep = int(d * k / 100.0)
    if keep <= 0:
        return float("inf")
    if keep >= d:
        return 0.0
    return float(magnitudes.kthvalue(d - keep + 1).values)


def trim_thresholds(names, vectors: Callable[[str], list[torch.Tensor]], models: int, k: float,
                    scope: str) -> dict[str, list[float]]:
    """Per parameter, per model: the magnitude a trimmed entry must reach."""
    if scope == "tensor":
        return {name: [threshold(t.abs().flatten().to(torch.float32), k) for t in vectors(name)]
                for name in names}
    # one pass over the parameters; the magnitudes of every model's whole task vector in float32
    # (ranking them in float64 would double the memory for the same order up to rounding)
    magnitudes: list[list[torch.Tensor]] = [[] for _ in range(models)]
    for name in names:
        for j, t in enumerate(vectors(name)):
            magnitudes[j].append(t.abs().flatten().to(torch.float32))
    per_model = []
    for j in range(models):
        flat = torch.cat(magnitudes[j])
        magnitudes[j] = []
        per_model.append(threshold(flat, k))
        del flat
    return {name: per_model for name in names}


def disjoint_mean(trimmed: list[torch.Tensor]) -> torch.Tensor:
    """Sign election and the mean of the agreeing, non-zero entries."""
    stacked = torch.stack(trimmed)
    sign = torch.sign(stacked.sum(dim=0))
    agree = stacked * sign > 0  # same sign as the elected one, and not zero
    count = agree.sum(dim=0)
    total = (stacked * agree).sum(dim=0)
    return total / count.clamp_min(1)  # no agreeing entry: total is 0


def ties_combine(inputs, vectors: Callable[[str], list[torch.Tensor]], k: float, scope: str,
                 scale: float) -> dict[str, torch.Tensor]:
    """TIES over the task vectors ``vectors(name)`` (recomputed per pass, deterministic)."""
    names = list(inputs.shapes)
    limits = trim_thresholds(names, vectors, len(inputs.bodies), k, scope)
    out = {}
    for name in names:
        trimmed = [torch.where(t.abs().to(torch.float32) >= limit, t, torch.zeros_like(t))
                   for t, limit in zip(vectors(name), limits[name])]
        out[name] = rebase(inputs, name, disjoint_mean(trimmed), scale)
    return out


def merged(inputs) -> dict[str, torch.Tensor]:
    return ties_combine(inputs, lambda name: task_vectors(inputs, name),
                        k=option(inputs, "ties_k"), scope=option(inputs, "ties_scope"),
                        scale=option(inputs, "lam"))
