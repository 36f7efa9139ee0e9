"""Fisher samples: the first n rows of one seeded permutation of a task's train split.

For a given train split and seed the permutation is fixed, so smaller sample
sets nest inside larger ones.  The ``sample`` command's help
(:mod:`workflow_scripts.cli.sample`) says more.
"""

from __future__ import annotations

import logging

import numpy as np

from .data import Samples, read_samples, write_samples
from .errors import UserError

log = logging.getLogger(__name__)


def sample_rows(size: int, n: int, seed: int) -> np.ndarray:
    """Row positions of the first n entries of the seeded permutation of ``range(size)``."""
    return np.random.default_rng(int(seed)).permutation(int(size))[: int(n)]


def draw_samples(
    train: Samples, n: int, seed: int, allow_full: bool = False, where: str = "the train split"
) -> Samples:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise UserError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    size = len(train)
    if size == 0:
        raise UserError(f"{where} has no rows to sample from")
    if n > size:
        if not allow_full:
            raise UserError(
                f"n={n} Fisher samples were asked for but {where} has only {size} rows; "
                f"lower n, or pass --allow-full (fisher.allow_full_split: true) to use all "
                f"{size} rows"
            )
        log.warning(
            "n=%d exceeds the %d rows of %s; using the whole split (--allow-full)", n, size, where
        )
        n = size
    rows = sample_rows(size, n, seed)
    return train.subset(int(i) for i in rows)


def sample_file(train_path, n: int, seed: int, out, allow_full: bool = False) -> Samples:
    """Draw n samples from the train split file ``train_path``; write them to ``out``."""
    from . import outputs

    outputs.check_output(out, outputs.SAMPLES, "--out", outputs.inputs_of(train=train_path))
    train = read_samples(train_path)
    samples = draw_samples(train, n, seed, allow_full, where=f"task file {train_path}")
    write_samples(samples, out)
    log.info("wrote %d samples (seed %d) from %s to %s", len(samples), seed, train_path, out)
    return samples
