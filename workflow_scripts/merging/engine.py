"""The merge, one parameter tensor at a time, over any source of tensors.

A method module (named by :mod:`.registry`) defines ``tensor(ctx, name)``: the merged
value of body parameter ``name``, from the models' tensors read one at a time
(``ctx.models(name)``), the base's (``ctx.base(name)``) and the models' artifacts
(``ctx.artifact(j, name)``); optionally ``check(ctx)`` (the artifacts' shapes, before any
arithmetic) and ``prepare(ctx)`` (a pass before the tensors: TIES's trimming
thresholds, the mask Fisher's weights), which keeps what it needs in ``ctx.state``.

The sources are loaded models (:class:`MemorySources`: :func:`.merge.merge_loaded`) or
checkpoint and artifact files read tensor by tensor (:mod:`.stream`): the same
arithmetic either way, so memory does not grow with the number of models when the
tensors come from files.  Each merged tensor is cast to the dtype of the first model's
tensor.

A large tensor is merged in blocks of rows (its first axis) of at most
``settings.block_mb`` MB of float64 (:meth:`MergeContext.row_blocks`): the engine sets
``ctx.rows`` and the sources serve those rows only, so a method's arithmetic, element-wise
along the first axis, holds a few blocks whatever the tensor's size, and its results are
those of the whole tensor bit for bit.  A method that needs other blocks (RegMean: a
covered weight whole, or in blocks fixed by its shape) gives them by ``blocks(ctx, name)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .. import architectures as arch
from ..errors import MergeError
from ..settings import MergeSettings
from ..tensorfiles import row_blocks
from . import registry
from .finite import check_merged


class MemorySources:
    """Tensors held in memory: one body state dict per model, the base's, the artifacts."""

    def __init__(self, bodies: list[dict[str, torch.Tensor]],
                 base: dict[str, torch.Tensor] | None = None,
                 artifacts: list[dict[str, torch.Tensor]] | None = None):
        self.bodies, self._base, self.artifacts = bodies, base, artifacts
        self.count = len(bodies)
        self.shapes = {k: tuple(v.shape) for k, v in bodies[0].items() if v.is_floating_point()}
        self.dtypes = {k: bodies[0][k].dtype for k in self.shapes}

    def model(self, j: int, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return _rows(self.bodies[j][name], rows)

    def base(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return _rows(self._base[name], rows)

    def artifact(self, j: int, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return _rows(self.artifacts[j][name], rows)

    def artifact_shapes(self, j: int) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.artifacts[j].items()}


def _rows(t: torch.Tensor, rows: tuple[int, int] | None) -> torch.Tensor:
    return t if rows is None else t[rows[0]:rows[1]]


@dataclass
class MergeContext:
    """What a method reads: the architecture, the settings, the labels for messages and the
    sources of tensors; ``state`` holds what its ``prepare`` computed."""

    spec: arch.ArchSpec | None
    dims: arch.Dims | None
    settings: MergeSettings
    sources: object  # MemorySources or stream.FileSources
    labels: list[str]
    artifact_labels: list[str] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    rows: tuple[int, int] | None = None

    @property
    def count(self) -> int:
        return self.sources.count

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The body's floating-point parameters and their shapes, in merge order."""
        return self.sources.shapes

    def option(self, key: str):
        return self.settings.option(key)

    def model(self, j: int, name: str) -> torch.Tensor:
        """Model j's tensor ``name`` (its rows ``self.rows``)."""
        return self.sources.model(j, name, self.rows)

    def models(self, name: str) -> Iterator[torch.Tensor]:
        """Each model's tensor ``name`` (its rows ``self.rows``), one at a time."""
        return (self.model(j, name) for j in range(self.count))

    def base(self, name: str) -> torch.Tensor:
        return self.sources.base(name, self.rows)

    def artifact(self, j: int, name: str) -> torch.Tensor:
        """Model j's artifact tensor ``name``: its rows ``self.rows`` when ``name`` is a body
        parameter (a full Fisher), else whole (a mask Fisher's, a Gram)."""
        return self.sources.artifact(j, name, self.rows if name in self.shapes else None)

    def artifact_shapes(self, j: int) -> dict[str, tuple[int, ...]]:
        return self.sources.artifact_shapes(j)

    def rows_of(self, value: torch.Tensor, name: str) -> torch.Tensor:
        """The part of ``value`` (broadcastable to parameter ``name``) over ``self.rows``."""
        if (self.rows is None or value.dim() < len(self.shapes[name]) or value.dim() == 0
                or value.shape[0] == 1):
            return value  # constant along the first axis
        return value[self.rows[0]:self.rows[1]]

    def row_blocks(self, name: str) -> list[tuple[int, int] | None]:
        """The row blocks parameter ``name`` is merged in: ``[None]`` (whole) when it fits
        in one block of ``settings.block_mb`` MB of float64."""
        blocks = row_blocks(tuple(self.shapes[name]), 8, int(self.settings.block_mb * (1 << 20)))
        return [None] if len(blocks) <= 1 else blocks

    @contextmanager
    def at(self, rows: tuple[int, int] | None):
        """The sources serve rows ``rows`` of every body parameter while inside."""
        before, self.rows = self.rows, rows
        try:
            yield self
        finally:
            self.rows = before

    def blocks(self, name: str) -> Iterator[MergeContext]:
        """This context at each row block of ``name`` in turn (for passes over a tensor)."""
        for rows in self.row_blocks(name):
            with self.at(rows):
                yield self


def method_module(name: str):
    """The module computing merge method ``name``."""
    return importlib.import_module(f"{__package__}.{registry.method(name).module}")


def merged_blocks(ctx: MergeContext) -> Iterator[tuple[str, int, torch.Tensor]]:
    """``(name, first row, merged rows)`` for every floating-point body parameter, in order,
    each parameter whole or in consecutive row blocks (:meth:`MergeContext.row_blocks`), in
    the dtype of the first model's tensor; the method's checks and preparation first."""
    module = method_module(ctx.settings.method)
    if hasattr(module, "check"):
        module.check(ctx)
    if hasattr(module, "prepare"):
        module.prepare(ctx)
    blocks = getattr(module, "blocks", MergeContext.row_blocks)
    for name in ctx.shapes:
        shape = tuple(ctx.shapes[name])
        for rows in blocks(ctx, name):
            with ctx.at(rows):
                value = module.tensor(ctx, name)
            want = shape if rows is None else (rows[1] - rows[0], *shape[1:])
            if tuple(value.shape) != want:
                raise MergeError(f"merge method {ctx.settings.method!r} returned shape "
                                 f"{tuple(value.shape)} for {name!r} of shape {shape}"
                                 + ("" if rows is None else f" (rows {rows[0]}:{rows[1]})"))
            saved = value.to(ctx.sources.dtypes[name])
            check_merged(name, value, saved, ctx.settings.method, ctx.labels)
            del value
            yield name, 0 if rows is None else rows[0], saved


def merged_tensors(ctx: MergeContext) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, merged tensor)`` for every floating-point body parameter, in order, whole
    (its blocks joined: for merges held in memory)."""
    parts: list[torch.Tensor] = []
    current = None
    for name, start, value in merged_blocks(ctx):
        if current is not None and (name != current or start == 0):
            yield current, parts[0] if len(parts) == 1 else torch.cat(parts)
            parts = []
        current = name
        parts.append(value)
    if current is not None:
        yield current, parts[0] if len(parts) == 1 else torch.cat(parts)


def merge_all(ctx: MergeContext) -> dict[str, torch.Tensor]:
    """Every merged tensor at once (in memory)."""
    return dict(merged_tensors(ctx))
