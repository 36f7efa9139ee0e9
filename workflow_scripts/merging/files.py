"""Merging checkpoints on disk: check the request, open the models, the base and the
artifacts as files, stream the merge (:mod:`.stream`) into one ``save_pretrained``
checkpoint per model (its own head, config and tokenizer) written atomically, and
evaluate the merged models, one at a time, in the same process if asked.

Memory does not grow with the number of models: every tensor is read when the merge
needs it and written as soon as it is merged.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, objectives, outputs
from ..artifacts import verify_artifact
from ..errors import MergeError, ModelLoadError
from ..io import atomic_path, make_folder, sha256_file
from ..settings import EvaluateSettings, MergeSettings
from . import registry
from .card import add_scores, write_card
from .engine import MergeContext, merged_blocks
from .merge import merge_settings
from .safety import check_merge_outputs, check_merge_space
from .sources import MergeSources, check_kind, check_model, check_sources
from .stream import BodyFiles, FileSources, ModelFacts, check_files, local_directory, write_merged
from .tokenizers import check_tokenizers

log = logging.getLogger(__name__)


def _common(values: list):
    """The value all entries share, else the list (n or seed of the Fisher files)."""
    values = list(values)
    return values[0] if len(set(map(str, values))) == 1 else values


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
class Opened:
    """A merge's inputs, opened as files (no weights loaded)."""

    facts: list[ModelFacts]
    models: list[BodyFiles]
    base: BodyFiles | None
    base_facts: ModelFacts | None
    records: list[dict]  # per artifact: path, sha256 and metadata
    workdir: tempfile.TemporaryDirectory | None = None  # pickle checkpoints converted here


