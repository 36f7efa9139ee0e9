"""The C allocator's settings for the two kinds of process the commands are.

glibc's ``malloc`` serves big blocks with ``mmap`` and gives them back on ``free``, but
after freeing one it raises that threshold (up to 32 MB), so later blocks below it come
from the heap, where freed memory stays with the process.  A Fisher computation allocates
the same activations batch after batch and is faster when the heap keeps them
(:func:`tune_cpu_allocator`); a streamed merge reads tensors of every size, one after the
other, and must give each back, or its peak memory would grow with the number of tensors
it reads, that is with the number of models (:func:`return_freed_memory`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4


def _mallopt():
    if platform.system() != "Linux":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def tune_cpu_allocator() -> bool:
    """Let glibc keep freed memory for reuse instead of unmapping it (CPU runs).

    A backward pass keeps every activation alive, so each batch allocates
    hundreds of fresh megabyte-sized tensors; glibc serves any above 32 MB
    with a new ``mmap`` whose every page faults (and is zeroed) on first touch.
    With mmap off and trimming deferred the heap is reused instead: on the
    2-core development CPU this cut the mask Fisher of BERT-base from 2.9x to
    2.4x a forward pass.  The price: the process keeps its peak memory until it
    exits, so this is for a process that computes a Fisher and ends (the
    ``fisher`` command, the benchmark), not for library use: it is never
    called on import.  Returns whether it applied (glibc only).
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(M_MMAP_MAX, 0) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    ok &= mallopt(M_TOP_PAD, 64 << 20) == 1
    return bool(ok)


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """Serve every block of ``threshold`` bytes or more with ``mmap`` (given back when freed)
    and trim the heap's free top beyond it (for a process that streams tensors: the merge).
    Returns whether it applied (glibc only)."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, threshold) == 1
    return bool(ok)
