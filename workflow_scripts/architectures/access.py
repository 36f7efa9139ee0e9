"""What the engine asks of a model, a config or a parameter name: its layout entry, its
dimensions, its body and layers, the layout of a body parameter, its linear layers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ..errors import UnsupportedArchitectureError
from .layout import (
    CONV1D, GLOBAL, LINEAR, LM_HEAD, OTHER, ArchSpec, Block, ParamLayout, ParamRole,
)
from .table import SPECS, SUPPORTED

if TYPE_CHECKING:  # torch is not imported at run time: the workflow reads the roles
    import torch
    from torch import nn

def spec_for(model_or_config) -> ArchSpec:
    """The ArchSpec of a model, a config, or a ``model_type`` string."""
    if isinstance(model_or_config, str):
        model_type = model_or_config
    else:
        config = getattr(model_or_config, "config", model_or_config)
        model_type = getattr(config, "model_type", None)
    if model_type not in SPECS:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r}: supported model types are "
            f"{', '.join(SUPPORTED)}"
        )
    return SPECS[model_type]


@dataclass(frozen=True)
class Dims:
    layers: int
    heads: int
    intermediate: int
    hidden: int
    kv_heads: int = field(default=0)  # key/value heads; 0 (the default): as many as heads

    def __post_init__(self):
        if not self.kv_heads:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.heads % self.kv_heads:
            raise UnsupportedArchitectureError(
                f"{self.heads} query heads do not split into groups of {self.kv_heads} "
                "key/value heads"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def group(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.heads // self.kv_heads


def dims(model_or_config) -> Dims:
    config = getattr(model_or_config, "config", model_or_config)
    spec = spec_for(config)
    hidden = int(getattr(config, spec.config_hidden))
    intermediate = getattr(config, spec.config_intermediate)
    if intermediate is None and spec.intermediate_default:
        intermediate = spec.intermediate_default * hidden
    kv = getattr(config, spec.config_kv_heads, None) if spec.config_kv_heads else None
    return Dims(
        layers=int(getattr(config, spec.config_layers)),
        heads=int(getattr(config, spec.config_heads)),
        intermediate=int(intermediate),
        hidden=hidden,
        kv_heads=int(kv) if kv else 0,
    )


def body(model: nn.Module) -> nn.Module:
    """The shared body (everything but the task head)."""
    spec_for(model)
    return model.base_model


def body_prefix(model: nn.Module) -> str:
    """Prefix of body parameters in the full model's state dict (``bert.``)."""
    return model.base_model_prefix + "."


def layers(model: nn.Module) -> list[nn.Module]:
    spec = spec_for(model)
    return list(body(model).get_submodule(spec.layer_list))


def head_out_projections(model: nn.Module) -> list[nn.Module]:
    spec = spec_for(model)
    return [layer.get_submodule(spec.head_out_proj) for layer in layers(model)]


def ffn_inputs(model: nn.Module) -> list[nn.Module]:
    spec = spec_for(model)
    return [layer.get_submodule(spec.ffn_in) for layer in layers(model)]


def ffn_outputs(model: nn.Module) -> list[nn.Module]:
    spec = spec_for(model)
    return [layer.get_submodule(spec.ffn_out) for layer in layers(model)]


def label_rows_module(model: nn.Module) -> nn.Linear:
    return model.get_submodule(spec_for(model).label_rows)


def _axes(kind: str, suffix: str) -> tuple[int | None, int | None]:
    """(output axis, input axis) of a module's ``weight`` or ``bias``."""
    if kind == OTHER:
        return None, None
    if suffix == "bias":
        return 0, None
    return (0, 1) if kind == LINEAR else (1, 0)


