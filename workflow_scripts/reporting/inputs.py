"""The report's inputs: evaluation JSONs and Fisher artifacts, read and checked.

Evaluation JSONs (one per evaluated model and task, written by ``evaluate``)::

    {"task", "model", "n_examples", "num_labels", "label_counts": [c0, c1, ...],
     "metrics": {"accuracy", ...}, "seconds", "device",
     "context": {"family", "replicate" (ft<seed> or ckpt; absent: ckpt),
                 "kind": "finetuned"|"merged",
                 "method": a merge variant of merging.registry.ALL_VARIANTS,
                 "n", "seed" (variants whose Fisher depends on the samples),
                 "subset": "a+b[+c]", "task",
                 "split": "holdout" (evaluations on the held-out selection split only)}}

A merged score is normalised by the fine-tuned score of the same family,
replicate and task, on the same split.  The report reads validation evaluations
only, the ``select`` command held-out ones only (:mod:`.selection`): a file of
the other split is an error naming it.

Each file's task kind (:mod:`workflow_scripts.taskkinds`, its ``task_kind``) reads its
fine-tuned row and normalises its merged scores.  A classifier's task (``label``) has
``num_labels`` >= 2; a fine-tuned model's chance level is its task's majority-class rate on
the evaluated validation samples, ``max(1/num_labels, max(label_counts) /
sum(label_counts))``; a JSON without ``label_counts`` (written by an older ``evaluate``)
falls back to 1/num_labels, with a warning.

Fisher artifacts (safetensors) are read through their header only
(:func:`workflow_scripts.artifacts.read_metadata`): ``method`` (a Fisher kind of
:mod:`workflow_scripts.fisher.kinds`), ``task``, ``n``, ``seconds``, ``flops``,
``device`` and ``context.family``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .. import artifacts, replicates
from ..errors import MissingFileError, UserError
from ..fisher.kinds import METHODS as FISHER_KINDS
from ..merging.registry import ALL_VARIANTS, is_known, variant
from ..metrics import ACCURACY, F1, KNOWN, MAY_BE_UNDEFINED, RANGES
from .. import taskkinds
from .checks import undefined_warnings

VALIDATION = "validation"  # the split evaluations are of when their context names none
HOLDOUT = "holdout"  # context.split of evaluations on the held-out selection split

FINETUNED_SCHEMA = {"family": pl.String, "replicate": pl.String, "task": pl.String, "model": pl.String,
                    "metric": pl.String, "file": pl.String, "score": pl.Float64,
                    "accuracy": pl.Float64, "num_labels": pl.Int64, "n_examples": pl.Int64,
                    "chance": pl.Float64, "base": pl.Float64, "task_kind": pl.String}
MERGED_SCHEMA = {"family": pl.String, "replicate": pl.String, "task": pl.String,
                 "model": pl.String, "metric": pl.String, "file": pl.String, "subset": pl.String,
                 "method": pl.String, "n": pl.Int64, "seed": pl.Int64, "merged": pl.Float64}
FISHER_SCHEMA = {"method": pl.String, "family": pl.String, "task": pl.String, "n": pl.Int64,
                 "seconds": pl.Float64, "flops": pl.Int64, "device": pl.String,
                 "estimator": pl.String, "model": pl.String, "file": pl.String}


# ---------------------------------------------------------------- arguments


def gather_paths(direct: list[str], listed_in: list[str], what: str) -> list[Path]:
    """Paths given directly plus those listed in files (one a line; blank and # lines skipped)."""
    paths = list(direct)
    for listing in listed_in:
        try:
            text = Path(listing).read_text()
        except FileNotFoundError:
            raise MissingFileError(f"list of {what} {listing} does not exist") from None
        paths += [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]
    return [Path(p) for p in dict.fromkeys(paths)]


def parse_task_metrics(items: list[str]) -> dict[str, str]:
    """``["mrpc=f1", ...]`` -> {"mrpc": "f1", ...} (task names lower-cased)."""
    out = {}
    for item in items:
        task, sep, metric = item.partition("=")
        if not sep or not task.strip() or not metric.strip():
            raise UserError(f"--task-metric {item!r}: expected TASK=METRIC, e.g. mrpc={F1}")
        if metric.strip() not in KNOWN:
            raise UserError(f"--task-metric {item!r}: unknown metric {metric.strip()!r} "
                            f"(known: {', '.join(KNOWN)})")
        out[task.strip().lower()] = metric.strip()
    return out


# ---------------------------------------------------------------- evaluations


def _need(mapping: dict, key: str, path, where: str = ""):
    if key not in mapping or mapping[key] is None:
        raise UserError(f"evaluation file {path}: no {where}{key!r} (keys present: "
                        f"{', '.join(sorted(mapping)) or 'none'})")
    return mapping[key]


def _metric(data: dict, metric: str, path) -> float | None:
    """The metric's value; None where evaluate recorded it as undefined (null)."""
    metrics = data["metrics"]
    if metric not in metrics:
        raise UserError(
            f"evaluation file {path} (task {data['task']!r}) has no metric {metric!r}; "
            f"metrics present: {', '.join(sorted(metrics)) or 'none'}. Choose one with "
            f"--task-metric {data['task']}=METRIC or --default-metric"
        )
    value = metrics[metric]
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UserError(f"evaluation file {path}: metric {metric!r} is {value!r}, not a finite number")
    return float(value)


def check_metric_values(metrics: dict, path) -> None:
    """Every metric of :data:`~workflow_scripts.metrics.RANGES` the file records is possible:
    a finite number in its range (accuracy and F1 in [0, 1], Matthews correlation in
    [-1, 1], a loss of at least 0, a perplexity of at least 1), and null only where the
    metric may be undefined."""
    for name, value in metrics.items():
        if name not in RANGES:
            continue
        if value is None:
            if name in MAY_BE_UNDEFINED:
                continue
            raise UserError(f"evaluation file {path}: {name} is null, but {name} is always "
                            "defined; the file is damaged or was not written by evaluate: "
                            "evaluate the model again")
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value)):
            raise UserError(f"evaluation file {path}: metric {name!r} is {value!r}, not a finite "
                            "number")
        low, high = RANGES[name]
        if not low <= value <= high:
            raise UserError(f"evaluation file {path}: {name} is {value}, outside its possible "
                            f"range [{low:g}, {high:g}]; the file is damaged or was not written "
                            "by evaluate: evaluate the model again")


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"evaluation file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"evaluation file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"evaluation file {path} does not hold a JSON object")
    return data


