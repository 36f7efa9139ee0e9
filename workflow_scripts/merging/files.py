"""Merging checkpoints on disk: check the request, load the models and artifacts, merge,
write one ``save_pretrained`` checkpoint per model (its own head and tokenizer)
atomically, and evaluate the merged models in the same process if asked."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import MergeError
from ..io import atomic_path, sha256_file
from ..models import load_model, save_checkpoint
from ..settings import EvaluateSettings, MergeSettings
from . import registry
from .card import add_scores, write_card
from .merge import apply_merge, merge_settings, prepare_inputs
from .sources import MergeSources, check_model, check_sources, load_artifact

log = logging.getLogger(__name__)


def _common(values: list):
    """The value all entries share, else the list (n or seed of the Fisher files)."""
    values = list(values)
    return values[0] if len(set(map(str, values))) == 1 else values


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
class EvalSplit:
    """One split the merged models are evaluated on: one samples file per model (same
    order) and the directory of one evaluate-style JSON per model (``NAME.json``, written
    atomically as a whole)."""

    data: list[str]
    out_dir: str
    name: str = "validation"


@dataclass
class MergeEvaluation:
    """Evaluate each merged model on its own task's samples of every split (``merge
    --eval-out``, and ``--holdout-out`` for the held-out selection split), in the merge's
    process: one JSON per model and split, like the ``evaluate`` command's."""

    splits: list[EvalSplit]
    task_infos: list[str] | None = None  # the tasks' info files: label counts must match
    settings: EvaluateSettings = field(default_factory=EvaluateSettings)
    context: dict = field(default_factory=dict)  # each JSON's context, plus task and split
    progress: bool = True

    def check(self, models: int) -> None:
        for split in self.splits:
            if len(split.data) != models:
                raise MergeError(f"{split.name} data: {len(split.data)} files for {models} "
                                 "models (one per model, same order)")
        if self.task_infos is not None and len(self.task_infos) != models:
            raise MergeError(f"--eval-task-infos gives {len(self.task_infos)} files for "
                             f"{models} models")


@dataclass
class Loaded:
    """The loaded inputs of a merge."""

    models: list  # (model, tokenizer, info) per input
    artifacts: list | None  # one tensor dict per model, or None
    records: list[dict]  # per artifact: path, sha256 and metadata
    base_body: dict | None
    base_info: object | None


def merge_models(sources: MergeSources | list[str], out_dir=None,
                 settings: MergeSettings | str | None = None, *,
                 evaluation: MergeEvaluation | None = None, **fields_) -> list[Path]:
    """Check, load, merge and write one checkpoint per model under ``out_dir`` (atomically).

    ``sources`` (:class:`MergeSources`, or the model list with its other fields by name),
    ``settings`` (:class:`MergeSettings` or a method name, with its settings by name:
    ``method="ties", lam=0.5``).  Each artifact must have been computed for its model (same
    fingerprint) and, when ``tasks`` names each model's task, on that task; otherwise a
    :class:`FisherProvenanceError`, unless ``allow_fisher_mismatch`` (a warning).  Each
    checkpoint directory gets ``merge.json`` and a model card ``README.md`` (:mod:`.card`).
    ``out_dir`` None writes no checkpoint (then give ``evaluation``); ``evaluation`` also
    evaluates each merged model on its task (:class:`MergeEvaluation`), the scores going
    into the model cards.  Returns the checkpoint directories (or, without ``out_dir``, the
    evaluation files).
    """
    if not isinstance(sources, MergeSources):
        given = {k: fields_.pop(k) for k in list(fields_) if k in MergeSources.FIELDS}
        sources = MergeSources(list(sources), **given)
    settings = merge_settings(settings if settings is not None else fields_.pop("method", None),
                              fields_)
    if out_dir is None and evaluation is None:
        raise MergeError("nothing to write: give an output directory (--out) or --eval-out")
    names = check_sources(sources, settings)
    if evaluation is not None:
        evaluation.check(len(sources.models))
    loaded = load_inputs(sources, settings)
    compute_merge(loaded, sources, settings)
    recipe = merge_recipe(loaded, sources, settings, names)
    return write_outputs(loaded, names, recipe, out_dir, evaluation)


def load_inputs(sources: MergeSources, settings: MergeSettings) -> Loaded:
    """The models, the base's body and the artifacts, each artifact checked against its
    model."""
    maps, revisions = sources.per_model("label_maps"), sources.per_model("revisions")
    models = []
    for j, source in enumerate(sources.models):
        log.info("loading %s", source)
        models.append(load_model(source, revision=revisions[j], allow_pickle=sources.allow_pickle,
                                 label_map=maps[j]))
    base_body = base_info = None
    if registry.method(settings.method).needs_base:
        log.info("loading the base model %s", sources.base)
        base_body, base_info = load_base(str(sources.base), allow_pickle=sources.allow_pickle)
    artifacts, records = None, []
    if registry.method(settings.method).artifact is not None:
        artifacts = []
        for j, path in enumerate(sources.artifacts):
            label = repr(sources.models[j])
            tensors, metadata = load_artifact(path, settings.method, label)
            check_model(path, metadata, models[j][2], label, sources.allow_fisher_mismatch)
            artifacts.append(tensors)
            records.append({"path": str(path), "sha256": sha256_file(path), "metadata": metadata})
    return Loaded(models, artifacts, records, base_body, base_info)


