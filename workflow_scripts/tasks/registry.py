"""The task sources: the one list that the schema, the config check, the plan and
``prepare-task`` read.

A source is an object (one module each: :mod:`.glue`, :mod:`.builtin`,
:mod:`.local`) with

``name``
    the config's ``tasks.T.source`` value;
``tasks``
    the task names it knows (``tasks.T.name``, default the key ``T``), or None
    when any name goes (local files);
``label_count(key, spec)``
    the task's label count when the config alone tells it, else None;
``check_config(key, spec, base_dir)``
    the checks a schema cannot express, raising ``ConfigError`` naming
    ``tasks.<key>...`` (runs while Snakemake parses: no heavy imports);
``prepare(name, spec, seed)``
    ``(train, validation, label_names, origin, extra)``, the splits as
    :class:`workflow_scripts.data.Samples` (heavy imports happen here);
    ``extra`` is appended to the info file.  ``spec`` holds the config keys
    plus ``prepare-task`` options (``validation_fraction``);
``info_name(name, spec)``
    the task name the info file records (local: default the train file's stem);
``official_metric(key, spec)``
    the metric its benchmark scores the task by (GLUE's), else None;
``train_rows(key, spec, base_dir)``
    the rows of its training split when countable without preparing it, else None
    (the held-out split's config check, :mod:`.holdout`).

:class:`.base.Source` is the base class; :class:`.base.NamedSource` adds the
checks of a source with a fixed list of task names.  :mod:`.prepare` caps the
splits, builds the info file (:mod:`.info`) and writes both.

Adding a source: one module with its ``SOURCE`` object, one line below, and its test.
"""

from __future__ import annotations

from ..metrics import ACCURACY
from . import builtin, glue, local

SOURCES = {s.name: s for s in (glue.SOURCE, builtin.SOURCE, local.SOURCE)}
SOURCE_NAMES = tuple(SOURCES)
# every task name a source knows (the schema's tasks.T.name enum)
TASK_NAMES = tuple(name for s in SOURCES.values() for name in (s.tasks or ()))


def source(name: str):
    from ..errors import UserError

    if name not in SOURCES:
        raise UserError(f"unknown task source {name!r}; use {', '.join(SOURCES)}")
    return SOURCES[name]


def task_metric(key: str, spec: dict, default_metric: str | None = None) -> str:
    """The metric of a task's normalised scores: its own ``metric``, else ``default_metric``
    (``report.default_metric``, replacing every task's own), else the official metric of
    its source (GLUE's), else accuracy."""
    return (spec.get("metric") or default_metric
            or SOURCES[spec["source"]].official_metric(key, spec) or ACCURACY)
