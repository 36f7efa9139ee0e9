"""Held-out selection: each merge's candidate chosen on the held-out split alone, before any
validation score is read.

A merge with candidates is a (family, replicate, subset, n, Fisher seed, method) whose
method the config lists several values of a setting for (``merge.task_arithmetic_lambda:
[0.3, 1.0]``, ``merge.ties_k: [10, 20]``): each value, or each combination of values, is a
candidate, a merge of its own (``task-arithmetic-lam0.3``).  The ``select`` command

1. reads *held-out* evaluations only (``context.split`` ``holdout``; any other is an error
   naming the file): the fine-tuned models' and every candidate's (:func:`holdout_scores`),
2. normalises each candidate's held-out score on each task of its subset by the fine-tuned
   model's held-out score on that task, each task by its own metric,
3. chooses per merge the candidate with the best mean normalised held-out score over the
   subset's tasks, a tie (within 1e-9) going to the candidate listed first
   (:func:`choose`, which is given those scores and nothing else), and
4. writes every candidate with its score and whether it was chosen (:data:`COLUMNS`).

The report and the plots then read that file (:func:`with_selection`): the chosen
candidate's *validation* scores become the merge's ``<method>-selected`` entry (Table 1's
"Task arithmetic (selected)"); every candidate's own go to the supplementary table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from .. import outputs
from ..errors import MissingFileError, UserError
from ..merging.registry import SELECTED, format_value, is_known, variant
from ..metrics import ACCURACY
from .inputs import HOLDOUT, Inputs, normalise, read_evals

GROUP = ("family", "replicate", "subset", "n", "seed", "method")  # one merge with candidates
TIE = 1e-9  # held-out scores this close are equal: the first listed candidate wins
SCHEMA = {"family": pl.String, "replicate": pl.String, "subset": pl.String, "seed": pl.Int64,
          "method": pl.String, "setting": pl.String, "value": pl.String,
          "holdout_score": pl.Float64, "selected": pl.Boolean, "n": pl.Int64,
          "subset_size": pl.Int64, "candidate": pl.String, "tasks": pl.Int64}
COLUMNS = tuple(SCHEMA)  # selection.csv: one row per candidate, in the order listed
# what select may replace at its --out: an earlier selection (its header is COLUMNS)
SELECTION_FILE = outputs.Kind("a selection CSV that select wrote",
                              lambda path: outputs.first_line(path) == ",".join(COLUMNS))


def holdout_scores(paths, task_metrics: dict[str, str] | None = None,
                   default_metric: str = ACCURACY) -> pl.DataFrame:
    """Each candidate's normalised held-out score on each task of its subset, in the order
    of ``paths`` (held-out evaluations only: any other is a UserError naming it)."""
    finetuned, merged, _ = read_evals([Path(p) for p in paths], task_metrics or {},
                                      default_metric, split=HOLDOUT)
    return normalise(finetuned, merged)


def _setting(key: str) -> str:
    return "lambda" if key == "lam" else key


def _label_settings(members: list[dict]) -> None:
    """Set each candidate's ``setting`` and ``value``: the settings in which the merge's
    candidates differ (``lambda``; ``lambda, ties_k``) and the candidate's values."""
    values = [variant(m["candidate"]).settings() for m in members]
    keys = list(dict.fromkeys(k for v in values for k in v))
    varied = [k for k in keys if len({v.get(k) for v in values}) > 1] or keys
    for member, own in zip(members, values):
        member["setting"] = ", ".join(_setting(k) for k in varied)
        member["value"] = ", ".join(format_value(own[k]) for k in varied if k in own)


def choose(scores: pl.DataFrame) -> pl.DataFrame:
    """The choice of each merge's candidate, from held-out scores alone.

    ``scores``: one normalised held-out score per (candidate, task) with the columns
    ``family, replicate, subset, n, seed, method`` (the candidate's key, e.g.
    ``task-arithmetic-lam0.3``), ``task`` and ``normalised``, the candidates in the order
    they are listed.  Each candidate's score is its mean over the subset's tasks (every
    task once, or a UserError); per merge the best is ``selected``, a tie to the first
    listed.  Returns one row per candidate (:data:`COLUMNS`).
    """
    if scores.is_empty():
        return pl.DataFrame(schema=SCHEMA)
    rows = scores.with_columns(
        candidate=pl.col("method"),
        method=pl.col("method").map_elements(lambda k: variant(k).base_key,
                                             return_dtype=pl.String),
        subset_size=(pl.col("subset").str.count_matches("+", literal=True) + 1).cast(pl.Int64))
    per = (rows.group_by(*GROUP, "candidate", maintain_order=True)
           .agg(pl.col("normalised").mean().alias("holdout_score"),
                pl.col("task").n_unique().alias("tasks"), pl.len().alias("rows"),
                pl.col("subset_size").first()))
    groups: dict[tuple, list[dict]] = {}
    for member in per.iter_rows(named=True):
        if member["tasks"] != member["subset_size"] or member["rows"] != member["subset_size"]:
            raise UserError(
                f"candidate {member['candidate']} of {member['family']}/{member['replicate']}/"
                f"{member['subset']} has {member['rows']} held-out scores on {member['tasks']} "
                f"tasks; it needs one on each of its subset's {member['subset_size']} tasks")
        groups.setdefault(tuple(member[k] for k in GROUP), []).append(member)
    for members in groups.values():
        best = max(m["holdout_score"] for m in members)
        chosen = next(m for m in members if m["holdout_score"] >= best - TIE)
        for m in members:
            m["selected"] = m is chosen
        _label_settings(members)
    return pl.DataFrame([m for ms in groups.values() for m in ms], schema=SCHEMA | {
        "rows": pl.Int64}).select(COLUMNS)


