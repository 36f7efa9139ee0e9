"""Merging checkpoints on disk: load the models and Fisher files, merge, write one
``save_pretrained`` checkpoint per model (its own head and tokenizer) atomically."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .. import __version__
from ..artifacts import check_values, load_fisher, read_metadata
from ..errors import FisherProvenanceError, MergeError
from ..io import atomic_path, sha256_file
from ..models import load_model, save_checkpoint
from . import registry
from .card import write_card
from .merge import merge_loaded
from .schemes import DEFAULT_SCHEME, scheme as get_scheme

log = logging.getLogger(__name__)

_NAME_OK = re.compile(r"^[A-Za-z0-9._+=@-]+$")


def output_names(sources: list[str], names: list[str] | None = None) -> list[str]:
    """One directory name per model: ``names`` or each source's basename."""
    if names is not None:
        if len(names) != len(sources):
            raise MergeError(f"--names gives {len(names)} names for {len(sources)} models")
        result = list(names)
    else:
        result = [Path(str(s).rstrip("/")).name for s in sources]
    for name in result:
        if not name or name in (".", "..") or not _NAME_OK.match(name):
            raise MergeError(
                f"output name {name!r} is not a plain directory name; give --names"
            )
    seen: dict[str, int] = {}
    for j, name in enumerate(result):
        if name in seen:
            raise MergeError(
                f"models {sources[seen[name]]!r} and {sources[j]!r} would both be written "
                f"as {name!r}; give distinct --names"
            )
        seen[name] = j
    return result


def _check_kind(path, kind: str | None, method: str, label: str) -> None:
    want = registry.method(method).fisher
    if kind != want:
        raise MergeError(
            f"Fisher file {path} (for {label}) has method {kind!r} but --method {method} "
            f"needs a {want!r} Fisher"
        )


def check_task(path, recorded: str | None, expected: str | None, label: str,
               allow_mismatch: bool = False) -> None:
    """The Fisher file's recorded task must be the task its model is merged for."""
    if expected is None or recorded is None or recorded == expected:
        return
    message = (f"Fisher file {path} was computed on task {recorded!r}, but it is used for "
               f"{label} on task {expected!r}")
    _mismatch(message, allow_mismatch)


