"""``fisher``: weights from the full diagonal Fisher of every body parameter
(Matena & Raffel 2022)."""

from __future__ import annotations

from ..errors import MergeError
from .core import weighted_mean


def check_full_fisher(shapes: dict[str, tuple], body_shapes: dict[str, tuple],
                      label: str = "full Fisher") -> None:
    """The Fisher's tensors (``shapes``, by name) are the body's floating-point tensors."""
    wanted = {k: tuple(s) for k, s in body_shapes.items()}
    missing = [k for k in wanted if k not in shapes]
    if missing:
        raise MergeError(
            f"{label} lacks {len(missing)} body parameter(s), first {missing[0]!r}; "
            "it was computed for a different model (or is a mask Fisher)"
        )
    extra = [k for k in shapes if k not in wanted]
    if extra:
        raise MergeError(
            f"{label} has {len(extra)} tensor(s) that are not body parameters of the "
            f"models, first {extra[0]!r}; it was computed for a different model"
        )
    for k, shape in wanted.items():
        if tuple(shapes[k]) != shape:
            raise MergeError(
                f"{label}: {k!r} has shape {tuple(shapes[k])} but the models' "
                f"parameter has shape {shape}"
            )


def check(ctx) -> None:
    for j in range(ctx.count):
        check_full_fisher(ctx.artifact_shapes(j), ctx.shapes, ctx.artifact_labels[j])


def tensor(ctx, name: str):
    return weighted_mean(lambda: ctx.models(name), lambda j: ctx.artifact(j, name),
                         ctx.settings.floor)
