"""Exact low-rank merges of LoRA adapters on one base, and truncated adapters for the rest.

With ``W_j = W0 + s_j B_j A_j`` and the same ``W0`` in every model:

- averaging and task arithmetic are ``W0 + sum_j c_j s_j B_j A_j`` (``c_j = 1/M``, ``lambda``);
- the mask Fisher merge ``sum_j w_j W_j / sum_j w_j`` is ``W0 + sum_j D_j s_j B_j A_j`` with
  ``D_j = w_j / sum_k w_k`` (``w`` floored; all-zero: ``1/M``), one value per row, column or
  a scalar under every scheme of :mod:`workflow_scripts.merging.schemes`: rows fold into
  ``B_j``, columns into ``A_j`` (:func:`.lowrank.fold`);
- RegMean ``sum_j W_j G_j (sum G)^-1`` is ``W0 + sum_j s_j B_j [A_j G_j (sum G)^-1]``
  whenever ``sum G`` is invertible; a singular sum falls back to the dense least-norm
  solution (:func:`workflow_scripts.merging.regmean.solve`), factored exactly, and logged.

The merged factor of a weight stacks the models' folded factors: rank ``sum_j r_j`` over
the adapters that adapt it.  Tensors trained in full (biases, ``modules_to_save``) are
merged as full tensors by the same rule for that tensor.  :func:`from_dense` turns any
other merge's dense deltas into a truncated-SVD adapter with its relative error per tensor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .. import architectures as arch
from ..errors import MergeError
from ..merging import mask as mask_merge
from ..merging import regmean
from . import dense as dense_mod
from . import lowrank
from .folder import Adapter, Base
from .lowrank import EMBEDDING, Factor, f64

log = logging.getLogger(__name__)


@dataclass
class Merged:
    """A merge as an adapter: factors (scale 1) by merge name, full tensors (float64),
    the ``modules_to_save`` entries of full tensors, and what was not exactly low-rank."""

    method: str
    factors: dict[str, Factor] = field(default_factory=dict)
    full: dict[str, torch.Tensor] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    dense: list[str] = field(default_factory=list)  # factored exactly after a dense fallback
    errors: dict[str, float] = field(default_factory=dict)  # truncated: relative error

    def delta(self, name: str, base: Base) -> torch.Tensor:
        """The merged tensor's delta from the base (float64)."""
        if name in self.full:
            return self.full[name] - f64(base.read(name))
        return self.factors[name].delta()


def _split(adapters: list[Adapter]) -> tuple[list[str], list[str]]:
    """(weights merged as factors, tensors merged in full: trained in full by any adapter)."""
    names = dense_mod.union(adapters)
    full = {n for a in adapters for n in a.full}
    return [n for n in names if n not in full], [n for n in names if n in full]


def _modules(adapters: list[Adapter]) -> dict[str, str]:
    out: dict[str, str] = {}
    for a in adapters:
        out.update(a.modules)
    return out


def _combine(adapters, base, coefficient, method: str) -> Merged:
    """``W0 + sum_j coefficient(j, name) delta_j`` of every tensor: folded into model j's
    factor of every factored weight; in full for every tensor trained in full."""
    dense_mod.coverage(adapters)
    factored, full = _split(adapters)
    merged = Merged(method, modules=_modules(adapters))
    for name in factored:
        parts = [lowrank.fold(a.factors[name], coefficient(j, name), name)
                 for j, a in enumerate(adapters) if name in a.factors]
        merged.factors[name] = lowrank.concat(parts, name)
    for name in full:
        out = f64(base.read(name))
        for j, a in enumerate(adapters):
            d = dense_mod.delta(a, base, name)
            if d is not None:
                out = out + coefficient(j, name) * d
        merged.full[name] = out
    return merged


def scalar(adapters: list[Adapter], base: Base, coefficients: list[float],
           method: str) -> Merged:
    """``W0 + sum_j c_j delta_j``: averaging (``c_j = 1/M``), task arithmetic (``lambda``)."""
    if len(coefficients) != len(adapters):
        raise MergeError(f"{len(adapters)} adapters but {len(coefficients)} coefficients")
    c = [torch.tensor(float(x), dtype=torch.float64) for x in coefficients]
    return _combine(adapters, base, lambda j, name: c[j], method)


def average(adapters: list[Adapter], base: Base) -> Merged:
    return scalar(adapters, base, [1.0 / len(adapters)] * len(adapters), "average")


def task_arithmetic(adapters: list[Adapter], base: Base, lam: float) -> Merged:
    return scalar(adapters, base, [lam] * len(adapters), "task-arithmetic")


