"""Fisher samples: the first n rows of one seeded permutation of a task's train split.

``sample --train TRAIN.parquet --n N --seed S [--allow-full] --out SAMPLES.parquet``

For a given train split and seed the permutation is fixed
(``numpy.random.default_rng(seed).permutation(len(train))``), so smaller sample
sets nest inside larger ones: the n=8 file holds exactly the first 8 rows of
the n=32 file.  Rows are written in permutation order and sampled without
replacement.  Output Parquet is written with fixed settings, so the same
inputs give a bit-identical file.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pyarrow.parquet as pq

from .cli import UserError
from .data import SCHEMA, Samples, read_samples
from .io import atomic_path

log = logging.getLogger(__name__)

# Fixed Parquet writer settings (do not depend on pyarrow's defaults).
PARQUET_SETTINGS = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=True,
    write_statistics=True,
    version="2.6",
    data_page_version="1.0",
    row_group_size=1 << 20,
    store_schema=True,
)


def write_samples_fixed(samples: Samples, path) -> None:
    """Write samples atomically with fixed Parquet settings (deterministic bytes)."""
    table = samples.to_table().cast(SCHEMA).replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **PARQUET_SETTINGS)


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="draw n Fisher samples from a task's train split (nested across n)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--train", required=True, help="the task's train split (Parquet)")
    p.add_argument("--n", required=True, type=_positive_int, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="permutation seed (default 0)")
    p.add_argument("--allow-full", action="store_true",
                   help="if n exceeds the split, use the whole split (with a warning)")
    p.add_argument("--out", required=True, help="output samples (Parquet)")
    p.set_defaults(func=run)


def run(args) -> None:
    train = read_samples(args.train)
    samples = draw_samples(train, args.n, args.seed, args.allow_full, where=f"task file {args.train}")
    write_samples_fixed(samples, args.out)
    log.info("wrote %d samples (seed %d) from %s to %s", len(samples), args.seed, args.train, args.out)
