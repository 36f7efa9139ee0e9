"""Merging checkpoints on disk: check the request, open the models, the base and the
artifacts as files (each artifact read once to verify it, once to merge), stream the merge
(:mod:`.stream`) into one ``save_pretrained`` checkpoint per model (its own head, config
and tokenizer) written atomically, and evaluate the merged models, one at a time, in the
same process if asked (:mod:`.evaluation`): from the written checkpoints, or, when none is
kept, in memory without writing any.

Memory does not grow with the number of models: every tensor is read when the merge
needs it and written as soon as it is merged (kept in memory, once, when evaluated without
a checkpoint).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__, objectives, outputs
from ..artifactkinds import of_method
from ..artifacts import verify_artifact
from ..errors import ALLOW_PICKLE, MergeError, ModelLoadError, set_by
from ..io import atomic_path
from ..settings import MergeSettings
from . import registry
from .card import write_card
from .engine import MergeContext, merged_blocks, merged_tensors
from .evaluation import MergedModels, MergeEvaluation, checkpoint_loader, evaluate_each
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
                f"you opt in ({set_by(*ALLOW_PICKLE)}), or convert the checkpoint")
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
    kind = of_method(registry.method(settings.method).artifact)
    for j, path in enumerate(sources.artifacts or [] if kind is not None else []):
        label = repr(sources.models[j])
        metadata, sha256 = verify_artifact(path, kind)  # one read: checksum, values, sha256
        check_kind(path, metadata.get("method"), settings.method, label)
        check_model(path, metadata, facts[j], label, sources.allow_fisher_mismatch)
        records.append({"path": str(path), "sha256": sha256, "metadata": metadata})
    return Opened(facts, models, base, base_facts, records, workdir)


def merge_context(opened: Opened, sources: MergeSources, settings: MergeSettings) -> MergeContext:
    from .. import architectures as arch

    artifact = registry.method(settings.method).artifact
    kind = of_method(artifact)
    labels = [repr(m) for m in sources.models]
    artifact_labels = []
    if kind is not None:
        noun = kind.file if artifact == kind.name else f"{artifact} {kind.file}"
        artifact_labels = [f"{noun} {path} (for {labels[j]})"
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
    """Stream the merge into the checkpoints under ``out_dir`` and evaluate them from there;
    without ``out_dir``, evaluate the merged models in memory (no checkpoint written).
    Returns the checkpoints, else the evaluation files."""
    from ..evaluate import EvalRecord
    from ..models import fingerprint

    kind = registry.method(settings.method)
    log.info("merging %d models (%s%s), one tensor at a time", len(sources.models),
             settings.method, f", {settings.scheme} scheme" if kind.takes_scheme else "")
    ctx = merge_context(opened, sources, settings)
    if out_dir is None:  # the merged tensors in their output dtype, kept in memory
        merged = dict(merged_tensors(ctx))
        log.info("merged; evaluating in memory (no checkpoint written)")
        models = MergedModels(merged, opened.models, opened.facts, evaluation)
        evals = evaluate_each(names, evaluation, models, lambda j, split: EvalRecord(
            f"merge of {names[j]}", str(split.data[j])))
        log.info("wrote %s", ", ".join(str(p) for p in evals))
        return evals
    target = Path(out_dir)
    check_merge_space(target, opened.models, ctx.sources.dtypes, "--out")
    with atomic_path(target, outputs.MERGED, "--out") as tmp:
        tmp.mkdir()
        dirs = [tmp / name for name in names]
        write_merged(merged_blocks(ctx), opened.models, opened.facts, dirs,
                     ctx.sources.dtypes, settings.max_shard_mb << 20)
        for j, (name, fact) in enumerate(zip(names, opened.facts)):
            write_card(tmp / name, dict(recipe, model_index=j, name=name, head_of=fact.source))
        evals = []
        if evaluation is not None:  # before the rename, while the written files are at hand
            evals = evaluate_each(names, evaluation, checkpoint_loader(dirs, evaluation),
                                  lambda j, split: EvalRecord(str(target / names[j]),
                                                              str(split.data[j]),
                                                              fingerprint(str(dirs[j]))),
                                  card_dirs=dirs)
    log.info("wrote %s", ", ".join(str(target / n) for n in names))
    if evals:
        log.info("wrote %s", ", ".join(str(p) for p in evals))
    return [target / n for n in names]
