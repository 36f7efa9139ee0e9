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
from . import registry
from .core import check_compatible, merge_bodies
from .schemes import DEFAULT_SCHEME


@dataclass
class MergeInputs:
    """What a method's ``weights(inputs)`` may read."""

    spec: arch.ArchSpec
    dims: arch.Dims
    shapes: dict[str, torch.Size]  # the body's floating-point parameters
    labels: list[str]  # the models, for messages
    artifacts: list[dict[str, torch.Tensor]] | None  # one per model (e.g. a Fisher)
    artifact_labels: list[str]  # the artifacts, for messages
    scheme: str = DEFAULT_SCHEME
    bodies: list[dict[str, torch.Tensor]] = field(default_factory=list)  # the models' bodies
    base: dict[str, torch.Tensor] | None = None  # the pre-trained body (task-vector methods)
    options: dict = field(default_factory=dict)  # hyper-parameters (registry.DEFAULTS keys, lam)


def method_module(name: str):
    """The module computing the weights of merge method ``name``."""
    return importlib.import_module(f"{__package__}.{registry.method(name).module}")


def merge_loaded(
    models: list,
    method: str,
    fishers: list[dict[str, torch.Tensor]] | None = None,
    scheme: str = DEFAULT_SCHEME,
    floor: float = 0.0,
    labels: list[str] | None = None,
    fisher_labels: list[str] | None = None,
    base=None,
    base_label: str = "the base model",
    options: dict | None = None,
) -> None:
    """Merge the bodies of loaded models in place; heads are left alone.

    ``fishers`` holds one artifact (tensor dict) per model for methods that need
    one (mask: ``head`` and ``neuron``; fisher: one tensor per body parameter;
    regmean: one Gram per linear weight); ``labels`` and ``fisher_labels`` name
    the models and files in error messages.  ``base`` is the pre-trained model
    (a loaded model, or its body state) of task-vector methods; ``options``
    their hyper-parameters (``lam``, ``ties_k``, ... as in
    :data:`.registry.DEFAULTS`).
    """
    spec_method = registry.method(method)
    labels = labels or [f"model {j}" for j in range(len(models))]
    if len(models) < 2:
        raise MergeError(f"a merge needs two or more models, got {len(models)}")
    specs = [arch.spec_for(m) for m in models]
    bodies = [arch.body_state(m) for m in models]
    check_compatible(bodies, labels, [s.model_type for s in specs])
    all_dims = [arch.dims(m) for m in models]
    for j in range(1, len(models)):
        if all_dims[j] != all_dims[0]:
            raise MergeError(
                f"cannot merge {labels[0]} and {labels[j]}: dimensions {all_dims[0]} "
                f"differ from {all_dims[j]}"
            )
    kind = spec_method.artifact
    if kind is not None and (fishers is None or len(fishers) != len(models)):
        got = 0 if fishers is None else len(fishers)
        raise MergeError(
            f"--method {method} needs one {kind} file per model: {len(models)} models "
            f"but {got} file(s)"
        )
    base_body = None
    if spec_method.needs_base:
        if base is None:
            raise MergeError(f"--method {method} works on task vectors: give the pre-trained "
                             "model the checkpoints were fine-tuned from (--base DIR)")
        base_body = base if isinstance(base, dict) else arch.body_state(base)
        check_compatible([base_body, bodies[0]], [base_label, labels[0]])
    inputs = MergeInputs(
        spec=specs[0],
        dims=all_dims[0],
        shapes={k: v.shape for k, v in bodies[0].items() if v.is_floating_point()},
        labels=labels,
        artifacts=fishers if kind is not None else None,
        artifact_labels=fisher_labels or [f"{kind} Fisher of {label}" for label in labels],
        scheme=scheme,
        bodies=bodies,
        base=base_body,
        options=dict(options or {}),
    )
    module = method_module(method)
    if hasattr(module, "merged"):
        for name, ref in bodies[0].items():  # integer buffers are kept, so they must agree
            if not ref.is_floating_point():
                for j in range(1, len(bodies)):
                    if not torch.equal(bodies[j][name].cpu(), ref.cpu()):
                        raise MergeError(f"cannot merge {labels[0]} and {labels[j]}: their "
                                         f"integer body buffer {name!r} differs")
        merged = module.merged(inputs)
        if set(merged) != set(inputs.shapes):
            raise MergeError(f"merge method {method!r} returned parameters {sorted(merged)[:3]}... "
                             "instead of the body's floating-point parameters")
        with torch.no_grad():
            for name, value in merged.items():
                for body in bodies:
                    body[name].copy_(value)
        return
    weights = module.weights(inputs)
    merge_bodies(bodies, weights, floor=floor, inplace=True, labels=labels)
