"""GLUE tasks from the Hugging Face hub (``nyu-mll/glue``, read with ``datasets``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UserError
from ..metrics import ACCURACY, F1, MATTHEWS
from .base import NamedSource

if TYPE_CHECKING:
    from ..data import Samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlueSpec:
    text_a: str
    text_b: str | None
    label_names: tuple[str, ...]
    train_rows: int  # rows of the train split (nyu-mll/glue; none is unlabelled)
    metric: str = ACCURACY  # GLUE's official metric of the task
    validation_split: str = "validation"


GLUE = {
    "mnli": GlueSpec("premise", "hypothesis", ("entailment", "neutral", "contradiction"),
                     392_702, validation_split="validation_matched"),
    "qqp": GlueSpec("question1", "question2", ("not_duplicate", "duplicate"), 363_846, F1),
    "qnli": GlueSpec("question", "sentence", ("entailment", "not_entailment"), 104_743),
    "sst2": GlueSpec("sentence", None, ("negative", "positive"), 67_349),
    "mrpc": GlueSpec("sentence1", "sentence2", ("not_equivalent", "equivalent"), 3_668, F1),
    "rte": GlueSpec("sentence1", "sentence2", ("entailment", "not_entailment"), 2_490),
    "cola": GlueSpec("sentence", None, ("unacceptable", "acceptable"), 8_551, MATTHEWS),
}
GLUE_TASKS = tuple(GLUE)
# each task as a choice task: lm-evaluation-harness's GLUE prompts and choices (0.4.13,
# lm_eval/tasks/glue/*/default.yaml; MNLI's hypothesis is written as given)
VERBALISATIONS = {
    "mnli": ("{text_a}\nQuestion: {text_b} True, False or Neither?\nAnswer:",
             ("True", "Neither", "False")),
    "qqp": ("Question 1: {text_a}\nQuestion 2: {text_b}\nQuestion: Do both questions ask the "
            "same thing?\nAnswer:", ("no", "yes")),
    "qnli": ("{text_a}\n{text_b}\nQuestion: Does this response answer the question?\nAnswer:",
             ("yes", "no")),
    "sst2": ("{text_a}\nQuestion: Is this sentence positive or negative?\nAnswer:",
             ("negative", "positive")),
    "mrpc": ("Sentence 1: {text_a}\nSentence 2: {text_b}\nQuestion: Do both sentences mean the "
             "same thing?\nAnswer:", ("no", "yes")),
    "rte": ("{text_a}\nQuestion: {text_b} True or False?\nAnswer:", ("True", "False")),
    "cola": ("{text_a}\nQuestion: Does this sentence make sense?\nAnswer:", ("no", "yes")),
}
GLUE_DATASET = "nyu-mll/glue"


def _check_task(task: str) -> GlueSpec:
    if task not in GLUE:
        raise UserError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    return GLUE[task]


def glue_label_names(dataset, task: str) -> list[str]:
    """Label names from the split's ClassLabel feature, else GLUE's documented names."""
    spec = GLUE[task]
    feature = (getattr(dataset, "features", None) or {}).get("label")
    names = list(getattr(feature, "names", []) or [])
    if names and names != list(spec.label_names):
        log.warning("GLUE %s label names %s differ from the expected %s; using the data set's",
                    task, names, list(spec.label_names))
    return names or list(spec.label_names)


def glue_split_to_samples(dataset, task: str, split: str = "") -> Samples:
    """One GLUE split (a ``datasets.Dataset``) -> Samples; rows with label -1 are dropped."""
    from ..data import Samples

    spec = _check_task(task)
    needed = [spec.text_a, "label"] + ([spec.text_b] if spec.text_b else [])
    columns = list(dataset.column_names)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise UserError(
            f"GLUE {task} {split or 'split'} lacks column(s) {missing}; it has {columns}"
        )
    labels = [int(v) for v in dataset["label"]]
    text_a = list(dataset[spec.text_a])
    text_b = list(dataset[spec.text_b]) if spec.text_b else [None] * len(labels)
    idx = [int(v) for v in dataset["idx"]] if "idx" in columns else list(range(len(labels)))
    keep = [i for i, y in enumerate(labels) if y >= 0]
    if len(keep) < len(labels):
        log.info("GLUE %s %s: dropped %d unlabelled rows", task, split, len(labels) - len(keep))
    return Samples(
        [idx[i] for i in keep],
        [text_a[i] for i in keep],
        [text_b[i] for i in keep],
        [labels[i] for i in keep],
    )


def glue_to_splits(dataset_dict, task: str) -> tuple[Samples, Samples, list[str]]:
    """A GLUE DatasetDict (or a mapping of split name -> Dataset) -> (train, validation, label names)."""
    spec = _check_task(task)
    splits = list(dataset_dict.keys())
    for split in ("train", spec.validation_split):
        if split not in dataset_dict:
            raise UserError(f"GLUE {task} has no {split!r} split (splits: {splits})")
    train = glue_split_to_samples(dataset_dict["train"], task, "train")
    valid = glue_split_to_samples(dataset_dict[spec.validation_split], task, spec.validation_split)
    return train, valid, glue_label_names(dataset_dict["train"], task)


def load_glue(task: str, revision: str | None = None):
    """Download (or read from the cache) one GLUE task as a DatasetDict."""
    _check_task(task)
    import datasets

    try:
        return datasets.load_dataset(GLUE_DATASET, task, revision=revision)
    except Exception as exc:  # network, missing revision, offline mode, ...
        raise UserError(
            f"cannot load GLUE task {task!r} ({GLUE_DATASET}, revision {revision or 'main'}): "
            f"{type(exc).__name__}: {exc}. This needs the Hugging Face hub (or its cache); "
            "offline, use a local task (source: local) or a builtin one"
        ) from exc


class GlueSource(NamedSource):
    """``loader(task, revision)`` -> DatasetDict; :func:`load_glue` unless a test swaps it."""

    kinds = ("label",)  # classification only

    name = "glue"
    tasks = GLUE_TASKS

    def __init__(self, loader=None):
        self.loader = loader or load_glue

    def label_count(self, key: str, spec: dict) -> int | None:
        glue = GLUE.get(spec.get("name", key))
        return None if glue is None else len(glue.label_names)

    def official_metric(self, key: str, spec: dict) -> str | None:
        glue = GLUE.get(spec.get("name", key))
        return None if glue is None else glue.metric

    def verbalisation(self, name: str | None) -> tuple[str, tuple[str, ...]] | None:
        return VERBALISATIONS.get(name)

    def train_rows(self, key: str, spec: dict, base_dir) -> int | None:
        glue = GLUE.get(spec.get("name", key))
        return None if glue is None else glue.train_rows

    def prepare(self, name, spec: dict, seed: int):
        glue = _check_task(name)
        if spec.get("task_kind", "label") not in self.kinds:
            raise UserError(f"GLUE task {name!r} is a classification task; a causal-LM family "
                            "needs text tasks (builtin, or local files with a text column)")
        revision = spec.get("revision")
        train, valid, names = glue_to_splits(self.loader(name, revision), name)
        origin = f"{GLUE_DATASET}/{name} (train, {glue.validation_split})"
        extra = {"revision": revision, "validation_split": glue.validation_split}
        return train, valid, names, origin, extra


SOURCE = GlueSource()
