"""The names of the metrics the engine computes, and when it computes each.

One owner for :func:`workflow_scripts.evaluate.compute_metrics` (which computes them,
:func:`computed` says which), the config schema (``$defs.metric``, filled by
:func:`workflow_scripts.config.load_schema`) and its check of each task's metric, and the
``report`` and ``select`` commands (``--task-metric``, ``--default-metric`` and its help).
Which metric a task is scored by is :func:`workflow_scripts.tasks.registry.task_metric`.
Light on purpose: Snakemake and ``--help`` import it, so nothing here imports torch or
scikit-learn.
"""

from __future__ import annotations

ACCURACY, F1, MACRO_F1, MATTHEWS = METRICS = ("accuracy", "f1", "macro_f1", "matthews")
# a causal LM's (lmeval.py): scored by its mean next-token loss, lower is better
LOSS = "loss"
KNOWN = METRICS + (LOSS,)  # what --task-metric may name
PERPLEXITY = "perplexity"  # a causal LM's exp(loss), recorded beside it
# each metric's possible values (lowest, highest): a value outside is an impossible result
RANGES = {ACCURACY: (0.0, 1.0), F1: (0.0, 1.0), MACRO_F1: (0.0, 1.0), MATTHEWS: (-1.0, 1.0),
          LOSS: (0.0, float("inf")), PERPLEXITY: (1.0, float("inf"))}
# metrics that may be recorded as null (undefined): the correlation of constant predictions,
# the perplexity of a loss too large for a float; any other null is an impossible result
MAY_BE_UNDEFINED = (MATTHEWS, PERPLEXITY)
# metric -> the evaluations that record it
COMPUTED_FOR = {
    ACCURACY: "every task",
    F1: "tasks with two labels (F1 of the positive class 1)",
    MACRO_F1: "tasks with more than two labels (unweighted mean of the per-class F1)",
    MATTHEWS: "cola (Matthews correlation)",
}


def describe() -> list[str]:
    """One ``name: when`` line per metric, for help texts."""
    return [f"``{name}``: {COMPUTED_FOR[name]}" for name in METRICS]


def computed(task: str, num_labels: int | None = None) -> tuple[str, ...]:
    """The metrics an evaluation of ``task`` (its name as ``evaluate --task`` gets it) with
    ``num_labels`` labels records; ``num_labels`` None (unknown): those it may record."""
    by_labels = (F1, MACRO_F1) if num_labels is None else (
        (F1,) if num_labels == 2 else (MACRO_F1,))
    return (ACCURACY, *by_labels) + ((MATTHEWS,) if str(task).lower() == "cola" else ())
