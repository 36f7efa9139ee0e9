"""The one place that knows transformer architectures.

Everything the engine needs to know about a model family lives here, as data:
where the attention heads and FFN neurons are (for the mask hooks), how each
body parameter is laid out (which role every block of its rows belongs to,
which of its axes are indexed by heads or neurons: for the mask merge
schemes), how an example's attention mask is presented to a vmapped forward
pass (full Fisher), and which module of the task head holds one row per label
(for label mappings).  Scripts never spell module names themselves; they ask
this module.

Supported families and their units (see the README, "Architectures"):

=========================  ==============================  ===============================
model types                head h (mask on the input of)   neuron r
=========================  ==============================  ===============================
bert roberta electra       attention.output.dense          intermediate.dense row r
distilbert                 attention.out_lin               ffn.lin1 row r
deberta-v2 (v2, v3)        attention.output.dense          intermediate.dense row r
modernbert                 attn.Wo                         mlp.Wi row r of each half
gpt2                       attn.c_proj (Conv1D)            mlp.c_fc column r (Conv1D)
llama qwen2 mistral        self_attn.o_proj (query heads)  gate_proj and up_proj row r
=========================  ==============================  ===============================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from .errors import UnsupportedArchitectureError

if TYPE_CHECKING:  # torch is not imported at run time: the workflow reads the roles
    import torch
    from torch import nn

# Parameter roles inside the shared body (the model's ``base_model``).
QK = "qk"  # query/key weights and biases; rows belong to heads
VALUE = "value"  # value projection
ATTN_OUT = "attn_out"  # attention output projection and the attention sub-block's norm
FFN_IN = "ffn_in"  # FFN input projection(s); rows belong to neurons
FFN_OUT = "ffn_out"  # FFN output projection and the FFN sub-block's norm
GLOBAL = "global"  # embeddings, pooler, final norm, relative-position tables
ROLES = (QK, VALUE, ATTN_OUT, FFN_IN, FFN_OUT, GLOBAL)

# The units an axis of a parameter can be indexed by.
HEAD = "head"  # query heads (what the head mask scales)
KV_HEAD = "kv_head"  # key/value heads of grouped-query attention (each shared by a group)
NEURON = "neuron"  # FFN neurons
UNITS = (HEAD, KV_HEAD, NEURON)

# How a module stores its weight: which axis is the output (rows of a Linear).
LINEAR = "linear"  # nn.Linear: weight [out, in], bias [out]
CONV1D = "conv1d"  # GPT-2's Conv1D: weight [in, out] (transposed), bias [out]
OTHER = "other"  # norms, embeddings: no unit axis
KINDS = (LINEAR, CONV1D, OTHER)

# How the full Fisher gives one example its attention mask inside vmap (no
# data-dependent control flow may run there): ``keys`` an additive [1, 1, T]
# mask over keys (BERT family); ``binary`` the tokenizer's 0/1 mask as is (the
# model's own mask code is vmap-safe); ``causal`` an additive causal-and-padding
# [1, T, T] mask (decoders: left padding would leave rows fully masked); ``layer-types`` one additive 4-D mask per
# ``config.layer_types`` entry, built by transformers' own mask functions
# outside vmap (ModernBERT's global and sliding-window layers).
MASK_FORMS = ("keys", "binary", "causal", "layer-types")


@dataclass(frozen=True)
class Block:
    role: str
    unit: str | None = None  # the unit its output rows (columns for Conv1D) belong to


@dataclass(frozen=True)
class Module:
    """The parameters ``<pattern>.weight`` / ``.bias`` of one module of a layer.

    ``blocks``: equal consecutive blocks along the output axis (a fused
    ``Wqkv`` has three); ``in_unit``: the unit the weight's input axis is
    indexed by (the attention / FFN output projections).
    """

    pattern: str  # regex on the name after the layer prefix, without .weight/.bias
    blocks: tuple[Block, ...]
    kind: str = LINEAR
    in_unit: str | None = None

    def __post_init__(self):
        units = {b.unit for b in self.blocks} | {self.in_unit}
        if (self.kind not in KINDS or not self.blocks
                or any(b.role not in ROLES for b in self.blocks)
                or not units <= {None, *UNITS}):
            raise ValueError(f"bad module layout {self}")


def lin(pattern: str, role: str, unit: str | None = None, in_unit: str | None = None,
        kind: str = LINEAR, blocks: int = 1) -> Module:
    """A module whose ``blocks`` output blocks all have ``role`` and ``unit``."""
    return Module(pattern, (Block(role, unit),) * blocks, kind, in_unit)


def other(pattern: str, role: str) -> Module:
    return Module(pattern, (Block(role),), OTHER)


@dataclass(frozen=True)
class ParamLayout:
    """Where the units lie in one body parameter (see :func:`param_layout`)."""

    layer: int | None  # None outside the layers
    blocks: tuple[Block, ...]
    out_axis: int | None  # the axis the blocks split; None: no unit axis
    in_axis: int | None = None
    in_unit: str | None = None
    kind: str = OTHER  # of its module in the table (OTHER outside the layers)

    @property
    def role(self) -> str:
        """The role of the parameter (of its first block, for fused parameters)."""
        return self.blocks[0].role

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(b.role for b in self.blocks))


@dataclass(frozen=True)
class ParamRole:
    role: str
    layer: int | None  # None for GLOBAL


@dataclass(frozen=True)
class ArchSpec:
    model_type: str
    layer_list: str  # attribute path from base_model to the ModuleList of layers
    head_out_proj: str  # per layer: the projection whose input is the concatenated query heads
    ffn_in: str  # per layer: the projection whose output holds the activation's input
    ffn_out: str  # per layer: the projection consuming the FFN post-activation
    label_rows: str  # from the full model: Linear whose output rows are labels
    modules: tuple[Module, ...]  # layer modules (regexes after the layer prefix)
    global_patterns: tuple[str, ...]  # regexes on body names outside the layers
    # gated FFNs: ffn_in's output is ``ffn_in_blocks`` equal blocks, of which block
    # ``ffn_act_block`` goes through the activation (the pre-activation mask's place)
    ffn_in_blocks: int = 1
    ffn_act_block: int = 0
    full_fisher_mask: str = "keys"  # one of MASK_FORMS
    position_ids_from_mask: bool = False  # decoders: positions count real tokens (left padding)
    config_layers: str = "num_hidden_layers"
    config_heads: str = "num_attention_heads"
    config_kv_heads: str | None = None  # grouped-query attention; None: as many as heads
    config_intermediate: str = "intermediate_size"
    config_hidden: str = "hidden_size"
    intermediate_default: int | None = None  # x hidden when the config's value is None (GPT-2)

    def __post_init__(self):
        if self.full_fisher_mask not in MASK_FORMS:
            raise ValueError(f"{self.model_type}: full_fisher_mask must be one of {MASK_FORMS}")

    @property
    def layer_regex(self) -> re.Pattern:
        return re.compile(rf"^{re.escape(self.layer_list)}\.(\d+)\.(.+)$")


# --------------------------------------------------------------------------- #
# The table
# --------------------------------------------------------------------------- #

_BERT_LIKE = dict(
    layer_list="encoder.layer",
    head_out_proj="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    modules=(
        lin(r"attention\.self\.(query|key)", QK, HEAD),
        lin(r"attention\.self\.value", VALUE, HEAD),
        lin(r"attention\.output\.dense", ATTN_OUT, in_unit=HEAD),
        other(r"attention\.output\.LayerNorm", ATTN_OUT),
        lin(r"intermediate\.dense", FFN_IN, NEURON),
        lin(r"output\.dense", FFN_OUT, in_unit=NEURON),
        other(r"output\.LayerNorm", FFN_OUT),
    ),
    global_patterns=(r"embeddings\..+", r"pooler\..+", r"embeddings_project\..+"),
)

# Llama and the families sharing its layout: separate q/k/v/o projections with
# grouped-query attention (k_proj, v_proj rows are key/value heads), a gated
# SiLU FFN: down_proj(silu(gate_proj x) * up_proj x).
_LLAMA_LIKE = dict(
    layer_list="layers",
    head_out_proj="self_attn.o_proj",
    ffn_in="mlp.gate_proj",
    ffn_out="mlp.down_proj",
    label_rows="score",
    modules=(
        lin(r"self_attn\.q_proj", QK, HEAD),
        lin(r"self_attn\.k_proj", QK, KV_HEAD),
        lin(r"self_attn\.v_proj", VALUE, KV_HEAD),
        lin(r"self_attn\.o_proj", ATTN_OUT, in_unit=HEAD),
        other(r"input_layernorm", ATTN_OUT),
        lin(r"mlp\.(gate_proj|up_proj)", FFN_IN, NEURON),
        lin(r"mlp\.down_proj", FFN_OUT, in_unit=NEURON),
        other(r"post_attention_layernorm", FFN_OUT),
    ),
    global_patterns=(r"embed_tokens\..+", r"norm\..+"),
    full_fisher_mask="causal",
    position_ids_from_mask=True,
    config_kv_heads="num_key_value_heads",
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
        modules=(
            lin(r"attention\.(q_lin|k_lin)", QK, HEAD),
            lin(r"attention\.v_lin", VALUE, HEAD),
            lin(r"attention\.out_lin", ATTN_OUT, in_unit=HEAD),
            other(r"sa_layer_norm", ATTN_OUT),
            lin(r"ffn\.lin1", FFN_IN, NEURON),
            lin(r"ffn\.lin2", FFN_OUT, in_unit=NEURON),
            other(r"output_layer_norm", FFN_OUT),
        ),
        global_patterns=(r"embeddings\..+",),
        config_layers="n_layers",
        config_heads="n_heads",
        config_intermediate="hidden_dim",
        config_hidden="dim",
    ),
    # DeBERTa v2/v3: disentangled attention; the relative-position projections
    # (absent with share_att_key) and tables are GLOBAL; ContextPooler is part
    # of the task head (outside base_model).
    "deberta-v2": ArchSpec(
        model_type="deberta-v2",
        layer_list="encoder.layer",
        head_out_proj="attention.output.dense",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        label_rows="classifier",
        modules=(
            lin(r"attention\.self\.(query_proj|key_proj)", QK, HEAD),
            lin(r"attention\.self\.value_proj", VALUE, HEAD),
            lin(r"attention\.self\.(pos_key_proj|pos_query_proj)", GLOBAL),
            lin(r"attention\.output\.dense", ATTN_OUT, in_unit=HEAD),
            other(r"attention\.output\.LayerNorm", ATTN_OUT),
            lin(r"intermediate\.dense", FFN_IN, NEURON),
            lin(r"output\.dense", FFN_OUT, in_unit=NEURON),
            other(r"output\.LayerNorm", FFN_OUT),
        ),
        global_patterns=(r"embeddings\..+", r"encoder\.rel_embeddings\..+",
                         r"encoder\.LayerNorm\..+", r"encoder\.conv\..+"),
        full_fisher_mask="binary",
    ),
    # ModernBERT: fused Wqkv (blocks q, k, v), gated FFN Wi = [input | gate]
    # with Wo(act(input) * gate): neuron r owns row r of each half.
    "modernbert": ArchSpec(
        model_type="modernbert",
        layer_list="layers",
        head_out_proj="attn.Wo",
        ffn_in="mlp.Wi",
        ffn_out="mlp.Wo",
        label_rows="classifier",
        modules=(
            Module(r"attn\.Wqkv", (Block(QK, HEAD), Block(QK, HEAD), Block(VALUE, HEAD))),
            lin(r"attn\.Wo", ATTN_OUT, in_unit=HEAD),
            other(r"attn_norm", ATTN_OUT),
            lin(r"mlp\.Wi", FFN_IN, NEURON, blocks=2),
            lin(r"mlp\.Wo", FFN_OUT, in_unit=NEURON),
            other(r"mlp_norm", FFN_OUT),
        ),
        global_patterns=(r"embeddings\..+", r"final_norm\..+"),
        ffn_in_blocks=2,
        ffn_act_block=0,
        full_fisher_mask="layer-types",
    ),
    # GPT-2: Conv1D (weights [in, out]), fused c_attn = [q | k | v] columns.
    "gpt2": ArchSpec(
        model_type="gpt2",
        layer_list="h",
        head_out_proj="attn.c_proj",
        ffn_in="mlp.c_fc",
        ffn_out="mlp.c_proj",
        label_rows="score",
        modules=(
            other(r"ln_1", ATTN_OUT),
            Module(r"attn\.c_attn", (Block(QK, HEAD), Block(QK, HEAD), Block(VALUE, HEAD)), CONV1D),
            lin(r"attn\.c_proj", ATTN_OUT, in_unit=HEAD, kind=CONV1D),
            other(r"ln_2", FFN_OUT),
            lin(r"mlp\.c_fc", FFN_IN, NEURON, kind=CONV1D),
            lin(r"mlp\.c_proj", FFN_OUT, in_unit=NEURON, kind=CONV1D),
        ),
        global_patterns=(r"wte\..+", r"wpe\..+", r"ln_f\..+"),
        full_fisher_mask="causal",
        position_ids_from_mask=True,
        config_layers="n_layer",
        config_heads="n_head",
        config_intermediate="n_inner",
        config_hidden="n_embd",
        intermediate_default=4,
    ),
    "llama": ArchSpec(model_type="llama", **_LLAMA_LIKE),
    "qwen2": ArchSpec(model_type="qwen2", **_LLAMA_LIKE),
    "mistral": ArchSpec(model_type="mistral", **_LLAMA_LIKE),
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
    """Layout of a body parameter, named as in ``model.base_model.state_dict()``."""
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


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The task head's tensors (full-model names), i.e. everything outside the body."""
    prefix = body_prefix(model)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
