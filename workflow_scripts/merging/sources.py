"""What a merge is given: the checkpoints, their per-model artifacts (Fisher or Gram
files), the base, output names, tasks and label maps (:class:`MergeSources`), and the
checks that need the files' headers: each artifact's kind, task and model."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ..artifactkinds import KINDS, of_method
from ..artifacts import read_metadata
from ..errors import FisherProvenanceError, MergeError
from . import registry
from .checks import check_request

log = logging.getLogger(__name__)

_NAME_OK = re.compile(r"^[A-Za-z0-9._+=@-]+$")


@dataclass
class MergeSources:
    """The inputs of a merge: ``models`` (two or more checkpoint directories or hub ids), one
    artifact per model (a field per :data:`~workflow_scripts.artifactkinds.KINDS` entry, by
    its ``option``: ``fishers`` for Fisher methods, ``grams`` for RegMean), the
    pre-trained ``base`` of task-vector methods, the output ``names``, the ``tasks`` each
    model is merged for (each Fisher file must have been computed on it), one label map per
    model (or None), hub revisions, and whether pickle weights and artifacts of another
    model or task (a warning) are allowed."""

    models: list[str]
    fishers: list[str] | None = None
    grams: list[str] | None = None
    base: str | None = None
    names: list[str] | None = None
    tasks: list[str] | None = None
    label_maps: list[list[int] | None] | None = None
    revisions: list[str | None] | None = None
    allow_pickle: bool = False
    allow_fisher_mismatch: bool = False

    FIELDS = ()  # filled below: the field names, for callers that pass them by name

    def __post_init__(self):
        self.models = [str(m) for m in self.models]
        count = len(self.models)
        for name in ("names", "tasks", "label_maps", "revisions"):
            values = getattr(self, name)
            if values is not None and len(values) != count:
                flag = "--" + name.replace("_", "-")
                raise MergeError(f"{flag} gives {len(values)} for {count} models")
        given = [k.flag for k in KINDS.values() if getattr(self, k.option)]
        if len(given) > 1:
            raise MergeError(f"{' and '.join(given)} given together: a merge method takes one "
                             "kind of artifact; give the one of --method")

    @property
    def kind(self):
        """The :class:`~workflow_scripts.artifactkinds.ArtifactKind` given (None: none)."""
        return next((k for k in KINDS.values() if getattr(self, k.option)), None)

    @property
    def artifacts(self) -> list[str] | None:
        return getattr(self, self.kind.option) if self.kind is not None else None

    @property
    def given_flag(self) -> str | None:
        """The flag the artifacts came with."""
        return self.kind.flag if self.kind is not None else None

    def per_model(self, name: str) -> list:
        values = getattr(self, name)
        return list(values) if values is not None else [None] * len(self.models)


MergeSources.FIELDS = tuple(f.name for f in fields(MergeSources))


def output_names(sources: list[str], names: list[str] | None = None) -> list[str]:
    """One directory name per model: ``names`` or each source's basename."""
    result = list(names) if names is not None else [Path(str(s).rstrip("/")).name for s in sources]
    for name in result:
        if not name or name in (".", "..") or not _NAME_OK.match(name):
            raise MergeError(f"output name {name!r} is not a plain directory name; give --names")
    seen: dict[str, int] = {}
    for j, name in enumerate(result):
        if name in seen:
            raise MergeError(
                f"models {sources[seen[name]]!r} and {sources[j]!r} would both be written "
                f"as {name!r}; give distinct --names"
            )
        seen[name] = j
    return result


def check_distinct_models(models: list[str], revisions: list) -> None:
    """Each checkpoint is given once (local folders compared after resolving links)."""
    from ..outputs import resolved

    seen: dict[tuple, int] = {}
    for j, (model, revision) in enumerate(zip(models, revisions)):
        local = Path(model).expanduser().exists()
        key = (str(resolved(model)), None) if local else (model, revision)
        if key in seen:
            raise MergeError(
                f"--models gives the same checkpoint twice: {models[seen[key]]!r} (model "
                f"{seen[key] + 1}) and {model!r} (model {j + 1}); a merge combines different "
                "checkpoints: give each once")
        seen[key] = j


