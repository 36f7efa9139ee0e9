"""What a task kind is: the interface every module of :mod:`workflow_scripts.taskkinds`
implements.

A task kind owns everything that depends on what a task's examples are: their columns and
labels, how they are batched and encoded (for training, for the Fisher, for evaluation),
the per-example loss the Fisher differentiates and the labels the true Fisher draws, what
an evaluation records, and how the report normalises, orders and captions its scores.
The code that calls it (fine-tuning, the Fisher estimators, RegMean's Grams, evaluation,
the report) never branches on the objective.

Light at import (no torch, no polars): Snakemake reads :attr:`TaskKind.metric` and
:attr:`TaskKind.needs_base` while it plans.
"""

from __future__ import annotations


class TaskKind:
    """One task kind; subclasses set the class attributes and implement the methods."""

    name: str  # as the task's info and an evaluation record name it ("task_kind")
    objective: str  # the objective (workflow_scripts.objectives) whose models it scores
    description: str
    metric: str | None  # what the report normalises by (None: the task's own metric)
    higher_is_better: bool  # of :attr:`metric`
    needs_base: bool  # its normalised score needs the base model's evaluation on the task
    caption: str  # what one normalised score is (Table 1's caption)
    unit: str  # what a normalised score is a percentage of ("of fine-tuned")
    labels: bool  # its examples carry class labels (checked against the label count)
    expected_fisher: bool  # the expected Fisher (a sum over a model's classes) applies

    # ------------------------------------------------------------ task and samples

    def label_names(self, info: dict) -> list[str] | None:
        """The task's label names from its info (checked), or None: no labels."""
        raise NotImplementedError

    def label_counts(self, samples, num_labels: int) -> list[int]:
        """What a task's info records of a split's labels."""
        raise NotImplementedError

    def check_samples(self, samples, num_labels: int | None, where: str) -> None:
        """The samples are of this kind (their labels within the label count)."""
        raise NotImplementedError

    # ------------------------------------------------------------ batches and losses

    def training_batches(self, tokenizer, train, max_length: int, device):
        """``(each example's length, rows -> (padded inputs, labels))``: what the training
        loop feeds ``model(**inputs, labels=labels)``, whose ``.loss`` it minimises."""
        raise NotImplementedError

    def batches(self, model, tokenizer, samples, *, batch_size: int, max_length: int,
                sort_by_length: bool, device) -> list:
        """The Fisher's and the Grams' padded batches (:class:`workflow_scripts.data.Batch`)."""
        raise NotImplementedError

    def example_losses(self, logits, labels):
        """Each example's loss [B] (at least float32): what the Fisher differentiates."""
        raise NotImplementedError

    def drawn_labels(self, logits, labels, generator):
        """The true Fisher's labels, drawn from the model's predictions (``logits``)."""
        raise NotImplementedError

    def chunk_labels(self, labels, width: int):
        """A batch's labels for inputs trimmed to ``width`` tokens (the full Fisher's chunks)."""
        return labels

    def classes(self, model) -> int:
        """How many outputs the expected Fisher sums over (``expected_fisher`` kinds)."""
        raise NotImplementedError

    # ------------------------------------------------------------ evaluation

    def evaluate(self, model, tokenizer, samples, task: str, settings, *, record,
                 num_labels: int | None = None, progress: bool = True) -> dict:
        """The evaluation record's kind-specific fields (``metrics`` among them); ``record``
        (:class:`workflow_scripts.evaluate.EvalRecord`) names the model and the data."""
        raise NotImplementedError

    def validation(self, model, tokenizer, valid, task_info: dict, max_length: int,
                   batch_size: int) -> dict:
        """The fine-tune's validation record (``n`` and the metric)."""
        raise NotImplementedError

    # ------------------------------------------------------------ report

    def finetuned_row(self, data: dict, row: dict, metric_of, path, warnings: list) -> dict:
        """A fine-tuned evaluation's report row: ``row`` plus score, accuracy, num_labels,
        n_examples, chance and base (filled later, :attr:`needs_base` kinds); ``metric_of``
        reads a metric of the file (checked; None: undefined)."""
        raise NotImplementedError

    def normalised(self):
        """The polars expression of a merged score's normalised value from the columns
        ``merged``, ``finetuned`` and ``base``."""
        raise NotImplementedError

    def weak(self, finetuned, margin: float):
        """The fine-tuned rows (of this kind) that have nothing for a merge to keep, each
        with the sentence that says why: ``[(row, sentence)]``."""
        raise NotImplementedError
