"""The preconditions of a merge, each checked here and nowhere else.

:func:`check_request` checks what was asked before anything loads (the models'
count, the artifacts each method takes, the base of task-vector methods);
:func:`check_bodies` checks the loaded bodies against each other (architecture,
parameter names and shapes, dimensions, integer buffers).  The settings' own ranges
are checked by :class:`workflow_scripts.settings.MergeSettings`; each method module
checks the contents of its artifacts.
"""

from __future__ import annotations

import logging

from ..artifactkinds import KINDS, of_method
from ..errors import MergeError
from . import registry
from .core import check_compatible

log = logging.getLogger(__name__)


def check_request(settings, models: int, artifacts: int | None, has_base: bool,
                  given_flag: str | None = None) -> None:
    """Two or more models; one artifact per model for a method that takes one (and none
    otherwise); the base for task-vector methods.  ``given_flag``: the flag the artifacts
    came with (an artifact kind's flag: ``--fishers``, ``--grams``), when known."""
    method = settings.method
    spec = registry.method(method)
    if models < 2:
        raise MergeError(f"a merge needs two or more models, got {models}")
    kind = of_method(spec.artifact)
    if kind is None:
        if artifacts:
            given = given_flag or " or ".join(k.flag for k in KINDS.values())
            raise MergeError(f"--method {method} takes no {given}")
        if settings.floor and spec.fisher is None:
            log.warning("--floor %g has no effect with --method %s", settings.floor, method)
    else:
        if artifacts and given_flag is not None and given_flag != kind.flag:
            raise MergeError(f"--method {method} takes {kind.flag}, not {given_flag}")
        if artifacts != models:
            raise MergeError(
                f"--method {method} needs one {kind.file} per model, in the same order: "
                f"{models} models but {artifacts or 0} {kind.flag} (the {kind.command} command)"
            )
    if spec.needs_base and not has_base:
        raise MergeError(f"--method {method} works on task vectors: give the pre-trained model "
                         "the checkpoints were fine-tuned from (--base DIR)")
    if has_base and not spec.needs_base:
        log.warning("--base has no effect with --method %s", method)


def check_bodies(bodies: list[dict], labels: list[str], model_types: list[str],
                 dims: list) -> None:
    """The bodies share an architecture, parameter names and shapes, dimensions and integer
    buffers (which are kept, not merged); errors name the two models."""
    for j in range(1, len(bodies)):
        if model_types[j] != model_types[0]:
            raise MergeError(
                f"cannot merge different architectures: {labels[0]} is "
                f"{model_types[0]!r} but {labels[j]} is {model_types[j]!r}"
            )
    check_compatible(bodies, labels)
    for j in range(1, len(bodies)):
        if dims[j] != dims[0]:
            raise MergeError(f"cannot merge {labels[0]} and {labels[j]}: dimensions {dims[0]} "
                             f"differ from {dims[j]}")
    for name, ref in bodies[0].items():
        if not ref.is_floating_point():
            for j in range(1, len(bodies)):
                if not bodies[j][name].cpu().equal(ref.cpu()):
                    raise MergeError(f"cannot merge {labels[0]} and {labels[j]}: their integer "
                                     f"body buffer {name!r} differs")
