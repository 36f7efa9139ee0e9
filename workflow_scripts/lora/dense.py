"""Each adapted model's tensors as dense deltas from the base, formed in float64 when read.

Model ``j``'s tensor ``name`` is ``W0 + delta_j``: ``delta_j = s B A`` for an adapted weight
(:class:`~.lowrank.Factor`), ``T_j - W0`` for a tensor the adapter trained in full (a bias
under ``bias: all | lora_only``, a ``modules_to_save`` module), 0 for a tensor it left alone.
Forming ``delta_j`` in float64 before it meets ``W0`` keeps a small delta from being rounded
away by a bfloat16 base.  Adapters with different targets merge over the union of their
tensors: a tensor an adapter lacks is its zero delta, said once per adapter
(:func:`coverage`).
"""

from __future__ import annotations

import logging

import torch

from .folder import Adapter, Base
from .lowrank import f64

log = logging.getLogger(__name__)


def delta(adapter: Adapter, base: Base, name: str) -> torch.Tensor | None:
    """``delta_j`` of tensor ``name`` (float64, the base's storage), None where it is 0."""
    out = None
    if name in adapter.full:
        out = f64(adapter.full_tensor(name)) - f64(base.read(name))
    if name in adapter.factors:
        d = adapter.factors[name].delta()
        out = d if out is None else out + d
    return out


def dense(adapter: Adapter, base: Base, name: str) -> torch.Tensor:
    """Model ``j``'s tensor ``name``: ``W0 + delta_j`` (float64)."""
    w0 = f64(base.read(name))
    d = delta(adapter, base, name)
    return w0 if d is None else w0 + d


def union(adapters: list[Adapter]) -> list[str]:
    """The tensors any adapter changes, in the order the adapters name them."""
    names: dict[str, None] = {}
    for a in adapters:
        names.update(dict.fromkeys(a.factors))
        names.update(dict.fromkeys(a.full))
    return list(names)


def coverage(adapters: list[Adapter], names: list[str] | None = None) -> dict[str, list[str]]:
    """For each adapter, the tensors of the union it leaves at the base (a zero delta),
    logged once per adapter."""
    names = union(adapters) if names is None else names
    missing = {}
    for a in adapters:
        lacks = [n for n in names if n not in a.factors and n not in a.full]
        missing[a.label] = lacks
        if lacks:
            log.info("adapter %s leaves %d of the %d merged tensors at the base (zero delta): "
                     "%s%s", a.label, len(lacks), len(names), ", ".join(lacks[:4]),
                     " ..." if len(lacks) > 4 else "")
    return missing
