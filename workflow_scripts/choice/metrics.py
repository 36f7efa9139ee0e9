"""A choice task's scores from its log-likelihoods, as lm-evaluation-harness computes them
(``lm_eval/api/task.py``, ``process_results`` of ``multiple_choice``).

``accuracy`` (the harness's ``acc``): the argmax of the summed log-likelihoods is the
answer.  ``acc_norm``: the argmax of each sum divided by the choice's length in characters
(the choice's text, without the delimiter).  Ties go to the first choice, as ``np.argmax``
does.  The task's own metric (Matthews correlation for CoLA, F1 for a task of two labels)
comes from the predictions (the argmax of the sums) where every row has the same choices in
label order (a verbalised classification task): ``num_labels`` given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACC_NORM = "acc_norm"


@dataclass(frozen=True)
class Predictions:
    answers: list[int]
    pred: list[int]  # argmax of the sums
    pred_norm: list[int]  # argmax of the sums over the choices' lengths in characters
    chance: float  # the mean over rows of 1 / K


def predictions(rows, logliks: list[list[float]]) -> Predictions:
    """The predictions of ``rows`` (:class:`~.rows.ChoiceRow`) from their log-likelihoods."""
    pred, norm = [], []
    for row, lls in zip(rows, logliks, strict=True):
        lls = np.asarray(lls, dtype=np.float64)
        lengths = np.array([float(len(c)) for c in row.choices])
        pred.append(int(np.argmax(lls)))
        norm.append(int(np.argmax(lls / lengths)))
    chance = float(np.mean([row.chance for row in rows]))
    return Predictions([row.answer for row in rows], pred, norm, chance)


def choice_metrics(preds: Predictions, task: str, num_labels: int | None = None) -> dict:
    """``{"accuracy", "acc_norm", and with num_labels the task's own metrics}``."""
    from ..evaluate import compute_metrics

    answers = np.asarray(preds.answers)
    out = {"accuracy": float(np.mean(np.asarray(preds.pred) == answers)),
           ACC_NORM: float(np.mean(np.asarray(preds.pred_norm) == answers))}
    if num_labels is not None:
        out = {**compute_metrics(task, preds.answers, preds.pred, num_labels), **out}
    return out
