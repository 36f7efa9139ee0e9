"""Task vectors: tau_j = theta_j - theta_base over the body's floating-point parameters.

Shared by the task-vector methods (:mod:`.task_arithmetic`, :mod:`.ties`,
:mod:`.dare`).  The arithmetic is float64, one parameter at a time, and the
result is cast back to the parameter's dtype.
"""

from __future__ import annotations

import torch

from ..errors import MergeError


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


def option(inputs, key: str, default=None):
    """A hyper-parameter of the merge (``inputs.options``), or ``default``."""
    value = inputs.options.get(key)
    return default if value is None else value


def lam(inputs, default: float | None) -> float:
    """The merge's lambda (``--lambda``), or the method's default."""
    value = option(inputs, "lam", default)
    if value is None:
        raise MergeError("this merge needs a scaling factor lambda (--lambda)")
    if not value > 0:
        raise MergeError(f"--lambda must be positive, got {value}")
    return float(value)


def need_base(inputs, method: str) -> None:
    if inputs.base is None:
        raise MergeError(f"--method {method} works on task vectors: give the pre-trained model "
                         "(--base DIR)")
