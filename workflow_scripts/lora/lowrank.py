"""Low-rank factors of one adapted weight, and the exact operations the merges apply to them.

A :class:`Factor` is ``delta = scale * B @ A`` with ``A`` [r, in] and ``B`` [out, r] (float64),
whatever the weight's storage: an ``nn.Linear`` stores ``delta`` as is ([out, in]); GPT-2's
``Conv1D`` (PEFT's ``fan_in_fan_out``) and an embedding (``lora_embedding_A`` [r, vocab],
``lora_embedding_B`` [dim, r]) store its transpose, as PEFT's ``get_delta_weight`` does.

Per-model weights of a merge are one value per output row, per input column or one scalar
(:mod:`workflow_scripts.merging.mask`'s weights, given in the weight's storage):
:func:`fold` moves row weights into ``B``, column weights into ``A`` and scalars into ``B``,
which leaves the rank as it is.  :func:`concat` stacks the models' factors (rank
``sum_j r_j``); :func:`exact` and :func:`truncated` factor a dense delta by SVD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import architectures as arch
from ..errors import MergeError

EMBEDDING = "embedding"
KINDS = (arch.LINEAR, arch.CONV1D, EMBEDDING)


def f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().to(torch.float64)


@dataclass(frozen=True)
class Factor:
    a: torch.Tensor  # [r, in] float64
    b: torch.Tensor  # [out, r] float64
    scale: float = 1.0
    kind: str = arch.LINEAR  # LINEAR: the weight is [out, in]; CONV1D, EMBEDDING: [in, out]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}")
        if self.a.dim() != 2 or self.b.dim() != 2 or self.a.shape[0] != self.b.shape[1]:
            raise MergeError(f"LoRA factors of shapes A {tuple(self.a.shape)} and B "
                             f"{tuple(self.b.shape)} do not multiply (B @ A)")

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """The stored weight's shape."""
        out, inp = int(self.b.shape[0]), int(self.a.shape[1])
        return (out, inp) if self.kind == arch.LINEAR else (inp, out)

    def delta(self) -> torch.Tensor:
        """``scale * B @ A`` in the weight's storage (float64)."""
        d = (self.b @ self.a) * self.scale
        return d if self.kind == arch.LINEAR else d.T

    def scaled(self) -> Factor:
        """The same delta with its scale folded into ``B`` (scale 1)."""
        return Factor(self.a, self.b * self.scale, 1.0, self.kind)


def oriented(weight: torch.Tensor, kind: str, name: str = "") -> torch.Tensor:
    """A weight broadcastable to the stored tensor as a 2-D [out or 1, in or 1] tensor."""
    w = f64(torch.as_tensor(weight))
    if w.dim() > 2:
        raise MergeError(f"weights of {name!r} have {w.dim()} dimensions; a LoRA weight has 2")
    w = w.reshape((1,) * (2 - w.dim()) + tuple(w.shape))
    return w if kind == arch.LINEAR else w.T


def fold(factor: Factor, weight: torch.Tensor, name: str = "") -> Factor:
    """The factor of ``weight * delta`` (``weight`` broadcastable to the stored weight: one
    value per row, per column, or a scalar), of the same rank, scale 1."""
    w = oriented(weight, factor.kind, name)
    out, inp = factor.b.shape[0], factor.a.shape[1]
    if w.shape[0] not in (1, out) or w.shape[1] not in (1, inp):
        raise MergeError(f"weights of shape {tuple(weight.shape)} do not fit {name!r} of shape "
                         f"{factor.shape}")
    if w.shape[0] > 1 and w.shape[1] > 1:
        raise MergeError(f"the weights of {name!r} vary along both its rows and its columns: "
                         "that merge does not stay low-rank (ask for a truncated adapter or a "
                         "dense output)")
    b = factor.b * factor.scale * (w if w.shape[1] == 1 else 1.0)  # rows (or a scalar) into B
    a = factor.a * w if w.shape[0] == 1 and w.shape[1] > 1 else factor.a  # columns into A
    return Factor(a, b, 1.0, factor.kind)


def concat(factors: list[Factor], name: str = "") -> Factor:
    """The sum of the factors' deltas as one factor of rank ``sum r_j`` (scale 1)."""
    kinds = {f.kind for f in factors}
    shapes = {f.shape for f in factors}
    if len(kinds) != 1 or len(shapes) != 1:
        raise MergeError(f"the adapters' factors of {name!r} disagree: kinds {sorted(kinds)}, "
                         f"shapes {sorted(shapes)}")
    return Factor(torch.cat([f.a for f in factors], dim=0),
                  torch.cat([f.b * f.scale for f in factors], dim=1), 1.0, kinds.pop())


def _svd(delta: torch.Tensor, kind: str):
    d = f64(delta)
    d = d if kind == arch.LINEAR else d.T
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    tol = (s[0] if s.numel() else 0.0) * max(d.shape) * torch.finfo(torch.float64).eps
    return d, u, s, vh, int((s > tol).sum())


def exact(delta: torch.Tensor, kind: str = arch.LINEAR) -> Factor:
    """A factor equal to ``delta`` (stored layout) to float64 rounding: its SVD at its
    numerical rank (at least 1)."""
    _, u, s, vh, k = _svd(delta, kind)
    k = max(k, 1)
    return Factor(vh[:k].clone(), u[:, :k] * s[:k], 1.0, kind)


def truncated(delta: torch.Tensor, rank: int, kind: str = arch.LINEAR) -> tuple[Factor, float]:
    """The best rank-``rank`` factor of ``delta`` (stored layout) and its relative error
    ``||delta - B A||_F / ||delta||_F`` (0 for a zero delta)."""
    if rank < 1:
        raise MergeError(f"an adapter rank must be a positive integer, not {rank}")
    d, u, s, vh, _ = _svd(delta, kind)
    k = min(rank, s.numel())
    total = float(torch.linalg.vector_norm(s))
    rest = float(torch.linalg.vector_norm(s[k:]))
    return Factor(vh[:k].clone(), u[:, :k] * s[:k], 1.0, kind), (rest / total if total else 0.0)


def regmean_fold(factor: Factor, gram: torch.Tensor, total: torch.Tensor) -> Factor:
    """RegMean's share of one model: ``A' = A G (sum G)^-1`` (``gram`` and ``total`` [in, in],
    regularised; ``total`` invertible: torch.linalg.solve raises on a singular one)."""
    a = torch.linalg.solve(f64(total), f64(gram) @ factor.a.T).T  # (sum G)^-1 symmetric
    return Factor(a, factor.b * factor.scale, 1.0, factor.kind)
