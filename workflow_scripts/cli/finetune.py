"""Fine-tune a pre-trained encoder on one task (sequence classification).

``finetune --base DIR_OR_ID --train TRAIN.parquet --info INFO.json
[--validation VALID.parquet] --out DIR [options]``

The base may be a bare encoder (e.g. a ``BertModel`` checkpoint without a
classification head): the head is then freshly initialised, which is
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

import argparse

from . import options


def register(subparsers) -> None:
    p = options.add_command(subparsers, "finetune", "fine-tune a base model on a task", __doc__)
    p.add_argument("--base", required=True, help="base checkpoint directory (or hub id)")
    p.add_argument("--train", required=True, help="train split (Parquet)")
    p.add_argument("--info", required=True, help="task info JSON from prepare-task")
    p.add_argument("--validation", default=None, help="validation split (Parquet), for accuracy")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data (default 1)")
    p.add_argument("--max-steps", type=options.positive_int, default=None,
                   help="optimiser steps; overrides --epochs")
    p.add_argument("--max-train-examples", type=options.positive_int, default=None,
                   help="use a seeded subsample of this many train examples")
    p.add_argument("--batch-size", type=options.positive_int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-length", type=options.positive_int, default=128)
    p.add_argument("--seed", type=int, default=0)
    options.add_device(p)
    options.add_model_source(p)
    p.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                   help="batch examples of similar length together (less padding; default on)")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..finetune import finetune

    finetune(
        args.base, args.train, args.info, args.out, validation=args.validation,
        epochs=args.epochs, max_steps=args.max_steps, max_train_examples=args.max_train_examples,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio, max_length=args.max_length, seed=args.seed,
        device=args.device, allow_pickle=args.allow_pickle, revision=args.revision,
        group_by_length=args.group_by_length,
    )
