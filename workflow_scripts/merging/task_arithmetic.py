"""``task-arithmetic`` (Ilharco et al. 2023, "Editing models with task arithmetic"):

    theta* = theta_base + lambda * sum_j (theta_j - theta_base)

over the body; lambda (``--lambda``) defaults to 0.3 (the registry's default).
With lambda = 1/M (M models) it is the plain average.
"""

from __future__ import annotations

import torch

from .taskvectors import VectorFn, option, rebase, summed, task_vector


def combine(ctx, name: str, vector: VectorFn, scale: float) -> torch.Tensor:
    """theta_base + scale * sum_j vector(j) of parameter ``name``."""
    return rebase(ctx, name, summed(ctx, name, vector), scale)


def tensor(ctx, name: str) -> torch.Tensor:
    return combine(ctx, name, task_vector, option(ctx, "lam"))
