"""Mask schemes: how the mask-node Fisher weights each body parameter.

A scheme is a table from a parameter's role (:mod:`workflow_scripts.architectures`)
to a weight rule; the merge reads the table and nothing else:

=====================  ==================================================================
rule                   weight of the parameter
=====================  ==================================================================
``head_rows``          row block of head h (weight rows and bias entries) -> head h's Fisher
``neuron_rows``        row r (weight row and bias entry) -> neuron r's Fisher
``head_columns``       input columns of head h -> head h's Fisher; parameters of the role
                       without head input columns (biases, norms) -> 1
``neuron_columns``     input columns of neuron r -> neuron r's Fisher; others of the role -> 1
``layer_head_mean``    the mean head Fisher of the parameter's layer
``layer_neuron_mean``  the mean neuron Fisher of the parameter's layer
``global_mean``        mean over layers of (mean head Fisher + mean neuron Fisher)
``one``                1 (a plain average of that parameter)
=====================  ==================================================================

"Rows" and "columns" are the output and input axes of the projection,
whatever its storage: :mod:`workflow_scripts.architectures` describes each
architecture's layout (GPT-2's transposed Conv1D weights, ModernBERT's fused
``Wqkv`` and ``Wi``, whose blocks may have different roles), so the tables
stay architecture-independent.  With grouped-query attention a key/value
head serves a group of query heads; the scheme's ``kv_heads`` rule says what
a row rule gives it: ``group_sum``, the sum of its group's head Fisher (the
gradient of a shared key/value head's mask is the sum of its query heads').

``paper`` is the paper's text; ``released`` the authors' released code (see
``shared/notes/method-details.md``); ``qkv`` the paper's variant with value
rows weighted too (reported worse in the paper); ``touching`` weights every
parameter that touches a masked unit.  Adding a scheme is one entry here plus
its test.  This module is pure data (no torch), so the workflow can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import architectures as arch

RULES = ("head_rows", "neuron_rows", "head_columns", "neuron_columns", "layer_head_mean",
         "layer_neuron_mean", "global_mean", "one")
KV_HEAD_RULES = ("group_sum",)  # what a row rule gives a key/value head shared by a group


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    table: dict[str, str]  # role -> rule; every role of architectures.ROLES
    label: str = ""  # appended to the method's label in the report ("" for the default)
    color: str | None = None  # plot colour of the merge with this scheme (None: the method's)
    default: bool = False
    kv_heads: str = "group_sum"  # one of KV_HEAD_RULES

    def __post_init__(self):
        missing = set(arch.ROLES) - set(self.table)
        unknown = set(self.table.values()) - set(RULES)
        if missing or unknown or set(self.table) - set(arch.ROLES):
            raise ValueError(f"mask scheme {self.name!r}: roles without a rule {sorted(missing)}, "
                             f"unknown rules {sorted(unknown)}")
        if self.kv_heads not in KV_HEAD_RULES:
            raise ValueError(f"mask scheme {self.name!r}: kv_heads rule {self.kv_heads!r} is not "
                             f"one of {KV_HEAD_RULES}")


# The paper's text: query/key rows by head, FFN-in rows by neuron, everything else 1.
_PAPER = {role: "one" for role in arch.ROLES} | {arch.QK: "head_rows", arch.FFN_IN: "neuron_rows"}
# The paper's variant: value rows by head too.
_QKV = _PAPER | {arch.VALUE: "head_rows"}

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme(
            name="paper",
            description="the paper's text: query/key rows by head, FFN-in rows by neuron, all else 1",
            table=_PAPER,
            default=True,
        ),
        Scheme(
            name="released",
            description="the authors' released code: as paper, and layer / global means elsewhere",
            table=_PAPER | dict.fromkeys((arch.VALUE, arch.ATTN_OUT), "layer_head_mean")
            | dict.fromkeys((arch.GLOBAL, arch.LM_HEAD), "global_mean")
            | {arch.FFN_OUT: "layer_neuron_mean"},
            label="released scheme",
            color="tab:orange",
        ),
        Scheme(
            name="qkv",
            description="as paper, and value rows by head (the paper's variant, reported worse)",
            table=_QKV,
            label="q/k/v scheme",
            color="tab:purple",
        ),
        Scheme(
            name="touching",
            description="every parameter touching a masked unit: q/k/v rows and output-projection "
                        "columns by head, FFN-in rows and FFN-out columns by neuron, all else 1",
            table=_QKV | {arch.ATTN_OUT: "head_columns", arch.FFN_OUT: "neuron_columns"},
            label="touching scheme",
            color="tab:green",
        ),
    )
}
DEFAULT_SCHEME = next(s.name for s in SCHEMES.values() if s.default)
SCHEME_NAMES = tuple(SCHEMES)


def scheme(name: str) -> Scheme:
    from ..errors import MergeError

    if name not in SCHEMES:
        raise MergeError(f"unknown mask scheme {name!r}; choose from {', '.join(SCHEMES)}")
    return SCHEMES[name]
