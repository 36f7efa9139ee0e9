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

from . import options


def register(subparsers) -> None:
    p = options.add_command(subparsers, "sample",
                            "draw n Fisher samples from a task's train split (nested across n)",
                            __doc__)
    p.add_argument("--train", required=True, help="the task's train split (Parquet)")
    p.add_argument("--n", required=True, type=options.positive_int, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="permutation seed (default 0)")
    p.add_argument("--allow-full", action="store_true",
                   help="if n exceeds the split, use the whole split (with a warning)")
    p.add_argument("--out", required=True, help="output samples (Parquet)")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..sampling import sample_file

    sample_file(args.train, args.n, args.seed, args.out, allow_full=args.allow_full)
