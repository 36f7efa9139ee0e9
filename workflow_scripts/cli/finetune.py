"""Fine-tune a pre-trained model on one task, for every objective (``--objective``):

{objectives}

``finetune --base DIR_OR_ID --train TRAIN.parquet --info INFO.json
[--validation VALID.parquet] --out DIR [options]``

A classifier's base may be a bare encoder (e.g. a ``BertModel`` checkpoint
without a classification head): the head is then freshly initialised, which is
expected.  A base that already has a head of another size gets a new one.

Training: AdamW (no weight decay on biases and LayerNorm weights), linear
warm-up then linear decay to 0, gradient clipping at norm 1.0, seeded
shuffling, dynamic padding with length-grouped batches (``--no-group-by-length``
turns the grouping off), dropout on.  ``--max-steps`` (if given) sets the
number of optimiser steps, overriding ``--epochs`` (the data are reshuffled
each pass), as in Hugging Face's Trainer.  On CPU a seed gives bit-identical
weights (same machine, same thread count).

Output: a safetensors checkpoint with its tokenizer and the task's
``id2label``/``label2id``, written atomically (nothing is left at ``--out`` if
interrupted), plus ``finetune_info.json`` (base, steps, losses, validation
accuracy, seconds, hyper-parameters).
"""

from __future__ import annotations

from . import options


def register(subparsers) -> None:
    from ..settings import FinetuneSettings, add_arguments

    p = options.add_command(subparsers, "finetune",
                            "fine-tune a base model ({objective_names}) on a task", __doc__)
    p.add_argument("--base", required=True, help="base checkpoint directory (or hub id)")
    p.add_argument("--train", required=True, help="train split (Parquet)")
    p.add_argument("--info", required=True, help="task info JSON from prepare-task")
    p.add_argument("--validation", default=None, help="validation split (Parquet), for accuracy")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    add_arguments(p, FinetuneSettings)
    options.add_model_source(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..finetune import finetune
    from ..models import ModelSource
    from ..settings import FinetuneSettings

    finetune(args.base, args.train, args.info, args.out, FinetuneSettings.from_args(args),
             validation=args.validation,
             source=ModelSource(revision=args.revision, allow_pickle=args.allow_pickle))
