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
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .. import architectures as arch
from ..errors import MergeError
from ..settings import MergeSettings
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

    def model(self, j: int, name: str) -> torch.Tensor:
        return self.bodies[j][name]

    def base(self, name: str) -> torch.Tensor:
        return self._base[name]

    def artifact(self, j: int, name: str) -> torch.Tensor:
        return self.artifacts[j][name]

    def artifact_shapes(self, j: int) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.artifacts[j].items()}


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

    @property
    def count(self) -> int:
        return self.sources.count

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The body's floating-point parameters and their shapes, in merge order."""
        return self.sources.shapes

    def option(self, key: str):
        return self.settings.option(key)

    def models(self, name: str) -> Iterator[torch.Tensor]:
        """Each model's tensor ``name``, one at a time."""
        return (self.sources.model(j, name) for j in range(self.count))

    def base(self, name: str) -> torch.Tensor:
        return self.sources.base(name)

    def artifact(self, j: int, name: str) -> torch.Tensor:
        return self.sources.artifact(j, name)

    def artifact_shapes(self, j: int) -> dict[str, tuple[int, ...]]:
        return self.sources.artifact_shapes(j)


def method_module(name: str):
    """The module computing merge method ``name``."""
    return importlib.import_module(f"{__package__}.{registry.method(name).module}")


def merged_tensors(ctx: MergeContext) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, merged tensor)`` for every floating-point body parameter, in order, each in
    the dtype of the first model's tensor; the method's checks and preparation first."""
    module = method_module(ctx.settings.method)
    if hasattr(module, "check"):
        module.check(ctx)
    if hasattr(module, "prepare"):
        module.prepare(ctx)
    for name in ctx.shapes:
        value = module.tensor(ctx, name)
        if tuple(value.shape) != tuple(ctx.shapes[name]):
            raise MergeError(f"merge method {ctx.settings.method!r} returned shape "
                             f"{tuple(value.shape)} for {name!r} of shape {ctx.shapes[name]}")
        saved = value.to(ctx.sources.dtypes[name])
        check_merged(name, value, saved, ctx.settings.method, ctx.labels)
        yield name, saved


def merge_all(ctx: MergeContext) -> dict[str, torch.Tensor]:
    """Every merged tensor at once (in memory)."""
    return dict(merged_tensors(ctx))
