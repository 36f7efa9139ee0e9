"""``report``: the paper's tables from evaluation JSONs and Fisher artifacts.

Inputs
------
Evaluation JSONs (one per evaluated model and task)::

    {"task", "model", "n_examples", "num_labels", "metrics": {"accuracy", ...},
     "seconds", "device",
     "context": {"family", "kind": "finetuned"|"merged",
                 "method": "average"|"fisher"|"mask"|"mask-released",
                 "n" (fisher/mask only), "subset": "a+b[+c]", "task"}}

For the near-chance check a majority-class rate is used when the JSON has one
(``majority_rate`` at the top level or in ``metrics``, or ``label_counts`` as a
list or a label -> count mapping); otherwise chance is 1/num_labels.

Fisher artifacts (safetensors) are read through their header only
(:func:`artifacts.read_metadata`): ``method`` ("mask"|"full"), ``task``, ``n``,
``seconds``, ``flops``, ``device`` and ``context.family``.

Outputs (under ``--out-dir``)
-----------------------------
``table1_scores.{csv,md}``, ``table2_mask_runtime.{csv,md}``,
``table3_full_runtime.{csv,md}``, ``runtime_speedup.{csv,md}``,
``table4_flops.{csv,md}``, ``scores_long.csv``, ``finetuned.csv``,
``fisher_runs.csv``, ``warnings.md`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from tabulate import tabulate

from . import artifacts
from .cli import UserError
from .io import atomic_path

log = logging.getLogger(__name__)

MERGE_METHODS = ("average", "fisher", "mask", "mask-released")
METHOD_LABELS = {
    "average": "Averaging",
    "fisher": "Fisher (full)",
    "mask": "Ours (mask)",
    "mask-released": "Ours (mask, released scheme)",
}
# Methods whose Table 1 cells carry the "(+x.x)" difference from averaging.
DIFF_METHODS = ("mask", "mask-released")
FISHER_METHODS = ("mask", "full")
# The paper's task order (Tables 2-4); other tasks follow alphabetically.
PAPER_TASKS = ("mnli", "qqp", "qnli", "sst2", "mrpc", "rte")
MISSING = "–"


# ---------------------------------------------------------------- arguments


def add_input_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``report`` and ``plots``."""
    parser.add_argument("--evals", nargs="+", action="extend", default=[], metavar="JSON",
                        help="evaluation JSON files")
    parser.add_argument("--evals-from", action="append", default=[], metavar="FILE",
                        help="file listing evaluation JSONs, one path per line (repeatable)")
    parser.add_argument("--fishers", nargs="+", action="extend", default=[], metavar="SAFETENSORS",
                        help="Fisher artifacts (mask and full)")
    parser.add_argument("--fishers-from", action="append", default=[], metavar="FILE",
                        help="file listing Fisher artifacts, one path per line (repeatable)")
    parser.add_argument("--task-metric", action="append", default=[], metavar="TASK=METRIC",
                        help="metric for one task, e.g. mrpc=f1 (repeatable)")
    parser.add_argument("--default-metric", default="accuracy",
                        help="metric for tasks without --task-metric (default: accuracy)")
    parser.add_argument("--runtime-n", type=int, default=None, metavar="N",
                        help="sample count for the runtime and FLOP tables (default: the "
                             "smallest n that every Fisher method has)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="tables (Table 1-4) from evaluation JSONs and Fisher artifacts",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_args(parser)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--chance-warning-margin", type=float, default=0.05, metavar="M",
                        help="a fine-tuned model whose own-task accuracy is at most chance + M "
                             "is an error (default: 0.05)")
    parser.add_argument("--accept-near-chance", nargs="+", action="extend", default=[],
                        metavar="FAMILY:TASK",
                        help="report these near-chance fine-tuned models as warnings instead")
    parser.set_defaults(func=run)

    from . import plots

    plots.register(subparsers)  # cli.COMMAND_MODULES does not list it; a no-op once registered


def gather_paths(direct: list[str], listed_in: list[str], what: str) -> list[Path]:
    """Paths given directly plus those listed in files (one a line; blank and # lines skipped)."""
    paths = list(direct)
    for listing in listed_in:
        try:
            text = Path(listing).read_text()
        except FileNotFoundError:
            raise UserError(f"list of {what} {listing} does not exist") from None
        paths += [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]
    return [Path(p) for p in dict.fromkeys(paths)]


