"""What a job's memory needs are, from its model's safetensors headers and ``config.json``
alone (no weights loaded, no torch: the plan runs this while Snakemake schedules jobs),
and what memory a process may use.

The estimates (bytes; ``b`` the bytes of an element in the compute dtype, ``P`` the
model's parameters, ``L`` layers, ``h`` hidden width, ``a`` heads, ``s`` tokens per
example, ``B`` examples per batch; activations kept for a backward pass follow Korthikanti
et al. 2022, ``L s B h (34 + 5 a s / h)`` elements of half precision):

===========  ===================================================================
rule         estimate
===========  ===================================================================
fisher mask  P b + activations of a batch (no weight gradients)
fisher full  P b + 4 P (float32 accumulators) + C P b (C per-example gradients in
             flight: the chunk size) + activations of C examples
gram         P b + 12 L (6 h^2 + d_ff^2) (float64 sums and float32 Grams) + forward
finetune     16 P (float32 weights, gradients, two Adam moments) + activations
evaluate     P b + one batch's forward activations
merge        the larger of: :data:`MERGE_BLOCK_COPIES` row blocks of ``block_mb`` MB
             (float64; every method but RegMean's solve, whatever the tensor's size),
             and RegMean's solve of the widest linear layer (:func:`regmean_bytes`,
             ``in`` = max(h, d_ff), ``out`` the other) + one merged model evaluated
             (P b)
===========  ===================================================================

RegMean solves one covered weight at a time.  With ``n`` its input width, ``m`` its output
width, ``g`` and ``b`` the bytes of a Gram's and a weight's element in their files: a weight
with ``m <= n`` (or GPT-2's Conv1D) is solved whole: the float64 sum of the regularised
Grams (8 n^2), one model's regularised Gram (8 n^2) and the right-hand side (8 n m) are
held while the next Gram is read (g n^2) or its product with the weight is formed (the
weight in float64 and the product, 16 n m, plus the weight as read, b n m), and the solve
copies the sum (8 n^2) and writes its result (8 n m).  A Linear weight with ``m > n`` (an
up projection, an untied ``lm_head``) is solved in blocks of ``n`` output rows against the
factored sum (its LU, 8 n^2): one regularised Gram, a block of the weight as read and in
float64, its product, the block's right-hand side, and the M models' Grams as read (kept
so that each Gram file is read once): (40 + b + M g) n^2 whatever ``m``:

    regmean_bytes = max((16 + g) n^2 + 8 n m, 16 n^2 + (24 + b) n m)    (m <= n)
                    (40 + b + M g) n^2                                  (m > n)

At Llama-3.1-8B's FFN (down projection: n = 14,336, m = 4,096; float32 Grams, bfloat16
weights) that is 4.8 GB: about three float64 Grams; its ``lm_head`` (n = 4,096,
m = 128,256) 0.8 GB with two models' Grams.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from . import architectures as arch
from .tensorfiles import Checkpoint

MB = 1 << 20
OVERHEAD_MB = 2000
MARGIN = 1.3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
RULES = ("fisher-mask", "fisher-full", "gram", "finetune", "evaluate", "merge")
# float64 blocks a method holds at once (TIES's disjoint mean: the sum, the sign, the
# agreeing sum and count, a task vector and its parts); a block is at most block_mb MB
MERGE_BLOCK_COPIES = 12
MERGE_BLOCK_MB = 64.0  # MergeSettings.block_mb's default (checked by a test)


@dataclass(frozen=True)
class ModelSize:
    """A checkpoint's size from its headers: parameters, the largest tensor's elements,
    and its dimensions (None for an architecture the table does not know)."""

    params: int
    largest: int
    dims: arch.Dims | None


def model_size(directory) -> ModelSize | None:
    """The :class:`ModelSize` of a local checkpoint directory, or None when it has no
    safetensors weights (yet)."""
    directory = Path(directory)
    try:
        ckpt = Checkpoint(directory)
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError, Exception):  # not there yet, or not a checkpoint
        return None
    try:
        dims = arch.dims(SimpleNamespace(**config))
    except (arch.UnsupportedArchitectureError, AttributeError, TypeError, ValueError):
        dims = None
    tensors = ckpt.tensors.values()
    return ModelSize(sum(t.numel for t in tensors), max((t.numel for t in tensors), default=0),
                     dims)


def activations(dims: arch.Dims | None, batch: int, tokens: int, element: int) -> int:
    """Bytes of the activations a backward pass keeps for ``batch`` examples of ``tokens``."""
    if dims is None:
        return 0
    per_layer = tokens * batch * dims.hidden * (34 + 5 * dims.heads * tokens / dims.hidden)
    return int(dims.layers * per_layer * element / 2)


def estimate_bytes(rule: str, size: ModelSize, *, dtype: str = "float32", batch: int = 32,
                   tokens: int = 128, chunk: int = 2) -> int:
    """The working memory of ``rule`` (one of :data:`RULES`) on a model of ``size``."""
    b, p, d = BYTES[dtype], size.params, size.dims
    if rule == "fisher-mask":
        return p * b + activations(d, batch, tokens, b)
    if rule == "fisher-full":
        return p * b + 4 * p + chunk * p * b + activations(d, chunk, tokens, b)
    if rule == "gram":
        grams = 12 * d.layers * (6 * d.hidden ** 2 + d.intermediate ** 2) if d else 12 * p
        return p * b + grams + activations(d, batch, tokens, b) // 4
    if rule == "finetune":
        return 16 * p + activations(d, batch, tokens, 4)
    if rule == "evaluate":
        return p * b + activations(d, batch, tokens, b) // 8
    if rule == "merge":
        return merge_bytes(size) + p * b
    raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")


def regmean_bytes(n: int, m: int, gram_itemsize: int = 4, weight_itemsize: int = 2,
                  models: int = 2) -> int:
    """RegMean's working memory solving one weight of input width ``n`` and output width
    ``m`` (the formula in the module's docstring); a weight solved in row blocks (``m >
    n``) also keeps the ``models`` Grams it read once."""
    if m > n:
        return (40 + weight_itemsize + models * gram_itemsize) * n * n
    return max((16 + gram_itemsize) * n * n + 8 * n * m,
               16 * n * n + (24 + weight_itemsize) * n * m)


def merge_bytes(size: ModelSize, block_mb: float = MERGE_BLOCK_MB) -> int:
    """A merge's working memory (without evaluating it): a few row blocks, or RegMean's
    solve of the widest linear layer when it needs more."""
    blocks = MERGE_BLOCK_COPIES * min(8 * size.largest, int(block_mb * MB))
    if size.dims is None:
        return blocks
    wide, narrow = sorted((size.dims.hidden, size.dims.intermediate), reverse=True)
    return max(blocks, regmean_bytes(wide, narrow))


def job_mb(rule: str, size: ModelSize | None, fallback_mb: int, **settings) -> int:
    """A job's ``mem_mb``: the estimate plus the overhead, with the margin, rounded up to
    100 MB; ``fallback_mb`` when the model's size is not known yet."""
    if size is None:
        return fallback_mb
    total = (estimate_bytes(rule, size, **settings) / MB + OVERHEAD_MB) * MARGIN
    return int(math.ceil(total / 100) * 100)


def host_mb(size: ModelSize | None, fallback_mb: int, dtype: str = "float32") -> int:
    """The host memory of a job whose work runs on a GPU: the overhead and the model's
    weights while they load."""
    if size is None:
        return fallback_mb
    total = (size.params * BYTES[dtype] / MB + OVERHEAD_MB) * MARGIN
    return int(math.ceil(total / 100) * 100)


def device_mb(rule: str, size: ModelSize | None, **settings) -> int:
    """The GPU memory of a job run on a GPU (the estimate, without the host's overhead)."""
    if size is None:
        return 0
    return int(math.ceil(estimate_bytes(rule, size, **settings) * MARGIN / MB / 100) * 100)


def available_bytes() -> int:
    """What this process may still allocate on the host: the smaller of the memory the
    kernel reports available and what is left of its cgroup's limit (a SLURM job's)."""
    free = _meminfo_available()
    limit = _cgroup_left()
    return min(x for x in (free, limit) if x is not None) if (free or limit) else 1 << 62


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left() -> int | None:
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(limit).read_text().strip()
            if text == "max" or int(text) >= 1 << 60:
                return None
            return int(text) - int(Path(usage).read_text().strip())
        except (OSError, ValueError):
            continue
    return None