def param_layout(spec: ArchSpec, name: str) -> ParamLayout:
    """Layout of a body parameter, named as in ``model.base_model.state_dict()`` (and a causal
    LM's output projection, named as in the full model: ``lm_head.weight``)."""
    if spec.lm_head and re.fullmatch(rf"{re.escape(spec.lm_head)}\.(weight|bias)", name):
        return ParamLayout(None, (Block(LM_HEAD),), None)
    match = spec.layer_regex.match(name)
    if match:
        layer, rest = int(match.group(1)), match.group(2)
        for module in spec.modules:
            suffix = re.fullmatch(rf"(?:{module.pattern})\.(weight|bias)", rest)
            if suffix:
                out_axis, in_axis = _axes(module.kind, suffix.group(1))
                return ParamLayout(layer, module.blocks, out_axis, in_axis,
                                   module.in_unit if in_axis is not None else None, module.kind)
    elif any(re.fullmatch(pattern, name) for pattern in spec.global_patterns):
        return ParamLayout(None, (Block(GLOBAL),), None)
    raise UnsupportedArchitectureError(
        f"body parameter {name!r} of model type {spec.model_type!r} has no known role; "
        "this variant of the architecture is not supported"
    )


def weight_kind(spec: ArchSpec, name: str) -> str:
    """How body weight ``name`` is stored: LINEAR [out, in], CONV1D [in, out] or OTHER (table).
    Outside the layers LINEAR: the pooler, ELECTRA's embeddings_project are nn.Linear."""
    return LINEAR if (layout := param_layout(spec, name)).layer is None else layout.kind


class LinearLayer(NamedTuple):
    module: nn.Module  # an nn.Linear or a Conv1D
    kind: str  # LINEAR or CONV1D (weight_kind)
    in_features: int  # its input width: the size of its Gram


def linear_layers(model: nn.Module) -> dict[str, LinearLayer]:
    """Every linear-like module of the body (nn.Linear, transformers' Conv1D) by its weight's
    body name; a module whose class contradicts the table is an error."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    spec, out = spec_for(model), {}
    for prefix, module in body(model).named_modules():
        if isinstance(module, (nn.Linear, Conv1D)):
            name, kind = f"{prefix}.weight", LINEAR if isinstance(module, nn.Linear) else CONV1D
            if (table := weight_kind(spec, name)) != kind:
                raise UnsupportedArchitectureError(f"{prefix} of model type {spec.model_type!r} "
                                                   f"is {kind}, not {table} as in the table")
            out[name] = LinearLayer(module, kind, module.weight.shape[_axes(kind, "weight")[1]])
    return out


def param_role(spec: ArchSpec, name: str) -> ParamRole:
    """Role of a body parameter (of its first block, for fused ones) and its layer."""
    layout = param_layout(spec, name)
    return ParamRole(layout.role, layout.layer)


def model_inputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tokenizer's padded batch as the model should get it.

    Decoders (``position_ids_from_mask``) get ``position_ids`` counting only
    real tokens, so that left padding does not shift an example's positions
    (with right padding they equal the default ``0..T-1`` on real tokens).
    """
    spec = spec_for(model)
    if not spec.position_ids_from_mask or "position_ids" in inputs or "attention_mask" not in inputs:
        return inputs
    mask = inputs["attention_mask"]
    return {**inputs, "position_ids": (mask.long().cumsum(-1) - 1).clamp_min(0)}


def body_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The body's tensors, keyed as in ``model.base_model.state_dict()``."""
    return dict(body(model).state_dict())


def merged_state(model: nn.Module, objective: str) -> dict[str, torch.Tensor]:
    """The tensors a merge of ``objective``'s models covers, by the merge's names: the body
    (:func:`body_state`), e.g. a classifier's; or the whole model (a causal LM's), its body
    by the body's names and its output projection by its own (``lm_head.weight``), unless
    tied to the embeddings (then merged once, with them).  A model of another objective is
    refused."""
    from .. import objectives

    objectives.check_model(model, objective)
    state = body_state(model)
    if not objectives.objective(objective).whole_model:
        return state
    shared = {t.data_ptr() for t in state.values()}
    for name, value in head_state(model).items():
        if value.data_ptr() not in shared:
            state[name] = value
    return state


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The task head's tensors (full-model names), i.e. everything outside the body."""
    prefix = body_prefix(model)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}


__all__ = [
    "merged_state",
    "spec_for",
    "Dims",
    "dims",
    "body",
    "body_prefix",
    "layers",
    "head_out_projections",
    "ffn_inputs",
    "ffn_outputs",
    "label_rows_module",
    "param_layout",
    "weight_kind",
    "LinearLayer",
    "linear_layers",
    "param_role",
    "model_inputs",
    "body_state",
    "head_state",
]
