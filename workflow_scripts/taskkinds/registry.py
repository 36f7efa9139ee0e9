"""The task kinds registry: what a task's examples are, and everything that follows from it
(:mod:`.base` says what a kind owns).  A kind is one module of this package holding one
:class:`~.base.TaskKind`; registering it is one line in :data:`KINDS`.

``label``  a classifier's task (objective classification): :mod:`.label`
``text``   a causal LM's text, or prompt and response (objective causal-lm): :mod:`.text`

A task's kind is passed explicitly: the task's info (``task_kind``), an evaluation's record
(``task_kind``), or else the default task kind of the objective that a family config or a
command's ``--objective`` names; never read off a model.

Light (no torch, no polars): Snakemake reads it while it plans.
"""

from __future__ import annotations

from ..errors import UserError, registered
from . import label, text
from .base import TaskKind

KINDS: dict[str, TaskKind] = {k.name: k for k in (
    label.KIND,
    text.KIND,
    # choice.KIND: a causal LM's multiple-choice task (prompt, choices, answer) goes here
)}
NAMES = tuple(KINDS)


def kind(name: str | TaskKind) -> TaskKind:
    """The registered task kind ``name`` (a :class:`TaskKind` is returned as is)."""
    return registered(KINDS, name, "task kind", TaskKind)


def of_objective(objective: str) -> TaskKind:
    """The default task kind of ``objective``'s tasks."""
    from .. import objectives

    return kind(objectives.objective(objective).task_kind)


def of_settings(settings) -> TaskKind:
    """The task kind a command's settings (their ``objective``, ``--objective``) imply."""
    return of_objective(settings.objective)


def of_task(objective: str, info: dict | None = None) -> TaskKind:
    """A task's kind: its info's ``task_kind``, else ``objective``'s default; a kind of
    another objective is an error naming both."""
    found = of_objective(objective) if not (info or {}).get("task_kind") else kind(
        info["task_kind"])
    if found.objective != objective:
        raise UserError(f"task {(info or {}).get('task')!r} is a {found.name} task, which "
                        f"{found.objective} models take, not {objective} models")
    return found


def of_record(data: dict) -> TaskKind:
    """An evaluation record's kind: its ``task_kind``, else (records written before kinds
    were recorded) its ``objective``'s default, else ``label``."""
    if data.get("task_kind"):
        return kind(data["task_kind"])
    if data.get("objective"):
        return of_objective(data["objective"])
    return KINDS["label"]
