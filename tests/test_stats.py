"""The report's statistics against scipy on hand-made score tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats as scipy_stats

from workflow_scripts.reporting import stats
from workflow_scripts.reporting.summary import findings
from workflow_scripts.reporting.tables import median_scores

# eight cells of pairs (every statistic is per subset size: see the test of sizes below)
CELLS = [("ft0", "a+b", "a"), ("ft0", "a+b", "b"), ("ft0", "a+c", "a"), ("ft0", "a+c", "c"),
         ("ft0", "b+c", "b"), ("ft0", "b+c", "c"), ("ft0", "a+bb", "a"), ("ft0", "a+bb", "bb")]
AVERAGE = [80.0, 85.0, 90.0, 70.0, 75.0, 88.0, 60.0, 95.0]
# mask minus averaging, per cell and Fisher seed (seeds 0 and 1)
DIFFS = [(3.0, 1.0), (-1.0, -2.0), (2.0, 4.0), (0.5, 0.0), (6.0, 5.0), (-0.5, 1.5),
         (2.5, 2.0), (1.0, 0.0)]


def score_table(seeds=(0, 1), diffs=DIFFS) -> pl.DataFrame:
    rows = []
    for (rep, subset, task), avg, d in zip(CELLS, AVERAGE, diffs):
        base = {"family": "fam", "replicate": rep, "subset": subset, "task": task}
        rows.append(base | {"method": "average", "n": None, "seed": None, "normalised": avg})
        for seed in seeds:
            rows.append(base | {"method": "mask", "n": 16, "seed": seed,
                                "normalised": avg + d[seed]})
    return pl.DataFrame(rows, schema={"family": pl.String, "replicate": pl.String,
                                      "subset": pl.String, "task": pl.String,
                                      "method": pl.String, "n": pl.Int64, "seed": pl.Int64,
                                      "normalised": pl.Float64})


def scipy_cluster_ci(groups):
    """The reference: scipy's bootstrap, one statistic call per resample (no vectorising)."""
    res = scipy_stats.bootstrap(
        (np.arange(len(groups)),),
        lambda idx: np.median(np.concatenate([groups[i] for i in idx])),
        vectorized=False, n_resamples=stats.RESAMPLES, confidence_level=0.95,
        method="percentile", rng=np.random.default_rng(stats.RANDOM_STATE))
    return tuple(res.confidence_interval)


def test_table1_interval_is_scipys_cluster_bootstrap_of_the_pooled_median():
    scores = score_table()
    medians = median_scores(scores)
    mask = medians.filter(pl.col("method") == "mask").row(0, named=True)
    groups = [np.array([a + d for d in ds]) for a, ds in zip(AVERAGE, DIFFS)]
    assert mask["median_normalised"] == np.median(np.concatenate(groups))
    assert (mask["ci_low"], mask["ci_high"]) == pytest.approx(scipy_cluster_ci(groups))
    assert mask["n_cells"] == 8 and mask["n_scores"] == 16 and mask["n_runs"] == 2
    # the spread across seeds: each seed's median, their mean and sample standard deviation
    per_seed = [np.median([a + d[s] for a, d in zip(AVERAGE, DIFFS)]) for s in (0, 1)]
    assert mask["run_mean"] == pytest.approx(np.mean(per_seed))
    assert mask["run_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    average = medians.filter(pl.col("method") == "average").row(0, named=True)
    assert (average["ci_low"], average["ci_high"]) == pytest.approx(
        scipy_cluster_ci([np.array([a]) for a in AVERAGE]))
    assert average["n_runs"] == 1 and average["run_sd"] is None
    # cells with different seed counts take the unvectorised path: same answer as scipy's
    uneven = [np.array([1.0, 2.0]), np.array([5.0]), np.array([3.0, 9.0, 4.0])]
    assert stats.median_ci(uneven) == pytest.approx(scipy_cluster_ci(uneven))


def test_paired_comparison_matches_scipy():
    scores = score_table()
    paired = stats.paired_comparisons(scores)
    row = paired.filter(pl.col("baseline") == "average").row(0, named=True)
    flat = np.array([d for ds in DIFFS for d in ds])
    assert (row["pairs"], row["cells"]) == (16, 8)
    assert (row["wins"], row["ties"], row["losses"]) == (
        int((flat > 0).sum()), int((flat == 0).sum()), int((flat < 0).sum()))
    assert row["median_diff"] == np.median(flat)
    cell_means = np.array([np.mean(ds) for ds in DIFFS])
    assert row["wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon(cell_means).pvalue)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        scipy_cluster_ci([np.array(ds) for ds in DIFFS]))
    assert paired.filter(pl.col("baseline") == "fisher").is_empty()  # no full Fisher here


def test_sentence_says_not_significant_above_alpha():
    scores = score_table()
    medians = median_scores(scores)
    paired = stats.paired_comparisons(scores)
    p = paired["wilcoxon_p"][0]
    assert p > 0.05
    (sentence,) = findings(paired, medians, "fam")
    assert f"Wilcoxon p = {p:.2g}: not significant at 0.05" in sentence
    assert "significantly" not in sentence


def test_single_seed_and_single_cell_still_report_with_reasons():
    one_cell = score_table(seeds=(0,)).filter(pl.col("task") == "a", pl.col("subset") == "a+b")
    medians = median_scores(one_cell)
    assert medians["ci_low"].null_count() == medians.height  # one cell: no interval
    paired = stats.paired_comparisons(one_cell)
    row = paired.row(0, named=True)
    assert row["wilcoxon_p"] is None and row["note"] == "n/a: 1 cells, fewer than 6"
    (sentence,) = findings(paired, medians, "fam")
    assert "Wilcoxon test n/a: 1 cells, fewer than 6: no claim of a difference" in sentence
    zeros = score_table(seeds=(0,), diffs=[(0.0, 0.0)] * 8)
    row = stats.paired_comparisons(zeros).row(0, named=True)
    assert row["note"] == "n/a: all differences are zero" and row["ties"] == 8


def test_full_fisher_baseline_pairs_by_seed():
    scores = score_table()
    full = scores.filter(pl.col("method") == "mask").with_columns(
        method=pl.lit("fisher"), normalised=pl.col("normalised") - pl.col("seed") * 10.0)
    paired = stats.paired_comparisons(pl.concat([scores, full]))
    row = paired.filter((pl.col("method") == "mask") & (pl.col("baseline") == "fisher")).row(
        0, named=True)
    # seed 0 pairs tie, seed 1 pairs win by 10: paired by seed, never across seeds
    assert (row["wins"], row["ties"], row["losses"]) == (8, 8, 0)
    assert row["median_diff"] == 5.0