def merge_models(sources: MergeSources | list[str], out_dir=None,
                 settings: MergeSettings | str | None = None, *,
                 evaluation: MergeEvaluation | None = None, **fields_) -> list[Path]:
    """Check, open, merge and write one checkpoint per model under ``out_dir`` (atomically).

    ``sources`` (:class:`MergeSources`, or the model list with its other fields by name),
    ``settings`` (:class:`MergeSettings` or a method name, with its settings by name:
    ``method="ties", lam=0.5``).  Each artifact must have been computed for its model (same
    fingerprint) and, when ``tasks`` names each model's task, on that task; otherwise a
    :class:`FisherProvenanceError`, unless ``allow_fisher_mismatch`` (a warning).  Each
    checkpoint directory gets ``merge.json`` and a model card ``README.md`` (:mod:`.card`).
    ``out_dir`` None keeps no checkpoint (then give ``evaluation``); ``evaluation`` also
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
    check_merge_outputs(sources, out_dir, evaluation, names)
    opened = open_inputs(sources, settings)
    try:
        recipe = merge_recipe(opened, sources, settings, names)
        return write_outputs(opened, sources, settings, names, recipe, out_dir, evaluation)
    finally:
        if opened.workdir is not None:
            opened.workdir.cleanup()


def model_facts(source: str, revision: str | None, allow_pickle: bool, label_map,
                workdir, objective: str = objectives.DEFAULT) -> ModelFacts:
    """A checkpoint's local files, fingerprint and config, without its weights; a checkpoint
    with pickle weights only (``allow_pickle``) is converted to safetensors first."""
    from transformers import AutoConfig

    from ..models import check_objective, fingerprint

    directory, resolved = local_directory(source, revision, allow_pickle)
    if not any(directory.glob("*.safetensors")):
        if not allow_pickle:
            raise ModelLoadError(
                f"model {source!r} has no .safetensors weights; pickle weights are refused unless "
                "you opt in (--allow-pickle / allow_pickle: true), or convert the checkpoint")
        directory = convert_pickle(source, directory, workdir, objective)
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the config of model {source!r}: {exc}") from None
    from .. import architectures as arch

    arch.spec_for(config)  # an unsupported architecture: a clear error before any tensor
    check_objective(config, objective, source)
    return ModelFacts(source, Path(directory), resolved or revision,
                      fingerprint(source, revision), config, label_map)


def convert_pickle(source: str, directory: Path, workdir, objective: str) -> Path:
    """Pickle weights re-saved as safetensors in ``workdir`` (one model in memory at a time)."""
    from ..models import load_model, save_checkpoint

    log.info("converting the pickle weights of %s to safetensors", source)
    model, tokenizer, _ = load_model(str(directory), allow_pickle=True, objective=objective)
    out = Path(workdir.name) / f"converted-{len(list(Path(workdir.name).iterdir()))}"
    save_checkpoint(model, tokenizer, out)
    del model
    return out


def open_inputs(sources: MergeSources, settings: MergeSettings) -> Opened:
    """The models, the base and the artifacts as files, checked against each other: the
    bodies (architecture, names, shapes, dimensions, buffers), each artifact's checksum,
    values and recorded model."""
    from ..models import body_prefix_of, state_names

    maps, revisions = sources.per_model("label_maps"), sources.per_model("revisions")
    workdir = tempfile.TemporaryDirectory(prefix="merge-convert-") if sources.allow_pickle else None
    objective = settings.objective
    facts = [model_facts(src, revisions[j], sources.allow_pickle, maps[j], workdir, objective)
             for j, src in enumerate(sources.models)]
    whole = objectives.objective(objective).whole_model
    try:
        prefix, order = (body_prefix_of(facts[0].config, objective),
                         state_names(facts[0].config, objective))
    except ValueError as exc:  # transformers' own check of the config
        raise ModelLoadError(f"model {facts[0].source!r}: its config.json does not describe a "
                             f"model ({exc}); download or save the checkpoint again") from None
    models = [BodyFiles(f.directory, prefix, repr(f.source), order, whole) for f in facts]
    base = base_facts = None
    if registry.method(settings.method).needs_base:
        base_facts = model_facts(str(sources.base), None, sources.allow_pickle, None, workdir,
                                 objective)
        base = BodyFiles(base_facts.directory, prefix, f"base model {str(sources.base)!r}", order,
                         whole)
    check_files(models, facts, base, f"base model {str(sources.base)!r}")
    check_tokenizers([f.directory for f in facts] + ([base_facts.directory] if base_facts else []),
                     [m.label for m in models] + ([base.label] if base else []),
                     settings.allow_tokenizer_mismatch)
    records = []
    kind = registry.method(settings.method).artifact
    for j, path in enumerate(sources.artifacts or [] if kind is not None else []):
        label = repr(sources.models[j])
        what = "Gram" if kind == registry.GRAM else "Fisher"
        metadata = verify_artifact(path, f"{what} artifact", "gram" if what == "Gram" else "fisher")
        check_kind(path, metadata.get("method"), settings.method, label)
        check_model(path, metadata, facts[j], label, sources.allow_fisher_mismatch)
        records.append({"path": str(path), "sha256": sha256_file(path), "metadata": metadata})
    return Opened(facts, models, base, base_facts, records, workdir)


def merge_context(opened: Opened, sources: MergeSources, settings: MergeSettings) -> MergeContext:
    from .. import architectures as arch

    kind = registry.method(settings.method).artifact
    labels = [repr(m) for m in sources.models]
    artifact_labels = []
    if kind is not None:
        noun = "file" if kind == registry.GRAM else "Fisher file"
        artifact_labels = [f"{kind} {noun} {path} (for {labels[j]})"
                           for j, path in enumerate(sources.artifacts)]
    config = opened.facts[0].config
    files = FileSources(opened.models, opened.base, sources.artifacts if kind is not None else None)
    return MergeContext(spec=arch.spec_for(config), dims=arch.dims(config), settings=settings,
                        sources=files, labels=labels, artifact_labels=artifact_labels)


def merge_recipe(opened: Opened, sources: MergeSources, settings: MergeSettings,
                 names: list[str]) -> dict:
    """``merge.json``'s fields shared by every merged checkpoint."""
    records = opened.records
    inputs = [
        {
            "name": names[j],
            "source": f.source,
            "revision": f.revision,
            "fingerprint": f.fingerprint,
            "model_type": f.model_type,
            "num_labels": f.num_labels,
            "label_map": f.label_map,
            "fisher": records[j]["path"] if records else None,
        }
        for j, f in enumerate(opened.facts)
    ]
    metas = [r["metadata"] for r in records]
    recipe = {
        "method": settings.method,
        "objective": settings.objective,
        "scheme": settings.scheme if registry.method(settings.method).takes_scheme else None,
        "n": _common(m.get("n") for m in metas) if metas else None,
        "seed": _common(m.get("seed") for m in metas) if metas else None,
        "parameters": settings.parameters(),
        "inputs": inputs,
        "fisher_files": records,
        "workflow_scripts_version": __version__,
    }
    if opened.base_facts is not None:
        recipe["base"] = {"source": opened.base_facts.source,
                          "fingerprint": opened.base_facts.fingerprint}
    return recipe