def read_evals(paths: list[Path], task_metrics: dict[str, str], default_metric: str,
               split: str = VALIDATION):
    """(fine-tuned rows, merged rows, warnings): two DataFrames and a list of strings, from
    evaluations on ``split`` (``context.split``, absent: validation) only.  Each file's task
    kind (its ``task_kind``, :func:`workflow_scripts.taskkinds.of_record`) says what it is
    scored by (a ``text`` task: its token loss) and reads its fine-tuned row; the base
    model's evaluations (``context.kind: base``, of kinds that need them) give each
    fine-tuned row of that family and task its ``base`` score.

    Every structural problem is a UserError naming the file.
    """
    finetuned, merged, bases, warnings = [], [], {}, []
    for path in paths:
        data = _load_json(path)
        task = str(_need(data, "task", path))
        if not isinstance(_need(data, "metrics", path), dict):
            raise UserError(f"evaluation file {path}: 'metrics' is not an object")
        check_metric_values(data["metrics"], path)
        task_kind = taskkinds.of_record(data)
        ctx = _need(data, "context", path)
        found = (ctx.get("split") if isinstance(ctx, dict) else None) or VALIDATION
        if found != split:
            raise UserError(f"evaluation file {path} is of the {found} split (context.split), "
                            f"but only {split} evaluations are read here; pass the {split} "
                            "evaluations")
        family = str(_need(ctx, "family", path, "context."))
        kind = _need(ctx, "kind", path, "context.")
        metric = task_kind.metric or task_metrics.get(task.lower(), default_metric)
        replicate = str(ctx.get("replicate") or replicates.GIVEN)
        row = {"family": family, "replicate": replicate, "task": task,
               "model": str(data.get("model", "")), "metric": metric, "file": str(path)}
        if kind == "finetuned":
            finetuned.append(task_kind.finetuned_row(
                data, row, lambda name, d=data, p=path: _metric(d, name, p), path, warnings)
                | {"task_kind": task_kind.name})
        elif kind == "merged":
            merged.append(_merged_row(data, ctx, row, path))
        elif kind == "base" and task_kind.needs_base:
            bases[(family, task)] = _metric(data, metric, path)
        else:
            raise UserError(f"evaluation file {path}: context.kind is {kind!r}, "
                            "expected 'finetuned' or 'merged' (or 'base', of a task kind whose "
                            f"scores need the base model's: {', '.join(_base_kinds())})")
    for r in finetuned:
        if taskkinds.kind(r["task_kind"]).needs_base:
            r["base"] = _base_loss(bases, r)
    ft = pl.DataFrame(finetuned, schema=FINETUNED_SCHEMA)
    mg = pl.DataFrame(merged, schema=MERGED_SCHEMA)
    _no_duplicates(ft, ["family", "replicate", "task"], "fine-tuned models")
    _no_duplicates(mg, ["family", "replicate", "method", "n", "seed", "subset", "task"],
                   "merged evaluations")
    return ft, mg, warnings