def compute_merge(loaded: Loaded, sources: MergeSources, settings: MergeSettings) -> None:
    """Merge the loaded models' bodies in place (their heads untouched)."""
    kind = registry.method(settings.method).artifact
    labels = [repr(m) for m in sources.models]
    artifact_labels = None
    if kind is not None:
        noun = "file" if kind == registry.GRAM else "Fisher file"
        artifact_labels = [f"{kind} {noun} {path} (for {labels[j]})"
                           for j, path in enumerate(sources.artifacts)]
    log.info("merging %d models (%s%s)", len(sources.models), settings.method,
             f", {settings.scheme} scheme" if registry.method(settings.method).takes_scheme else "")
    inputs = prepare_inputs([m for m, _, _ in loaded.models], settings, loaded.artifacts,
                            base=loaded.base_body, labels=labels, artifact_labels=artifact_labels,
                            base_label=f"base model {str(sources.base)!r}")
    apply_merge(inputs)
    loaded.artifacts = None  # the Fisher tensors are no longer needed


def merge_recipe(loaded: Loaded, sources: MergeSources, settings: MergeSettings,
                 names: list[str]) -> dict:
    """``merge.json``'s fields shared by every merged checkpoint."""
    records = loaded.records
    inputs = [
        {
            "name": names[j],
            "source": info.source,
            "revision": info.revision,
            "fingerprint": info.fingerprint,
            "model_type": info.model_type,
            "num_labels": info.num_labels,
            "label_map": info.label_map,
            "fisher": records[j]["path"] if records else None,
        }
        for j, (_, _, info) in enumerate(loaded.models)
    ]
    metas = [r["metadata"] for r in records]
    recipe = {
        "method": settings.method,
        "scheme": settings.scheme if registry.method(settings.method).takes_scheme else None,
        "n": _common(m.get("n") for m in metas) if metas else None,
        "seed": _common(m.get("seed") for m in metas) if metas else None,
        "parameters": settings.parameters(),
        "inputs": inputs,
        "fisher_files": records,
        "workflow_scripts_version": __version__,
    }
    if loaded.base_info is not None:
        recipe["base"] = {"source": loaded.base_info.source,
                          "fingerprint": loaded.base_info.fingerprint}
    return recipe


def write_outputs(loaded: Loaded, names: list[str], recipe: dict, out_dir,
                  evaluation: MergeEvaluation | None) -> list[Path]:
    """Write the merged checkpoints (when ``out_dir``) and evaluate them (when
    ``evaluation``); returns the checkpoints, else the evaluation files."""
    written, evals = [], []
    if out_dir is not None:
        out_dir = Path(out_dir)
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            checkpoints = []
            for j, (model, tokenizer, info) in enumerate(loaded.models):
                save_checkpoint(model, tokenizer, tmp / names[j])
                write_card(tmp / names[j], dict(recipe, model_index=j, name=names[j],
                                                head_of=info.source))
                written.append(out_dir / names[j])
                # (final path, the files as written): the evaluation's model and fingerprint
                checkpoints.append((str(out_dir / names[j]), str(tmp / names[j])))
            if evaluation is not None:  # before the rename, while the written files are at hand
                evals = evaluate_merged(loaded.models, names, evaluation, checkpoints)
        log.info("wrote %s", ", ".join(str(p) for p in written))
    elif evaluation is not None:
        evals = evaluate_merged(loaded.models, names, evaluation, None)
    if evaluation is not None:
        log.info("wrote %s", ", ".join(str(p) for p in evals))
    return written or evals


def evaluate_merged(models, names, evaluation: MergeEvaluation, checkpoints) -> list[Path]:
    """One evaluation JSON per merged model and split (each split's directory written as a
    whole); the validation scores go into the model cards of written checkpoints."""
    import contextlib

    from ..data import read_samples
    from ..devices import resolve_device
    from ..evaluate import EvalRecord, evaluate_loaded
    from ..models import fingerprint as checkpoint_fingerprint

    infos = evaluation.task_infos or [None] * len(models)
    device = resolve_device(evaluation.settings.device)
    written = []
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(split.out_dir)) for split in evaluation.splits]
        for tmp in tmps:
            tmp.mkdir()
        for j, (model, tokenizer, _) in enumerate(models):
            name = names[j]
            ckpt = checkpoints[j] if checkpoints else None
            model.to(device)
            for split, tmp in zip(evaluation.splits, tmps):
                samples = read_samples(split.data[j], nonempty=True)
                record = EvalRecord(ckpt[0] if ckpt else f"merge of {name}", str(split.data[j]),
                                    checkpoint_fingerprint(ckpt[1]) if ckpt else None)
                context = dict(evaluation.context, task=name)
                if split.name != "validation":
                    context["split"] = split.name
                result = evaluate_loaded(
                    model, tokenizer, samples, name, evaluation.settings, record=record,
                    task_info=infos[j], context=context, out=tmp / f"{name}.json",
                    progress=evaluation.progress,
                )
                written.append(Path(split.out_dir) / f"{name}.json")
                if ckpt and split.name == "validation":  # the model card's scores
                    add_scores(ckpt[1], name, result["metrics"])
    return written
