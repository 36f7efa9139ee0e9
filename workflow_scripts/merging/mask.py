"""``mask``: weights from the mask-node Fisher, mapped to parameters by a scheme.

The scheme (:mod:`.schemes`) is a table from each body parameter's role to a
weight rule.  Mask nodes whose Fisher is exactly zero in every model are first
set to 1 in every model (the released code's "both zero -> 1" rule, applied to
the mask Fisher before the layer means are taken, so it also shifts the
released scheme's means; under the paper scheme it only makes those rows a
plain average).
"""

from __future__ import annotations

import torch

from .. import architectures as arch
from ..errors import MergeError
from .schemes import scheme as get_scheme


def check_mask_fisher(
    fisher: dict[str, torch.Tensor], dims: arch.Dims, label: str = "mask Fisher"
) -> None:
    """``head`` is [layers, heads] and ``neuron`` is [layers, intermediate]."""
    expected = {
        "head": (dims.layers, dims.heads),
        "neuron": (dims.layers, dims.intermediate),
    }
    for key, shape in expected.items():
        if key not in fisher:
            raise MergeError(
                f"{label} has no {key!r} tensor (has {sorted(fisher)}); is it a mask Fisher?"
            )
        if tuple(fisher[key].shape) != shape:
            raise MergeError(
                f"{label}: {key!r} has shape {tuple(fisher[key].shape)} but the models "
                f"need {shape} ([layers, {'heads' if key == 'head' else 'intermediate'}]); "
                "it was computed for a different model"
            )


def ones_where_all_zero(mask_fishers: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Copies of the mask Fishers with nodes that are 0 in every model set to 1 in all.

    The released code's rule (for its pairs: "where both are 0, both become 1"),
    generalised to any number of models.
    """
    out = [dict(f) for f in mask_fishers]
    for key in ("head", "neuron"):
        values = [f[key].detach().cpu() for f in mask_fishers]
        zero = torch.stack([v == 0 for v in values]).all(dim=0)
        if bool(zero.any()):
            for f, v in zip(out, values):
                f[key] = torch.where(zero, torch.ones_like(v), v)
    return out


def _rows(values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Per-row weights shaped to broadcast over a parameter of ``shape``."""
    return values.reshape((shape[0],) + (1,) * (len(shape) - 1))


def _head_rows(name, shape, head_layer, dims):
    if len(shape) == 0 or shape[0] % dims.heads:
        raise MergeError(
            f"query/key parameter {name!r} of shape {tuple(shape)} does not "
            f"split into {dims.heads} heads"
        )
    return _rows(head_layer.repeat_interleave(shape[0] // dims.heads), shape)


def _neuron_rows(name, shape, neuron_layer, dims):
    if len(shape) == 0 or shape[0] != dims.intermediate:
        raise MergeError(
            f"FFN input parameter {name!r} of shape {tuple(shape)} does not have "
            f"{dims.intermediate} rows (one per neuron)"
        )
    return _rows(neuron_layer, shape)


def mask_weights(
    spec: arch.ArchSpec,
    dims: arch.Dims,
    body_shapes: dict[str, torch.Size],
    mask_fisher: dict[str, torch.Tensor],
    scheme: str = "paper",
) -> dict[str, torch.Tensor]:
    """Per-element weights (float64, broadcastable to each body parameter).

    ``body_shapes`` maps body parameter names (as in ``base_model.state_dict()``)
    to shapes; ``mask_fisher`` holds ``head`` [layers, heads] and ``neuron``
    [layers, intermediate].  The cross-model zero rule is not applied here:
    pass the Fishers through :func:`ones_where_all_zero` first (:func:`weights` does).
    """
    table = get_scheme(scheme).table
    check_mask_fisher(mask_fisher, dims)
    head = mask_fisher["head"].detach().to(torch.float64).cpu()
    neuron = mask_fisher["neuron"].detach().to(torch.float64).cpu()
    head_mean = head.mean(dim=1)  # [layers]
    neuron_mean = neuron.mean(dim=1)  # [layers]
    rules = {
        "head_rows": lambda name, shape, l: _head_rows(name, shape, head[l], dims),
        "neuron_rows": lambda name, shape, l: _neuron_rows(name, shape, neuron[l], dims),
        "layer_head_mean": lambda name, shape, l: head_mean[l],
        "layer_neuron_mean": lambda name, shape, l: neuron_mean[l],
        "global_mean": lambda name, shape, l: (head_mean + neuron_mean).mean(),
        "one": lambda name, shape, l: torch.tensor(1.0, dtype=torch.float64),
    }
    weights: dict[str, torch.Tensor] = {}
    for name, shape in body_shapes.items():
        role = arch.param_role(spec, name)
        if role.layer is not None and not 0 <= role.layer < dims.layers:
            raise MergeError(
                f"body parameter {name!r} belongs to layer {role.layer} but the model has "
                f"{dims.layers} layers"
            )
        if role.role not in table:  # a role added to architectures.py but not to the scheme
            raise MergeError(f"mask scheme {scheme!r} has no rule for role {role.role!r} of {name!r}")
        weights[name] = rules[table[role.role]](name, torch.Size(shape), role.layer)
    return weights


def weights(inputs) -> list[dict[str, torch.Tensor]]:
    for j, f in enumerate(inputs.artifacts):  # all shapes checked before any arithmetic
        check_mask_fisher(f, inputs.dims, inputs.artifact_labels[j])
    fishers = ones_where_all_zero(inputs.artifacts)
    return [mask_weights(inputs.spec, inputs.dims, inputs.shapes, f, inputs.scheme) for f in fishers]
