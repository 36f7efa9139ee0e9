"""Choice rows: a prompt, its choices (any number from 2 up, per row) and the index of the
right one, checked as they are built.

A row's ``answer`` is given as an integer index or as text equal to one of its choices;
either way it is stored as the index.  Every refusal names the row (``where``, row number)
and the fix: an empty prompt, fewer than two choices, an empty or duplicate choice, a
choice starting with whitespace (the delimiter would double it), an answer outside the
choices or equal to none of them (a difference only in case or spaces is named as such).

A prepared choice task is the engine's samples Parquet (:mod:`workflow_scripts.data`):
``text_a`` the prompt, ``text_b`` its choices as a JSON list, ``label`` the answer's index
(:func:`to_samples`, :func:`from_samples`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SampleError


@dataclass(frozen=True)
class ChoiceRow:
    prompt: str
    choices: tuple[str, ...]
    answer: int  # index into choices
    idx: int = 0

    @property
    def chance(self) -> float:
        return 1.0 / len(self.choices)


def _squash(text: str) -> str:
    return " ".join(text.split()).casefold()


def answer_index(answer, choices: tuple[str, ...], where: str) -> int:
    """The index of ``answer`` (an integer index, or text equal to one choice)."""
    if isinstance(answer, bool) or answer is None:
        raise SampleError(f"{where}: answer {answer!r} is neither a choice's index nor its text; "
                          f"give an index 0..{len(choices) - 1} or one of {list(choices)}")
    if isinstance(answer, float) and math.isfinite(answer) and answer == int(answer):
        answer = int(answer)
    if isinstance(answer, int):
        if not 0 <= answer < len(choices):
            raise SampleError(f"{where}: answer index {answer} lies outside its {len(choices)} "
                              f"choices (0..{len(choices) - 1}); fix the answer or the choices")
        return answer
    if not isinstance(answer, str):
        raise SampleError(f"{where}: answer {answer!r} ({type(answer).__name__}) is neither an "
                          "integer index nor a choice's text")
    if answer in choices:
        return choices.index(answer)
    near = [c for c in choices if _squash(c) == _squash(answer)]
    if near:
        raise SampleError(f"{where}: answer {answer!r} equals choice {near[0]!r} only up to case "
                          "or spaces; make the answer the choice's exact text")
    raise SampleError(f"{where}: answer {answer!r} equals none of its choices {list(choices)}; "
                      "give the exact text of one choice or its index")


def make_row(prompt, choices, answer, where: str, idx: int = 0) -> ChoiceRow:
    """A checked :class:`ChoiceRow` (``where``: the input and row, for messages)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise SampleError(f"{where}: the prompt is empty; every row needs a prompt to score its "
                          "choices after")
    if isinstance(choices, str) or not isinstance(choices, (list, tuple)):
        raise SampleError(f"{where}: choices must be a list of strings, got {choices!r}")
    choices = tuple(choices)
    if len(choices) < 2:
        raise SampleError(f"{where}: {len(choices)} choice(s); a row needs at least 2")
    for k, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise SampleError(f"{where}: choice {k} is empty ({choice!r}); every choice needs text")
        if choice != choice.lstrip():
            raise SampleError(f"{where}: choice {k} {choice!r} starts with whitespace; the "
                              "target delimiter (a space) already separates it from the prompt: "
                              "strip it")
    seen: dict[str, int] = {}
    for k, choice in enumerate(choices):
        if choice in seen:
            raise SampleError(f"{where}: choices {seen[choice]} and {k} are both {choice!r}; "
                              "duplicate choices cannot be told apart: remove one")
        seen[choice] = k
    return ChoiceRow(prompt, choices, answer_index(answer, choices, where), int(idx))


def check_rows(rows: list[ChoiceRow], where: str) -> list[ChoiceRow]:
    if not rows:
        raise SampleError(f"{where}: no rows")
    return rows


# --- the engine's samples: a prepared choice task ---------------------------------------


def to_samples(rows: list[ChoiceRow]):
    """The rows as the engine's :class:`~workflow_scripts.data.Samples` (so that preparing,
    the held-out split and sampling treat a choice task as any other): ``text_a`` the prompt,
    ``text_b`` the choices as a JSON list, ``label`` the answer's index."""
    import json

    from ..data import Samples

    return Samples([r.idx for r in rows], [r.prompt for r in rows],
                   [json.dumps(list(r.choices), ensure_ascii=False) for r in rows],
                   [r.answer for r in rows])


def from_samples(samples, where: str) -> list[ChoiceRow]:
    """The checked rows of samples written by :func:`to_samples`."""
    import json

    rows = []
    for i in range(len(samples)):
        here = f"{where} row {i + 1}"
        try:
            choices = json.loads(samples.text_b[i] or "")
        except ValueError:
            raise SampleError(f"{here}: text_b holds no JSON list of choices; prepare the task "
                              "as a choice task (its samples hold their choices)") from None
        rows.append(make_row(samples.text_a[i], choices, samples.label[i], here, samples.idx[i]))
    return check_rows(rows, where)
