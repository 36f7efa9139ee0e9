"""Task vectors: tau_j = theta_j - theta_base over the body's floating-point parameters.

Shared by the task-vector methods (:mod:`.task_arithmetic`, :mod:`.ties`,
:mod:`.dare`).  The arithmetic is float64, one parameter at a time, and the
result is cast back to the parameter's dtype.
"""

from __future__ import annotations

import torch



def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().to(torch.float64)


def task_vectors(inputs, name: str) -> list[torch.Tensor]:
    """tau_j of parameter ``name`` for every model (float64)."""
    base = f64(inputs.base[name])
    return [f64(body[name]) - base for body in inputs.bodies]


def rebase(inputs, name: str, delta: torch.Tensor, lam: float) -> torch.Tensor:
    """theta_base + lam * delta, in the parameter's dtype."""
    base = inputs.base[name]
    return (f64(base) + lam * delta).to(inputs.bodies[0][name].dtype)


def option(inputs, key: str):
    """A hyper-parameter of the merge (its :class:`~workflow_scripts.settings.MergeSettings`;
    ``lam``: the method's default when not given)."""
    return inputs.settings.option(key)