def check_sources(sources: MergeSources, settings) -> list[str]:
    """Everything checkable before a model loads: the request (:func:`.checks.check_request`),
    the output names, and each artifact's header (exists, kind, task).  Returns the output
    names."""
    check_request(settings, len(sources.models), len(sources.artifacts or []) or None,
                  bool(sources.base), sources.given_flag)
    check_distinct_models(sources.models, sources.per_model("revisions"))
    names = output_names(sources.models, sources.names)
    kind = of_method(registry.method(settings.method).artifact)
    tasks = sources.per_model("tasks")
    for j, path in enumerate(sources.artifacts or []):
        if not Path(path).is_file():
            raise MergeError(f"{kind.file} {path} (for {sources.models[j]!r}) does not exist; "
                             f"compute it with the {kind.command} command")
        header = read_metadata(path, f"{kind.noun} artifact")
        check_kind(path, header.get("method"), settings.method, repr(sources.models[j]))
        check_task(path, header, tasks[j], repr(sources.models[j]),
                   sources.allow_fisher_mismatch)
        check_objective(path, header, settings.objective, repr(sources.models[j]),
                        sources.allow_fisher_mismatch)
    return names


def check_kind(path, kind: str | None, method: str, label: str) -> None:
    want = registry.method(method).artifact
    if kind != want:
        need = of_method(want)
        raise MergeError(
            f"{need.file} {path} (for {label}) has method {kind!r} but --method {method} needs "
            f"a {want!r} {need.noun} (the {need.command} command)"
        )


def check_task(path, metadata: dict, expected: str | None, label: str,
               allow_mismatch: bool = False) -> None:
    """The artifact's recorded task must be the task its model is merged for."""
    recorded = metadata.get("task")
    if expected is None or recorded is None or recorded == expected:
        return
    kind = metadata.get("method")
    message = (f"{_file(kind)} {path} was computed on task {recorded!r}, but it is used for "
               f"{label} on task {expected!r}")
    _mismatch(message, allow_mismatch, kind)


def check_objective(path, metadata: dict, objective: str, label: str,
                    allow_mismatch: bool = False) -> None:
    """The artifact's recorded objective must be the one the merge was given (``--objective``;
    files that record none pass): a Fisher or Gram of a classifier weights another body than
    a causal LM's."""
    recorded = metadata.get("objective")
    if recorded is None or recorded == objective:
        return
    kind = metadata.get("method")
    message = (f"{_file(kind)} {path} was computed for the {recorded} objective, but it is "
               f"used for {label} in a {objective} merge (--objective {objective})")
    command = of_method(kind).command if of_method(kind) else "fisher"
    _mismatch(message, allow_mismatch, kind,
              f"Compute it for this merge's objective ({command} --objective {objective})")


def check_model(path, metadata: dict, info, label: str, allow_mismatch: bool = False) -> None:
    """The artifact's recorded model fingerprint must be that of the model it weights.

    A hub revision (``revision:main``) says little on its own, so then the
    recorded source must match too.  Files without a recorded fingerprint pass.
    """
    recorded = metadata.get("fingerprint")
    if recorded is None:
        return
    same = recorded == info.fingerprint
    if same and not str(recorded).startswith("sha256:") and metadata.get("model") is not None:
        same = str(metadata["model"]) == str(info.source)
    if same:
        return
    kind = metadata.get("method")
    message = (f"{_file(kind)} {path} was computed for model "
               f"{metadata.get('model')!r} (fingerprint {recorded}), but it is used for {label} "
               f"(fingerprint {info.fingerprint})")
    _mismatch(message, allow_mismatch, kind)


def _file(method: str | None) -> str:
    """``Fisher file``, ``Gram file``: the kind whose files record ``method``."""
    kind = of_method(method)
    return kind.file if kind is not None else "artifact file"


def _mismatch(message: str, allow_mismatch: bool, kind: str | None, fix: str | None = None) -> None:
    if allow_mismatch:
        log.warning("%s; merging anyway (--allow-fisher-mismatch)", message)
        return
    flag = of_method(kind).flag if of_method(kind) else "artifacts"
    fix = fix or (f"Give the {flag} in the order of the --models, each computed for its own "
                  "model (and task)")
    raise FisherProvenanceError(
        f"{message}. {fix}, or pass --allow-fisher-mismatch to merge anyway")
