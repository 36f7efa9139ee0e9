"""Fisher information of a fine-tuned classifier: mask nodes or the full diagonal.

``kinds``: the methods, estimators and defaults (names only, no torch);
``hooks``: the mask hooks and the model-state contexts; ``batches``: the
batches an estimator runs over; ``mask``: the mask-node Fisher (the paper's
method); ``full``: the full diagonal Fisher (the baseline); ``runner``:
:func:`compute_fisher`, a Fisher with its timing, FLOPs and artifact metadata.
The ``fisher`` command is :mod:`workflow_scripts.cli.fisher`.

This ``__init__`` imports only ``kinds``: the public names of the other
modules load on first use (PEP 562), so that Snakemake can read ``kinds``
while it parses the workflow without importing torch.
"""

from __future__ import annotations

import importlib

from ..allocator import tune_cpu_allocator
from .kinds import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_LENGTH,
    ESTIMATORS,
    LABEL_MODES,
    METHODS,
    NEURON_MASKS,
    default_chunk_size,
)

# public name -> the module of this package that defines it (loaded on first use)
_LAZY = {
    "mask_hooks": "hooks",
    "frozen_parameters": "hooks",
    "eval_mode": "hooks",
    "attn_implementation": "hooks",
    "prepare_batches": "batches",
    "mask_fisher": "mask",
    "full_fisher": "full",
    "compute_fisher": "runner",
}

__all__ = [
    "METHODS", "ESTIMATORS", "NEURON_MASKS", "LABEL_MODES",
    "DEFAULT_BATCH_SIZE", "DEFAULT_MAX_LENGTH", "DEFAULT_CHUNK_SIZE", "default_chunk_size",
    "tune_cpu_allocator",
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
