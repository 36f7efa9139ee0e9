"""Merging checkpoints on disk: load the models and Fisher files, merge, write one
``save_pretrained`` checkpoint per model (its own head and tokenizer) atomically."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..artifacts import check_finite, check_values, load_fisher, read_metadata
from ..errors import FisherProvenanceError, MergeError
from ..io import atomic_path, sha256_file
from ..models import load_model, save_checkpoint
from . import registry
from .card import add_scores, write_card
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


def _what(kind: str | None) -> str:
    return "Gram" if kind == registry.GRAM else "Fisher"


def _check_kind(path, kind: str | None, method: str, label: str) -> None:
    want = registry.method(method).artifact
    if kind != want:
        raise MergeError(
            f"{_what(want)} file {path} (for {label}) has method {kind!r} but --method {method} "
            f"needs a {want!r} {'file' if want == registry.GRAM else 'Fisher'}"
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
    """Load a Fisher (or Gram) file and check its kind and values."""
    what = _what(registry.method(method).artifact)
    tensors, metadata = load_fisher(path, what=f"{what} artifact")
    _check_kind(path, metadata.get("method"), method, label)
    if what == "Gram":
        check_finite(tensors, what=f"Gram file {path}")
    else:
        check_values(tensors, what=f"Fisher file {path}")
    return tensors, metadata


def load_base(source: str, allow_pickle: bool = False):
    """The body of the pre-trained model (task-vector methods); every body weight must load."""
    model, _, info = load_model(source, allow_pickle=allow_pickle)
    from .. import architectures as arch

    prefix = arch.body_prefix(model)
    missing = [k for k in info.newly_initialised if k.startswith(prefix)]
    if missing:
        raise MergeError(
            f"base model {source!r} lacks body weights {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}; it is not the pre-trained model of these "
            "checkpoints (set the family's base to the model they were fine-tuned from)"
        )
    return arch.body_state(model), info


@dataclass
class MergeEvaluation:
    """Evaluate each merged model on its own task's validation samples (``merge --eval-out``):
    one JSON per model, named by its output name, like the ``evaluate`` command's."""

    data: list[str]  # one validation samples file per model, same order
    out_dir: str  # the JSONs' directory (written atomically, as a whole)
    task_infos: list[str] | None = None  # the tasks' info files: label counts must match
    batch_size: int = 64
    max_length: int = 128
    device: str = "auto"
    context: dict = field(default_factory=dict)  # each JSON's context, plus task=<name>
    progress: bool = True