def check_model(path, metadata: dict, info, label: str, allow_mismatch: bool = False) -> None:
    """The Fisher file's recorded model fingerprint must be that of the model it weights.

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
    message = (f"Fisher file {path} was computed for model {metadata.get('model')!r} "
               f"(fingerprint {recorded}), but it is used for {label} (fingerprint "
               f"{info.fingerprint})")
    _mismatch(message, allow_mismatch)


def _mismatch(message: str, allow_mismatch: bool) -> None:
    if allow_mismatch:
        log.warning("%s; merging anyway (--allow-fisher-mismatch)", message)
        return
    raise FisherProvenanceError(
        f"{message}. Give the --fishers in the order of the --models, each computed for its "
        "own model (and task), or pass --allow-fisher-mismatch to merge anyway"
    )


def _common(values: list):
    """The value all entries share, else the list (n or seed of the Fisher files)."""
    values = list(values)
    return values[0] if len(set(map(str, values))) == 1 else values


def load_fisher_for(path, method: str, label: str):
    """Load a Fisher file and check its kind and values."""
    tensors, metadata = load_fisher(path)
    _check_kind(path, metadata.get("method"), method, label)
    check_values(tensors, what=f"Fisher file {path}")
    return tensors, metadata


def merge_models(
    models: list[str],
    out_dir,
    method: str = "average",
    fishers: list[str] | None = None,
    scheme: str = DEFAULT_SCHEME,
    floor: float = 0.0,
    names: list[str] | None = None,
    label_maps: list[list[int] | None] | None = None,
    allow_pickle: bool = False,
    revisions: list[str | None] | None = None,
    tasks: list[str] | None = None,
    allow_fisher_mismatch: bool = False,
) -> list[Path]:
    """Load, merge and write one checkpoint per model under ``out_dir`` (atomically).

    Each Fisher file must have been computed for its model (same fingerprint)
    and, when ``tasks`` names each model's task, on that task; otherwise a
    :class:`FisherProvenanceError`, unless ``allow_fisher_mismatch`` (a warning).
    Each checkpoint directory gets ``merge.json`` and a model card ``README.md``
    (:mod:`.card`).  Returns the checkpoint directories.
    """
    models = [str(m) for m in models]
    if len(models) < 2:
        raise MergeError(f"a merge needs two or more models, got {len(models)}")
    kind = registry.method(method).fisher
    get_scheme(scheme)
    if floor < 0:
        raise MergeError(f"--floor must be >= 0, got {floor}")
    if kind is None:
        if fishers:
            raise MergeError(f"--method {method} takes no --fishers")
        if floor:
            log.warning("--floor %g has no effect with --method %s", floor, method)
    elif not fishers or len(fishers) != len(models):
        raise MergeError(
            f"--method {method} needs one Fisher file per model, in the same order: "
            f"{len(models)} models but {len(fishers or [])} --fishers"
        )
    label_maps = label_maps if label_maps is not None else [None] * len(models)
    if len(label_maps) != len(models):
        raise MergeError(f"--label-maps gives {len(label_maps)} maps for {len(models)} models")
    revisions = revisions if revisions is not None else [None] * len(models)
    if tasks is not None and len(tasks) != len(models):
        raise MergeError(f"--tasks gives {len(tasks)} tasks for {len(models)} models")
    tasks = tasks if tasks is not None else [None] * len(models)
    out_names = output_names(models, names)
    for j, path in enumerate(fishers or []):  # cheap header checks before loading models
        if not Path(path).is_file():
            raise MergeError(f"Fisher file {path} (for {models[j]!r}) does not exist")
        header = read_metadata(path)
        _check_kind(path, header.get("method"), method, repr(models[j]))
        check_task(path, header.get("task"), tasks[j], repr(models[j]), allow_fisher_mismatch)

    loaded = []
    for j, source in enumerate(models):
        log.info("loading %s", source)
        loaded.append(
            load_model(source, revision=revisions[j], allow_pickle=allow_pickle, label_map=label_maps[j])
        )
    labels = [f"{models[j]!r}" for j in range(len(models))]
    fisher_tensors, fisher_records, fisher_labels = None, [], None
    if kind is not None:
        fisher_tensors = []
        for j, path in enumerate(fishers):
            tensors, metadata = load_fisher_for(path, method, labels[j])
            fisher_tensors.append(tensors)
            check_model(path, metadata, loaded[j][2], labels[j], allow_fisher_mismatch)
            fisher_records.append(
                {"path": str(path), "sha256": sha256_file(path), "metadata": metadata}
            )
        fisher_labels = [f"{kind} Fisher file {fishers[j]} (for {labels[j]})"
                         for j in range(len(models))]
    takes_scheme = registry.method(method).takes_scheme
    log.info("merging %d models (%s%s)", len(models), method,
             f", {scheme} scheme" if takes_scheme else "")
    merge_loaded(
        [m for m, _, _ in loaded], method, fisher_tensors, scheme=scheme, floor=floor,
        labels=labels, fisher_labels=fisher_labels,
    )
    del fisher_tensors

    inputs = [
        {
            "name": out_names[j],
            "source": info.source,
            "revision": info.revision,
            "fingerprint": info.fingerprint,
            "model_type": info.model_type,
            "num_labels": info.num_labels,
            "label_map": info.label_map,
            "fisher": fisher_records[j]["path"] if fisher_records else None,
        }
        for j, (_, _, info) in enumerate(loaded)
    ]
    metas = [r["metadata"] for r in fisher_records]
    common = {
        "method": method,
        "scheme": scheme if takes_scheme else None,
        "n": _common(m.get("n") for m in metas) if metas else None,
        "seed": _common(m.get("seed") for m in metas) if metas else None,
        "parameters": {"floor": floor} if kind is not None else {},
        "inputs": inputs,
        "fisher_files": fisher_records,
        "workflow_scripts_version": __version__,
    }
    out_dir = Path(out_dir)
    written = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for j, (model, tokenizer, info) in enumerate(loaded):
            recipe = dict(common, model_index=j, name=out_names[j], head_of=info.source)
            save_checkpoint(model, tokenizer, tmp / out_names[j])
            write_card(tmp / out_names[j], recipe)
            written.append(out_dir / out_names[j])
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written
