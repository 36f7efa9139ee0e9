"""``fisher``: weights from the full diagonal Fisher of every body parameter
(Matena & Raffel 2022)."""

from __future__ import annotations

import torch

from ..errors import MergeError


def check_full_fisher(
    fisher: dict[str, torch.Tensor],
    body_shapes: dict[str, torch.Size],
    label: str = "full Fisher",
) -> None:
    """Same keys and shapes as the body's floating-point tensors."""
    wanted = {k: tuple(s) for k, s in body_shapes.items()}
    missing = [k for k in wanted if k not in fisher]
    if missing:
        raise MergeError(
            f"{label} lacks {len(missing)} body parameter(s), first {missing[0]!r}; "
            "it was computed for a different model (or is a mask Fisher)"
        )
    extra = [k for k in fisher if k not in wanted]
    if extra:
        raise MergeError(
            f"{label} has {len(extra)} tensor(s) that are not body parameters of the "
            f"models, first {extra[0]!r}; it was computed for a different model"
        )
    for k, shape in wanted.items():
        if tuple(fisher[k].shape) != shape:
            raise MergeError(
                f"{label}: {k!r} has shape {tuple(fisher[k].shape)} but the models' "
                f"parameter has shape {shape}"
            )


def full_weights(
    fisher: dict[str, torch.Tensor], body_shapes: dict[str, torch.Size], label: str = "full Fisher"
) -> dict[str, torch.Tensor]:
    """The full diagonal Fisher, checked against the body, as weights."""
    check_full_fisher(fisher, body_shapes, label)
    return {k: fisher[k] for k in body_shapes}


def weights(inputs) -> list[dict[str, torch.Tensor]]:
    return [
        full_weights(f, inputs.shapes, inputs.artifact_labels[j])
        for j, f in enumerate(inputs.artifacts)
    ]
