"""The one place that knows transformer architectures.

Everything the engine needs to know about a model family lives here: where the
attention heads and FFN neurons are (for the mask hooks), how the shared body's
parameters divide into roles (for the mask merge schemes), and which module of
the task head holds one row per label (for label mappings).  Scripts never
spell module names themselves; they ask this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UnsupportedArchitectureError

if TYPE_CHECKING:  # torch is not imported at run time: the workflow reads the roles
    import torch
    from torch import nn

# Parameter roles inside the shared body (the model's ``base_model``).
QK = "qk"  # query/key weights and biases; rows belong to heads
VALUE = "value"  # value projection
ATTN_OUT = "attn_out"  # attention output projection and its LayerNorm
FFN_IN = "ffn_in"  # FFN input projection; rows belong to neurons
FFN_OUT = "ffn_out"  # FFN output projection and its LayerNorm
GLOBAL = "global"  # embeddings, pooler, embedding projection
ROLES = (QK, VALUE, ATTN_OUT, FFN_IN, FFN_OUT, GLOBAL)


@dataclass(frozen=True)
class ParamRole:
    role: str
    layer: int | None  # None for GLOBAL


@dataclass(frozen=True)
class ArchSpec:
    model_type: str
    layer_list: str  # attribute path from base_model to the ModuleList of layers
    head_out_proj: str  # per layer: Linear whose input is the concatenated heads
    ffn_in: str  # per layer: Linear producing the FFN pre-activation
    ffn_out: str  # per layer: Linear consuming the FFN post-activation
    label_rows: str  # from the full model: Linear whose output rows are labels
    # regexes on base_model parameter names, after the layer prefix
    role_patterns: tuple[tuple[str, str], ...]
    global_patterns: tuple[str, ...]
    config_layers: str = "num_hidden_layers"
    config_heads: str = "num_attention_heads"
    config_intermediate: str = "intermediate_size"
    config_hidden: str = "hidden_size"

    @property
    def layer_regex(self) -> re.Pattern:
        return re.compile(rf"^{re.escape(self.layer_list)}\.(\d+)\.(.+)$")


_BERT_LIKE_ROLES = (
    (QK, r"attention\.self\.(query|key)\.(weight|bias)"),
    (VALUE, r"attention\.self\.value\.(weight|bias)"),
    (ATTN_OUT, r"attention\.output\.(dense|LayerNorm)\.(weight|bias)"),
    (FFN_IN, r"intermediate\.dense\.(weight|bias)"),
    (FFN_OUT, r"output\.(dense|LayerNorm)\.(weight|bias)"),
)
_BERT_LIKE = dict(
    layer_list="encoder.layer",
    head_out_proj="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    role_patterns=_BERT_LIKE_ROLES,
    global_patterns=(r"embeddings\..+", r"pooler\..+", r"embeddings_project\..+"),
)

SPECS: dict[str, ArchSpec] = {
    "bert": ArchSpec(model_type="bert", label_rows="classifier", **_BERT_LIKE),
    "roberta": ArchSpec(
        model_type="roberta", label_rows="classifier.out_proj", **_BERT_LIKE
    ),
    "electra": ArchSpec(
        model_type="electra", label_rows="classifier.out_proj", **_BERT_LIKE
    ),
    "distilbert": ArchSpec(
        model_type="distilbert",
        layer_list="transformer.layer",
        head_out_proj="attention.out_lin",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        label_rows="classifier",
        role_patterns=(
            (QK, r"attention\.(q_lin|k_lin)\.(weight|bias)"),
            (VALUE, r"attention\.v_lin\.(weight|bias)"),
            (ATTN_OUT, r"(attention\.out_lin|sa_layer_norm)\.(weight|bias)"),
            (FFN_IN, r"ffn\.lin1\.(weight|bias)"),
            (FFN_OUT, r"(ffn\.lin2|output_layer_norm)\.(weight|bias)"),
        ),
        global_patterns=(r"embeddings\..+",),
        config_layers="n_layers",
        config_heads="n_heads",
        config_intermediate="hidden_dim",
        config_hidden="dim",
    ),
}
SUPPORTED = tuple(sorted(SPECS))


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

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def dims(model_or_config) -> Dims:
    config = getattr(model_or_config, "config", model_or_config)
    spec = spec_for(config)
    return Dims(
        layers=int(getattr(config, spec.config_layers)),
        heads=int(getattr(config, spec.config_heads)),
        intermediate=int(getattr(config, spec.config_intermediate)),
        hidden=int(getattr(config, spec.config_hidden)),
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


def head_out_projections(model: nn.Module) -> list[nn.Linear]:
    spec = spec_for(model)
    return [layer.get_submodule(spec.head_out_proj) for layer in layers(model)]


def ffn_inputs(model: nn.Module) -> list[nn.Linear]:
    spec = spec_for(model)
    return [layer.get_submodule(spec.ffn_in) for layer in layers(model)]


def ffn_outputs(model: nn.Module) -> list[nn.Linear]:
    spec = spec_for(model)
    return [layer.get_submodule(spec.ffn_out) for layer in layers(model)]


def label_rows_module(model: nn.Module) -> nn.Linear:
    return model.get_submodule(spec_for(model).label_rows)


def param_role(spec: ArchSpec, name: str) -> ParamRole:
    """Role of a body parameter, named as in ``model.base_model.state_dict()``."""
    match = spec.layer_regex.match(name)
    if match:
        layer, rest = int(match.group(1)), match.group(2)
        for role, pattern in spec.role_patterns:
            if re.fullmatch(pattern, rest):
                return ParamRole(role, layer)
    else:
        for pattern in spec.global_patterns:
            if re.fullmatch(pattern, name):
                return ParamRole(GLOBAL, None)
    raise UnsupportedArchitectureError(
        f"body parameter {name!r} of model type {spec.model_type!r} has no known role; "
        "this variant of the architecture is not supported"
    )


def body_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The body's tensors, keyed as in ``model.base_model.state_dict()``."""
    return dict(body(model).state_dict())


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The task head's tensors (full-model names), i.e. everything outside the body."""
    prefix = body_prefix(model)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
