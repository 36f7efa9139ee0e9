"""Model replicates: which copy of a family's checkpoints an artifact belongs to.

A family whose checkpoints the workflow fine-tunes has one replicate per
``finetune.seeds`` entry, named ``ft{seed}`` (``ft0``); merges combine only
fine-tunes of the same replicate, and each is normalised by its own fine-tune.
A family of given checkpoints (hub ids, local directories) has one replicate,
``ckpt``.  The name is a path component of every artifact that depends on the
model (:mod:`.paths`) and the ``replicate`` of every evaluation's context.
"""

from __future__ import annotations

import re

GIVEN = "ckpt"
PATTERN = r"ft[0-9]+|ckpt"


def finetuned(seed: int) -> str:
    """The replicate of the fine-tune with ``seed``: ``ft{seed}``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"fine-tuning seed must be a non-negative integer, not {seed!r}")
    return f"ft{seed}"


def seed_of(replicate: str) -> int | None:
    """The fine-tuning seed of ``ft{seed}``; None for ``ckpt``."""
    if not re.fullmatch(PATTERN, replicate):
        raise ValueError(f"bad replicate {replicate!r} (expected ft<seed> or {GIVEN})")
    return None if replicate == GIVEN else int(replicate[2:])
