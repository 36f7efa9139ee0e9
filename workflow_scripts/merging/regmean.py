"""``regmean`` (Jin et al. 2023, "Dataless knowledge fusion by merging weights of language
models"): for every linear layer of the body,

    W* = (sum_j G~_j)^-1 sum_j G~_j W_j        (W as [in, out]: the transpose of torch's
                                               Linear.weight, GPT-2's Conv1D.weight as is)

with G_j the Gram of that layer's inputs over model j's own samples (:mod:`..gram`)
and G~_j = alpha G_j + (1 - alpha) diag(G_j): off-diagonal entries scaled by alpha
(``--regmean-alpha``, default 0.9).  With alpha = 1 it is the least-squares fit
of every model's outputs on its inputs, stacked.  Every other body parameter
(biases, LayerNorms, embeddings) is the plain average.  The linear system is
solved in float64; a singular sum (alpha = 1 with dead inputs) falls back to the
least-norm solution.  Memory: one covered weight at a time, whole or in blocks of
output rows (:func:`blocks`; :func:`workflow_scripts.memory.regmean_bytes`).
"""

from __future__ import annotations

import logging

import torch

from .. import architectures as arch
from ..errors import MergeError
from ..tensorfiles import row_blocks
from .core import weighted_mean
from .taskvectors import f64, option

log = logging.getLogger(__name__)


def weight_kind(spec: arch.ArchSpec | None, name: str) -> str:
    """arch.CONV1D for a weight stored [in, out] (GPT-2), else arch.LINEAR ([out, in]); without
    an architecture (hand-made inputs) every weight is a Linear's."""
    return arch.LINEAR if spec is None else arch.weight_kind(spec, name)


def check_grams(grams: dict[str, tuple], shapes: dict[str, tuple], label: str,
                spec: arch.ArchSpec | None = None) -> None:
    """One [in, in] Gram per linear weight of the body ([out, in]; Conv1D: [in, out]), and
    nothing else (``grams``: the Grams' shapes, by name)."""
    for name, gram in grams.items():
        if name not in shapes:
            raise MergeError(f"{label} has a Gram for {name!r}, which is not a body parameter of "
                             "the models; it was computed for a different model")
        shape = tuple(shapes[name])
        d = shape[0 if weight_kind(spec, name) == arch.CONV1D else -1] if len(shape) == 2 else None
        if len(shape) != 2 or tuple(gram) != (d, d):
            raise MergeError(f"{label}: Gram {name!r} has shape {tuple(gram)} but the "
                             f"models' weight {name!r} has shape {shape} (needs "
                             f"[{d}, {d}])")


