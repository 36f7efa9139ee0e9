"""The paper's tables: Table 1 (normalised scores), Tables 2-3 (Fisher time),
the speed-ups and Table 4 (mask Fisher GFLOPs), as DataFrames and Markdown.

Merge methods appear in the order of
:data:`workflow_scripts.merging.registry.ALL_VARIANTS` (lambda variants by
lambda), under their registry labels; Fisher kinds in the order of :data:`workflow_scripts.fisher.kinds.METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from tabulate import tabulate

from ..fisher.kinds import METHODS as FISHER_KINDS
from ..merging.registry import ALL_VARIANTS, is_known, rank, variant
from .. import taskkinds
from ..tasks.glue import GLUE_TASKS
from . import stats

BASELINE = stats.BASELINE  # the merge whose median Table 1's "(+x.x)" differences are taken from
# The paper's task order (Tables 2-4): the GLUE tasks but CoLA; other tasks follow alphabetically.
PAPER_TASKS = GLUE_TASKS[:6]
MISSING = "–"

# what a normalised score is: its task kind's caption (reporting/inputs.py computes it)
DEFAULT_KIND = "label"  # the report's captions without fine-tuned rows
CLASSIFIER_UNIT = taskkinds.KINDS[DEFAULT_KIND].unit


def score_units(finetuned: pl.DataFrame) -> dict[str, str]:
    """Family -> what its normalised scores are a percentage of (its tasks' kind's unit)."""
    return {family: taskkinds.kind(name).unit
            for family, name in finetuned.select("family", "task_kind").unique().rows()}


def score_definition(finetuned: pl.DataFrame | None) -> str:
    """What Table 1's scores are ("of ..."), for the task kinds of the report's families
    (the fine-tuned rows; None: classifiers')."""
    names = [DEFAULT_KIND] if finetuned is None or finetuned.is_empty() else list(
        dict.fromkeys(finetuned["task_kind"]))
    kinds = sorted((taskkinds.kind(n) for n in names), key=lambda k: taskkinds.NAMES.index(k.name))
    if len(kinds) == 1:
        return "of " + kinds[0].caption
    return "of " + " or ".join(f"{k.caption} ({k.name} tasks)" for k in kinds)


# ---------------------------------------------------------------- order


def _rank(expr: pl.Expr, order) -> pl.Expr:
    """``expr``'s position in ``order`` (values not in it: after all of them)."""
    order = tuple(order)
    return expr.replace_strict({v: i for i, v in enumerate(order)}, default=len(order),
                               return_dtype=pl.Int32)


def task_rank() -> pl.Expr:
    """Sort key of the ``task`` column: the paper's order, then the rest (tie: sort by name)."""
    return _rank(pl.col("task").str.to_lowercase().str.replace_all("-", ""), PAPER_TASKS)


def method_rank(col: str = "method") -> pl.Expr:
    """Sort key of a merge-method column: the registry's order, then lambda (unknown last)."""
    return pl.col(col).map_elements(rank, return_dtype=pl.Float64)


def kind_rank(col: str = "method") -> pl.Expr:
    """Sort key of a Fisher-kind column: the order of ``fisher.kinds.METHODS``."""
    return _rank(pl.col(col), FISHER_KINDS)


# ---------------------------------------------------------------- formatting


def fmt_score(x) -> str:
    return MISSING if x is None else f"{x:.1f}"


def fmt_diff(x) -> str:
    return f"{round(x, 1) + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def fmt_seconds(x) -> str:
    return MISSING if x is None else f"{x:.3f}"


def fmt_gflops(x) -> str:
    return MISSING if x is None else f"{x:,.2f}"


def html_table(headers: list[str], rows: list[list[str]]) -> str:
    """An HTML table (cells escaped); "<p>No data.</p>" without rows."""
    if not rows:
        return "<p>No data.</p>\n"
    return tabulate(rows, headers=headers, tablefmt="html", disable_numparse=True) + "\n"


def markdown(headers: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A pipe table; the first ``text_columns`` left-aligned, the rest (numbers) right-aligned."""
    if not rows:
        return "_No data._\n"
    align = ("left",) * text_columns + ("right",) * (len(headers) - text_columns)
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True,
                    colalign=align) + "\n"


# ---------------------------------------------------------------- Table 1


def median_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """Table 1 in long form: per (family, subset size, method, n) the median normalised
    score over all its scores (cells and seeds pooled), the difference from averaging's
    (on subsets of the same size), the 95 % bootstrap interval of the median, and the
    spread of the per-run medians (:mod:`.stats`)."""
    keys = list(stats.KEYS)
    scores = stats.with_subset_size(scores)
    medians = (scores.group_by(keys)
               .agg(pl.col("normalised").median().alias("median_normalised"),
                    pl.len().alias("n_scores")))
    average = medians.filter(pl.col("method") == BASELINE).select(
        "family", "subset_size", pl.col("median_normalised").alias("_average"))
    return (medians.join(average, on=["family", "subset_size"], how="left")
            .with_columns(diff_vs_average=pl.when(pl.col("method") != BASELINE)
                          .then(pl.col("median_normalised") - pl.col("_average")))
            .join(stats.table1_uncertainty(scores), on=keys, how="left", nulls_equal=True)
            .join(stats.seed_spread(scores), on=keys, how="left", nulls_equal=True)
            .sort("family", "subset_size", method_rank(), "n", nulls_last=False)
            .select(*keys, "median_normalised", "diff_vs_average", "n_scores", "ci_low",
                    "ci_high", "n_cells", "n_runs", "run_mean", "run_sd"))


SIZE_HEADER = "Tasks merged"


def row_keys(df: pl.DataFrame, families: list[str]) -> list[tuple[str, int]]:
    """The (family, subset size) rows of a table, families in ``families``' order."""
    present = set(df.select("family", "subset_size").unique().iter_rows()) if df.height else set()
    return [(f, size) for f in families for size in sorted(s for g, s in present if g == f)]


def several_sizes(df: pl.DataFrame) -> bool:
    """Whether ``df`` holds subsets of more than one size (tables then add a column)."""
    return df.height > 0 and df["subset_size"].n_unique() > 1


def fmt_ci(low, high) -> str:
    return "" if low is None else f" [{low:.1f}, {high:.1f}]"


def column_label(method: str, n: int | None) -> str:
    """The report's label of a merge key (or of a method's base key, ``task-arithmetic``,
    as the selection names methods), with its n."""
    if is_known(method):
        label = variant(method).label
    else:
        label = ALL_VARIANTS[method].label if method in ALL_VARIANTS else method
    return label if n is None else f"{label}, n = {n:,}"


def _columns(medians: pl.DataFrame) -> list[tuple[str, int | None]]:
    """Table 1's columns: averaging (always), then each merge (and n, lambda) present, in
    the registry's order."""
    present = medians.select("method", "n").unique().sort(method_rank(), "n", nulls_last=False)
    return [(key, None) for key, v in ALL_VARIANTS.items()  # always: averaging
            if not v.per_n and not v.method.takes_lambda] + [
        (m, n) for m, n in present.iter_rows()
        if n is not None or variant(m).method.takes_lambda
    ]


def table1_markdown(medians: pl.DataFrame, families: list[str]) -> str:
    """One column per merge without n (always) and per (merge, n) present, registry order:
    ``median [95 % CI] (difference from averaging)``."""
    headers, rows = table1_rows(medians, families)
    return markdown(headers, rows, text_columns=2 if SIZE_HEADER in headers else 1)


def table1_rows(medians: pl.DataFrame, families: list[str]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of Table 1 as text cells: a row per family, or per (family, subset
    size) with a column of the sizes when there are several."""
    columns = _columns(medians)
    cells = {(r["family"], r["subset_size"], r["method"], r["n"]): r
             for r in medians.iter_rows(named=True)}
    sized = several_sizes(medians)
    headers = ["Model"] + ([SIZE_HEADER] if sized else []) + [column_label(m, n)
                                                              for m, n in columns]
    rows = []
    for family, size in row_keys(medians, families):
        row = [family] + ([str(size)] if sized else [])
        for method, n in columns:
            cell = cells.get((family, size, method, n))
            if cell is None:
                row.append(MISSING)
                continue
            text = fmt_score(cell["median_normalised"]) + fmt_ci(cell["ci_low"], cell["ci_high"])
            if variant(method).method.vs_average and cell["diff_vs_average"] is not None:
                text += f" ({fmt_diff(cell['diff_vs_average'])})"
            row.append(text)
        rows.append(row)
    return headers, rows


# ---------------------------------------------------------------- Tables 2-4


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
    for kind in FISHER_KINDS:
        runs = fishers_n.filter(pl.col("method") == kind).with_columns(
            gflops=pl.col("flops").cast(pl.Float64) / 1e9)
        present = [f for f in families if f in set(runs["family"])]
        wide[kind] = (task_by_family(runs, "seconds", present),
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
    """Per family: mean mask and full Fisher time (the tables' Mean rows) and their ratio."""
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


def metrics_markdown(finetuned: pl.DataFrame) -> str:
    """The metric each task's scores are normalised by, as the evaluations were read."""
    rows = finetuned.select("task", "metric").unique().sort(task_rank(), "task").rows()
    return markdown(["Task", "Metric"], [list(r) for r in rows], text_columns=2)


def finetuned_markdown(finetuned: pl.DataFrame) -> str:
    def fmt(x):
        return MISSING if x is None else f"{x:.4f}"

    rows = [[r["family"], r["task"], r["model"], r["metric"], fmt(r["score"]),
             fmt(r["accuracy"]), fmt(r["chance"])]
            for r in finetuned.sort("family", task_rank(), "task").iter_rows(named=True)]
    return markdown(["Model", "Task", "Checkpoint", "Metric", "Score", "Accuracy", "Chance"], rows,
                    text_columns=4)


# ---------------------------------------------------------------- uncertainty


def fmt_p(p) -> str:
    return MISSING if p is None else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def paired_markdown(paired: pl.DataFrame) -> str:
    """The paired comparisons, one row per (family, subset size, merge, n, baseline)."""
    headers, rows = paired_rows(paired)
    return markdown(headers, rows, text_columns=4 if SIZE_HEADER in headers else 3)


def paired_rows(paired: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the paired comparisons as text cells (a column of the subset
    sizes when there are several)."""
    sized = several_sizes(paired)
    rows = []
    for r in paired.sort("family", "subset_size", method_rank(), "n",
                         method_rank("baseline")).iter_rows(named=True):
        ci = fmt_ci(r["ci_low"], r["ci_high"]).strip() or MISSING
        rows.append([r["family"]] + ([str(r["subset_size"])] if sized else []) + [
            column_label(r["method"], r["n"]),
            column_label(r["baseline"], None if r["baseline"] == BASELINE else r["n"]),
            f"{r['wins']} / {r['ties']} / {r['losses']}", fmt_diff(r["median_diff"]), ci,
            fmt_p(r["wilcoxon_p"]) if r["wilcoxon_p"] is not None else r["note"]])
    return ["Model"] + ([SIZE_HEADER] if sized else []) + [
        "Merge", "Against", "Wins / ties / losses", "Median difference", "95 % CI",
        "Wilcoxon p"], rows


def spread_markdown(medians: pl.DataFrame, families: list[str]) -> str:
    """Mean +- sd of the per-run medians of every Table 1 cell (runs: replicate x seed)."""
    if medians.is_empty() or medians["n_runs"].max() < 2:
        return "_One run (one seed) per cell: no spread across seeds._\n"
    sized = several_sizes(medians)
    rows = []
    for r in medians.iter_rows(named=True):
        if r["family"] not in families:
            continue
        sd = MISSING if r["run_sd"] is None else f"{r['run_sd']:.1f}"
        rows.append([r["family"]] + ([str(r["subset_size"])] if sized else []) + [
            column_label(r["method"], r["n"]), str(r["n_runs"]), fmt_score(r["run_mean"]), sd])
    return markdown(["Model"] + ([SIZE_HEADER] if sized else []) + [
        "Merge", "Runs", "Mean of run medians", "SD"], rows, text_columns=3 if sized else 2)

