"""The held-out selection split (``selection`` in the config, ``prepare-task
--holdout-fraction``): a seeded, label-stratified share of a task's (capped) training rows,
moved out of the training split so that fine-tuning, Fisher samples and Gram samples never
see them.  The merges' hyper-parameter candidates are scored on these rows, never on the
validation split that the report reads.

:func:`too_small` is the one rule for when a training split cannot give one: the config
check applies it where the config tells the split's size (:meth:`.base.Source.train_rows`),
``prepare-task`` to the rows it has.  Standard library only, but for the split itself
(scikit-learn's stratified shuffle split).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..data import Samples

MIN_ROWS = 10  # the fewest held-out rows, and training rows left beside them, a task may have


def holdout_count(train_rows: int, fraction: float, max_holdout: int | None = None) -> int:
    """How many of ``train_rows`` training rows are held out: ``fraction`` of them
    (rounded), at most ``max_holdout``."""
    count = int(round(fraction * train_rows))
    return count if max_holdout is None else min(count, max_holdout)


def too_small(train_rows: int, fraction: float, max_holdout: int | None = None) -> str | None:
    """Why a training split of ``train_rows`` rows cannot give the held-out split, or None."""
    count = holdout_count(train_rows, fraction, max_holdout)
    if count < MIN_ROWS:
        return (f"{fraction:g} of its {train_rows} training rows is {count} held-out rows, "
                f"fewer than {MIN_ROWS}")
    if train_rows - count < MIN_ROWS:
        return (f"holding out {count} of its {train_rows} training rows leaves "
                f"{train_rows - count}, fewer than {MIN_ROWS}")
    return None


def split_holdout(samples: Samples, fraction: float, max_holdout: int | None, seed: int,
                  task: str) -> tuple[Samples, Samples]:
    """(training rows kept, held-out rows), each in file order: a seeded split stratified by
    label (scikit-learn's ``train_test_split``); every problem is a UserError naming
    ``task``."""
    problem = too_small(len(samples), fraction, max_holdout)
    if problem:
        raise UserError(f"task {task}: {problem}; give it more training rows (max_train), a "
                        "larger selection.holdout_fraction, or leave it out of the config")
    import numpy as np
    from sklearn.model_selection import train_test_split

    count = holdout_count(len(samples), fraction, max_holdout)
    try:
        kept, held = train_test_split(np.arange(len(samples)), test_size=count,
                                      stratify=np.asarray(samples.label), random_state=seed)
    except ValueError as exc:  # a class with one row, or fewer held-out rows than classes
        raise UserError(f"task {task}: cannot hold out {count} training rows stratified by "
                        f"label: {exc}") from None
    return samples.subset(sorted(int(i) for i in kept)), samples.subset(
        sorted(int(i) for i in held))
