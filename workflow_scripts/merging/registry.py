"""The merge methods: the one list that the schema, the wildcard constraints, the
plan, the merge command, the report and the plots read.

Each method names the module that computes it, the per-task artifact it needs
(a Fisher kind, or a Gram file), whether it needs the pre-trained base (task
vectors) and a scaling factor lambda, the settings it reads, its report label
and plot colour.  A method that takes a mask scheme (:mod:`.schemes`) gives one
*variant* per scheme: its own merge id, Table 1 column and plot colour; a
method that takes lambda gives one variant per lambda value, and one per value
of each of its :data:`TUNED` settings that the config lists with several
values (the candidates of held-out selection).

Merge ids (:data:`MERGE_ID_PATTERN`, the ``{merge_id}`` wildcard): the variant's
key, then ``-n<N>-seed<S>`` for variants whose artifact depends on the Fisher
samples.  A key is the method (``average``), its scheme when not the default
(``mask-released``), ``-lam<lambda>`` for methods scaled by lambda
(``ties-lam1``), then ``-<tag><value>`` for each listed setting, in
:data:`TUNED` order (``ties-lam1-k20``, ``regmean-alpha0.5-n128-seed0``): a
setting given one value is not in the id, so ids stay those of a single value.
The report's key ``<variant>-selected`` (``task-arithmetic-selected``) is the
candidate that held-out selection chose for each merge; it is no merge of its
own.

Adding a method: one module under ``merging/`` with ``tensor(ctx, name)`` (the merged
value of one body parameter; optionally ``check(ctx)`` and ``prepare(ctx)``, see
:mod:`.engine`), one entry in ``METHODS`` below, and its test (docs/development.md,
"Adding a merge method", has an example that a test runs).  This module is pure data
(no torch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..artifactkinds import GRAM  # the artifact of RegMean (workflow_scripts.artifactkinds)
from .schemes import DEFAULT_SCHEME, SCHEMES, Scheme

TIES_SCOPES = ("global", "tensor")  # TIES trimming: one threshold per task vector or per tensor
DARE_COMBINES = ("task-arithmetic", "ties")  # how DARE combines its rescaled task vectors
# The methods' hyper-parameters (names, defaults, ranges, help) are fields of
# workflow_scripts.settings.MergeSettings; a method lists those it reads in ``settings``.


@dataclass(frozen=True)
class Tuned:
    """A hyper-parameter besides lambda that the config may list, one merge per value."""

    name: str  # the MergeSettings field (config merge.NAME, a number or a list of numbers)
    tag: str  # its part of a merge id: -<tag><value>
    label: str  # its name in the report's labels: "k = 20"


# In merge-id order; each is listable in the config (MergeSettings marks them listable).
TUNED: dict[str, Tuned] = {t.name: t for t in (
    Tuned("ties_k", "k", "k"),
    Tuned("dare_p", "p", "p"),
    Tuned("regmean_alpha", "alpha", "α"),
    Tuned("floor", "floor", "floor"),
)}
SELECTED = "selected"  # the report key suffix of the candidate held-out selection chose


@dataclass(frozen=True)
class MergeMethod:
    name: str  # config merge.methods, CLI --method
    label: str  # report label; "{scheme}" is replaced by ", <scheme label>" for non-default schemes
    color: str  # matplotlib colour of its plots
    module: str  # workflow_scripts.merging.<module> computes it
    # per-model artifact, as its files' metadata records it (artifactkinds.of_method: its
    # kind): a Fisher kind ("mask", "full"), GRAM, or None
    artifact: str | None = None
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

    @property
    def tunable(self) -> tuple[str, ...]:
        """The :data:`TUNED` settings it reads: a config list of one gives candidates."""
        return tuple(name for name in TUNED if name in self.settings)


METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in (
        MergeMethod("average", "Averaging", "tab:gray", "average",
                    description="plain average of the bodies"),
        MergeMethod("fisher", "Fisher (full)", "tab:blue", "fisher", artifact="full",
                    settings=("floor",),
                    description="weights: the full diagonal Fisher (Matena & Raffel 2022)"),
        MergeMethod("mask", "Ours (mask{scheme})", "tab:red", "mask", artifact="mask",
                    takes_scheme=True, vs_average=True, settings=("floor",),
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



NUMBER_PATTERN = r"[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"
LAMBDA_PATTERN = NUMBER_PATTERN


def format_value(value: float) -> str:
    """``0.3`` -> ``0.3``, ``1.0`` -> ``1``, ``1e-06`` -> ``1e-06``: a number in a merge id."""
    text = f"{float(value):g}"
    if not re.fullmatch(NUMBER_PATTERN, text):
        raise ValueError(f"a merge id holds non-negative numbers only, got {value!r}")
    return text


def format_lambda(lam: float) -> str:
    """``0.3`` -> ``0.3``, ``1.0`` -> ``1``: the lambda part of a merge id."""
    if float(lam) <= 0:
        raise ValueError(f"lambda must be a positive number, got {lam!r}")
    return format_value(lam)


@dataclass(frozen=True)
class Variant:
    """A method with its scheme (None for methods without one), lambda (None likewise), the
    values of the :data:`TUNED` settings listed with several values (``tuned``, in TUNED
    order), or, ``selected``, the candidate that held-out selection chose among those."""

    method: MergeMethod
    scheme: Scheme | None = None
    lam: float | None = None
    tuned: tuple[tuple[str, float], ...] = ()
    selected: bool = False

    @property
    def base_key(self) -> str:
        """``mask`` for the default scheme, ``mask-released`` for another one; no lambda."""
        if self.scheme is None or self.scheme.default:
            return self.method.name
        return f"{self.method.name}-{self.scheme.name}"

    @property
    def key(self) -> str:
        """What the report calls it: ``base_key``, ``-lam<lambda>`` for lambda methods, then
        ``-<tag><value>`` per tuned setting; ``<base_key>-selected`` for the selection."""
        if self.selected:
            return f"{self.base_key}-{SELECTED}"
        parts = [self.base_key] + ([] if self.lam is None else [f"lam{format_lambda(self.lam)}"])
        parts += [f"{TUNED[name].tag}{format_value(value)}" for name, value in self.tuned]
        return "-".join(parts)

    def with_lambda(self, lam: float) -> "Variant":
        if not self.method.takes_lambda:
            raise ValueError(f"merge method {self.method.name!r} takes no lambda")
        return replace(self, lam=float(lam))

    def with_settings(self, **values: float) -> "Variant":
        """The variant with these :data:`TUNED` settings' values (in its merge id)."""
        unknown = [k for k in values if k not in self.method.tunable]
        if unknown:
            raise ValueError(f"merge method {self.method.name!r} tunes no {', '.join(unknown)} "
                             f"(it tunes: {', '.join(self.method.tunable) or 'nothing'})")
        given = dict(self.tuned) | {k: float(v) for k, v in values.items()}
        return replace(self, tuned=tuple((k, given[k]) for k in TUNED if k in given))

    def as_selected(self) -> "Variant":
        """The report's variant for the candidate selection chose among this method's."""
        return replace(self, lam=None, tuned=(), selected=True)

    def settings(self) -> dict[str, float]:
        """The variant's own values: ``lam`` and its tuned settings, by MergeSettings name."""
        return ({} if self.lam is None else {"lam": self.lam}) | dict(self.tuned)

    @property
    def label(self) -> str:
        extra = "" if self.scheme is None or self.scheme.default else f", {self.scheme.label}"
        label = self.method.label.replace("{scheme}", extra)
        values = [SELECTED] if self.selected else (
            ([] if self.lam is None else [f"λ = {format_lambda(self.lam)}"])
            + [f"{TUNED[name].label} = {format_value(value)}" for name, value in self.tuned])
        if not values:
            return label
        if label.endswith(")"):  # "Ours (mask)" -> "Ours (mask, selected)"
            return f"{label[:-1]}, {', '.join(values)})"
        return f"{label} ({', '.join(values)})"

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
        if self.selected:
            raise ValueError(f"{self.key!r} is held-out selection's choice, not a merge")
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


