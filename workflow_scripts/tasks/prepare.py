"""Assembling a task: the source's splits, capped, checked and described in the info
file, then written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UserError
from ..settings import PrepareSettings
from .base import LOCAL_KEYS
from .glue import GlueSource
from .info import INFO_VERSION, label_counts
from .registry import source as source_named

if TYPE_CHECKING:
    from ..data import Samples


def balanced_quotas(counts: dict[int, int], cap: int) -> dict[int, int]:
    """Split ``cap`` among classes as evenly as their sizes allow (water filling)."""
    quotas = {c: 0 for c in counts}
    active = sorted(c for c in counts if counts[c] > 0)
    remaining = cap
    while active and remaining > 0:
        share, extra = divmod(remaining, len(active))
        small = [c for c in active if counts[c] <= share]
        if small:
            for c in small:
                quotas[c] = counts[c]
                remaining -= counts[c]
            active = [c for c in active if c not in small]
            continue
        for i, c in enumerate(active):
            quotas[c] = share + (1 if i < extra else 0)
        remaining = 0
    return quotas


def cap_samples(samples: Samples, cap: int | None, seed: int, stream: int) -> Samples:
    """A seeded, class-balanced-as-possible subsample of at most ``cap`` rows (file order kept)."""
    if cap is None or len(samples) <= cap:
        return samples
    import numpy as np

    rng = np.random.default_rng([int(seed), stream])
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(samples.label):
        by_class.setdefault(y, []).append(i)
    quotas = balanced_quotas({c: len(r) for c, r in by_class.items()}, cap)
    chosen = []
    for c in sorted(by_class):
        rows = by_class[c]
        chosen.extend(rows[int(i)] for i in rng.permutation(len(rows))[: quotas[c]])
    return samples.subset(sorted(chosen))


def prepare(source: str | None = None, task: str | None = None, *,
            settings: PrepareSettings | None = None, glue_loader=None,
            **overrides) -> tuple[Samples, Samples, dict]:
    """(train, validation, info) for a task, before writing.

    ``settings`` (:class:`PrepareSettings`), or its fields by name: ``source`` and ``task``
    positionally, the rest as keywords (``max_train=300``); ``glue_loader(task, revision)``
    stands in for :func:`.glue.load_glue` (tests).
    """
    given = {k: v for k, v in (("source", source), ("task", task)) if v is not None}
    settings = PrepareSettings.of(settings, **given, **overrides)
    src = source_named(settings.source)
    if settings.source == "glue" and glue_loader is not None:
        src = GlueSource(glue_loader)
    train, valid, names, origin, extra = src.prepare(settings.task, source_spec(settings),
                                                     settings.seed)
    task = src.info_name(settings.task, source_spec(settings))
    train = cap_samples(train, settings.max_train, settings.seed, 2)
    valid = cap_samples(valid, settings.max_validation, settings.seed, 4)
    num_labels = len(names)
    for split, samples in (("train", train), ("validation", valid)):
        if len(samples) == 0:
            raise UserError(f"task {task}: the {split} split is empty")
        bad = sorted({y for y in samples.label if not 0 <= y < num_labels})
        if bad:
            raise UserError(f"task {task}: {split} labels {bad[:10]} lie outside 0..{num_labels - 1}")
    info = {
        "format_version": INFO_VERSION,
        "task": task,
        "source": settings.source,
        "origin": origin,
        "num_labels": num_labels,
        "label_names": list(names),
        "is_pair": train.is_pair or valid.is_pair,
        "sizes": {"train": len(train), "validation": len(valid)},
        "label_counts": {"train": label_counts(train, num_labels),
                         "validation": label_counts(valid, num_labels)},
        "seed": settings.seed,
        "max_train": settings.max_train,
        "max_validation": settings.max_validation,
        **extra,
    }
    return train, valid, info


def source_spec(settings: PrepareSettings) -> dict:
    """The task's keys a source reads (:meth:`.base.Source.prepare`): those given, plus
    ``validation_fraction``."""
    keys = ("revision", *LOCAL_KEYS)
    spec = {k: getattr(settings, k) for k in keys if getattr(settings, k) is not None}
    spec["validation_fraction"] = settings.validation_fraction
    return spec


def write_task(train: Samples, valid: Samples, info: dict, out_train, out_validation, out_info) -> None:
    """The two splits as Parquet (the engine's deterministic writer) and the info JSON."""
    from ..data import write_samples
    from ..io import write_json

    write_samples(train, out_train)
    write_samples(valid, out_validation)
    write_json(out_info, info)
