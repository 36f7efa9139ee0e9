"""The merge job's evaluation of its merged models, in its own process.

Without kept checkpoints (``merge --eval-out`` alone, the workflow's ``keep_merged: false``)
nothing is written but the evaluations: the merged tensors, in the dtype each checkpoint
would be written in, stay in memory (:class:`MergedModels`), and each model is built from
them as loading its written checkpoint would build it (the same state dict, config and
tokenizer; the evaluation's dtype applied the same way).  A classifier merge gives one
merged body that each model's own head joins in turn; a whole-model (causal-LM) merge
gives one model, evaluated on each model's task.  With kept checkpoints the written
checkpoints are loaded (:func:`checkpoint_loader`) and their model cards get the scores.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import objectives
from ..errors import MergeError
from ..io import make_folder
from ..settings import EvaluateSettings

log = logging.getLogger(__name__)


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


# j -> (model, tokenizer) of merged model j; the record (source, fingerprint) of its JSONs
ModelFor = Callable[[int], tuple]
RecordFor = Callable[[int, EvalSplit], object]


def evaluate_each(names: list[str], evaluation: MergeEvaluation, model_for: ModelFor,
                  record_for: RecordFor, card_dirs: list[Path] | None = None) -> list[Path]:
    """One evaluation JSON per merged model and split (``NAME.json`` in the split's folder,
    each written atomically; nothing else in the folder is touched), one model at a time;
    with ``card_dirs`` (kept checkpoints) the validation scores go into their model cards."""
    from ..data import read_samples
    from ..evaluate import evaluate_loaded
    from .card import add_scores

    infos = evaluation.task_infos or [None] * len(names)
    folders = [Path(split.out_dir) for split in evaluation.splits]
    for split, folder in zip(evaluation.splits, folders):  # only NAME.json files are written
        make_folder(folder, "--eval-out" if split.name == "validation" else f"--{split.name}-out")
    written = []
    for j, name in enumerate(names):
        model, tokenizer = model_for(j)
        for split, folder in zip(evaluation.splits, folders):
            samples = read_samples(split.data[j], nonempty=True)
            context = dict(evaluation.context, task=name)
            if split.name != "validation":
                context["split"] = split.name
            result = evaluate_loaded(
                model, tokenizer, samples, name, evaluation.settings,
                record=record_for(j, split), task_info=infos[j], context=context,
                out=folder / f"{name}.json", progress=evaluation.progress,
            )
            written.append(folder / f"{name}.json")
            if card_dirs is not None and split.name == "validation":
                add_scores(card_dirs[j], name, result["metrics"])
        del model
    return written


def checkpoint_loader(dirs: list[Path], evaluation: MergeEvaluation) -> ModelFor:
    """Merged model j loaded from its written checkpoint ``dirs[j]``."""
    from ..devices import resolve_device
    from ..models import load_model

    device = resolve_device(evaluation.settings.device)

    def model_for(j: int) -> tuple:
        model, tokenizer, _ = load_model(str(dirs[j]), device=device,
                                         dtype=evaluation.settings.torch_dtype,
                                         objective=evaluation.settings.objective)
        return model, tokenizer

    return model_for


class MergedModels:
    """The merged models built in memory from the merged body tensors (``merged``: body name
    -> tensor in its output dtype), each model's files (:class:`.stream.BodyFiles`) and facts
    (:class:`.stream.ModelFacts`): merged model j is what loading the checkpoint the merge
    would write for model j gives.  A whole-model merge is one model for every j (built
    once); a classifier's is rebuilt per j around the same merged tensors, with model j's
    head (its label map applied)."""

    def __init__(self, merged: dict[str, torch.Tensor], models: list, facts: list,
                 evaluation: MergeEvaluation):
        from ..devices import resolve_device

        self.merged, self.models, self.facts = merged, models, facts
        self.settings = evaluation.settings
        self.device = resolve_device(self.settings.device)
        self.whole = objectives.objective(self.settings.objective).whole_model
        ref = models[0]
        self.kept = {k: ref.read(k) for k, t in ref.shapes().items() if not t.floating}
        self.built: tuple | None = None  # (j, model) of the last model built

    def state(self, j: int) -> dict[str, torch.Tensor]:
        """Model j's state dict as its checkpoint would hold it (the files' names)."""
        from .stream import head_tensor

        model, fact = self.models[j], self.facts[j]
        state = {model.body[k]: v for k, v in self.merged.items()}
        state.update({model.body[k]: v for k, v in self.kept.items()})
        state.update({n: head_tensor(model, fact, n) for n in model.head})
        return state

    def config(self, j: int):
        """Model j's config, its label map applied as the written config.json's is."""
        fact = self.facts[j]
        config = copy.deepcopy(fact.config)
        if fact.label_map is not None:
            names = {int(k): v for k, v in (config.id2label or {}).items()}
            config.id2label = {i: names.get(m, f"LABEL_{m}") for i, m in enumerate(fact.label_map)}
            config.label2id = {v: k for k, v in config.id2label.items()}
        return config

    def build(self, j: int):
        from ..models import _new_keys, model_class

        self.built = None  # the previous model is released before the next one is built
        config = self.config(j)
        cls = model_class(config, self.settings.objective)
        model, loading = cls.from_pretrained(None, config=config, state_dict=self.state(j),
                                             dtype=self.settings.torch_dtype,
                                             output_loading_info=True)
        missing = _new_keys(loading)
        if missing:
            log.warning("merged model %d lacks weights for %s: they are random", j,
                        ", ".join(missing))
        model.to(self.device)
        model.eval()
        return model

    def __call__(self, j: int) -> tuple:
        from transformers import AutoTokenizer

        from ..models import ensure_pad_token

        if self.built is None or not self.whole:
            self.built = (j, self.build(j))
        model = self.built[1]
        tokenizer = AutoTokenizer.from_pretrained(self.facts[j].directory, trust_remote_code=False)
        ensure_pad_token(model, tokenizer, f"merge of {self.facts[j].source}")
        return model, tokenizer