def regularise(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha G + (1 - alpha) diag(G): off-diagonal entries scaled by alpha (float64, a new
    tensor; computed in place: one float64 copy of the Gram)."""
    g = gram.detach().cpu().to(torch.float64, copy=True)
    diagonal = torch.diagonal(g).clone()
    g.mul_(alpha)
    torch.diagonal(g).copy_(alpha * diagonal + (1.0 - alpha) * diagonal)
    return g


def solve(weights, grams, alpha: float, name: str = "", kind: str = arch.LINEAR) -> torch.Tensor:
    """The RegMean weight (float64) from the models' weights and Grams [in, in] (iterables,
    read one model at a time): weights [out, in] (``kind`` arch.LINEAR) or [in, out]
    (arch.CONV1D, solved as they are).  Memory: :func:`workflow_scripts.memory.regmean_bytes`."""
    conv1d = kind == arch.CONV1D
    lhs = rhs = None
    for w, g in zip(weights, grams):
        reg = regularise(g, alpha)
        del g
        term = reg @ (f64(w) if conv1d else f64(w).T)
        del w
        if lhs is None:
            lhs, rhs = reg, term
        else:
            lhs.add_(reg)
            rhs.add_(term)
        del reg, term
    try:
        merged_t = torch.linalg.solve(lhs, rhs)
    except RuntimeError:  # singular: least-norm least squares
        log.warning("RegMean: the Gram sum of %s is singular; using the least-norm solution", name)
        merged_t = torch.linalg.lstsq(lhs, rhs, driver="gelsd").solution
    return merged_t if conv1d else merged_t.T


def check(ctx) -> None:
    covered = []
    for j in range(ctx.count):
        shapes = ctx.artifact_shapes(j)
        check_grams(shapes, ctx.shapes, ctx.artifact_labels[j], ctx.spec)
        covered.append(set(shapes))
    for j in range(1, len(covered)):
        if covered[j] != covered[0]:
            raise MergeError(f"{ctx.artifact_labels[0]} and {ctx.artifact_labels[j]} hold "
                             "Grams of different layers")
    ctx.state["covered"] = covered[0]


def blocks(ctx, name: str) -> list[tuple[int, int] | None]:
    """The row blocks ``name`` is merged in.  A weight without Grams: the engine's blocks
    (a plain average).  A Linear weight with more outputs than inputs (an FFN's up
    projection, an untied ``lm_head``): blocks of ``in`` output rows, each solved against
    the factored Gram sum (:func:`solve_rows`), so memory is a few ``in x in`` matrices
    however many outputs; fixed by the shape alone, so the result does not depend on
    ``--block-mb``.  Any other weight with Grams: solved whole (:func:`solve`)."""
    if name not in ctx.state["covered"]:
        return ctx.row_blocks(name)
    shape = tuple(ctx.shapes[name])
    if weight_kind(ctx.spec, name) == arch.CONV1D or shape[0] <= shape[1]:
        return [None]
    return row_blocks(shape, 1, shape[1] * shape[1])


def factored(ctx, name: str, alpha: float) -> tuple:
    """``(name, lhs or None, LU, pivots, grams)`` of the regularised Gram sum of ``name``
    (the sum kept only when it is singular), computed once per weight; the models' Grams
    are read once and kept in their file dtype for the weight's row blocks (``models x in
    x in`` values: an artifact is read once here, never once per block)."""
    cached = ctx.state.get("regmean_factor")
    if cached is not None and cached[0] == name:
        return cached
    ctx.state["regmean_factor"] = None  # the previous weight's factors freed first
    lhs, grams = None, []
    for j in range(ctx.count):
        grams.append(ctx.sources.artifact(j, name))
        reg = regularise(grams[-1], alpha)
        lhs = reg if lhs is None else lhs.add_(reg)
        del reg
    lu, pivots, info = torch.linalg.lu_factor_ex(lhs)
    singular = bool(info.item())
    if singular:
        log.warning("RegMean: the Gram sum of %s is singular; using the least-norm solution", name)
    ctx.state["regmean_factor"] = (name, lhs if singular else None, lu, pivots, grams)
    return ctx.state["regmean_factor"]


def solve_rows(ctx, name: str, alpha: float) -> torch.Tensor:
    """Rows ``ctx.rows`` of the RegMean weight of Linear weight ``name``: the right-hand
    side's columns of those rows, sum_j G~_j W_j[rows]^T, solved against the factored sum."""
    _, lhs, lu, pivots, grams = factored(ctx, name, alpha)
    rhs = None
    for j in range(ctx.count):
        reg = regularise(grams[j], alpha)
        term = reg @ f64(ctx.model(j, name)).T
        del reg
        rhs = term if rhs is None else rhs.add_(term)
        del term
    if lhs is not None:
        return torch.linalg.lstsq(lhs, rhs, driver="gelsd").solution.T
    return torch.linalg.lu_solve(lu, pivots, rhs).T


def tensor(ctx, name: str) -> torch.Tensor:
    if name in ctx.state["covered"]:
        alpha = option(ctx, "regmean_alpha")
        if ctx.rows is not None:
            return solve_rows(ctx, name, alpha)
        grams = (ctx.sources.artifact(j, name) for j in range(ctx.count))
        return solve(ctx.models(name), grams, alpha, name, weight_kind(ctx.spec, name))
    return weighted_mean(lambda: ctx.models(name))
