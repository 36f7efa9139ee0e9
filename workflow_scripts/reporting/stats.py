"""The uncertainty of every Table 1 claim: bootstrap intervals, paired tests, seed spread.

The unit of evidence is a *cell*: one (replicate, subset, task) of a family,
with one normalised score per Fisher seed (one in all for averaging).  Every statistic
is taken per (family, subset size): merges of 2 tasks and of 5 are not pooled
(:func:`with_subset_size` adds the ``subset_size`` column where it is missing).

- Interval of a median (:func:`median_ci`): percentile bootstrap
  (``scipy.stats.bootstrap``) that resamples cells with replacement, each
  bringing all of its seeds' scores (seeds pooled), and takes the median of the
  pooled scores; 9,999 resamples, fixed random state, so a rerun gives the same
  numbers.  Fewer than two cells: no interval.
- Paired comparison (:func:`paired_comparisons`): a merge against averaging and
  against the full Fisher merge at the same n, over the scores both have for
  the same (replicate, subset, task, seed): wins / ties / losses and the median
  difference of those pairs, with its bootstrap interval (cells resampled); the
  Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided) runs on one
  difference per cell (the mean over its seeds), since the seeds of one cell
  are not independent.  It is "n/a" with the reason when fewer than 6 cells
  have a difference or all differences are zero.
- Seed spread (:func:`seed_spread`): the median of each run (replicate and
  Fisher seed), and the mean and standard deviation of those medians.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats

from ..merging.registry import variant

CONFIDENCE = 0.95
RESAMPLES = 9999
RANDOM_STATE = 20221231  # fixed: the same scores give the same intervals
MIN_WILCOXON_CELLS = 6
ALPHA = 0.05
TIE = 1e-9  # |difference| below this (in points) is a tie
CELL = ("replicate", "subset", "task")
BASELINE = "average"  # Table 1's "(+x.x)" reference, and the first comparison of each merge
BASELINES = (BASELINE, "fisher")  # the merges every other merge is compared with
KEYS = ("family", "subset_size", "method", "n")  # one Table 1 entry, one paired comparison


def with_subset_size(scores: pl.DataFrame) -> pl.DataFrame:
    """``scores`` with ``subset_size`` (how many tasks the subset merges) after ``subset``."""
    if "subset_size" in scores.columns:
        return scores
    sized = scores.with_columns(
        subset_size=(pl.col("subset").str.count_matches("+", literal=True) + 1).cast(pl.Int64))
    at = sized.columns.index("subset") + 1
    return sized.select(sized.columns[:at] + ["subset_size"] + sized.columns[at:-1])


def _groups(df: pl.DataFrame, value: str) -> list[np.ndarray]:
    """The ``value`` column split by cell (cell order: sorted)."""
    return [g[value].to_numpy().astype(float)
            for _, g in df.sort(*CELL).group_by(CELL, maintain_order=True)]


def median_ci(groups: list[np.ndarray]) -> tuple[float | None, float | None]:
    """95 % percentile-bootstrap interval of the pooled median, resampling the groups."""
    groups = [g for g in groups if g.size]
    if len(groups) < 2:
        return None, None
    sizes = {g.size for g in groups}
    if len(sizes) == 1:  # every cell has as many seeds: vectorised
        matrix = np.stack(groups)

        def statistic(idx, axis=-1):
            idx = np.moveaxis(np.asarray(idx), axis, -1)
            values = matrix[idx]  # (..., cells, seeds)
            return np.median(values.reshape(*values.shape[:-2], -1), axis=-1)
    else:
        def statistic(idx, axis=-1):
            return np.apply_along_axis(
                lambda i: np.median(np.concatenate([groups[j] for j in i])), axis, np.asarray(idx))

    result = stats.bootstrap((np.arange(len(groups)),), statistic, vectorized=True,
                             n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                             method="percentile", rng=np.random.default_rng(RANDOM_STATE))
    low, high = result.confidence_interval
    return float(low), float(high)


KEY_SCHEMA = {"family": pl.String, "subset_size": pl.Int64, "method": pl.String, "n": pl.Int64}


def table1_uncertainty(scores: pl.DataFrame) -> pl.DataFrame:
    """Per (family, subset size, method, n): the interval of the median and the number of
    cells."""
    rows = []
    for key, group in with_subset_size(scores).group_by(*KEYS):
        low, high = median_ci(_groups(group, "normalised"))
        rows.append(dict(zip(KEYS, key)) | {"ci_low": low, "ci_high": high,
                                             "n_cells": group.select(CELL).unique().height})
    return pl.DataFrame(rows, schema=KEY_SCHEMA | {"ci_low": pl.Float64, "ci_high": pl.Float64,
                                                   "n_cells": pl.Int64})


def seed_spread(scores: pl.DataFrame) -> pl.DataFrame:
    """Per (family, subset size, method, n): runs (replicate x Fisher seed), mean and sd of
    their medians."""
    per_run = (with_subset_size(scores).group_by(*KEYS, "replicate", "seed")
               .agg(pl.col("normalised").median().alias("run_median")))
    return (per_run.group_by(*KEYS)
            .agg(pl.len().alias("n_runs"), pl.col("run_median").mean().alias("run_mean"),
                 pl.col("run_median").std(ddof=1).alias("run_sd")))


def wilcoxon(cell_diffs: np.ndarray) -> tuple[float | None, str]:
    """(two-sided p, "") or (None, the reason the test is not applicable)."""
    if cell_diffs.size < MIN_WILCOXON_CELLS:
        return None, f"n/a: {cell_diffs.size} cells, fewer than {MIN_WILCOXON_CELLS}"
    if np.all(np.abs(cell_diffs) < TIE):
        return None, "n/a: all differences are zero"
    return float(stats.wilcoxon(cell_diffs).pvalue), ""


def _pairs(scores: pl.DataFrame, family: str, size: int, method: str, n,
           baseline: str) -> pl.DataFrame:
    """Rows with ``diff`` = method - baseline over the same (replicate, subset, task, seed),
    subsets of ``size`` tasks."""
    same_n = pl.col("n").is_null() if n is None else pl.col("n") == n
    scores = scores.filter((pl.col("family") == family) & (pl.col("subset_size") == size))
    mine = scores.filter((pl.col("method") == method) & same_n)
    base = scores.filter(pl.col("method") == baseline)
    keys = list(CELL)
    if variant(baseline).per_n:
        if n is None:  # a merge without n has no full-Fisher counterpart
            return mine.clear().with_columns(diff=pl.lit(None, pl.Float64))
        base = base.filter(pl.col("n") == n)
        keys.append("seed")
    return (mine.join(base.select(*keys, pl.col("normalised").alias("_base")), on=keys)
            .with_columns(diff=pl.col("normalised") - pl.col("_base")))


PAIRED_SCHEMA = {**KEY_SCHEMA, "baseline": pl.String,
                 "pairs": pl.Int64, "cells": pl.Int64, "wins": pl.Int64, "ties": pl.Int64,
                 "losses": pl.Int64, "median_diff": pl.Float64, "ci_low": pl.Float64,
                 "ci_high": pl.Float64, "wilcoxon_p": pl.Float64, "note": pl.String}


def paired_comparisons(scores: pl.DataFrame) -> pl.DataFrame:
    """Every merge but averaging against each baseline present (not itself; full Fisher at
    the same n only), one row per (family, subset size, merge, n, baseline)."""
    rows = []
    scores = with_subset_size(scores)
    present = scores.filter(pl.col("method") != BASELINE).select(*KEYS).unique()
    for family, size, method, n in present.iter_rows():
        for baseline in BASELINES:
            if baseline == method:
                continue
            pairs = _pairs(scores, family, size, method, n, baseline)
            if pairs.is_empty():
                continue
            diffs = pairs["diff"].to_numpy()
            cell_diffs = (pairs.group_by(CELL).agg(pl.col("diff").mean())["diff"].to_numpy())
            low, high = median_ci(_groups(pairs, "diff"))
            p, note = wilcoxon(cell_diffs)
            rows.append({
                "family": family, "subset_size": size, "method": method, "n": n,
                "baseline": baseline,
                "pairs": diffs.size, "cells": cell_diffs.size,
                "wins": int((diffs >= TIE).sum()), "ties": int((np.abs(diffs) < TIE).sum()),
                "losses": int((diffs <= -TIE).sum()), "median_diff": float(np.median(diffs)),
                "ci_low": low, "ci_high": high, "wilcoxon_p": p, "note": note,
            })
    return pl.DataFrame(rows, schema=PAIRED_SCHEMA)


def verdict(row: dict) -> str:
    """What the test supports, in words."""
    if row["wilcoxon_p"] is None:
        return f"Wilcoxon test {row['note']}: no claim of a difference"
    p = row["wilcoxon_p"]
    if p > ALPHA:
        return f"Wilcoxon p = {p:.2g}: not significant at {ALPHA}"
    direction = "above" if row["median_diff"] > 0 else "below"
    return f"Wilcoxon p = {p:.2g}: significantly {direction} it at {ALPHA}"