def _candidates(m: MergeMethod, lambdas, tuned) -> list[dict]:
    """The settings of each candidate of ``m``: its lambdas (outer) by the values of each
    listed setting, in the order given (the first listed first)."""
    grid = [{}]
    if m.takes_lambda and lambdas is not None:
        grid = [{"lam": float(lam)} for lam in lambdas[m.name]]
    for name, values in ((tuned or {}).get(m.name) or {}).items():
        grid = [dict(g, **{name: float(v)}) for g in grid for v in values]
    return grid


def variants(methods=METHOD_NAMES, schemes=(DEFAULT_SCHEME,), lambdas=None,
             tuned=None) -> list[Variant]:
    """The variants of ``methods`` (registry order): one per scheme for scheme-taking methods,
    one per lambda of ``lambdas[method]`` for lambda-taking methods (``lambdas`` None: the
    variants without lambda, as in :data:`ALL_VARIANTS`), and one per value of each setting
    listed in ``tuned[method]`` (``{setting: [values]}``, settings of its ``tunable``)."""
    out = []
    for name in METHODS:
        if name in methods:
            m = METHODS[name]
            bases = [Variant(m, SCHEMES[s]) for s in SCHEMES if s in schemes] if m.takes_scheme \
                else [Variant(m)]
            for base in bases:
                for values in _candidates(m, lambdas, tuned):
                    lam = values.pop("lam", None)
                    v = base if lam is None else base.with_lambda(lam)
                    out.append(v.with_settings(**values) if values else v)
    return out


