"""``dare`` (Yu et al. 2024, "Language models are Super Mario: absorbing abilities from
homologous models as a free lunch"): drop and rescale, then combine.

Each task-vector entry is dropped with probability p (``--dare-p``, default
0.9) and the kept ones are rescaled by 1 / (1 - p); the rescaled task vectors
are then combined by task arithmetic (default) or by TIES (``--dare-combine
ties``, with ``--ties-k`` and ``--ties-scope``), scaled by ``--lambda`` (default:
the combine method's, 0.3 or 1.0).  The drops are reproducible: whether entry i
(its index in the flattened tensor) of model j's parameter ``name`` is dropped is a
function of (``--seed``, j, ``name``, i) alone (:func:`uniforms`: SplitMix64 of a key
hashed from the first three, at counter i), so it does not depend on the order in which
parameters are visited nor on the row blocks a large tensor is merged in.
With p = 0 it is the combine method itself.
"""

from __future__ import annotations

import hashlib

import torch

from . import ties
from .task_arithmetic import combine
from .taskvectors import option, rebase, task_vector

# SplitMix64's increment and multipliers, as signed 64-bit integers (torch's int64
# arithmetic wraps modulo 2^64, as the unsigned arithmetic of the reference does)
_GAMMA, _M1, _M2 = (c - (1 << 64) for c in
                    (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """The logical (unsigned) right shift of int64 values."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def stream_key(seed: int, j: int, name: str) -> int:
    """The 64-bit key (signed) of model j's parameter ``name`` under ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{j}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def uniforms(key: int, first: int, count: int) -> torch.Tensor:
    """Float64 values in [0, 1) for counters ``first`` ... ``first + count - 1`` of the
    stream ``key``: SplitMix64's outputs (its state after i + 1 steps, mixed), top 53 bits."""
    z = torch.arange(first + 1, first + count + 1, dtype=torch.int64)
    z.mul_(_GAMMA).add_(key)
    z.bitwise_xor_(_shr(z, 30)).mul_(_M1)
    z.bitwise_xor_(_shr(z, 27)).mul_(_M2)
    z.bitwise_xor_(_shr(z, 31))
    return _shr(z, 11).to(torch.float64).mul_(2.0 ** -53)


def drop_and_rescale(tau: torch.Tensor, p: float, seed: int, j: int, name: str,
                     first: int = 0) -> torch.Tensor:
    """``tau`` (entries ``first`` ... of model j's flattened parameter ``name``) with each
    entry dropped with probability p and the kept ones divided by 1 - p."""
    keep = (uniforms(stream_key(seed, j, name), first, tau.numel()) >= p).reshape(tau.shape)
    return torch.where(keep, tau / (1.0 - p), torch.zeros_like(tau))


def dropped(ctx, j: int, name: str) -> torch.Tensor:
    """Model j's task vector of ``name`` (its rows ``ctx.rows``), dropped and rescaled
    (reproducibly)."""
    first = 0
    if ctx.rows is not None:  # the block's first element in the flattened tensor
        first = ctx.rows[0] * (torch.Size(ctx.shapes[name]).numel() // ctx.shapes[name][0])
    return drop_and_rescale(task_vector(ctx, j, name), option(ctx, "dare_p"), option(ctx, "seed"),
                            j, name, first)


def prepare(ctx) -> None:
    if option(ctx, "dare_combine") == "ties":
        ties.prepare_thresholds(ctx, dropped, option(ctx, "ties_k"), option(ctx, "ties_scope"))


def tensor(ctx, name: str) -> torch.Tensor:
    scale = option(ctx, "lam")
    if option(ctx, "dare_combine") == "ties":
        mean = ties.disjoint_mean(ctx, name, dropped, option(ctx, "ties_k"))
        return rebase(ctx, name, mean, scale)
    return combine(ctx, name, dropped, scale)
