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

from ..errors import MergeError, set_by


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


def check_base(base: dict, body: dict, base_label: str, label: str) -> None:
    """The base holds every floating-point parameter of ``body`` with the same shape.

    The base may hold more (a pre-trained checkpoint saved with its ``position_ids``
    buffer, or a pooler its fine-tunes dropped): a task-vector merge reads only the body's
    parameters from it.  Integer buffers are the fine-tunes' own and are not read from it.
    """
    needed = [k for k, t in body.items() if _floating(t)]
    missing = [k for k in needed if k not in base]
    if missing:
        raise MergeError(
            f"{base_label} lacks body weights {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''} of {label}; it is not the pre-trained model "
            "of these checkpoints: give the model they were fine-tuned from, "
            f"{set_by('--base', 'families.NAME.base')}")
    check_compatible([{k: base[k] for k in needed}, {k: body[k] for k in needed}],
                     [base_label, label])


def _floating(t) -> bool:
    """A tensor's, or a header entry's (``.floating``), floating-point kind."""
    return t.floating if hasattr(t, "floating") else torch.is_floating_point(t)


def merge_parameter(
    tensors: list[torch.Tensor],
    weights: list[torch.Tensor] | None = None,
    floor: float = 0.0,
) -> torch.Tensor:
    """sum_j w_j t_j / sum_j w_j in float64, cast back to the tensors' dtype.

    ``weights[j]`` broadcasts to ``tensors[j]``; elements whose weights are all
    zero get the plain average.  ``floor`` replaces w by max(w, floor).
    """
    if weights is not None and len(weights) != len(tensors):
        raise MergeError(f"{len(tensors)} tensors but {len(weights)} weights")
    weight_of = None if weights is None else weights.__getitem__
    return weighted_mean(lambda: iter(tensors), weight_of, floor).to(tensors[0].dtype)


def weighted_mean(tensors, weight_of=None, floor: float = 0.0) -> torch.Tensor:
    """sum_j w_j t_j / sum_j w_j (float64) over ``tensors()``, a fresh iterator of the models'
    tensors each call, read one at a time (a second pass only where every weight of an
    element is zero: those elements get the plain average).  ``weight_of(j)`` broadcasts to
    the tensors (None: the plain average); ``floor`` replaces w by max(w, floor)."""
    num = den = None
    count = 0
    for j, t in enumerate(tensors()):
        t64 = t.detach().cpu().to(torch.float64)
        if num is None:
            num = torch.zeros(t64.shape, dtype=torch.float64)
        count += 1
        if weight_of is None:
            num.add_(t64)
            del t64, t
            continue
        w = torch.as_tensor(weight_of(j)).detach().cpu().to(torch.float64)
        if floor:
            w = w.clamp_min(floor)
        num.addcmul_(t64, w)
        den = w.clone() if den is None else den + w
        del t64, w, t  # nothing of this model kept while the next one is read
    if weight_of is None:
        return num.div_(count)
    zero = den == 0
    merged = num / torch.where(zero, torch.ones_like(den), den)
    if bool(zero.any()):
        merged = torch.where(zero, weighted_mean(tensors), merged)
    return merged


def merge_bodies(
    bodies: list[dict[str, torch.Tensor]],
    weights: list[dict[str, torch.Tensor]] | None = None,
    floor: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The weighted average of body state dicts (checked: :func:`.checks.check_bodies`),
    parameter by parameter: ``weights`` one dict per body (tensors broadcastable to each
    parameter) or None for plain averaging; non-floating tensors (integer buffers, equal in
    every body) are kept."""
    merged: dict[str, torch.Tensor] = {}
    for name, ref in bodies[0].items():
        tensors = [b[name] for b in bodies]
        if not ref.is_floating_point():
            merged[name] = ref
        else:
            w = None if weights is None else [ws[name] for ws in weights]
            merged[name] = merge_parameter(tensors, w, floor)
    return merged