def select(paths, out, task_metrics: dict[str, str] | None = None,
           default_metric: str = ACCURACY) -> pl.DataFrame:
    """:func:`choose` on the held-out evaluations ``paths``, written to ``out`` (CSV)."""
    from ..io import atomic_path

    chosen = choose(holdout_scores(paths, task_metrics, default_metric))
    with atomic_path(Path(out), SELECTION_FILE) as tmp:
        chosen.write_csv(tmp)
    return chosen


def read_selection(path) -> pl.DataFrame:
    """A selection file (:func:`select`), checked: its columns, known candidates, one chosen
    candidate per merge."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"selection file {path} does not exist; the select command "
                               "writes it")
    try:
        table = pl.read_csv(path, schema_overrides=SCHEMA)
    except Exception as exc:  # malformed CSV: polars says what
        raise UserError(f"selection file {path} cannot be read: {exc}") from None
    if tuple(table.columns) != COLUMNS:
        raise UserError(f"selection file {path} has columns {table.columns}, not "
                        f"{list(COLUMNS)}; rerun the select command")
    bad = [c for c in table["candidate"] if not is_known(c) or variant(c).selected]
    if bad:
        raise UserError(f"selection file {path}: unknown candidate {bad[0]!r}")
    counts = table.group_by(GROUP).agg(pl.col("selected").sum().alias("chosen"))
    wrong = counts.filter(pl.col("chosen") != 1)
    if not wrong.is_empty():
        r = wrong.row(0, named=True)
        raise UserError(f"selection file {path}: merge {r['method']} of {r['family']}/"
                        f"{r['subset']} has {r['chosen']} chosen candidates, not one")
    return table


def apply_selection(scores: pl.DataFrame, selection: pl.DataFrame):
    """(scores, candidates): ``scores`` with every candidate's rows replaced by the chosen
    candidate's, under the key ``<method>-selected``, and the candidates' rows alone."""
    keys = ["family", "replicate", "subset", "n", "seed"]
    listed = selection.select(*keys, pl.col("candidate").alias("method"),
                              pl.col("selected").alias("_selected"),
                              pl.col("method").alias("_base"))
    marked = scores.join(listed, on=keys + ["method"], how="left", nulls_equal=True)
    candidates = marked.filter(pl.col("_selected").is_not_null())
    rest = marked.filter(pl.col("_selected").is_null()).drop("_selected", "_base")
    bases = set(selection["method"])
    stray = rest.filter(pl.col("method").map_elements(lambda k: variant(k).base_key in bases,
                                                      return_dtype=pl.Boolean))
    if not stray.is_empty():
        r = stray.row(0, named=True)
        raise UserError(f"{r['method']} of {r['family']}/{r['replicate']}/{r['subset']} is a "
                        "candidate that the selection file does not list; rerun select on the "
                        "held-out evaluations of every candidate")
    chosen = candidates.filter(pl.col("_selected"))
    found = chosen.group_by(*keys, "method").agg(pl.len().alias("found"))
    lacking = (selection.filter(pl.col("selected"))
               .select(*keys, pl.col("candidate").alias("method"), "subset_size")
               .join(found, on=keys + ["method"], how="left", nulls_equal=True)
               .filter(pl.col("found").fill_null(0) != pl.col("subset_size")))
    if not lacking.is_empty():
        r = lacking.row(0, named=True)
        raise UserError(f"{lacking.height} chosen candidate(s) lack a validation evaluation on "
                        f"each task of their subset, e.g. {r['method']} of {r['family']}/"
                        f"{r['replicate']}/{r['subset']} ({r['found'] or 0} of "
                        f"{r['subset_size']}); pass the chosen candidates' evaluations")
    chosen = chosen.with_columns(method=pl.col("_base") + f"-{SELECTED}")
    return (pl.concat([rest, chosen.drop("_selected", "_base")]),
            candidates.drop("_selected", "_base"))


def with_selection(data: Inputs, path) -> Inputs:
    """``data`` with the selection file ``path`` applied (:func:`apply_selection`)."""
    selection = read_selection(path)
    scores, candidates = apply_selection(data.scores, selection)
    return dataclasses.replace(data, scores=scores, selection=selection, candidates=candidates)
