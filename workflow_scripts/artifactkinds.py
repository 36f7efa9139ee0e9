"""The kinds of per-model artifact a merge reads: the one list that the merge's sources and
checks, its files, the ``merge`` command's flags, the plan and the rules read.

An artifact is a safetensors file of one model's tensors with a checksum and metadata
(:mod:`.artifacts`); its metadata's ``method`` says which kind it is.  A kind names its
noun in messages, its ``merge`` flag (``--fishers``) and the rules' input key (the same
word), the command that computes it, its path in :data:`workflow_scripts.paths.PATHS`,
the ``method`` values its files record and how its values are checked.  A merge method
(:mod:`workflow_scripts.merging.registry`) names the artifact it needs by such a method
value (``mask``, ``full``, ``gram``).

Adding a kind: one entry in :data:`KINDS` (the merge's sources take it by its ``option``),
its command and its test.  No torch: Snakemake reads this while it parses the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fisher.kinds import METHODS as FISHER_METHODS

# How a kind's values are checked (artifacts.verify_artifact): Fisher values are finite,
# non-negative and not all zero; a Gram may hold negative entries, only finite ones.
NON_NEGATIVE = "non-negative"
FINITE = "finite"


@dataclass(frozen=True)
class ArtifactKind:
    name: str  # the kind's key
    noun: str  # its name in messages: "Fisher file ..."
    option: str  # the merge's source field and rule input (fishers), its flag --fishers
    command: str  # the command that computes one
    path_key: str  # its path in paths.PATHS ({family}, {rep}, {task}, {n}, {seed}, {method})
    methods: tuple[str, ...]  # the metadata "method" values of its files
    values: str  # NON_NEGATIVE or FINITE
    help: str  # the merge flag's help

    @property
    def flag(self) -> str:
        return f"--{self.option}"

    @property
    def file(self) -> str:
        """``Fisher file``: how messages name one."""
        return f"{self.noun} file"


GRAM = "gram"  # RegMean's artifact: the Gram matrices of every body linear layer's inputs

KINDS: dict[str, ArtifactKind] = {k.name: k for k in (
    ArtifactKind("fisher", "Fisher", "fishers", "fisher", "fisher", tuple(FISHER_METHODS),
                 NON_NEGATIVE, "one Fisher file per model, same order (the fisher command)"),
    ArtifactKind(GRAM, "Gram", "grams", "gram", "gram", (GRAM,), FINITE,
                 "one Gram file per model, same order (the gram command)"),
)}


def of_method(method: str | None) -> ArtifactKind | None:
    """The kind of an artifact whose files record ``method`` (a merge method's
    ``artifact``: ``mask``, ``full``, ``gram``); None for None or an unknown value."""
    for kind in KINDS.values():
        if method in kind.methods:
            return kind
    return None


def kind(name: str) -> ArtifactKind:
    return KINDS[name]


def noun(method: str | None) -> str:
    """The noun of the kind recording ``method``; ``artifact`` when it is unknown."""
    found = of_method(method)
    return found.noun if found is not None else "artifact"
