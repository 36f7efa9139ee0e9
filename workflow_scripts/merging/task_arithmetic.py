"""``task-arithmetic`` (Ilharco et al. 2023, "Editing models with task arithmetic"):

    theta* = theta_base + lambda * sum_j (theta_j - theta_base)

over the body; lambda (``--lambda``) defaults to 0.3 (the registry's default).
With lambda = 1/M (M models) it is the plain average.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .taskvectors import option, rebase, task_vectors


def combine(inputs, vectors: Callable[[str], list[torch.Tensor]], scale: float) -> dict[str, torch.Tensor]:
    """theta_base + scale * sum_j tau_j, one parameter at a time (``vectors(name)``: the taus)."""
    return {name: rebase(inputs, name, torch.stack(vectors(name)).sum(dim=0), scale)
            for name in inputs.shapes}


def merged(inputs) -> dict[str, torch.Tensor]:
    return combine(inputs, lambda name: task_vectors(inputs, name), option(inputs, "lam"))
