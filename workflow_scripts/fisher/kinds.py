"""The Fisher kinds and their settings: names and defaults, no torch.

Read by the config schema, the CLI and the report; the estimators themselves
live in :mod:`.mask` and :mod:`.full`.
"""

from __future__ import annotations

METHODS = ("mask", "full")  # mask-node Fisher (the paper), full diagonal Fisher (baseline)
ESTIMATORS = ("per-example", "per-batch")  # mask Fisher: Eq. 4, or the released code's
NEURON_MASKS = ("post-activation", "pre-activation")  # released code, or Eq. 2 as typeset
# the labels of the loss: the data's (empirical), the exact expectation over the model's
# predicted classes (expected: the full Fisher of a classifier), or drawn from the model's
# own predictions (true: one class, or each next token of a causal LM, sampled)
LABEL_MODES = ("empirical", "expected", "true")
SAMPLING_SEED = 0  # the labels drawn by the true Fisher: batch b draws with seed SAMPLING_SEED + b

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_LENGTH = 128
# Per-example gradients in flight per vmap call of the full Fisher (examples,
# or examples x classes for the expected Fisher).  Each holds one copy of the
# body's gradient (|θ| floats: 0.35 GB for BERT-base in float32).  On the
# 2-core development CPU 2 was fastest for BERT-base (1, 4 and 8 were 5-30%
# slower); the GPU value is a guess that keeps BERT-large under 8 GB.
DEFAULT_CHUNK_SIZE = {"cpu": 2, "cuda": 8}


def default_chunk_size(device) -> int:
    """The full Fisher's default chunk size on ``device`` (a name or torch.device)."""
    kind = str(getattr(device, "type", device)).split(":")[0]
    return DEFAULT_CHUNK_SIZE.get(kind, DEFAULT_CHUNK_SIZE["cpu"])


def check_choice(what: str, value, choices) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (a library caller's mistake;
    the command line restricts its flags to these choices)."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, not {value!r}")
