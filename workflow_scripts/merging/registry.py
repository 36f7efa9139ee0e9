"""The merge methods: the one list that the schema, the wildcard constraints, the
plan, the merge command, the report and the plots read.

Each method names the module that computes its weights, the per-task artifact it
needs, its report label and plot colour.  A method that takes a mask scheme
(:mod:`.schemes`) gives one *variant* per scheme: its own merge id, Table 1
column and plot colour.  Merge ids: ``average`` for methods without an
artifact, ``<variant>-n<N>`` for those whose artifact depends on the sample
count N (``fisher-n128``, ``mask-released-n32``).

Adding a method: one module under ``merging/`` with ``weights(...)`` (see
:mod:`.average`), one entry in ``METHODS`` below, and its test.
This module is pure data (no torch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .schemes import DEFAULT_SCHEME, SCHEMES, Scheme


@dataclass(frozen=True)
class MergeMethod:
    name: str  # config merge.methods, CLI --method
    label: str  # report label; "{scheme}" is replaced by ", <scheme label>" for non-default schemes
    color: str  # matplotlib colour of its plots
    module: str  # workflow_scripts.merging.<module> computes its weights
    fisher: str | None = None  # the Fisher kind each model needs ("mask", "full"); None: none
    takes_scheme: bool = False  # weights depend on a mask scheme
    vs_average: bool = False  # Table 1 shows its difference from averaging
    description: str = ""


METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in (
        MergeMethod("average", "Averaging", "tab:gray", "average",
                    description="plain average of the bodies"),
        MergeMethod("fisher", "Fisher (full)", "tab:blue", "fisher", fisher="full",
                    description="weights: the full diagonal Fisher (Matena & Raffel 2022)"),
        MergeMethod("mask", "Ours (mask{scheme})", "tab:red", "mask", fisher="mask",
                    takes_scheme=True, vs_average=True,
                    description="weights: the mask-node Fisher mapped by a scheme"),
    )
}
METHOD_NAMES = tuple(METHODS)


@dataclass(frozen=True)
class Variant:
    """A method with its scheme (None for methods without one)."""

    method: MergeMethod
    scheme: Scheme | None = None

    @property
    def key(self) -> str:
        """``mask`` for the default scheme, ``mask-released`` for another one."""
        if self.scheme is None or self.scheme.default:
            return self.method.name
        return f"{self.method.name}-{self.scheme.name}"

    @property
    def label(self) -> str:
        extra = "" if self.scheme is None or self.scheme.default else f", {self.scheme.label}"
        return self.method.label.replace("{scheme}", extra)

    @property
    def color(self) -> str:
        if self.scheme is not None and not self.scheme.default and self.scheme.color:
            return self.scheme.color
        return self.method.color

    @property
    def per_n(self) -> bool:
        """Its artifact (and so its merge id) depends on the Fisher sample count n."""
        return self.method.fisher is not None

    def merge_id(self, n: int | None, seed: int | None = None) -> str:
        """``average``; ``mask-n128-seed0`` (the Fisher samples' count and seed)."""
        if self.per_n != (n is not None) or self.per_n != (seed is not None):
            raise ValueError(f"merge {self.key!r} {'needs' if self.per_n else 'takes no'} "
                             "n and seed")
        return self.key if n is None else f"{self.key}-n{n}-seed{seed}"


def method(name: str) -> MergeMethod:
    from ..errors import MergeError

    if name not in METHODS:
        raise MergeError(f"unknown merge method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def variants(methods=METHOD_NAMES, schemes=(DEFAULT_SCHEME,)) -> list[Variant]:
    """The variants of ``methods`` (registry order), one per scheme for scheme-taking methods."""
    out = []
    for name in METHODS:
        if name in methods:
            m = METHODS[name]
            if m.takes_scheme:
                out.extend(Variant(m, SCHEMES[s]) for s in SCHEMES if s in schemes)
            else:
                out.append(Variant(m))
    return out


ALL_VARIANTS: dict[str, Variant] = {v.key: v for v in variants(METHOD_NAMES, tuple(SCHEMES))}


def variant(key: str) -> Variant:
    from ..errors import MergeError

    if key not in ALL_VARIANTS:
        raise MergeError(f"unknown merge {key!r}; known: {', '.join(ALL_VARIANTS)}")
    return ALL_VARIANTS[key]


def _alternatives(keys) -> str:
    return "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))


# The wildcard constraint of {merge_id} in the rules.
MERGE_ID_PATTERN = (
    f"({_alternatives(k for k, v in ALL_VARIANTS.items() if not v.per_n)})"
    f"|({_alternatives(k for k, v in ALL_VARIANTS.items() if v.per_n)})-n([0-9]+)-seed([0-9]+)"
)


def parse_merge_id(merge_id: str) -> tuple[Variant, int | None, int | None]:
    """``mask-released-n128-seed0`` -> (the mask/released variant, 128, 0)."""
    match = re.fullmatch(MERGE_ID_PATTERN, merge_id)
    if not match:
        raise ValueError(f"bad merge id {merge_id!r} (expected {MERGE_ID_PATTERN})")
    if match.group(1):
        return ALL_VARIANTS[match.group(1)], None, None
    return ALL_VARIANTS[match.group(2)], int(match.group(3)), int(match.group(4))
