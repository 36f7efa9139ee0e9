"""What a merge is given: the checkpoints, their per-model artifacts (Fisher or Gram
files), the base, output names, tasks and label maps (:class:`MergeSources`), and the
checks that need the files' headers: each artifact's kind, task and model."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ..artifacts import check_finite, check_values, load_fisher, read_metadata
from ..errors import FisherProvenanceError, MergeError
from . import registry
from .checks import artifact_flag, artifact_noun, check_request

log = logging.getLogger(__name__)

_NAME_OK = re.compile(r"^[A-Za-z0-9._+=@-]+$")


@dataclass
class MergeSources:
    """The inputs of a merge: ``models`` (two or more checkpoint directories or hub ids), one
    artifact per model (``fishers`` for Fisher methods, ``grams`` for RegMean), the
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

    @property
    def artifacts(self) -> list[str] | None:
        return self.grams if self.grams else self.fishers

    @property
    def given_flag(self) -> str | None:
        """The flag the artifacts came with."""
        return "--grams" if self.grams else ("--fishers" if self.fishers else None)

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
    kind = registry.method(settings.method).artifact
    tasks = sources.per_model("tasks")
    for j, path in enumerate(sources.artifacts or []):
        what = artifact_noun(kind)
        if not Path(path).is_file():
            raise MergeError(f"{what} file {path} (for {sources.models[j]!r}) does not exist")
        header = read_metadata(path, f"{what} artifact")
        check_kind(path, header.get("method"), settings.method, repr(sources.models[j]))
        check_task(path, header.get("task"), tasks[j], repr(sources.models[j]),
                   sources.allow_fisher_mismatch)
        check_objective(path, header, settings.objective, repr(sources.models[j]),
                        sources.allow_fisher_mismatch)
    return names


def check_kind(path, kind: str | None, method: str, label: str) -> None:
    want = registry.method(method).artifact
    if kind != want:
        raise MergeError(
            f"{artifact_noun(want)} file {path} (for {label}) has method {kind!r} but --method "
            f"{method} needs a {want!r} {'file' if want == registry.GRAM else 'Fisher'}"
        )


def check_task(path, recorded: str | None, expected: str | None, label: str,
               allow_mismatch: bool = False) -> None:
    """The Fisher file's recorded task must be the task its model is merged for."""
    if expected is None or recorded is None or recorded == expected:
        return
    message = (f"Fisher file {path} was computed on task {recorded!r}, but it is used for "
               f"{label} on task {expected!r}")
    _mismatch(message, allow_mismatch, kind=None)


def check_objective(path, metadata: dict, objective: str, label: str,
                    allow_mismatch: bool = False) -> None:
    """The artifact's recorded objective must be the one the merge was given (``--objective``;
    files that record none pass): a Fisher or Gram of a classifier weights another body than
    a causal LM's."""
    recorded = metadata.get("objective")
    if recorded is None or recorded == objective:
        return
    kind = metadata.get("method")
    message = (f"{artifact_noun(kind)} file {path} was computed for the {recorded} objective, but "
               f"it is used for {label} in a {objective} merge (--objective {objective})")
    command = "gram" if kind == registry.GRAM else "fisher"
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
    message = (f"{artifact_noun(kind)} file {path} was computed for model "
               f"{metadata.get('model')!r} (fingerprint {recorded}), but it is used for {label} "
               f"(fingerprint {info.fingerprint})")
    _mismatch(message, allow_mismatch, kind)


def _mismatch(message: str, allow_mismatch: bool, kind: str | None, fix: str | None = None) -> None:
    if allow_mismatch:
        log.warning("%s; merging anyway (--allow-fisher-mismatch)", message)
        return
    fix = fix or (f"Give the {artifact_flag(kind)} in the order of the --models, each computed "
                  "for its own model (and task)")
    raise FisherProvenanceError(
        f"{message}. {fix}, or pass --allow-fisher-mismatch to merge anyway")


def load_artifact(path, method: str, label: str):
    """Load a Fisher (or Gram) file and check its kind and values."""
    what = artifact_noun(registry.method(method).artifact)
    tensors, metadata = load_fisher(path, what=f"{what} artifact")
    check_kind(path, metadata.get("method"), method, label)
    if what == "Gram":
        check_finite(tensors, what=f"Gram file {path}")
    else:
        check_values(tensors, what=f"Fisher file {path}")
    return tensors, metadata
