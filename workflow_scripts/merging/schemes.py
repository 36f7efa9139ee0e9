"""Mask schemes: how the mask-node Fisher weights each body parameter.

A scheme is a table from a parameter's role (:mod:`workflow_scripts.architectures`)
to a weight rule; the merge reads the table and nothing else:

=====================  ==================================================================
rule                   weight of the parameter
=====================  ==================================================================
``head_rows``          row block of head h (weight rows and bias entries) -> head h's Fisher
``neuron_rows``        row r (weight row and bias entry) -> neuron r's Fisher
``layer_head_mean``    the mean head Fisher of the parameter's layer
``layer_neuron_mean``  the mean neuron Fisher of the parameter's layer
``global_mean``        mean over layers of (mean head Fisher + mean neuron Fisher)
``one``                1 (a plain average of that parameter)
=====================  ==================================================================

``paper`` is the paper's text; ``released`` the authors' released code (see
``shared/notes/method-details.md``).  Adding a scheme is one entry here plus
its test.  This module is pure data (no torch), so the workflow can read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import architectures as arch

RULES = ("head_rows", "neuron_rows", "layer_head_mean", "layer_neuron_mean", "global_mean", "one")


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    table: dict[str, str]  # role -> rule; every role of architectures.ROLES
    label: str = ""  # appended to the method's label in the report ("" for the default)
    color: str | None = None  # plot colour of the merge with this scheme (None: the method's)
    default: bool = False

    def __post_init__(self):
        missing = set(arch.ROLES) - set(self.table)
        unknown = set(self.table.values()) - set(RULES)
        if missing or unknown or set(self.table) - set(arch.ROLES):
            raise ValueError(f"mask scheme {self.name!r}: roles without a rule {sorted(missing)}, "
                             f"unknown rules {sorted(unknown)}")


# The paper's text: query/key rows by head, FFN-in rows by neuron, everything else 1.
_PAPER = {role: "one" for role in arch.ROLES} | {arch.QK: "head_rows", arch.FFN_IN: "neuron_rows"}

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
            table=_PAPER | {
                arch.VALUE: "layer_head_mean",
                arch.ATTN_OUT: "layer_head_mean",
                arch.FFN_OUT: "layer_neuron_mean",
                arch.GLOBAL: "global_mean",
            },
            label="released scheme",
            color="tab:orange",
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