def _merged_row(data: dict, ctx: dict, row: dict, path) -> dict:
    task = row["task"]
    method = _need(ctx, "method", path, "context.")
    if not is_known(method):
        raise UserError(f"evaluation file {path}: unknown merge method {method!r} "
                        f"(known: {', '.join(ALL_VARIANTS)}; lambda methods as "
                        "NAME-lamLAMBDA)")
    subset = str(_need(ctx, "subset", path, "context."))
    if task not in subset.split("+"):
        raise UserError(f"evaluation file {path}: task {task!r} is not one of the "
                        f"merged subset {subset!r}")
    n = seed = None
    if variant(method).per_n:
        n = int(_need(ctx, "n", path, "context."))
        seed = int(ctx.get("seed") or 0)
    return row | {"subset": subset, "method": method, "n": n, "seed": seed,
                  "merged": _metric(data, row["metric"], path)}


def _base_kinds() -> list[str]:
    return [k.name for k in taskkinds.KINDS.values() if k.needs_base]


def _base_loss(bases: dict, row: dict) -> float:
    """The base model's score on the fine-tuned row's task (the normaliser's other end, for
    task kinds that need it: a causal LM's text tasks)."""
    key = (row["family"], row["task"])
    if key not in bases or bases[key] is None:
        caption = taskkinds.kind(row["task_kind"]).caption
        raise UserError(f"no evaluation of family {row['family']!r}'s base model on task "
                        f"{row['task']!r} (needed by {row['file']}): its scores are {caption}; "
                        "pass the base's evaluations on the same split")
    return bases[key]


def _no_duplicates(df: pl.DataFrame, key: list[str], what: str) -> None:
    dup = (df.group_by(key, maintain_order=True)
           .agg(pl.col("file"), pl.len().alias("count"))
           .filter(pl.col("count") > 1))
    if not dup.is_empty():
        first = dup.row(0, named=True)
        where = ", ".join(f"{k}={first[k]}" for k in key)
        raise UserError(f"{dup.height} duplicate {what}; e.g. {where} in "
                        f"{', '.join(first['file'])}: pass each evaluation once")


def normalise(finetuned: pl.DataFrame, merged: pl.DataFrame) -> pl.DataFrame:
    """Each merged score / the fine-tuned score on the same task, family and replicate, x 100.

    An undefined merged score (null: e.g. the correlation of constant predictions)
    counts as 0; :func:`.checks.undefined_warnings` names them.
    """
    joined = merged.join(
        finetuned.select("family", "replicate", "task", pl.col("score").alias("finetuned"),
                         "base", "task_kind"),
        on=["family", "replicate", "task"], how="left",
    )
    lacking = joined.filter(pl.col("finetuned").is_null())
    if not lacking.is_empty():
        pairs = lacking.select("family", "replicate", "task").unique(maintain_order=True)
        listed = ", ".join(f"{f}/{t} (replicate {r})" for f, r, t in pairs.iter_rows())
        raise UserError(f"no fine-tuned evaluation for {listed} (needed by e.g. "
                        f"{lacking['file'][0]}); pass the fine-tuned models' evaluations too")
    # each task kind's normalisation (a classifier: the merged score over the fine-tuned
    # one; a causal LM's text: the share of the fine-tuning gain in loss kept)
    normalised = None
    for kind in taskkinds.KINDS.values():
        normalised = (pl.when(pl.col("task_kind") == kind.name) if normalised is None else
                      normalised.when(pl.col("task_kind") == kind.name)).then(kind.normalised())
    return joined.with_columns(
        subset_size=(pl.col("subset").str.count_matches("+", literal=True) + 1).cast(pl.Int64),
        normalised=normalised.otherwise(None),
    ).select("family", "replicate", "subset", "subset_size", "task", "method", "n", "seed",
             "metric", "merged", "finetuned", "normalised", "model")


