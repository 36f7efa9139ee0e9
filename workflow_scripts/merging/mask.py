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
from .core import weighted_mean
from .schemes import scheme as get_scheme


def check_mask_fisher(
    fisher: dict, dims: arch.Dims, label: str = "mask Fisher"
) -> None:
    """``head`` is [layers, heads] and ``neuron`` is [layers, intermediate] (``fisher``: the
    tensors or their shapes, by name)."""
    expected = {
        "head": (dims.layers, dims.heads),
        "neuron": (dims.layers, dims.intermediate),
    }
    for key, shape in expected.items():
        if key not in fisher:
            raise MergeError(
                f"{label} has no {key!r} tensor (has {sorted(fisher)}); is it a mask Fisher?"
            )
        got = tuple(getattr(fisher[key], "shape", fisher[key]))
        if got != shape:
            raise MergeError(
                f"{label}: {key!r} has shape {got} but the models "
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


def _units(unit: str, head_l: torch.Tensor, neuron_l: torch.Tensor, dims: arch.Dims,
           kv_rule: str) -> torch.Tensor:
    """One layer's Fisher per unit: heads, key/value heads (by the scheme's rule), neurons."""
    if unit == arch.HEAD:
        return head_l
    if unit == arch.KV_HEAD:
        if kv_rule != "group_sum":  # Scheme checks its kv_heads rule; this is a new one
            raise MergeError(f"unknown key/value head rule {kv_rule!r}")
        # key/value head g serves query heads g * group ... (g + 1) * group - 1
        return head_l.reshape(dims.kv_heads, dims.group).sum(dim=1)
    return neuron_l


def _along(values: torch.Tensor, length: int, axis: int, ndim: int, name: str, what: str):
    """``values`` (one per unit) repeated over the unit's ``length / units`` entries of
    ``axis``, shaped to broadcast over a tensor of ``ndim`` dimensions."""
    units = values.numel()
    if length % units or (what == "neuron" and length != units):
        per = "one per neuron" if what == "neuron" else f"{units} {what}s"
        raise MergeError(
            f"parameter {name!r}: {length} entries along axis {axis} do not split into {per}; "
            "the checkpoint does not match its architecture's layout"
        )
    shape = [1] * ndim
    shape[axis] = length
    return values.repeat_interleave(length // units).reshape(shape)


def _row_rule(kind: str):
    def rule(ctx, block, length):
        layout, name, shape = ctx["layout"], ctx["name"], ctx["shape"]
        wanted = (arch.HEAD, arch.KV_HEAD) if kind == "head" else (arch.NEURON,)
        if layout.out_axis is None or block.unit not in wanted:
            raise MergeError(
                f"parameter {name!r} of shape {tuple(shape)} (role {block.role!r}) has no "
                f"{kind} rows, but its scheme weights that role by {kind} rows"
            )
        values = _units(block.unit, ctx["head"], ctx["neuron"], ctx["dims"], ctx["kv_rule"])
        return _along(values, length, layout.out_axis, len(shape), name, block.unit.replace("_", "/"))

    return rule


def _column_rule(kind: str):
    def rule(ctx, block, length):
        layout, shape = ctx["layout"], ctx["shape"]
        wanted = (arch.HEAD, arch.KV_HEAD) if kind == "head" else (arch.NEURON,)
        if layout.in_unit not in wanted:  # its bias, its norm: no input columns of units
            return ctx["one"]
        values = _units(layout.in_unit, ctx["head"], ctx["neuron"], ctx["dims"], ctx["kv_rule"])
        return _along(values, shape[layout.in_axis], layout.in_axis, len(shape), ctx["name"],
                      layout.in_unit.replace("_", "/"))

    return rule


def _combine(parts: list[torch.Tensor], layout: arch.ParamLayout, shape: torch.Size, name: str):
    """Per-block weights of a fused parameter as one tensor broadcastable to it."""
    ndim, axis = len(shape), layout.out_axis
    if axis is None:
        raise MergeError(f"parameter {name!r} has several blocks but no axis they split")
    length = shape[axis] // len(parts)
    parts = [p.reshape((1,) * (ndim - p.dim()) + tuple(p.shape)) for p in parts]
    common = [max(p.shape[d] for p in parts) for d in range(ndim)]
    out = []
    for p in parts:
        target = list(common)
        target[axis] = length
        out.append(p.expand(target))
    return torch.cat(out, dim=axis)


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
    [layers, intermediate].  Each block of a parameter (a fused ``Wqkv`` has
    three, with roles qk, qk, value) gets the rule its role has in the scheme's
    table; rows and columns follow the architecture's layout
    (:func:`architectures.param_layout`).  The cross-model zero rule is not
    applied here: pass the Fishers through :func:`ones_where_all_zero` first
    (:func:`weights` does).
    """
    chosen = get_scheme(scheme)
    table = chosen.table
    check_mask_fisher(mask_fisher, dims)
    head = mask_fisher["head"].detach().to(torch.float64).cpu()
    neuron = mask_fisher["neuron"].detach().to(torch.float64).cpu()
    head_mean = head.mean(dim=1)  # [layers]
    neuron_mean = neuron.mean(dim=1)  # [layers]
    one = torch.tensor(1.0, dtype=torch.float64)
    rules = {
        "head_rows": _row_rule("head"),
        "neuron_rows": _row_rule("neuron"),
        "head_columns": _column_rule("head"),
        "neuron_columns": _column_rule("neuron"),
        "layer_head_mean": lambda ctx, block, length: head_mean[ctx["layer"]],
        "layer_neuron_mean": lambda ctx, block, length: neuron_mean[ctx["layer"]],
        "global_mean": lambda ctx, block, length: (head_mean + neuron_mean).mean(),
        "one": lambda ctx, block, length: one,
    }
    weights: dict[str, torch.Tensor] = {}
    for name, shape in body_shapes.items():
        layout = arch.param_layout(spec, name)
        l = layout.layer
        if l is not None and not 0 <= l < dims.layers:
            raise MergeError(
                f"body parameter {name!r} belongs to layer {l} but the model has "
                f"{dims.layers} layers"
            )
        shape = torch.Size(shape)
        ctx = dict(name=name, shape=shape, layout=layout, layer=l, dims=dims, one=one,
                   kv_rule=chosen.kv_heads,
                   head=head[l] if l is not None else None,
                   neuron=neuron[l] if l is not None else None)
        for role in layout.roles:
            if role not in table:  # a role added to architectures.py but not to the scheme
                raise MergeError(f"mask scheme {scheme!r} has no rule for role {role!r} of {name!r}")
        blocks = layout.blocks
        if len(blocks) == 1:
            length = shape[layout.out_axis] if layout.out_axis is not None else 0
            weights[name] = rules[table[blocks[0].role]](ctx, blocks[0], length)
            continue
        if layout.out_axis is None or shape[layout.out_axis] % len(blocks):
            raise MergeError(
                f"fused parameter {name!r} of shape {tuple(shape)} does not split into "
                f"{len(blocks)} equal blocks"
            )
        length = shape[layout.out_axis] // len(blocks)
        parts = [rules[table[b.role]](ctx, b, length) for b in blocks]
        weights[name] = _combine(parts, layout, shape, name)
    return weights


def check(ctx) -> None:
    """Every model's mask Fisher has its head and neuron tensors (before any arithmetic)."""
    for j in range(ctx.count):
        check_mask_fisher(ctx.artifact_shapes(j), ctx.dims, ctx.artifact_labels[j])


def prepare(ctx) -> None:
    """The cross-model zero rule, then each model's weights (small: one value per row,
    column or parameter, broadcastable to it)."""
    fishers = ones_where_all_zero([{k: ctx.artifact(j, k) for k in ("head", "neuron")}
                                   for j in range(ctx.count)])
    ctx.state["weights"] = [mask_weights(ctx.spec, ctx.dims, ctx.shapes, f, ctx.settings.scheme)
                            for f in fishers]


def tensor(ctx, name: str):
    weights = ctx.state["weights"]
    return weighted_mean(lambda: ctx.models(name), lambda j: ctx.rows_of(weights[j][name], name),
                         ctx.settings.floor)
