"""Merge loaded models in place: the request and bodies checked, then the engine's merge
(:mod:`.engine`) over the bodies in memory, copied into every model's body; heads are
left alone.  The library's in-memory path (the ``merge`` command streams from files:
:mod:`.stream`)."""

from __future__ import annotations

import torch

from .. import architectures as arch
from .. import artifactkinds
from ..settings import MergeSettings
from . import registry
from .checks import check_bodies, check_request
from .core import check_base
from .engine import MemorySources, MergeContext, merged_blocks


def merge_settings(settings, overrides: dict) -> MergeSettings:
    """A :class:`MergeSettings` from an object, or a method name and settings by name (an
    unknown method named as such)."""
    if isinstance(settings, str):
        registry.method(settings)  # an unknown name is a MergeError naming it
        return MergeSettings(method=settings, **overrides)
    return MergeSettings.of(settings, **overrides)


def merge_loaded(
    models: list,
    settings: MergeSettings | str,
    artifacts: list[dict[str, torch.Tensor]] | None = None,
    *,
    base=None,
    labels: list[str] | None = None,
    artifact_labels: list[str] | None = None,
    base_label: str = "the base model",
    **overrides,
) -> None:
    """Merge the bodies of loaded models in place; heads are left alone.

    ``settings``: a :class:`MergeSettings` or a method name (its settings by name in
    ``overrides``: ``scheme="released"``, ``lam=0.5``).  ``artifacts`` holds one artifact
    (tensor dict) per model for methods that need one (mask: ``head`` and ``neuron``;
    fisher: one tensor per body parameter; regmean: one Gram per linear weight);
    ``labels`` and ``artifact_labels`` name the models and files in error messages.
    ``base`` is the pre-trained model (a loaded model, or its body state) of task-vector
    methods.  The request is checked here (:func:`.checks.check_request`) and the
    models' bodies against each other (:func:`.checks.check_bodies`).
    """
    settings = merge_settings(settings, overrides)
    labels = labels or [f"model {j}" for j in range(len(models))]
    check_request(settings, len(models), None if artifacts is None else len(artifacts),
                  base is not None)
    bodies = [arch.merged_state(m, settings.objective) for m in models]
    check_bodies(bodies, labels, [arch.spec_for(m).model_type for m in models],
                 [arch.dims(m) for m in models])
    base_body = None
    if base is not None and registry.method(settings.method).needs_base:
        base_body = base if isinstance(base, dict) else arch.merged_state(base, settings.objective)
        check_base(base_body, bodies[0], base_label, labels[0])
    kind = registry.method(settings.method).artifact
    noun = artifactkinds.noun(kind)
    ctx = MergeContext(
        spec=arch.spec_for(models[0]), dims=arch.dims(models[0]), settings=settings,
        sources=MemorySources(bodies, base_body, artifacts if kind is not None else None),
        labels=labels,
        artifact_labels=artifact_labels or [f"{kind} {noun} of {label}" for label in labels],
    )
    with torch.no_grad():  # a parameter's merge reads only that parameter: copy as they come
        for name, start, value in merged_blocks(ctx):
            for body in bodies:
                target = body[name] if value.dim() == 0 else body[name][start:start + len(value)]
                target.copy_(value)
