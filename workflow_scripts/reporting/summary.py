"""Writing the report: every table as CSV and Markdown and the files beside them, under
the names :mod:`workflow_scripts.paths` gives them (:data:`~workflow_scripts.paths.REPORT_TABLES`,
:data:`~workflow_scripts.paths.REPORT_FILES`, and with a selection
:data:`~workflow_scripts.paths.SELECTION_TABLES`)."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from .. import outputs
from ..io import atomic_path
from ..io import write_text as _write_text
from ..paths import REPORT_FILES, REPORT_TABLES, SELECTION_TABLES, table_file
from . import checks, stats
from .inputs import Inputs, runs_at
from .tables import (
    BASELINE, CLASSIFIER_UNIT, SIZE_HEADER, column_label, fisher_tables, finetuned_markdown,
    fmt_ci, fmt_diff, fmt_gflops, fmt_seconds, html_table, kind_rank, markdown, median_scores, method_rank,
    metrics_markdown, paired_markdown, paired_rows, row_keys, several_sizes, speedup_markdown,
    score_definition, score_units, spread_markdown, table1_markdown, table1_rows, task_rank,
    wide_markdown,
)

log = logging.getLogger(__name__)

METRIC_NOTE = ("Each task's scores are normalised by this metric (its own: GLUE's official one, "
               "else accuracy; a causal LM's task: its mean validation token loss; unless the "
               "config sets tasks.T.metric or report.default_metric).")


def write_csv(path: Path, df: pl.DataFrame) -> None:
    with atomic_path(path, outputs.TEXT) as tmp:
        df.write_csv(tmp)


def write_text(path: Path, text: str) -> None:
    """A page or table of the report (replacing only an earlier one)."""
    _write_text(path, text, outputs.TEXT)


def write_report(data: Inputs, out_dir: Path, chance_margin: float = 0.05,
                 accept_near_chance: list[str] = ()) -> list[str]:
    """Check ``data`` and write the report under ``out_dir``; returns the warnings.

    A fine-tuned model whose own-task accuracy is at most chance + ``chance_margin``
    is an error unless ``accept_near_chance`` lists it as ``FAMILY:TASK`` (then a
    warning).  Nothing is written when a check fails.
    """
    if chance_margin < 0:
        raise ValueError(f"chance_margin must not be negative, not {chance_margin}")
    out = Path(out_dir)
    warnings = data.warnings + checks.check_near_chance(data.finetuned, chance_margin,
                                                        list(accept_near_chance))
    medians = median_scores(data.scores)
    warnings += checks.coverage_warnings(data.scores, medians)
    families = data.families
    n = data.runtime_n

    table1 = table1_markdown(medians, families)
    paired = stats.paired_comparisons(data.scores).sort(
        "family", "subset_size", method_rank(), "n", method_rank("baseline"))

    fishers_n = runs_at(data.fishers, n)
    ft = fisher_tables(fishers_n, families)
    table2, table3, speedup = ft.mask_seconds, ft.full_seconds, ft.speedup
    table4 = pl.concat([ft.mask_gflops.select(pl.lit("mask").alias("method"), pl.all()),
                        ft.full_gflops.select(pl.lit("full").alias("method"), pl.all())],
                       how="diagonal")
    if not data.fishers.is_empty():
        warnings += checks.runtime_warnings(data.fishers, n)
        warnings += checks.empty_runtime_warnings({"mask": table2, "full": table3}, n)

    ntext = "" if n is None else f" (n = {n:,})"
    tables = {  # each of paths.REPORT_TABLES: (its CSV frame, its Markdown)
        "table1_scores": (medians, table1),
        "paired_comparisons": (paired, paired_markdown(paired)),
        "table2_mask_runtime": (table2, wide_markdown(table2, fmt_seconds)),
        "table3_full_runtime": (table3, wide_markdown(table3, fmt_seconds)),
        "runtime_speedup": (speedup, speedup_markdown(speedup)),
        "table4_flops": (table4, wide_markdown(ft.mask_gflops, fmt_gflops)),
    }
    md = {name: text for name, (_, text) in tables.items()}
    for name in REPORT_TABLES:
        frame, text = tables[name]
        write_csv(out / table_file(name, "csv"), frame)
        write_text(out / table_file(name, "md"), text)
    scores = data.scores if data.candidates is None else pl.concat([data.scores, data.candidates])
    write_csv(out / REPORT_FILES["scores"], scores.sort(
        "family", "replicate", "subset_size", "subset", task_rank(), "task", method_rank(), "n",
        "seed"))
    selection_md = "" if data.candidates is None else write_selection_tables(data, out)
    write_csv(out / REPORT_FILES["finetuned"], data.finetuned.sort("family", task_rank(), "task"))
    write_csv(out / REPORT_FILES["runs"],
              data.fishers.sort("family", kind_rank(), "n", task_rank(), "task", "file"))
    spread_md = spread_markdown(medians, families)
    write_text(out / REPORT_FILES["spread"], spread_md)
    warnings_md = "".join(f"- {w}\n" for w in warnings) or "No warnings.\n"
    write_text(out / REPORT_FILES["warnings"], "# Warnings\n\n" + warnings_md)

    def devices(kind):
        runs = fishers_n.filter(pl.col("method") == kind)
        return "Device: " + (", ".join(sorted(set(runs["device"]) - {""})) or "not recorded") + "."

    sections = [
        ("Table 1: normalised scores",
         f"Median over all (subset, task) scores (seeds pooled) {score_definition(data.finetuned)}"
         "; in square brackets its 95 % bootstrap confidence interval (cells resampled, "
         f"{stats.RESAMPLES:,} resamples), in round brackets the difference from averaging.",
         table1),
        ("Paired comparisons",
         "Each merge against averaging and against full Fisher at the same n, over the "
         "same (subset, task, seed) scores: wins / ties / losses, the median difference in "
         "points with its 95 % bootstrap interval, and the two-sided Wilcoxon signed-rank "
         "p-value over cells (seeds averaged within a cell).", md["paired_comparisons"]),
        ("Spread across seeds", "Median of each run (fine-tune replicate x Fisher seed), "
         "mean and standard deviation over runs.", spread_md),
        (f"Table 2: mask Fisher time (s){ntext}", devices("mask"), md["table2_mask_runtime"]),
        (f"Table 3: full Fisher time (s){ntext}", devices("full"), md["table3_full_runtime"]),
        (f"Speed-up{ntext}", "Mean full Fisher time / mean mask Fisher time.",
         md["runtime_speedup"]),
        (f"Table 4: mask Fisher GFLOPs{ntext}", "", md["table4_flops"]),
        ("Metric per task", METRIC_NOTE, metrics_markdown(data.finetuned)),
        ("Fine-tuned models", "Each checkpoint's own score on its task's validation set.",
         finetuned_markdown(data.finetuned)),
        ("Warnings", "", warnings_md),
    ]
    if selection_md:
        sections.insert(1, ("Held-out selection", SELECTION_NOTE, selection_md))
    summary = "# Results\n\n" + findings_markdown(paired, medians, families,
                                                        score_units(data.finetuned)) + "".join(
        f"\n## {title}\n\n" + (f"{note}\n\n" if note else "") + body for title, note, body in sections
    )
    write_text(out / REPORT_FILES["summary"], summary)
    write_text(out / REPORT_FILES["evidence"],
               evidence_html(paired, medians, families, data.finetuned))
    for w in warnings:
        log.warning(w)
    log.info("wrote the report to %s", out)
    return warnings


SELECTION_NOTE = (
    "Each merge with several candidates (a setting listed with several values) is reported "
    "by the candidate with the best mean normalised score on the held-out rows of its "
    "tasks' training splits (ties: the first listed), chosen before any validation score is "
    "read (selection.csv lists every candidate). How often each value was chosen, then every "
    "candidate's own validation scores (table1_candidates):")


def write_selection_tables(data: Inputs, out: Path) -> str:
    """The supplementary Table 1 of every candidate (with averaging) as CSV and Markdown;
    returns the Markdown of the selection section: the values chosen, then that table."""
    baseline = data.scores.filter(pl.col("method") == BASELINE)
    medians = median_scores(pl.concat([baseline, data.candidates]))
    (name,) = SELECTION_TABLES
    table = table1_markdown(medians, data.families)
    write_csv(out / table_file(name, "csv"), medians)
    write_text(out / table_file(name, "md"), table)
    return chosen_markdown(data.selection, data.families) + "\n" + table


def chosen_markdown(selection: pl.DataFrame, families: list[str]) -> str:
    """How often each candidate value was chosen, per family, subset size, method and n."""
    keys = ["family", "subset_size", "method", "n", "setting", "value"]
    counts = (selection.group_by(keys).agg(pl.col("selected").sum().alias("chosen"),
                                           pl.len().alias("merges"))
              .sort("family", "subset_size", method_rank(), "n", "setting", "value",
                    nulls_last=False))
    sized = several_sizes(selection)
    rows = [[r["family"]] + ([str(r["subset_size"])] if sized else [])
            + [column_label(r["method"], r["n"]), r["setting"], r["value"],
               f"{r['chosen']} of {r['merges']}"]
            for fam in families for r in counts.filter(pl.col("family") == fam).iter_rows(named=True)]
    headers = ["Model"] + ([SIZE_HEADER] if sized else []) + ["Merge", "Setting", "Value",
                                                              "Chosen in"]
    return markdown(headers, rows, text_columns=len(headers) - 1)


def findings(paired: pl.DataFrame, medians: pl.DataFrame, family: str,
             size: int | None = None, unit: str = CLASSIFIER_UNIT) -> list[str]:
    """Plain sentences for one family (and subset size; None: every size), one per merge and
    n against averaging; none claims more than its Wilcoxon test supports
    (:func:`.stats.verdict`).  ``unit``: what the scores are a percentage of."""
    out = []
    rows = paired.filter((pl.col("family") == family) & (pl.col("baseline") == BASELINE))
    if size is not None:
        rows = rows.filter(pl.col("subset_size") == size)
    for r in rows.iter_rows(named=True):
        same_n = pl.col("n").is_null() if r["n"] is None else pl.col("n") == r["n"]
        cell = medians.filter((pl.col("family") == family) & (pl.col("method") == r["method"])
                              & (pl.col("subset_size") == r["subset_size"])
                              & same_n).row(0, named=True)
        out.append(
            f"{column_label(r['method'], r['n'])}: median {cell['median_normalised']:.1f} % "
            f"{unit}{fmt_ci(cell['ci_low'], cell['ci_high'])}; above averaging in "
            f"{r['wins']} of {r['pairs']} paired scores (below in {r['losses']}), median "
            f"difference {fmt_diff(r['median_diff'])} points"
            + (f", 95 % CI of the median difference{fmt_ci(r['ci_low'], r['ci_high'])}"
               if r["ci_low"] is not None else "")
            + f"; {stats.verdict(r)}.")
    return out


def finding_groups(paired: pl.DataFrame, medians: pl.DataFrame, families: list[str],
                   units: dict[str, str] | None = None):
    """(heading, sentences) per family, or per (family, subset size) when there are several;
    ``units``: family -> what its scores are a percentage of (default: of fine-tuned)."""
    sized = several_sizes(medians)
    for family, size in row_keys(medians, families):
        sentences = findings(paired, medians, family, size,
                             (units or {}).get(family, CLASSIFIER_UNIT))
        if sentences:
            yield (f"{family}, {size} tasks merged" if sized else family), sentences


def findings_markdown(paired: pl.DataFrame, medians: pl.DataFrame, families: list[str],
                      units: dict[str, str] | None = None) -> str:
    parts = [f"**{heading}**\n\n" + "".join(f"- {s}\n" for s in sentences)
             for heading, sentences in finding_groups(paired, medians, families, units)]
    return ("## What the data shows\n\n" + "\n".join(parts) + "\n") if parts else ""


HTML_STYLE = ("body{font-family:sans-serif;font-size:14px;margin:1em}"
              "table{border-collapse:collapse;margin:.5em 0 1.5em}"
              "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
              "th:first-child,td:first-child{text-align:left}")


def evidence_html(paired: pl.DataFrame, medians: pl.DataFrame, families: list[str],
                  metrics: pl.DataFrame | None = None) -> str:
    """Table 1, its findings and the paired comparisons as one HTML page: the part of the
    report that a Snakemake HTML report shows inline (it lists Markdown files as links);
    ``metrics``: the fine-tuned rows, whose metric per task the page names."""
    import html

    used = "" if metrics is None else " Metric per task: " + ", ".join(
        f"{t} {m}" for t, m in metrics.select("task", "metric").unique()
        .sort(task_rank(), "task").rows()) + "."

    findings_html = "".join(
        f"<h3>{html.escape(heading)}</h3><ul>"
        + "".join(f"<li>{html.escape(s)}</li>" for s in sentences) + "</ul>"
        for heading, sentences in finding_groups(
            paired, medians, families, None if metrics is None else score_units(metrics)))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{HTML_STYLE}</style>"
            "</head><body><h2>Table 1: normalised scores</h2>"
            f"<p>Median {html.escape(score_definition(metrics))} over all (subset, task) cells, "
            "seeds pooled; [95 % bootstrap interval]; (difference from averaging)."
            + html.escape(used) + "</p>"
            + html_table(*table1_rows(medians, families))
            + "<h2>What the data shows</h2>" + findings_html
            + "<h2>Paired comparisons</h2>" + html_table(*paired_rows(paired))
            + "</body></html>\n")

