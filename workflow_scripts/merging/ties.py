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
magnitude reaches the keep-th largest (ties at the threshold are all kept).  The
authors' ``topk_values_mask`` compares with the (d - keep)-th smallest
magnitude instead, which keeps one entry more.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import MergeError
from . import registry
from .taskvectors import lam, need_base, option, rebase, task_vectors


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
        out = {}
        for name in names:
            out[name] = [threshold(t.abs().flatten(), k) for t in vectors(name)]
        return out
    if scope != "global":
        raise MergeError(f"--ties-scope must be one of {registry.TIES_SCOPES}, got {scope!r}")
    per_model = []
    for j in range(models):  # one model's magnitudes at a time (one body in float64)
        flat = torch.cat([vectors(name)[j].abs().flatten() for name in names])
        per_model.append(threshold(flat, k))
        del flat
    return {name: per_model for name in names}


def disjoint_mean(trimmed: list[torch.Tensor]) -> torch.Tensor:
    """Sign election and the mean of the agreeing, non-zero entries."""
    stacked = torch.stack(trimmed)
    sign = torch.sign(stacked.sum(dim=0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    count = agree.sum(dim=0)
    total = torch.where(agree, stacked, torch.zeros_like(stacked)).sum(dim=0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def ties_combine(inputs, vectors: Callable[[str], list[torch.Tensor]], k: float, scope: str,
                 scale: float) -> dict[str, torch.Tensor]:
    """TIES over the task vectors ``vectors(name)`` (recomputed per pass, deterministic)."""
    if not 0 < k <= 100:
        raise MergeError(f"--ties-k must be in (0, 100], got {k}")
    names = list(inputs.shapes)
    limits = trim_thresholds(names, vectors, len(inputs.bodies), k, scope)
    out = {}
    for name in names:
        trimmed = [torch.where(t.abs() >= limit, t, torch.zeros_like(t))
                   for t, limit in zip(vectors(name), limits[name])]
        out[name] = rebase(inputs, name, disjoint_mean(trimmed), scale)
    return out


def merged(inputs) -> dict[str, torch.Tensor]:
    need_base(inputs, "ties")
    d = registry.DEFAULTS
    return ties_combine(
        inputs, lambda name: task_vectors(inputs, name),
        k=float(option(inputs, "ties_k", d["ties_k"])),
        scope=option(inputs, "ties_scope", d["ties_scope"]),
        scale=lam(inputs, registry.METHODS["ties"].default_lambda),
    )