def parse_task_metrics(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        task, sep, metric = item.partition("=")
        if not sep or not task.strip() or not metric.strip():
            raise UserError(f"--task-metric {item!r}: expected TASK=METRIC, e.g. mrpc=f1")
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


def _majority_rate(data: dict) -> float | None:
    for holder in (data, data["metrics"]):
        if isinstance(holder.get("majority_rate"), (int, float)):
            return float(holder["majority_rate"])
    counts = data.get("label_counts")
    if isinstance(counts, dict):
        counts = list(counts.values())
    if isinstance(counts, list) and counts and sum(counts) > 0:
        return max(counts) / sum(counts)
    return None


def read_evals(paths: list[Path], task_metrics: dict[str, str], default_metric: str):
    """(fine-tuned rows, merged rows) as DataFrames; every structural problem is a UserError."""
    finetuned, merged = [], []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"evaluation file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"evaluation file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise UserError(f"evaluation file {path} does not hold a JSON object")
        task = str(_need(data, "task", path))
        if not isinstance(_need(data, "metrics", path), dict):
            raise UserError(f"evaluation file {path}: 'metrics' is not an object")
        ctx = _need(data, "context", path)
        family = str(_need(ctx, "family", path, "context."))
        kind = _need(ctx, "kind", path, "context.")
        metric = task_metrics.get(task.lower(), default_metric)
        row = {"family": family, "task": task, "model": str(data.get("model", "")),
               "metric": metric, "file": str(path)}
        if kind == "finetuned":
            num_labels = data.get("num_labels")
            if not isinstance(num_labels, int) or num_labels < 1:
                raise UserError(f"evaluation file {path}: num_labels is {num_labels!r}")
            score = _metric(data, metric, path)
            if score is None or score <= 0:
                raise UserError(f"evaluation file {path}: fine-tuned {metric} is {score}; "
                                "scores cannot be normalised by it")
            accuracy = chance = None  # regression (one label): no chance level
            if num_labels > 1:
                accuracy = _metric(data, "accuracy", path)
                majority = _majority_rate(data)
                chance = max(1.0 / num_labels, majority or 0.0)
            finetuned.append(row | {
                "score": score,
                "accuracy": accuracy,
                "num_labels": num_labels,
                "n_examples": data.get("n_examples"),
                "chance": chance,
            })
        elif kind == "merged":
            method = _need(ctx, "method", path, "context.")
            if method not in MERGE_METHODS:
                raise UserError(f"evaluation file {path}: unknown merge method {method!r} "
                                f"(known: {', '.join(MERGE_METHODS)})")
            subset = str(_need(ctx, "subset", path, "context."))
            if task not in subset.split("+"):
                raise UserError(f"evaluation file {path}: task {task!r} is not one of the "
                                f"merged subset {subset!r}")
            n = None
            if method != "average":
                n = int(_need(ctx, "n", path, "context."))
            merged.append(row | {"subset": subset, "method": method, "n": n,
                                 "merged": _metric(data, metric, path)})
        else:
            raise UserError(f"evaluation file {path}: context.kind is {kind!r}, "
                            "expected 'finetuned' or 'merged'")
    ft_schema = {"family": pl.String, "task": pl.String, "model": pl.String, "metric": pl.String,
                 "file": pl.String, "score": pl.Float64, "accuracy": pl.Float64,
                 "num_labels": pl.Int64, "n_examples": pl.Int64, "chance": pl.Float64}
    mg_schema = {"family": pl.String, "task": pl.String, "model": pl.String, "metric": pl.String,
                 "file": pl.String, "subset": pl.String, "method": pl.String, "n": pl.Int64,
                 "merged": pl.Float64}
    ft = pl.DataFrame(finetuned, schema=ft_schema)
    mg = pl.DataFrame(merged, schema=mg_schema)
    _no_duplicates(ft, ["family", "task"], "fine-tuned models")
    _no_duplicates(mg, ["family", "method", "n", "subset", "task"], "merged evaluations")
    return ft, mg


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
    """Each merged score / the fine-tuned score on the same task and family, x 100.

    An undefined merged score (null: e.g. the correlation of constant predictions)
    counts as 0; :func:`undefined_warnings` names them.
    """
    joined = merged.join(
        finetuned.select("family", "task", pl.col("score").alias("finetuned")),
        on=["family", "task"], how="left",
    )
    lacking = joined.filter(pl.col("finetuned").is_null())
    if not lacking.is_empty():
        pairs = lacking.select("family", "task").unique(maintain_order=True)
        listed = ", ".join(f"{f}/{t}" for f, t in pairs.iter_rows())
        raise UserError(f"no fine-tuned evaluation for {listed} (needed by e.g. "
                        f"{lacking['file'][0]}); pass the fine-tuned models' evaluations too")
    return joined.with_columns(
        normalised=pl.col("merged").fill_null(0.0) / pl.col("finetuned") * 100
    ).select("family", "subset", "task", "method", "n", "metric", "merged", "finetuned",
             "normalised", "model")


def undefined_warnings(merged: pl.DataFrame) -> list[str]:
    undefined = merged.filter(pl.col("merged").is_null())
    if undefined.is_empty():
        return []
    return [f"{undefined.height} merged evaluations have an undefined metric (recorded as null, "
            "e.g. a correlation of constant predictions); their normalised score counts as 0: "
            + ", ".join(undefined["file"])]


# ---------------------------------------------------------------- Fisher artifacts


def read_fishers(paths: list[Path]) -> pl.DataFrame:
    rows = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"Fisher artifact {path} does not exist")
        try:
            meta = artifacts.read_metadata(path)
        except artifacts.CorruptArtifactError as exc:
            raise UserError(str(exc)) from None
        lacking = [k for k in ("method", "task", "n", "seconds") if meta.get(k) is None]
        family = (meta.get("context") or {}).get("family")
        if family is None:
            lacking.append("context.family")
        if lacking:
            raise UserError(f"Fisher artifact {path}: metadata lacks {', '.join(lacking)}")
        if meta["method"] not in FISHER_METHODS:
            raise UserError(f"Fisher artifact {path}: unknown method {meta['method']!r}")
        rows.append({
            "method": meta["method"], "family": str(family), "task": str(meta["task"]),
            "n": int(meta["n"]), "seconds": float(meta["seconds"]),
            "flops": None if meta.get("flops") is None else int(meta["flops"]),
            "device": str(meta.get("device", "")), "estimator": str(meta.get("estimator", "")),
            "model": str(meta.get("model", "")), "file": str(path),
        })
    schema = {"method": pl.String, "family": pl.String, "task": pl.String, "n": pl.Int64,
              "seconds": pl.Float64, "flops": pl.Int64, "device": pl.String,
              "estimator": pl.String, "model": pl.String, "file": pl.String}
    return pl.DataFrame(rows, schema=schema)


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
    scores: pl.DataFrame
    fishers: pl.DataFrame
    runtime_n: int | None
    families: list[str]
    warnings: list[str]