def normalised(weights: list[torch.Tensor], floor: float = 0.0) -> list[torch.Tensor]:
    """``D_j = w_j / sum_k w_k`` (``w`` floored at ``floor``; where every ``w`` is 0,
    ``1/M``), as :func:`workflow_scripts.merging.core.weighted_mean` weighs."""
    ws = [f64(torch.as_tensor(w)) for w in weights]
    if floor:
        ws = [w.clamp_min(floor) for w in ws]
    den = sum(ws)
    zero = den == 0
    safe = torch.where(zero, torch.ones_like(den), den)
    return [torch.where(zero, torch.full_like(den, 1.0 / len(ws)), w / safe) for w in ws]


def mask_weights(adapters: list[Adapter], base: Base, dims: arch.Dims,
                 fishers: list[dict[str, torch.Tensor]], scheme: str) -> list[dict]:
    """Each model's mask-scheme weights of the tensors the adapters change
    (:func:`workflow_scripts.merging.mask.mask_weights`, after the cross-model zero rule)."""
    if len(fishers) != len(adapters):
        raise MergeError(f"{len(adapters)} adapters but {len(fishers)} mask Fishers")
    shapes = {n: torch.Size(base.shapes[n]) for n in dense_mod.union(adapters)}
    return [mask_merge.mask_weights(base.spec, dims, shapes, f, scheme)
            for f in mask_merge.ones_where_all_zero(fishers)]


def weighted(adapters: list[Adapter], base: Base, weights: list[dict[str, torch.Tensor]],
             floor: float = 0.0, method: str = "mask") -> Merged:
    """``sum_j w_j W_j / sum_j w_j`` with ``weights[j][name]`` one value per row, column or
    a scalar of each tensor (:func:`mask_weights`)."""
    if len(weights) != len(adapters):
        raise MergeError(f"{len(adapters)} adapters but {len(weights)} weight sets")
    cache: dict[str, list[torch.Tensor]] = {}  # the tensor being merged only

    def coefficient(j, name):
        if name not in cache:
            cache.clear()
            cache[name] = normalised([w[name] for w in weights], floor)
        return cache[name][j]

    return _combine(adapters, base, coefficient, method)


def _regmean_factor(adapters, base, name, grams, alpha) -> Factor | None:
    regs = [regmean.regularise(g[name], alpha) for g in grams]
    total = sum(regs)
    parts = []
    try:
        for j, a in enumerate(adapters):
            if name in a.factors:
                parts.append(lowrank.regmean_fold(a.factors[name], regs[j], total))
    except RuntimeError:  # singular: torch.linalg.solve's LinAlgError
        return None
    return lowrank.concat(parts, name)


def regmean_merge(adapters: list[Adapter], base: Base, grams: list[dict[str, torch.Tensor]],
                  alpha: float = 0.9) -> Merged:
    """RegMean over the weights with Grams (``grams[j][name]`` [in, in]); every other tensor
    the plain average, as :mod:`workflow_scripts.merging.regmean` merges."""
    if len(grams) != len(adapters):
        raise MergeError(f"{len(adapters)} adapters but {len(grams)} Gram sets")
    covered = set(grams[0])
    if any(set(g) != covered for g in grams):
        raise MergeError("the adapters' Gram sets cover different layers")
    averaged = average(adapters, base)
    merged = Merged("regmean", modules=averaged.modules)
    for name, factor in averaged.factors.items():
        if name not in covered or factor.kind == EMBEDDING:
            merged.factors[name] = factor
            continue
        folded = _regmean_factor(adapters, base, name, grams, alpha)
        if folded is None:
            log.warning("RegMean: the Gram sum of %s is singular; its merged delta is the dense "
                        "least-norm solution, factored exactly (its rank may exceed sum r_j)", name)
            solved = _regmean_dense(adapters, base, name, grams, alpha)
            merged.factors[name] = lowrank.exact(solved - f64(base.read(name)), factor.kind)
            merged.dense.append(name)
        else:
            merged.factors[name] = folded
    for name, tensor in averaged.full.items():
        merged.full[name] = (_regmean_dense(adapters, base, name, grams, alpha)
                             if name in covered else tensor)
    return merged


def _regmean_dense(adapters, base, name, grams, alpha) -> torch.Tensor:
    kind = base.kind(name)
    return regmean.solve((dense_mod.dense(a, base, name) for a in adapters),
                         (g[name] for g in grams), alpha, name,
                         arch.CONV1D if kind == arch.CONV1D else arch.LINEAR)


def from_dense(deltas, base: Base, rank: int, method: str) -> Merged:
    """A truncated-SVD adapter of rank ``rank`` from any merge's dense deltas
    (``(name, delta)`` pairs, the base's storage): 2-D weights of linear layers, Conv1D and
    embeddings as factors with their relative error, every other tensor in full."""
    merged = Merged(method)
    for name, delta in deltas:
        kind = base.kind(name) if len(base.shapes[name]) == 2 else arch.OTHER
        if kind == arch.OTHER:
            merged.full[name] = f64(base.read(name)) + f64(delta)
            continue
        merged.factors[name], merged.errors[name] = lowrank.truncated(delta, rank, kind)
    return merged
