"""The weighted average of bodies (Eq. 5 of the paper) and the compatibility checks.

    theta* = sum_j F_j theta_j / sum_j F_j        (lambda_j = 1)

over the shared body (``model.base_model``) only; heads are never merged.
Where every model's weight for an element is exactly zero, that element is the
plain average (never a division by zero).  ``floor`` replaces each weight F by
max(F, floor), as in Matena & Raffel's code (1e-6 there).  The arithmetic is
done one parameter at a time in float64, so the extra memory is a few copies of
the largest parameter, not of the model.
"""

from __future__ import annotations

import torch

from ..errors import MergeError


def check_compatible(
    bodies: list[dict[str, torch.Tensor]],
    labels: list[str] | None = None,
) -> None:
    """All bodies have the same parameter names and shapes.

    The error names the two models and the first parameter that differs.
    """
    labels = labels or [f"model {j}" for j in range(len(bodies))]
    ref = bodies[0]
    for j in range(1, len(bodies)):
        other = bodies[j]
        for name in ref:
            if name not in other:
                raise MergeError(
                    f"cannot merge {labels[0]} and {labels[j]}: body parameter {name!r} "
                    f"of the first is missing from the second"
                )
            if tuple(ref[name].shape) != tuple(other[name].shape):
                raise MergeError(
                    f"cannot merge {labels[0]} and {labels[j]}: body parameter {name!r} "
                    f"has shape {tuple(ref[name].shape)} in the first but "
                    f"{tuple(other[name].shape)} in the second (different model sizes?)"
                )
        for name in other:
            if name not in ref:
                raise MergeError(
                    f"cannot merge {labels[0]} and {labels[j]}: body parameter {name!r} "
                    f"of the second is missing from the first"
                )


def merge_parameter(
    tensors: list[torch.Tensor],
    weights: list[torch.Tensor] | None = None,
    floor: float = 0.0,
) -> torch.Tensor:
    """sum_j w_j t_j / sum_j w_j in float64, cast back to the tensors' dtype.

    ``weights[j]`` broadcasts to ``tensors[j]``; elements whose weights are all
    zero get the plain average.  ``floor`` replaces w by max(w, floor).
    """
    out_dtype = tensors[0].dtype
    if weights is None:
        total = torch.zeros(tensors[0].shape, dtype=torch.float64)
        for t in tensors:
            total.add_(t.detach().cpu().to(torch.float64))
        return total.div_(len(tensors)).to(out_dtype)
    if len(weights) != len(tensors):
        raise MergeError(f"{len(tensors)} tensors but {len(weights)} weights")
    num = torch.zeros(tensors[0].shape, dtype=torch.float64)
    den = None
    for t, w in zip(tensors, weights):
        w = torch.as_tensor(w).detach().cpu().to(torch.float64)
        if floor:
            w = w.clamp_min(floor)
        num.addcmul_(t.detach().cpu().to(torch.float64), w)
        den = w.clone() if den is None else den + w
    zero = den == 0
    merged = num / torch.where(zero, torch.ones_like(den), den)
    if bool(zero.any()):
        plain = merge_parameter(tensors, None).to(torch.float64)
        merged = torch.where(zero, plain, merged)
    return merged.to(out_dtype)


def merge_bodies(
    bodies: list[dict[str, torch.Tensor]],
    weights: list[dict[str, torch.Tensor]] | None = None,
    floor: float = 0.0,
    inplace: bool = False,
) -> dict[str, torch.Tensor]:
    """Merge body state dicts (checked: :func:`.checks.check_bodies`) parameter by parameter.

    ``weights`` is one dict per body (same keys, tensors broadcastable to each
    parameter) or None for plain averaging.  Non-floating tensors (integer
    buffers, equal in every body) are kept.  With ``inplace`` the merged values are
    copied into every body's tensors (which share storage with their models'
    parameters) and ``bodies[0]`` is returned, so no second copy of the body is held.
    """
    merged: dict[str, torch.Tensor] = {}
    for name, ref in bodies[0].items():
        tensors = [b[name] for b in bodies]
        if not ref.is_floating_point():
            value = ref
        else:
            w = None if weights is None else [ws[name] for ws in weights]
            value = merge_parameter(tensors, w, floor)
        if inplace:
            with torch.no_grad():
                for t in tensors:
                    t.copy_(value)
            merged[name] = tensors[0]
        else:
            merged[name] = value
    return merged