def load_inputs(args) -> Inputs:
    eval_paths = gather_paths(args.evals, args.evals_from, "evaluation files")
    fisher_paths = gather_paths(args.fishers, args.fishers_from, "Fisher artifacts")
    if not eval_paths:
        raise UserError("no evaluation files: give --evals or --evals-from")
    finetuned, merged = read_evals(eval_paths, parse_task_metrics(args.task_metric),
                                   args.default_metric)
    scores = normalise(finetuned, merged)
    fishers = read_fishers(fisher_paths)
    families = sorted(set(finetuned["family"]) | set(scores["family"]) | set(fishers["family"]))
    return Inputs(finetuned, scores, fishers, choose_runtime_n(fishers, args.runtime_n), families,
                  undefined_warnings(merged))


# ---------------------------------------------------------------- tables


def task_rank() -> pl.Expr:
    return (pl.col("task").str.to_lowercase().str.replace_all("-", "")
            .replace_strict({t: i for i, t in enumerate(PAPER_TASKS)}, default=len(PAPER_TASKS),
                            return_dtype=pl.Int32))


def method_rank(col: str = "method") -> pl.Expr:
    order = MERGE_METHODS + FISHER_METHODS
    return pl.col(col).replace_strict({m: i for i, m in enumerate(order)}, default=len(order),
                                      return_dtype=pl.Int32)


