"""The vocabulary of architecture layouts: parameter roles, units, module kinds, and the
dataclasses a layout is written in (:mod:`.table` holds the layouts).  Pure data."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Parameter roles inside the shared body (the model's ``base_model``).
QK = "qk"  # query/key weights and biases; rows belong to heads
VALUE = "value"  # value projection
ATTN_OUT = "attn_out"  # attention output projection and the attention sub-block's norm
FFN_IN = "ffn_in"  # FFN input projection(s); rows belong to neurons
FFN_OUT = "ffn_out"  # FFN output projection and the FFN sub-block's norm
GLOBAL = "global"  # embeddings, pooler, final norm, relative-position tables
LM_HEAD = "lm_head"  # a causal language model's output projection (untied from the embeddings)
ROLES = (QK, VALUE, ATTN_OUT, FFN_IN, FFN_OUT, GLOBAL, LM_HEAD)

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
    lm_head: str | None = None  # causal LMs: the output projection's module (full model); None:
    # the architecture is merged and evaluated as a classifier only
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


__all__ = [
    "QK",
    "VALUE",
    "ATTN_OUT",
    "FFN_IN",
    "FFN_OUT",
    "GLOBAL",
    "LM_HEAD",
    "ROLES",
    "HEAD",
    "KV_HEAD",
    "NEURON",
    "UNITS",
    "LINEAR",
    "CONV1D",
    "OTHER",
    "KINDS",
    "MASK_FORMS",
    "Block",
    "Module",
    "lin",
    "other",
    "ParamLayout",
    "ParamRole",
    "ArchSpec",
]