# Every variant without its lambda, in report order, by base key.
ALL_VARIANTS: dict[str, Variant] = {v.key: v for v in variants(METHOD_NAMES, tuple(SCHEMES))}


def _alternatives(keys) -> str:
    return "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))


def _grammar(merge_id: bool, named: bool = True) -> str:
    """A report key (``merge_id`` False, with ``-selected``) or a merge id (with
    ``-n<N>-seed<S>``) as a regex; ``named`` False: no capturing groups (the wildcard
    constraint, which Snakemake embeds in its own named groups)."""
    def group(name: str, body: str) -> str:
        return f"(?P<{name}>{body})" if named else f"(?:{body})"

    tuned = "".join(f"(?:-{t.tag}{group(t.name, NUMBER_PATTERN)})?" for t in TUNED.values())
    own = f"(?:-lam{group('lam', NUMBER_PATTERN)})?{tuned}"
    tail = f"(?:-n{group('n', '[0-9]+')}-seed{group('seed', '[0-9]+')})?" if merge_id else ""
    if not merge_id:
        own = f"(?:-{group('selected', SELECTED)}|{own})"
    return f"{group('base', _alternatives(ALL_VARIANTS))}{own}{tail}"


KEY_PATTERN = _grammar(merge_id=False)
# The wildcard constraint of {merge_id}; :func:`parse_merge_id` checks what a method takes.
MERGE_ID_PATTERN = _grammar(merge_id=True, named=False)
_MERGE_ID = re.compile(_grammar(merge_id=True))
_KEY = re.compile(KEY_PATTERN)


def _from_match(match: re.Match, text: str) -> Variant:
    """The variant a key or merge id's match spells; ValueError if its method takes no such
    lambda or setting, or lacks its lambda."""
    v = ALL_VARIANTS[match.group("base")]
    if match.groupdict().get("selected"):
        return v.as_selected()
    lam = match.group("lam")
    if (lam is None) == v.method.takes_lambda:
        raise ValueError(f"{text!r}: merge method {v.method.name!r} "
                         + ("needs -lamLAMBDA" if lam is None else "takes no lambda"))
    if lam is not None:
        v = v.with_lambda(float(lam))
    tuned = {name: float(match.group(name)) for name in TUNED if match.group(name) is not None}
    return v.with_settings(**tuned) if tuned else v


def variant(key: str) -> Variant:
    """The variant of a report key: ``mask-released``, ``ties-lam1``, ``ties-lam1-k10``,
    ``task-arithmetic-selected``."""
    from ..errors import MergeError

    match = _KEY.fullmatch(key)
    try:
        if not match:
            raise ValueError(f"unknown merge {key!r}")
        return _from_match(match, key)
    except ValueError as exc:
        raise MergeError(f"{exc}; known: {', '.join(ALL_VARIANTS)} (lambda methods as "
                         "NAME-lamLAMBDA, listed settings as -<tag><value>: "
                         + ", ".join(f"-{t.tag} {t.name}" for t in TUNED.values())
                         + f"; NAME-{SELECTED})") from None


def is_known(key: str) -> bool:
    from ..errors import MergeError

    try:
        variant(key)
    except MergeError:
        return False
    return True


def _fraction(value: float) -> float:
    return value / (1 + value)


def rank(key: str) -> float:
    """Sort key of a report key: the registry's order, then lambda, then the tuned settings
    (unknown keys last; a selection after its candidates)."""
    if not is_known(key):
        return float(len(ALL_VARIANTS))
    v = variant(key)
    position = list(ALL_VARIANTS).index(v.base_key)
    if v.selected:
        return position + 0.999
    within = [_fraction(v.lam)] if v.lam is not None else []
    within += [_fraction(value) for _, value in v.tuned]
    return position + sum(x / 8 ** i for i, x in enumerate(within)) * 0.875


def parse_merge_id(merge_id: str) -> tuple[Variant, int | None, int | None]:
    """``mask-released-n128-seed0`` -> (the mask/released variant, 128, 0); ``ties-lam1`` ->
    (TIES with lambda 1, None, None); ``ties-lam1-k10`` -> (TIES, lambda 1, k 10)."""
    match = _MERGE_ID.fullmatch(merge_id)
    if not match:
        raise ValueError(f"bad merge id {merge_id!r} (expected {MERGE_ID_PATTERN})")
    v = _from_match(match, merge_id)
    n = None if match.group("n") is None else int(match.group("n"))
    seed = None if match.group("seed") is None else int(match.group("seed"))
    if v.per_n != (n is not None):
        raise ValueError(f"bad merge id {merge_id!r}: merge {v.key!r} "
                         f"{'needs' if v.per_n else 'takes no'} -nN-seedS")
    return v, n, seed