def median_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """Table 1 in long form: per (family, method, n) the median normalised score."""
    medians = (scores.group_by("family", "method", "n")
               .agg(pl.col("normalised").median().alias("median_normalised"),
                    pl.len().alias("n_scores")))
    average = medians.filter(pl.col("method") == "average").select(
        "family", pl.col("median_normalised").alias("_average"))
    return (medians.join(average, on="family", how="left")
            .with_columns(diff_vs_average=pl.when(pl.col("method") != "average")
                          .then(pl.col("median_normalised") - pl.col("_average")))
            .sort("family", method_rank(), "n", nulls_last=False)
            .select("family", "method", "n", "median_normalised", "diff_vs_average", "n_scores"))


def fmt_score(x) -> str:
    return MISSING if x is None else f"{x:.1f}"


def fmt_diff(x) -> str:
    return f"{round(x, 1) + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def fmt_seconds(x) -> str:
    return MISSING if x is None else f"{x:.3f}"


def fmt_gflops(x) -> str:
    return MISSING if x is None else f"{x:,.2f}"


def markdown(headers: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A pipe table; the first ``text_columns`` left-aligned, the rest (numbers) right-aligned."""
    if not rows:
        return "_No data._\n"
    align = ("left",) * text_columns + ("right",) * (len(headers) - text_columns)
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True,
                    colalign=align) + "\n"


def table1_markdown(medians: pl.DataFrame, families: list[str]) -> str:
    columns = [("average", None)] + [
        (m, n) for m, n in medians.filter(pl.col("method") != "average")
        .select("method", "n").unique().sort(method_rank(), "n").iter_rows()
    ]
    cells = {(r["family"], r["method"], r["n"]): r for r in medians.iter_rows(named=True)}
    headers = ["Model"] + [METHOD_LABELS[m] if n is None else f"{METHOD_LABELS[m]}, n = {n:,}"
                           for m, n in columns]
    rows = []
    for family in families:
        if not any(k[0] == family for k in cells):
            continue
        row = [family]
        for method, n in columns:
            cell = cells.get((family, method, n))
            if cell is None:
                row.append(MISSING)
                continue
            text = fmt_score(cell["median_normalised"])
            if method in DIFF_METHODS and cell["diff_vs_average"] is not None:
                text += f" ({fmt_diff(cell['diff_vs_average'])})"
            row.append(text)
        rows.append(row)
    return markdown(headers, rows)


def task_by_family(df: pl.DataFrame, value: str, families: list[str]) -> pl.DataFrame:
    """Wide table: one row per task (paper order) and a Mean row; one column per family.

    ``df`` may hold repeated runs of one (family, task): their mean is taken.
    """
    if df.is_empty():
        return pl.DataFrame(schema={"task": pl.String} | {f: pl.Float64 for f in families})
    per_task = df.group_by("family", "task").agg(pl.col(value).cast(pl.Float64).mean())
    wide = per_task.pivot(on="family", index="task", values=value)
    wide = (wide.with_columns(pl.lit(None, pl.Float64).alias(f) for f in families
                              if f not in wide.columns)
            .sort(task_rank(), "task").select("task", *families))
    mean = wide.select(pl.lit("Mean").alias("task"), *(pl.col(f).mean() for f in families))
    return pl.concat([wide, mean])


@dataclass
class FisherTables:
    mask_seconds: pl.DataFrame  # Table 2
    full_seconds: pl.DataFrame  # Table 3
    speedup: pl.DataFrame
    mask_gflops: pl.DataFrame  # Table 4
    full_gflops: pl.DataFrame


def fisher_tables(fishers_n: pl.DataFrame, families: list[str]) -> FisherTables:
    """Tables 2-4 and the speed-ups from the Fisher runs of one n."""
    wide = {}
    for method in FISHER_METHODS:
        runs = fishers_n.filter(pl.col("method") == method).with_columns(
            gflops=pl.col("flops").cast(pl.Float64) / 1e9)
        present = [f for f in families if f in set(runs["family"])]
        wide[method] = (task_by_family(runs, "seconds", present),
                        task_by_family(runs, "gflops", present))
    n = fishers_n["n"][0] if fishers_n.height else None
    return FisherTables(wide["mask"][0], wide["full"][0],
                        speedup_table(wide["mask"][0], wide["full"][0], n),
                        wide["mask"][1], wide["full"][1])


def wide_markdown(wide: pl.DataFrame, fmt) -> str:
    headers = ["Task"] + wide.columns[1:]
    rows = [[r[0]] + [fmt(v) for v in r[1:]] for r in wide.iter_rows()]
    return markdown(headers, rows)


def speedup_table(mask_wide: pl.DataFrame, full_wide: pl.DataFrame, n) -> pl.DataFrame:
    def means(wide, name):
        if wide.is_empty():
            return pl.DataFrame(schema={"family": pl.String, name: pl.Float64})
        return (wide.filter(pl.col("task") == "Mean").drop("task")
                .unpivot(variable_name="family", value_name=name))

    return (means(mask_wide, "mean_mask_seconds")
            .join(means(full_wide, "mean_full_seconds"), on="family", how="inner")
            .drop_nulls()
            .with_columns(n=pl.lit(n, pl.Int64),
                          speedup=pl.col("mean_full_seconds") / pl.col("mean_mask_seconds"))
            .select("family", "n", "mean_mask_seconds", "mean_full_seconds", "speedup"))


def speedup_markdown(speedup: pl.DataFrame) -> str:
    rows = [[r["family"], fmt_seconds(r["mean_mask_seconds"]), fmt_seconds(r["mean_full_seconds"]),
             f"{r['speedup']:.1f}x"] for r in speedup.iter_rows(named=True)]
    return markdown(["Model", "Ours, mean time (s)", "Fisher (full), mean time (s)", "Speed-up"], rows)


def finetuned_markdown(finetuned: pl.DataFrame) -> str:
    def fmt(x):
        return MISSING if x is None else f"{x:.4f}"

    rows = [[r["family"], r["task"], r["model"], r["metric"], fmt(r["score"]),
             fmt(r["accuracy"]), fmt(r["chance"])]
            for r in finetuned.sort("family", task_rank(), "task").iter_rows(named=True)]
    return markdown(["Model", "Task", "Checkpoint", "Metric", "Score", "Accuracy", "Chance"], rows,
                    text_columns=4)


# ---------------------------------------------------------------- checks


def near_chance(finetuned: pl.DataFrame, margin: float) -> pl.DataFrame:
    """Fine-tuned models at or below chance + margin on their own task (below chance counts:
    a label-order mismatch usually scores under chance)."""
    return finetuned.filter(pl.col("accuracy") <= pl.col("chance") + margin)


def parse_accepted(items: list[str]) -> set[tuple[str, str]]:
    out = set()
    for item in items:
        family, sep, task = item.rpartition(":")
        if not sep or not family or not task:
            raise UserError(f"--accept-near-chance {item!r}: expected FAMILY:TASK")
        out.add((family.lower(), task.lower()))
    return out


def check_near_chance(finetuned: pl.DataFrame, margin: float, accepted_items: list[str]) -> list[str]:
    """Error for near-chance fine-tuned models unless accepted; the accepted ones as warnings."""
    accepted = parse_accepted(accepted_items)
    errors, warnings = [], []
    for r in near_chance(finetuned, margin).iter_rows(named=True):
        what = (f"{r['family']}/{r['task']}: fine-tuned model {r['model']} ({r['file']}) has "
                f"accuracy {r['accuracy']:.3f} on its own validation set, within {margin} of or "
                f"below chance ({r['chance']:.3f})")
        if (r["family"].lower(), r["task"].lower()) in accepted:
            warnings.append(f"{what}; accepted with --accept-near-chance, so the normalised "
                            f"scores on {r['task']} divide by a near-chance score.")
        else:
            errors.append(what)
    if errors:
        raise UserError(
            "fine-tuned models score near chance on their own task; their label order "
            "probably differs from the dataset's. Set a `label_map` for them in the config "
            "(or pass --accept-near-chance FAMILY:TASK to report them anyway):\n  - "
            + "\n  - ".join(errors)
        )
    return warnings


def coverage_warnings(scores: pl.DataFrame, medians: pl.DataFrame) -> list[str]:
    """Medians of one family that rest on fewer (subset, task) scores than the family has."""
    totals = scores.group_by("family").agg(pl.struct("subset", "task").n_unique().alias("total"))
    short = (medians.join(totals, on="family")
             .filter(pl.col("n_scores") < pl.col("total")))
    return [f"{r['family']}: the median for {r['method']}"
            + ("" if r["n"] is None else f" n={r['n']}")
            + f" rests on {r['n_scores']} of {r['total']} (subset, task) scores; the grid is "
            "incomplete, so Table 1 compares medians over different sets."
            for r in short.iter_rows(named=True)]


def runtime_warnings(fishers: pl.DataFrame, n) -> list[str]:
    at_n = fishers.filter(pl.col("n") == n)
    devices = sorted(set(at_n["device"]))
    out = []
    if len(devices) > 1:
        out.append(f"Fisher runtimes at n={n} were measured on different devices "
                   f"({', '.join(devices)}); Tables 2-3 and the speed-ups mix them.")
    if at_n.filter(pl.col("method") == "mask")["flops"].null_count():
        out.append(f"some mask Fisher artifacts at n={n} record no FLOPs; Table 4 leaves them out.")
    return out


# ---------------------------------------------------------------- command


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: Path, df: pl.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.write_csv(tmp)


def run(args) -> None:
    if args.chance_warning_margin < 0:
        raise UserError("--chance-warning-margin must not be negative")
    data = load_inputs(args)
    warnings = data.warnings + check_near_chance(data.finetuned, args.chance_warning_margin,
                                                 args.accept_near_chance)
    medians = median_scores(data.scores)
    warnings += coverage_warnings(data.scores, medians)
    out = args.out_dir
    families = data.families
    n = data.runtime_n

    table1 = table1_markdown(medians, families)

    fishers_n = runs_at(data.fishers, n)
    ft = fisher_tables(fishers_n, families)
    table2, table3, speedup = ft.mask_seconds, ft.full_seconds, ft.speedup
    table4 = pl.concat([ft.mask_gflops.select(pl.lit("mask").alias("method"), pl.all()),
                        ft.full_gflops.select(pl.lit("full").alias("method"), pl.all())],
                       how="diagonal")
    if not data.fishers.is_empty():
        warnings += runtime_warnings(data.fishers, n)
        for method, wide in (("mask", table2), ("full", table3)):
            if wide.is_empty():
                warnings.append(f"no {method} Fisher artifacts at n={n}: its runtime table is empty.")

    ntext = "" if n is None else f" (n = {n:,})"
    md = {
        "table1_scores": table1,
        "table2_mask_runtime": wide_markdown(table2, fmt_seconds),
        "table3_full_runtime": wide_markdown(table3, fmt_seconds),
        "runtime_speedup": speedup_markdown(speedup),
        "table4_flops": wide_markdown(ft.mask_gflops, fmt_gflops),
    }
    csv = {
        "table1_scores": medians,
        "table2_mask_runtime": table2,
        "table3_full_runtime": table3,
        "runtime_speedup": speedup,
        "table4_flops": table4,
        "scores_long": data.scores.sort("family", "subset", task_rank(), "task", method_rank(), "n"),
        "finetuned": data.finetuned.sort("family", task_rank(), "task"),
        "fisher_runs": data.fishers.sort("family", method_rank(), "n", task_rank(), "task", "file"),
    }
    for name, df in csv.items():
        write_csv(out / f"{name}.csv", df)
    for name, text in md.items():
        write_text(out / f"{name}.md", text)
    warnings_md = "".join(f"- {w}\n" for w in warnings) or "No warnings.\n"
    write_text(out / "warnings.md", "# Warnings\n\n" + warnings_md)

    def devices(method):
        runs = fishers_n.filter(pl.col("method") == method)
        return "Device: " + (", ".join(sorted(set(runs["device"]) - {""})) or "not recorded") + "."

    sections = [
        ("Table 1: normalised scores",
         "Median over all (subset, task) scores of merged / fine-tuned metric x 100; "
         "in brackets the difference from averaging.", table1),
        (f"Table 2: mask Fisher time (s){ntext}", devices("mask"), md["table2_mask_runtime"]),
        (f"Table 3: full Fisher time (s){ntext}", devices("full"), md["table3_full_runtime"]),
        (f"Speed-up{ntext}", "Mean full Fisher time / mean mask Fisher time.",
         md["runtime_speedup"]),
        (f"Table 4: mask Fisher GFLOPs{ntext}", "", md["table4_flops"]),
        ("Fine-tuned models", "Each checkpoint's own score on its task's validation set.",
         finetuned_markdown(data.finetuned)),
        ("Warnings", "", warnings_md),
    ]
    summary = "# Results\n" + "".join(
        f"\n## {title}\n\n" + (f"{note}\n\n" if note else "") + body for title, note, body in sections
    )
    write_text(out / "summary.md", summary)
    for w in warnings:
        log.warning(w)
    log.info("wrote the report to %s", out)
