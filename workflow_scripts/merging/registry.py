"""The merge methods: the one list that the schema, the wildcard constraints, the
plan, the merge command, the report and the plots read.

Each method names the module that computes it, the per-task artifact it needs
(a Fisher kind, or a Gram file), whether it needs the pre-trained base (task
vectors) and a scaling factor lambda, its report label and plot colour.  A
method that takes a mask scheme (:mod:`.schemes`) gives one *variant* per
scheme: its own merge id, Table 1 column and plot colour; a method that takes
lambda gives one variant per lambda value.  Merge ids: ``average`` for methods
without an artifact, ``ties-lam1`` for methods scaled by lambda, and
``<variant>-n<N>`` for those whose artifact depends on the sample count N
(``fisher-n128``, ``mask-released-n32``, ``regmean-n128``).

Adding a method: one module under ``merging/`` with ``weights(inputs)`` (per-model
weights of a weighted average, see :mod:`.average`) or ``merged(inputs)`` (the
merged body directly, see :mod:`.task_arithmetic`), one entry in ``METHODS``
below, and its test.  This module is pure data (no torch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .schemes import DEFAULT_SCHEME, SCHEMES, Scheme

GRAM = "gram"  # the artifact of RegMean: Gram matrices of every linear layer's inputs
TIES_SCOPES = ("global", "tensor")  # TIES trimming: one threshold per task vector or per tensor
DARE_COMBINES = ("task-arithmetic", "ties")  # how DARE combines its rescaled task vectors
# The methods' hyper-parameters (names, defaults, ranges, help) are fields of
# workflow_scripts.settings.MergeSettings; a method lists those it reads in ``settings``.


@dataclass(frozen=True)
class MergeMethod:
    name: str  # config merge.methods, CLI --method
    label: str  # report label; "{scheme}" is replaced by ", <scheme label>" for non-default schemes
    color: str  # matplotlib colour of its plots
    module: str  # workflow_scripts.merging.<module> computes it
    artifact: str | None = None  # per-model artifact: a Fisher kind ("mask", "full"), GRAM, None
    takes_scheme: bool = False  # weights depend on a mask scheme
    vs_average: bool = False  # Table 1 shows its difference from averaging
    needs_base: bool = False  # works on task vectors: needs the pre-trained model (--base)
    takes_lambda: bool = False  # scaled by lambda; one variant per lambda value
    default_lambda: float | None = None  # None with takes_lambda: the lambda of its combine method
    settings: tuple[str, ...] = ()  # the MergeSettings fields it reads (config merge.KEY, --key)
    description: str = ""

    @property
    def fisher(self) -> str | None:
        """The Fisher kind each model needs (None for methods without a Fisher)."""
        return None if self.artifact in (None, GRAM) else self.artifact


METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in (
        MergeMethod("average", "Averaging", "tab:gray", "average",
                    description="plain average of the bodies"),
        MergeMethod("fisher", "Fisher (full)", "tab:blue", "fisher", artifact="full",
                    description="weights: the full diagonal Fisher (Matena & Raffel 2022)"),
        MergeMethod("mask", "Ours (mask{scheme})", "tab:red", "mask", artifact="mask",
                    takes_scheme=True, vs_average=True,
                    description="weights: the mask-node Fisher mapped by a scheme"),
        MergeMethod("task-arithmetic", "Task arithmetic", "tab:green", "task_arithmetic",
                    needs_base=True, takes_lambda=True, default_lambda=0.3,
                    description="base + lambda * sum of task vectors (Ilharco et al. 2023)"),
        MergeMethod("ties", "TIES", "tab:purple", "ties", needs_base=True, takes_lambda=True,
                    default_lambda=1.0, settings=("ties_k", "ties_scope"),
                    description="trim, elect sign, disjoint mean of task vectors (Yadav et al. "
                                "2023)"),
        MergeMethod("dare", "DARE", "tab:brown", "dare", needs_base=True, takes_lambda=True,
                    settings=("dare_p", "dare_combine", "seed", "ties_k", "ties_scope"),
                    description="drop and rescale task-vector entries, then task arithmetic or "
                                "TIES (Yu et al. 2024)"),
        MergeMethod("regmean", "RegMean", "tab:olive", "regmean", artifact=GRAM,
                    settings=("regmean_alpha",),
                    description="linear layers: least squares on each model's input Grams; "
                                "the rest averaged (Jin et al. 2023)"),
    )
}
METHOD_NAMES = tuple(METHODS)


LAMBDA_PATTERN = r"[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"


def format_lambda(lam: float) -> str:
    """``0.3`` -> ``0.3``, ``1.0`` -> ``1``: the lambda part of a merge id."""
    text = f"{float(lam):g}"
    if not re.fullmatch(LAMBDA_PATTERN, text):
        raise ValueError(f"lambda must be a positive number, got {lam!r}")
    return text


@dataclass(frozen=True)
class Variant:
    """A method with its scheme (None for methods without one) and lambda (None likewise)."""

    method: MergeMethod
    scheme: Scheme | None = None
    lam: float | None = None

    @property
    def base_key(self) -> str:
        """``mask`` for the default scheme, ``mask-released`` for another one; no lambda."""
        if self.scheme is None or self.scheme.default:
            return self.method.name
        return f"{self.method.name}-{self.scheme.name}"

    @property
    def key(self) -> str:
        """What the report calls it: ``base_key``, plus ``-lam<lambda>`` for lambda methods."""
        if self.lam is None:
            return self.base_key
        return f"{self.base_key}-lam{format_lambda(self.lam)}"

    def with_lambda(self, lam: float) -> "Variant":
        if not self.method.takes_lambda:
            raise ValueError(f"merge method {self.method.name!r} takes no lambda")
        return replace(self, lam=float(lam))

    @property
    def label(self) -> str:
        extra = "" if self.scheme is None or self.scheme.default else f", {self.scheme.label}"
        label = self.method.label.replace("{scheme}", extra)
        return label if self.lam is None else f"{label} (λ = {format_lambda(self.lam)})"

    @property
    def color(self) -> str:
        if self.scheme is not None and not self.scheme.default and self.scheme.color:
            return self.scheme.color
        return self.method.color

    @property
    def per_n(self) -> bool:
        """Its artifact (and so its merge id) depends on the Fisher sample count n."""
        return self.method.artifact is not None

    def merge_id(self, n: int | None, seed: int | None = None) -> str:
        """``average``; ``ties-lam1``; ``mask-n128-seed0`` (the samples' count and seed)."""
        if self.per_n != (n is not None) or self.per_n != (seed is not None):
            raise ValueError(f"merge {self.key!r} {'needs' if self.per_n else 'takes no'} "
                             "n and seed")
        if self.method.takes_lambda and self.lam is None:
            raise ValueError(f"merge {self.key!r} needs a lambda")
        return self.key if n is None else f"{self.key}-n{n}-seed{seed}"


def method(name: str) -> MergeMethod:
    from ..errors import MergeError

    if name not in METHODS:
        raise MergeError(f"unknown merge method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def variants(methods=METHOD_NAMES, schemes=(DEFAULT_SCHEME,), lambdas=None) -> list[Variant]:
    """The variants of ``methods`` (registry order): one per scheme for scheme-taking methods,
    one per lambda of ``lambdas[method]`` for lambda-taking methods (``lambdas`` None: the
    variants without lambda, as in :data:`ALL_VARIANTS`)."""
    out = []
    for name in METHODS:
        if name in methods:
            m = METHODS[name]
            if m.takes_scheme:
                out.extend(Variant(m, SCHEMES[s]) for s in SCHEMES if s in schemes)
            elif m.takes_lambda and lambdas is not None:
                out.extend(Variant(m, lam=float(lam)) for lam in lambdas[name])
            else:
                out.append(Variant(m))
    return out


# Every variant without its lambda, in report order, by base key.
ALL_VARIANTS: dict[str, Variant] = {v.key: v for v in variants(METHOD_NAMES, tuple(SCHEMES))}


def _alternatives(keys) -> str:
    return "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))


_PLAIN = [k for k, v in ALL_VARIANTS.items() if not v.per_n and not v.method.takes_lambda]
_LAMBDA = [k for k, v in ALL_VARIANTS.items() if v.method.takes_lambda]
_PER_N = [k for k, v in ALL_VARIANTS.items() if v.per_n]
# A variant key (the report's method column) and the wildcard constraint of {merge_id}.
KEY_PATTERN = f"({_alternatives(_PLAIN + _PER_N)})|({_alternatives(_LAMBDA)})-lam({LAMBDA_PATTERN})"
MERGE_ID_PATTERN = (
    f"({_alternatives(_PLAIN)})|({_alternatives(_LAMBDA)})-lam({LAMBDA_PATTERN})"
    f"|({_alternatives(_PER_N)})-n([0-9]+)-seed([0-9]+)"
)


def variant(key: str) -> Variant:
    """The variant of a report key: ``mask-released``, ``ties-lam1``."""
    from ..errors import MergeError

    match = re.fullmatch(KEY_PATTERN, key)
    if not match:
        raise MergeError(f"unknown merge {key!r}; known: {', '.join(ALL_VARIANTS)} "
                         "(lambda methods as NAME-lamLAMBDA)")
    if match.group(1):
        return ALL_VARIANTS[match.group(1)]
    return ALL_VARIANTS[match.group(2)].with_lambda(float(match.group(3)))


def is_known(key: str) -> bool:
    return re.fullmatch(KEY_PATTERN, key) is not None


def rank(key: str) -> float:
    """Sort key of a report key: the registry's order, then lambda (unknown keys last)."""
    if not is_known(key):
        return float(len(ALL_VARIANTS))
    v = variant(key)
    return list(ALL_VARIANTS).index(v.base_key) + (0.0 if v.lam is None else v.lam / (1 + v.lam))


def parse_merge_id(merge_id: str) -> tuple[Variant, int | None, int | None]:
    """``mask-released-n128-seed0`` -> (the mask/released variant, 128, 0); ``ties-lam1`` ->
    (TIES with lambda 1, None, None)."""
    match = re.fullmatch(MERGE_ID_PATTERN, merge_id)
    if not match:
        raise ValueError(f"bad merge id {merge_id!r} (expected {MERGE_ID_PATTERN})")
    if match.group(1):
        return ALL_VARIANTS[match.group(1)], None, None
    if match.group(2):
        return ALL_VARIANTS[match.group(2)].with_lambda(float(match.group(3))), None, None
    return ALL_VARIANTS[match.group(4)], int(match.group(5)), int(match.group(6))
