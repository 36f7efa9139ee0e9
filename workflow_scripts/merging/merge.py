"""Merge loaded models in place: checks, the method's weights or merged body, the arithmetic.

The method's module (named by the registry) gives either ``weights(inputs)``
(one weight dict per model, for the weighted average of :mod:`.core`) or
``merged(inputs)`` (the merged floating-point body tensors, for methods that are
not a weighted average: task vectors, RegMean), so a new method never falls
into another method's branch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import torch

from .. import architectures as arch
from ..errors import MergeError
from ..settings import MergeSettings
from . import registry
from .checks import check_bodies, check_request
from .core import check_compatible, merge_bodies


@dataclass
class MergeInputs:
    """What a method's ``weights(inputs)`` or ``merged(inputs)`` may read."""

    spec: arch.ArchSpec
    dims: arch.Dims
    shapes: dict[str, torch.Size]  # the body's floating-point parameters
    labels: list[str]  # the models, for messages
    artifacts: list[dict[str, torch.Tensor]] | None  # one per model (e.g. a Fisher)
    artifact_labels: list[str]  # the artifacts, for messages
    settings: MergeSettings  # the method, its scheme and hyper-parameters
    bodies: list[dict[str, torch.Tensor]] = field(default_factory=list)  # the models' bodies
    base: dict[str, torch.Tensor] | None = None  # the pre-trained body (task-vector methods)

    @property
    def scheme(self) -> str:
        return self.settings.scheme


def method_module(name: str):
    """The module computing the weights of merge method ``name``."""
    return importlib.import_module(f"{__package__}.{registry.method(name).module}")


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
    inputs = prepare_inputs(models, settings, artifacts, base=base, labels=labels,
                            artifact_labels=artifact_labels, base_label=base_label)
    apply_merge(inputs)


def prepare_inputs(models: list, settings: MergeSettings, artifacts, *, base, labels,
                   artifact_labels, base_label: str) -> MergeInputs:
    """The :class:`MergeInputs` of loaded models, their bodies checked against each other
    (and against the base)."""
    specs = [arch.spec_for(m) for m in models]
    bodies = [arch.body_state(m) for m in models]
    all_dims = [arch.dims(m) for m in models]
    check_bodies(bodies, labels, [s.model_type for s in specs], all_dims)
    base_body = None
    if base is not None and registry.method(settings.method).needs_base:
        base_body = base if isinstance(base, dict) else arch.body_state(base)
        check_compatible([base_body, bodies[0]], [base_label, labels[0]])
    kind = registry.method(settings.method).artifact
    return MergeInputs(
        spec=specs[0],
        dims=all_dims[0],
        shapes={k: v.shape for k, v in bodies[0].items() if v.is_floating_point()},
        labels=labels,
        artifacts=artifacts if kind is not None else None,
        artifact_labels=artifact_labels or [f"{kind} Fisher of {label}" for label in labels],
        settings=settings,
        bodies=bodies,
        base=base_body,
    )


def apply_merge(inputs: MergeInputs) -> None:
    """Compute the method's merge of checked inputs and copy it into every body."""
    module = method_module(inputs.settings.method)
    if hasattr(module, "merged"):
        merged = module.merged(inputs)
        if set(merged) != set(inputs.shapes):
            raise MergeError(f"merge method {inputs.settings.method!r} returned parameters "
                             f"{sorted(merged)[:3]}... instead of the body's floating-point "
                             "parameters")
        with torch.no_grad():
            for name, value in merged.items():
                for body in inputs.bodies:
                    body[name].copy_(value)
        return
    weights = module.weights(inputs)
    merge_bodies(inputs.bodies, weights, floor=inputs.settings.floor, inplace=True)
