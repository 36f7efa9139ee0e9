"""``regmean`` (Jin et al. 2023, "Dataless knowledge fusion by merging weights of language
models"): for every linear layer of the body,

    W* = (sum_j G~_j)^-1 sum_j G~_j W_j        (W as [in, out], i.e. the transpose of
                                               torch's Linear.weight)

with G_j the Gram of that layer's inputs over model j's own samples (:mod:`..gram`)
and G~_j = alpha G_j + (1 - alpha) diag(G_j): off-diagonal entries scaled by alpha
(``--regmean-alpha``, default 0.9).  With alpha = 1 it is the least-squares fit
of every model's outputs on its inputs, stacked.  Every other body parameter
(biases, LayerNorms, embeddings) is the plain average.  The linear system is
solved in float64; a singular sum (alpha = 1 with dead inputs) falls back to the
least-norm solution.
"""

from __future__ import annotations

import logging

import torch

from ..errors import MergeError
from .core import merge_parameter
from .taskvectors import f64, option

log = logging.getLogger(__name__)


def check_grams(grams: dict[str, torch.Tensor], shapes: dict[str, torch.Size], label: str) -> None:
    """One [in, in] Gram per linear weight [out, in] of the body, and nothing else."""
    for name, gram in grams.items():
        if name not in shapes:
            raise MergeError(f"{label} has a Gram for {name!r}, which is not a body parameter of "
                             "the models; it was computed for a different model")
        shape = shapes[name]
        if len(shape) != 2 or tuple(gram.shape) != (shape[1], shape[1]):
            raise MergeError(f"{label}: Gram {name!r} has shape {tuple(gram.shape)} but the "
                             f"models' weight {name!r} has shape {tuple(shape)} (needs "
                             f"[{shape[-1]}, {shape[-1]}])")


def regularise(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha G + (1 - alpha) diag(G): off-diagonal entries scaled by alpha."""
    g = f64(gram)
    return alpha * g + (1.0 - alpha) * torch.diag(torch.diagonal(g))


def solve(weights: list[torch.Tensor], grams: list[torch.Tensor], alpha: float,
          name: str = "") -> torch.Tensor:
    """The RegMean weight [out, in] from the models' weights [out, in] and Grams [in, in]."""
    regs = [regularise(g, alpha) for g in grams]
    lhs = sum(regs)
    rhs = sum(r @ f64(w).T for r, w in zip(regs, weights))
    try:
        merged_t = torch.linalg.solve(lhs, rhs)
    except RuntimeError:  # singular: least-norm least squares
        log.warning("RegMean: the Gram sum of %s is singular; using the least-norm solution", name)
        merged_t = torch.linalg.lstsq(lhs, rhs, driver="gelsd").solution
    return merged_t.T.to(weights[0].dtype)


def merged(inputs) -> dict[str, torch.Tensor]:
    alpha = option(inputs, "regmean_alpha")
    for j, grams in enumerate(inputs.artifacts):
        check_grams(grams, inputs.shapes, inputs.artifact_labels[j])
    covered = [set(g) for g in inputs.artifacts]
    for j in range(1, len(covered)):
        if covered[j] != covered[0]:
            raise MergeError(f"{inputs.artifact_labels[0]} and {inputs.artifact_labels[j]} hold "
                             "Grams of different layers")
    out = {}
    for name in inputs.shapes:
        tensors = [body[name] for body in inputs.bodies]
        if name in covered[0]:
            out[name] = solve(tensors, [g[name] for g in inputs.artifacts], alpha, name)
        else:
            out[name] = merge_parameter(tensors)
    return out
