"""Assembling a task: the source's splits, capped, checked and described in the info
file, then written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UserError
from .builtin import VALIDATION_FRACTION
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


def prepare(
    source: str,
    task: str | None = None,
    *,
    revision: str | None = None,
    train_file=None,
    validation_file=None,
    fmt: str | None = None,
    quoting: str | None = None,
    header: bool | None = None,
    column_map: dict[str, str] | str | None = None,
    label_names: list[str] | str | None = None,
    seed: int = 0,
    max_train: int | None = None,
    max_validation: int | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
    glue_loader=None,
) -> tuple[Samples, Samples, dict]:
    """(train, validation, info) for a task, before writing.

    ``label_names`` may be comma-joined; ``glue_loader(task, revision)`` stands in for
    :func:`.glue.load_glue` (tests).
    """
    if isinstance(label_names, str):
        label_names = [n.strip() for n in label_names.split(",") if n.strip()]
    if label_names is not None and len(set(label_names)) != len(label_names):
        raise UserError(f"--label-names {label_names} repeats a name")
    for name, cap in (("--max-train", max_train), ("--max-validation", max_validation)):
        if cap is not None and cap < 1:
            raise UserError(f"{name} must be a positive integer, got {cap}")
    src = source_named(source)
    if source == "glue" and glue_loader is not None:
        src = GlueSource(glue_loader)
    options = dict(revision=revision, train_file=train_file, validation_file=validation_file,
                   format=fmt, quoting=quoting, header=header, column_map=column_map,
                   label_names=label_names)
    spec = {key: value for key, value in options.items() if value is not None}
    spec["validation_fraction"] = validation_fraction
    train, valid, names, origin, extra = src.prepare(task, spec, seed)
    task = src.info_name(task, spec)
    train = cap_samples(train, max_train, seed, 2)
    valid = cap_samples(valid, max_validation, seed, 4)
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
        "source": source,
        "origin": origin,
        "num_labels": num_labels,
        "label_names": list(names),
        "is_pair": train.is_pair or valid.is_pair,
        "sizes": {"train": len(train), "validation": len(valid)},
        "label_counts": {"train": label_counts(train, num_labels),
                         "validation": label_counts(valid, num_labels)},
        "seed": seed,
        "max_train": max_train,
        "max_validation": max_validation,
        **extra,
    }
    return train, valid, info


def write_task(train: Samples, valid: Samples, info: dict, out_train, out_validation, out_info) -> None:
    """The two splits as Parquet (the engine's deterministic writer) and the info JSON."""
    from ..data import write_samples
    from ..io import write_json

    write_samples(train, out_train)
    write_samples(valid, out_validation)
    write_json(out_info, info)