def _evaluate(loaded, out_names, evaluation: MergeEvaluation, checkpoints) -> list[Path]:
    from ..data import read_samples
    from ..devices import resolve_device
    from ..evaluate import evaluate_loaded
    from ..io import atomic_path as atomic
    from ..models import fingerprint as checkpoint_fingerprint

    if len(evaluation.data) != len(loaded):
        raise MergeError(f"--eval-data gives {len(evaluation.data)} files for {len(loaded)} models")
    infos = evaluation.task_infos or [None] * len(loaded)
    if len(infos) != len(loaded):
        raise MergeError(f"--eval-task-infos gives {len(infos)} files for {len(loaded)} models")
    device = resolve_device(evaluation.device)
    out_dir = Path(evaluation.out_dir)
    written = []
    with atomic(out_dir) as tmp:
        tmp.mkdir()
        for j, (model, tokenizer, _) in enumerate(loaded):
            name = out_names[j]
            samples = read_samples(evaluation.data[j], nonempty=True)
            ckpt = checkpoints[j] if checkpoints else None
            model.to(device)
            result = evaluate_loaded(
                model, tokenizer, samples, name,
                model_source=ckpt[0] if ckpt else f"merge of {name}", data_path=evaluation.data[j],
                fingerprint=checkpoint_fingerprint(ckpt[1]) if ckpt else None,
                task_info=infos[j], batch_size=evaluation.batch_size,
                max_length=evaluation.max_length, device=device,
                context=dict(evaluation.context, task=name), out=tmp / f"{name}.json",
                progress=evaluation.progress,
            )
            written.append(out_dir / f"{name}.json")
            if ckpt:  # the scores go into the merged checkpoint's model card
                add_scores(ckpt[1], name, result["metrics"])
    return written


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
    base: str | None = None,
    grams: list[str] | None = None,
    options: dict | None = None,
    evaluation: MergeEvaluation | None = None,
) -> list[Path]:
    """Load, merge and write one checkpoint per model under ``out_dir`` (atomically).

    ``fishers`` (Fisher methods) or ``grams`` (RegMean): one file per model;
    ``base``: the pre-trained model (task-vector methods); ``options``: the
    method's hyper-parameters (``lam``, ``ties_k``, ...: :data:`.registry.DEFAULTS`).
    Each Fisher file must have been computed for its model (same fingerprint)
    and, when ``tasks`` names each model's task, on that task; otherwise a
    :class:`FisherProvenanceError`, unless ``allow_fisher_mismatch`` (a warning).
    Each checkpoint directory gets ``merge.json`` and a model card ``README.md``
    (:mod:`.card`).  ``out_dir`` None writes no checkpoint (then give
    ``evaluation``).  ``evaluation``: also evaluate each merged model on its task
    (:class:`MergeEvaluation`); the scores go into the model cards.
    Returns the checkpoint directories (or, without ``out_dir``, the evaluation files).
    """
    models = [str(m) for m in models]
    if len(models) < 2:
        raise MergeError(f"a merge needs two or more models, got {len(models)}")
    if out_dir is None and evaluation is None:
        raise MergeError("nothing to write: give an output directory (--out) or --eval-out")
    spec = registry.method(method)
    kind = spec.artifact
    if kind == registry.GRAM:
        if fishers:
            raise MergeError(f"--method {method} takes --grams, not --fishers")
        fishers = grams
    elif grams:
        raise MergeError(f"--method {method} takes no --grams")
    if spec.needs_base and not base:
        raise MergeError(f"--method {method} works on task vectors: give the pre-trained model "
                         "the checkpoints were fine-tuned from (--base DIR)")
    if base and not spec.needs_base:
        log.warning("--base has no effect with --method %s", method)
    get_scheme(scheme)
    if floor < 0:
        raise MergeError(f"--floor must be >= 0, got {floor}")
    if kind is None:
        if fishers:
            raise MergeError(f"--method {method} takes no --fishers")
        if floor:
            log.warning("--floor %g has no effect with --method %s", floor, method)
    elif not fishers or len(fishers) != len(models):
        flag = "--grams" if kind == registry.GRAM else "--fishers"
        raise MergeError(
            f"--method {method} needs one {_what(kind)} file per model, in the same order: "
            f"{len(models)} models but {len(fishers or [])} {flag}"
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
            raise MergeError(f"{_what(kind)} file {path} (for {models[j]!r}) does not exist")
        header = read_metadata(path, f"{_what(kind)} artifact")
        _check_kind(path, header.get("method"), method, repr(models[j]))
        check_task(path, header.get("task"), tasks[j], repr(models[j]), allow_fisher_mismatch)

    loaded = []
    for j, source in enumerate(models):
        log.info("loading %s", source)
        loaded.append(
            load_model(source, revision=revisions[j], allow_pickle=allow_pickle, label_map=label_maps[j])
        )
    labels = [f"{models[j]!r}" for j in range(len(models))]
    base_body = base_info = None
    if spec.needs_base:
        log.info("loading the base model %s", base)
        base_body, base_info = load_base(str(base), allow_pickle=allow_pickle)
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
        fisher_labels = [f"{kind} {'file' if kind == registry.GRAM else 'Fisher file'} "
                         f"{fishers[j]} (for {labels[j]})" for j in range(len(models))]
    takes_scheme = registry.method(method).takes_scheme
    log.info("merging %d models (%s%s)", len(models), method,
             f", {scheme} scheme" if takes_scheme else "")
    merge_loaded(
        [m for m, _, _ in loaded], method, fisher_tensors, scheme=scheme, floor=floor,
        labels=labels, fisher_labels=fisher_labels, base=base_body,
        base_label=f"base model {str(base)!r}", options=options,
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
        "parameters": {**({"floor": floor} if spec.fisher is not None else {}),
                       **dict(options or {})},
        "inputs": inputs,
        "fisher_files": fisher_records,
        "workflow_scripts_version": __version__,
    }
    if base_info is not None:
        common["base"] = {"source": base_info.source, "fingerprint": base_info.fingerprint}
    written, checkpoints = [], []
    if out_dir is not None:
        out_dir = Path(out_dir)
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            for j, (model, tokenizer, info) in enumerate(loaded):
                recipe = dict(common, model_index=j, name=out_names[j], head_of=info.source)
                save_checkpoint(model, tokenizer, tmp / out_names[j])
                write_card(tmp / out_names[j], recipe)
                written.append(out_dir / out_names[j])
                # (final path, the files as written): the evaluation's model and fingerprint
                checkpoints.append((out_dir / out_names[j], tmp / out_names[j]))
            if evaluation is not None:  # before the rename, while the written files are at hand
                evals = _evaluate(loaded, out_names, evaluation,
                                  [(str(final), str(now)) for final, now in checkpoints])
        log.info("wrote %s", ", ".join(str(p) for p in written))
    elif evaluation is not None:
        evals = _evaluate(loaded, out_names, evaluation, None)
    if evaluation is not None:
        log.info("wrote %s", ", ".join(str(p) for p in evals))
    return written or evals