def write_outputs(opened: Opened, sources: MergeSources, settings: MergeSettings,
                  names: list[str], recipe: dict, out_dir,
                  evaluation: MergeEvaluation | None) -> list[Path]:
    """Stream the merge into the checkpoints (under ``out_dir``, or a temporary folder when
    only evaluated) and evaluate them; returns the checkpoints, else the evaluation files."""
    kind = registry.method(settings.method)
    log.info("merging %d models (%s%s), one tensor at a time", len(sources.models),
             settings.method, f", {settings.scheme} scheme" if kind.takes_scheme else "")
    scratch = None
    if out_dir is None:
        parent = Path(evaluation.splits[0].out_dir).parent
        make_folder(parent, "--eval-out")
        scratch = tempfile.TemporaryDirectory(prefix=".merged-", dir=parent)
    target = Path(out_dir) if out_dir is not None else Path(scratch.name) / "merged"
    try:
        ctx = merge_context(opened, sources, settings)
        check_merge_space(target, opened.models, ctx.sources.dtypes,
                          "--out" if out_dir is not None else "--eval-out")
        with atomic_path(target, outputs.MERGED, "--out") as tmp:
            tmp.mkdir()
            dirs = [tmp / name for name in names]
            write_merged(merged_blocks(ctx), opened.models, opened.facts, dirs,
                         ctx.sources.dtypes, settings.max_shard_mb << 20)
            for j, (name, fact) in enumerate(zip(names, opened.facts)):
                write_card(tmp / name, dict(recipe, model_index=j, name=name, head_of=fact.source))
            evals = []
            if evaluation is not None:  # before the rename, while the written files are at hand
                final = [str(target / n) if out_dir is not None else None for n in names]
                evals = evaluate_merged(dirs, final, names, evaluation, out_dir is not None)
        if out_dir is not None:
            log.info("wrote %s", ", ".join(str(target / n) for n in names))
        if evals:
            log.info("wrote %s", ", ".join(str(p) for p in evals))
        return [target / n for n in names] if out_dir is not None else evals
    finally:
        if scratch is not None:
            scratch.cleanup()


def evaluate_merged(dirs: list[Path], final: list[str | None], names: list[str],
                    evaluation: MergeEvaluation, keep: bool) -> list[Path]:
    """One evaluation JSON per merged model and split (``NAME.json`` in the split's folder,
    each written atomically; nothing else in the folder is touched), loading one merged
    model at a time; with ``keep`` (the checkpoints are kept) the validation scores go into
    their model cards."""
    from ..data import read_samples
    from ..devices import resolve_device
    from ..evaluate import EvalRecord, evaluate_loaded
    from ..models import fingerprint as checkpoint_fingerprint
    from ..models import load_model

    infos = evaluation.task_infos or [None] * len(dirs)
    device = resolve_device(evaluation.settings.device)
    written = []
    folders = [Path(split.out_dir) for split in evaluation.splits]
    for split, folder in zip(evaluation.splits, folders):  # only NAME.json files are written
        make_folder(folder, "--eval-out" if split.name == "validation" else f"--{split.name}-out")
    for j, name in enumerate(names):
        model, tokenizer, _ = load_model(str(dirs[j]), device=device,
                                         dtype=evaluation.settings.torch_dtype,
                                         objective=evaluation.settings.objective)
        for split, folder in zip(evaluation.splits, folders):
            samples = read_samples(split.data[j], nonempty=True)
            record = EvalRecord(final[j] if keep else f"merge of {name}", str(split.data[j]),
                                checkpoint_fingerprint(str(dirs[j])) if keep else None)
            context = dict(evaluation.context, task=name)
            if split.name != "validation":
                context["split"] = split.name
            result = evaluate_loaded(
                model, tokenizer, samples, name, evaluation.settings, record=record,
                task_info=infos[j], context=context, out=folder / f"{name}.json",
                progress=evaluation.progress,
            )
            written.append(Path(split.out_dir) / f"{name}.json")
            if keep and split.name == "validation":  # the model card's scores
                add_scores(dirs[j], name, result["metrics"])
        del model
    return written
