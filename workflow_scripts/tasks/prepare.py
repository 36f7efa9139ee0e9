"""Assembling a task: the source's splits, capped, the held-out selection split moved out
of the training rows where asked (:mod:`.holdout`), checked and described in the info
file, then written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import taskkinds
from ..errors import UserError
from ..settings import PrepareSettings
from .base import LOCAL_KEYS
from .glue import GlueSource
from .holdout import split_holdout
from .info import INFO_VERSION
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


@dataclass
class PreparedTask:
    """A task's splits before writing; ``holdout`` None unless the settings ask for the
    held-out selection split (:mod:`.holdout`)."""

    train: Samples
    validation: Samples
    info: dict
    holdout: Samples | None = None


def prepare(source: str | None = None, task: str | None = None, *,
            settings: PrepareSettings | None = None, glue_loader=None,
            **overrides) -> tuple[Samples, Samples, dict]:
    """(train, validation, info) for a task, before writing (:func:`prepare_task`, for a
    task without the held-out split).

    ``settings`` (:class:`PrepareSettings`), or its fields by name: ``source`` and ``task``
    positionally, the rest as keywords (``max_train=300``); ``glue_loader(task, revision)``
    stands in for :func:`.glue.load_glue` (tests).
    """
    prepared = prepare_task(source, task, settings=settings, glue_loader=glue_loader,
                            **overrides)
    if prepared.holdout is not None:
        raise UserError("prepare() returns no held-out split: call prepare_task() for a task "
                        "with --holdout-fraction")
    return prepared.train, prepared.validation, prepared.info


def prepare_task(source: str | None = None, task: str | None = None, *,
                 settings: PrepareSettings | None = None, glue_loader=None,
                 **overrides) -> PreparedTask:
    """The splits and info of a task, as :func:`prepare` takes them; with
    ``holdout_fraction``, the held-out rows moved out of the (capped) training split."""
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
    holdout = None
    if settings.holdout_fraction is not None:
        seed = settings.seed if settings.holdout_seed is None else settings.holdout_seed
        train, holdout = split_holdout(train, settings.holdout_fraction, settings.max_holdout,
                                       seed, str(task))
    splits = {"train": train, "validation": valid} | ({} if holdout is None else
                                                      {"holdout": holdout})
    num_labels = len(names)
    for split, samples in splits.items():
        if len(samples) == 0:
            raise UserError(f"task {task}: the {split} split is empty")
        bad = sorted({y for y in samples.label if not 0 <= y < num_labels})
        if bad and taskkinds.of_settings(settings).labels:
            raise UserError(f"task {task}: {split} labels {bad[:10]} lie outside 0..{num_labels - 1}")
    info = {
        "format_version": INFO_VERSION,
        "task": task,
        "source": settings.source,
        "objective": settings.objective,
        "task_kind": taskkinds.of_settings(settings).name,
        "origin": origin,
        "num_labels": num_labels,
        "label_names": list(names),
        "is_pair": train.is_pair or valid.is_pair,
        "sizes": {k: len(v) for k, v in splits.items()},
        "label_counts": {k: taskkinds.of_settings(settings).label_counts(v, num_labels)
                         for k, v in splits.items()},
        "seed": settings.seed,
        "max_train": settings.max_train,
        "max_validation": settings.max_validation,
        **extra,
    }
    if holdout is not None:
        info["holdout"] = {"fraction": settings.holdout_fraction,
                           "max_rows": settings.max_holdout, "seed": seed}
    return PreparedTask(train, valid, info, holdout)


def source_spec(settings: PrepareSettings) -> dict:
    """The task's keys a source reads (:meth:`.base.Source.prepare`): those given, plus
    ``validation_fraction``."""
    keys = ("revision", *LOCAL_KEYS)
    spec = {k: getattr(settings, k) for k in keys if getattr(settings, k) is not None}
    spec["validation_fraction"] = settings.validation_fraction
    spec["objective"] = settings.objective
    spec["task_kind"] = taskkinds.of_settings(settings).name
    return spec


def write_task(train: Samples, valid: Samples, info: dict, out_train, out_validation, out_info,
               holdout: Samples | None = None, out_holdout=None) -> None:
    """The splits as Parquet (the engine's deterministic writer) and the info JSON; the
    held-out split too when there is one (``out_holdout`` then required)."""
    from .. import outputs
    from ..data import write_samples
    from ..io import write_json

    if (holdout is None) != (out_holdout is None):
        raise UserError("a held-out split and its output file go together (--holdout-fraction "
                        "and --out-holdout)")
    write_samples(train, out_train)
    write_samples(valid, out_validation)
    if holdout is not None:
        write_samples(holdout, out_holdout)
    write_json(out_info, info, outputs.TASK_INFO)
