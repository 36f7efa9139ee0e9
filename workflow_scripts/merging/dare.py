"""``dare`` (Yu et al. 2024, "Language models are Super Mario: absorbing abilities from
homologous models as a free lunch"): drop and rescale, then combine.

Each task-vector entry is dropped with probability p (``--dare-p``, default
0.9) and the kept ones are rescaled by 1 / (1 - p); the rescaled task vectors
are then combined by task arithmetic (default) or by TIES (``--dare-combine
ties``, with ``--ties-k`` and ``--ties-scope``), scaled by ``--lambda`` (default:
the combine method's, 0.3 or 1.0).  The drops are reproducible: the mask of
model j's parameter ``name`` comes from a generator seeded with a hash of
(``--seed``, j, name), independent of the order in which parameters are visited.
With p = 0 it is the combine method itself.
"""

from __future__ import annotations

import zlib

import torch

from . import ties
from .task_arithmetic import combine
from .taskvectors import option, rebase, task_vector


def drop_and_rescale(tau: torch.Tensor, p: float, seed: int, j: int, name: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{j}:{name}".encode()))
    keep = torch.rand(tau.shape, generator=generator, dtype=torch.float64) >= p
    return torch.where(keep, tau / (1.0 - p), torch.zeros_like(tau))


def dropped(ctx, j: int, name: str) -> torch.Tensor:
    """Model j's task vector of ``name``, dropped and rescaled (reproducibly)."""
    return drop_and_rescale(task_vector(ctx, j, name), option(ctx, "dare_p"), option(ctx, "seed"),
                            j, name)


def prepare(ctx) -> None:
    if option(ctx, "dare_combine") == "ties":
        ties.prepare_thresholds(ctx, dropped, option(ctx, "ties_k"), option(ctx, "ties_scope"))


def tensor(ctx, name: str) -> torch.Tensor:
    scale = option(ctx, "lam")
    if option(ctx, "dare_combine") == "ties":
        mean = ties.disjoint_mean(ctx, name, dropped, option(ctx, "ties_k"))
        return rebase(ctx, name, mean, scale)
    return combine(ctx, name, dropped, scale)
