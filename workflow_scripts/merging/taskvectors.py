"""Task vectors: tau_j = theta_j - theta_base over the body's floating-point parameters.

Shared by the task-vector methods (:mod:`.task_arithmetic`, :mod:`.ties`,
:mod:`.dare`).  The arithmetic is float64, one parameter and one model at a time;
:mod:`.engine` casts the result back to the parameter's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (ctx, j, name) -> model j's (possibly transformed) task vector of ``name``, float64
VectorFn = Callable[[object, int, str], torch.Tensor]


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().to(torch.float64)


def task_vector(ctx, j: int, name: str) -> torch.Tensor:
    """tau_j of parameter ``name`` (float64)."""
    return f64(ctx.model(j, name)) - f64(ctx.base(name))


def summed(ctx, name: str, vector: VectorFn = task_vector) -> torch.Tensor:
    """sum_j vector(j), one model at a time."""
    total = None
    for j in range(ctx.count):  # no reference kept to a model's vector once it is added
        if total is None:
            total = vector(ctx, j, name)
        else:
            total.add_(vector(ctx, j, name))
    return total


def rebase(ctx, name: str, delta: torch.Tensor, lam: float) -> torch.Tensor:
    """theta_base + lam * delta (float64)."""
    return f64(ctx.base(name)) + lam * delta


def option(ctx, key: str):
    """A hyper-parameter of the merge (its :class:`~workflow_scripts.settings.MergeSettings`;
    ``lam``: the method's default when not given)."""
    return ctx.settings.option(key)