# ---------------------------------------------------------------- Fisher artifacts


def read_fishers(paths: list[Path]) -> pl.DataFrame:
    """One row per Fisher artifact, from its header; every problem is a UserError."""
    rows = []
    for path in paths:
        if not path.exists():
            raise MissingFileError(f"Fisher artifact {path} does not exist")
        meta = artifacts.read_metadata(path)
        lacking = [k for k in ("method", "task", "n", "seconds") if meta.get(k) is None]
        family = (meta.get("context") or {}).get("family")
        if family is None:
            lacking.append("context.family")
        if lacking:
            raise UserError(f"Fisher artifact {path}: metadata lacks {', '.join(lacking)}")
        if meta["method"] not in FISHER_KINDS:
            raise UserError(f"Fisher artifact {path}: unknown method {meta['method']!r} "
                            f"(known: {', '.join(FISHER_KINDS)})")
        rows.append({
            "method": meta["method"], "family": str(family), "task": str(meta["task"]),
            "n": int(meta["n"]), "seconds": float(meta["seconds"]),
            "flops": None if meta.get("flops") is None else int(meta["flops"]),
            "device": str(meta.get("device", "")), "estimator": str(meta.get("estimator", "")),
            "model": str(meta.get("model", "")), "file": str(path),
        })
    return pl.DataFrame(rows, schema=FISHER_SCHEMA)


def choose_runtime_n(fishers: pl.DataFrame, requested: int | None) -> int | None:
    """--runtime-n, else the smallest n that every method present has (else the smallest n)."""
    if fishers.is_empty():
        return requested
    present = sorted(set(fishers["n"]))
    if requested is not None:
        if requested not in present:
            raise UserError(f"--runtime-n {requested}: no Fisher artifact has that n "
                            f"(present: {', '.join(map(str, present))})")
        return requested
    per_method = [set(g["n"]) for _, g in fishers.group_by("method")]
    common = set.intersection(*per_method)
    return min(common) if common else present[0]


def runs_at(fishers: pl.DataFrame, n: int | None) -> pl.DataFrame:
    """The Fisher runs with ``n`` samples (none when n is None: no runs at all)."""
    return fishers.clear() if n is None else fishers.filter(pl.col("n") == n)


# ---------------------------------------------------------------- shared loading


@dataclass
class Inputs:
    finetuned: pl.DataFrame
    scores: pl.DataFrame  # with a selection: the selected candidates, not the others
    fishers: pl.DataFrame
    runtime_n: int | None
    families: list[str]
    warnings: list[str]
    selection: pl.DataFrame | None = None  # the select command's choice (selection.csv)
    candidates: pl.DataFrame | None = None  # every candidate's scores (with a selection)


def load_inputs(eval_paths: list[str | Path], fisher_paths: list[str | Path],
                task_metrics: dict[str, str] | None = None, default_metric: str = ACCURACY,
                runtime_n: int | None = None) -> Inputs:
    """Read, check and normalise everything the report and the plots need.

    ``task_metrics``: task -> metric (lower-case task names), ``default_metric``
    for the others; ``runtime_n``: the n of the runtime tables (None: see
    :func:`choose_runtime_n`).  A selection is applied afterwards
    (:func:`.selection.with_selection`).
    """
    finetuned, merged, warnings = read_evals([Path(p) for p in eval_paths], task_metrics or {},
                                             default_metric)
    scores = normalise(finetuned, merged)
    fishers = read_fishers([Path(p) for p in fisher_paths])
    families = sorted(set(finetuned["family"]) | set(scores["family"]) | set(fishers["family"]))
    return Inputs(finetuned, scores, fishers, choose_runtime_n(fishers, runtime_n), families,
                  warnings + undefined_warnings(merged))
