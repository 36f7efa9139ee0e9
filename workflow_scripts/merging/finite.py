"""Merged tensors checked before they are written: a NaN or infinite value, or one that
overflows the dtype it is saved in, is an error naming the tensor and the inputs, never a
silently broken checkpoint."""

from __future__ import annotations

import torch

from ..errors import MergeError

# the dtype to suggest when a merged value does not fit the one it is saved in
WIDER = {torch.float16: torch.float32, torch.bfloat16: torch.float32,
         torch.float32: torch.float64}


CHUNK = 1 << 24  # elements checked at a time: the check's own memory stays small


def non_finite(t: torch.Tensor) -> int:
    """How many values of ``t`` are NaN or infinite (counted a chunk at a time)."""
    flat = t.reshape(-1)
    return sum(int((~torch.isfinite(flat[i:i + CHUNK])).sum())
               for i in range(0, flat.numel(), CHUNK))


def check_merged(name: str, value: torch.Tensor, saved: torch.Tensor, method: str,
                 labels: list[str]) -> None:
    """``value`` (the merge's result, in its arithmetic dtype) and ``saved`` (cast to the
    dtype it is written in) must be finite."""
    inputs = ", ".join(labels)
    bad = non_finite(value)
    if bad:
        raise MergeError(
            f"the {method} merge of {inputs} gives {bad} NaN or infinite value(s) in tensor "
            f"{name!r}; the merge stops before writing it. Check the inputs' weights (and "
            "artifacts) for NaN or infinite values, and the merge's settings")
    bad = non_finite(saved) if saved.dtype != value.dtype else 0
    if bad:
        dtype = str(saved.dtype).replace("torch.", "")
        wider = str(WIDER.get(saved.dtype, torch.float64)).replace("torch.", "")
        largest = float(value.abs().max())
        raise MergeError(
            f"the {method} merge of {inputs} gives tensor {name!r} {bad} value(s) beyond the "
            f"range of {dtype} (largest magnitude {largest:.4g}, {dtype} holds at most "
            f"{torch.finfo(saved.dtype).max:.4g}), the dtype it is saved in (the first "
            f"model's); the merge stops before writing it. Save the merge in {wider}: give a "
            f"{wider} checkpoint first in --models (or convert the first model to {wider})")
