"""The report and plots commands on a small synthetic grid.

2 families x 3 tasks, merges of every task pair with averaging and with full and
mask Fisher at n = 8 and 16.  Every merged score is the fine-tuned score times
``(BASE + OFFSET) / 100``: the six (pair, task) offsets have median 0.3, so each
median normalised score in Table 1 is BASE + 0.3.
"""

import csv
import dataclasses
import itertools
import json
import math
import re

import matplotlib
import polars as pl
import pytest
import torch

from workflow_scripts import artifacts, cli, paths
from workflow_scripts.errors import MissingFileError, UserError
from workflow_scripts.merging import registry
from workflow_scripts.reporting import plots
from workflow_scripts.reporting.inputs import load_inputs
from workflow_scripts.reporting.summary import write_report

FAMILIES = ("fam-a", "fam-b")
TASKS = ("mrpc", "rte", "sst2")
PAIRS = [f"{a}+{b}" for a, b in itertools.combinations(TASKS, 2)]
OFFSETS = (0.0, 0.6, -2.0, 2.0, -1.0, 1.0)  # sorted: -2 -1 0 0.6 1 2 -> median 0.3
BASE = {  # (family, method, n) -> median - 0.3
    ("fam-a", "average", None): 90.0,
    ("fam-a", "fisher", 8): 91.0,
    ("fam-a", "fisher", 16): 92.0,
    ("fam-a", "mask", 8): 94.0,
    ("fam-a", "mask", 16): 93.0,
    ("fam-b", "average", None): 88.0,
    ("fam-b", "fisher", 8): 87.0,
    ("fam-b", "fisher", 16): 89.0,
    ("fam-b", "mask", 8): 85.0,
    ("fam-b", "mask", 16): 90.0,
}
# Fine-tuned: mrpc scored by F1 (its accuracy differs), the others by accuracy.
FINETUNED = {"mrpc": {"f1": 0.80, "accuracy": 0.75}, "rte": {"accuracy": 0.70},
             "sst2": {"accuracy": 0.90}}
# Fisher seconds at n=8 (n=16 doubles them) and mask GFLOPs at n=8.
MASK_SECONDS = {"fam-a": (0.1, 0.2, 0.3), "fam-b": (0.5, 0.5, 0.8)}  # means 0.2, 0.6
FULL_SECONDS = {"fam-a": (10.0, 20.0, 30.0), "fam-b": (30.0, 30.0, 30.0)}  # means 20, 30
MASK_GFLOPS = {"fam-a": (1.5, 2.5, 1234.5), "fam-b": (3.0, 4.0, 5.0)}  # means 412.833.., 4


def write_eval(path, family, task, kind, metrics, num_labels=2, label_counts=(50, 50),
               **context):
    """An evaluation JSON as ``evaluate`` writes it; ``label_counts=None`` leaves the counts
    out (a file from an older ``evaluate``)."""
    data = {"task": task, "model": f"{family}/{kind}-{task}", "n_examples": 100,
            "num_labels": num_labels, "metrics": metrics, "seconds": 1.0, "device": "cpu",
            "context": {"family": family, "kind": kind, "task": task, **context}}
    if label_counts is not None:
        data["label_counts"] = list(label_counts)
    path.write_text(json.dumps(data))
    return str(path)


def build_grid(root):
    evals, fishers = [], []
    for family in FAMILIES:
        for task in TASKS:
            evals.append(write_eval(root / f"ft-{family}-{task}.json", family, task, "finetuned",
                                    FINETUNED[task]))
        for (fam, method, n), base in BASE.items():
            if fam != family:
                continue
            scores = iter(OFFSETS)
            for subset in PAIRS:
                for task in subset.split("+"):
                    metric = "f1" if task == "mrpc" else "accuracy"
                    value = FINETUNED[task][metric] * (base + next(scores)) / 100
                    metrics = {metric: value}
                    if task == "mrpc":
                        metrics["accuracy"] = 0.5  # a decoy: F1 is the chosen metric
                    ctx = {"method": method, "subset": subset, "n": n}
                    evals.append(write_eval(root / f"m-{family}-{method}-{n}-{subset}-{task}.json",
                                            family, task, "merged", metrics, **ctx))
        for i, task in enumerate(TASKS):
            for n in (8, 16):
                scale = n // 8
                for method in ("mask", "full"):
                    if method == "mask":
                        torch.manual_seed(i)
                        tensors = {"head": torch.rand(2, 4) + 0.01, "neuron": torch.rand(2, 6) + 0.01}
                        seconds = MASK_SECONDS[family][i] * scale
                        flops = int(MASK_GFLOPS[family][i] * 1e9) * scale
                    else:
                        tensors = {"w": torch.ones(3)}
                        seconds = FULL_SECONDS[family][i] * scale
                        flops = None
                    meta = {"method": method, "task": task, "n": n, "seconds": seconds,
                            "flops": flops, "device": "cpu", "model": f"{family}/{task}",
                            "estimator": "empirical", "labels": "dataset",
                            "context": {"family": family}}
                    path = root / f"fisher-{method}-{family}-{task}-{n}.safetensors"
                    artifacts.save_fisher(tensors, meta, path)
                    fishers.append(str(path))
    return evals, fishers


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    evals, fishers = build_grid(root)
    (root / "evals.txt").write_text("\n".join(evals) + "\n")
    return root, evals, fishers


def report_args(grid, out, *extra):
    root, _, fishers = grid
    return ["report", "--evals-from", str(root / "evals.txt"), "--fishers", *fishers,
            "--out-dir", str(out), "--task-metric", "mrpc=f1", *extra]


@pytest.fixture(scope="module")
def report_dir(grid, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert cli.main(report_args(grid, out)) == 0
    return out


def test_table1_medians(report_dir):
    table = pl.read_csv(report_dir / "table1_scores.csv")
    assert table.columns == ["family", "subset_size", "method", "n", "median_normalised",
                             "diff_vs_average", "n_scores", "ci_low", "ci_high", "n_cells",
                             "n_runs", "run_mean", "run_sd"]
    assert table.height == len(BASE)
    assert set(table["subset_size"]) == {2}  # every subset is a pair
    for row in table.iter_rows(named=True):
        base = BASE[(row["family"], row["method"], row["n"])]
        assert row["median_normalised"] == pytest.approx(base + 0.3)
        assert row["n_scores"] == 6
        if row["method"] == "average":
            assert row["diff_vs_average"] is None
        else:
            average = BASE[(row["family"], "average", None)]
            assert row["diff_vs_average"] == pytest.approx(base - average)


def test_table1_markdown_layout(report_dir):
    md = (report_dir / "table1_scores.md").read_text().splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert header == ["Model", "Averaging", "Fisher (full), n = 8", "Fisher (full), n = 16",
                      "Ours (mask), n = 8", "Ours (mask), n = 16"]
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in md[2:])}
    table = pl.read_csv(report_dir / "table1_scores.csv")
    ci = {(r["family"], r["method"], r["n"]): f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}]"
          for r in table.iter_rows(named=True)}
    assert rows["fam-a"] == [f"90.3 {ci['fam-a', 'average', None]}",
                             f"91.3 {ci['fam-a', 'fisher', 8]}", f"92.3 {ci['fam-a', 'fisher', 16]}",
                             f"94.3 {ci['fam-a', 'mask', 8]} (+4.0)",
                             f"93.3 {ci['fam-a', 'mask', 16]} (+3.0)"]
    assert rows["fam-b"][3] == f"85.3 {ci['fam-b', 'mask', 8]} (-3.0)"
    # every cell has the same offsets in the same order: the same interval, shifted
    shifts = {(round(r["ci_low"] - r["median_normalised"], 9),
               round(r["ci_high"] - r["median_normalised"], 9)) for r in table.iter_rows(named=True)}
    assert len(shifts) == 1 and next(iter(shifts))[0] < 0 < next(iter(shifts))[1]


def test_scores_long_and_finetuned(report_dir):
    scores = pl.read_csv(report_dir / "scores_long.csv")
    for col in ("family", "subset", "task", "method", "n", "metric", "merged", "finetuned",
                "normalised"):
        assert col in scores.columns
    assert scores.height == len(BASE) * 6
    assert set(scores.filter(pl.col("task") == "mrpc")["metric"]) == {"f1"}
    assert set(scores.filter(pl.col("task") == "rte")["metric"]) == {"accuracy"}
    finetuned = pl.read_csv(report_dir / "finetuned.csv")
    assert finetuned.height == 6
    mrpc = finetuned.filter((pl.col("family") == "fam-a") & (pl.col("task") == "mrpc")).row(0, named=True)
    assert mrpc["score"] == pytest.approx(0.80)
    assert mrpc["chance"] == pytest.approx(0.5)


def test_runtime_tables_and_speedup(report_dir):
    mask = pl.read_csv(report_dir / "table2_mask_runtime.csv")
    assert mask.columns == ["task", "fam-a", "fam-b"]
    assert mask["task"].to_list() == ["sst2", "mrpc", "rte", "Mean"]  # the paper's order
    mean = mask.filter(pl.col("task") == "Mean").row(0, named=True)
    assert mean["fam-a"] == pytest.approx(0.2) and mean["fam-b"] == pytest.approx(0.6)
    full = pl.read_csv(report_dir / "table3_full_runtime.csv")
    assert full.filter(pl.col("task") == "Mean")["fam-b"][0] == pytest.approx(30.0)
    speedup = pl.read_csv(report_dir / "runtime_speedup.csv")
    by_family = dict(zip(speedup["family"], speedup["speedup"]))
    assert by_family["fam-a"] == pytest.approx(100.0) and by_family["fam-b"] == pytest.approx(50.0)
    assert set(speedup["n"]) == {8}
    md = (report_dir / "table2_mask_runtime.md").read_text()
    assert "| Mean   |" in md and "0.200" in md and "0.600" in md
    assert "100.0x" in (report_dir / "runtime_speedup.md").read_text()


def test_flops_table(report_dir):
    table = pl.read_csv(report_dir / "table4_flops.csv")
    mask = table.filter(pl.col("method") == "mask")
    assert mask["task"].to_list() == ["sst2", "mrpc", "rte", "Mean"]
    assert mask.filter(pl.col("task") == "sst2")["fam-a"][0] == pytest.approx(1234.5)
    assert mask.filter(pl.col("task") == "Mean")["fam-a"][0] == pytest.approx(1238.5 / 3)
    assert table.filter(pl.col("method") == "full")["fam-a"].null_count() == 4  # no FLOPs recorded
    md = (report_dir / "table4_flops.md").read_text()
    assert "1,234.50" in md and "412.83" in md


def test_summary_and_warnings(report_dir):
    summary = (report_dir / "summary.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Table 4", "Speed-up", "Warnings"):
        assert f"## {heading}" in summary
    assert (report_dir / "table1_scores.md").read_text() in summary
    for heading in ("What the data shows", "Paired comparisons", "Spread across seeds"):
        assert f"## {heading}" in summary
    # fam-a's mask n = 8 is 4.0 above averaging on all 6 cells: the exact two-sided
    # Wilcoxon p of 6 equal positive differences is 2 / 2**6
    assert ("Ours (mask), n = 8: median 94.3 % of fine-tuned" in summary
            and "above averaging in 6 of 6 paired scores (below in 0), median difference +4.0 "
            "points" in summary and "Wilcoxon p = 0.031: significantly above it at 0.05" in summary)
    assert "One run (one seed) per cell" in summary
    page = (report_dir / "table1.html").read_text()  # what the HTML report shows inline
    assert page.count("<table>") == 2 and "94.3 [" in page and "Wilcoxon p = 0.031" in page
    assert re.search(r"<td>Ours \(mask\), n = 8 *</td>", page)
    assert (report_dir / "warnings.md").read_text().strip().endswith("No warnings.")


def test_report_writes_exactly_the_files_paths_names(report_dir):
    """The report rule's outputs are these names (rules/report.smk reads the same table)."""
    expected = {paths.table_file(t, fmt) for t in paths.REPORT_TABLES for fmt in paths.TABLE_FORMATS}
    assert {p.name for p in report_dir.iterdir()} == expected | set(paths.REPORT_FILES.values())


def test_runtime_n_choice(grid, tmp_path):
    assert cli.main(report_args(grid, tmp_path, "--runtime-n", "16")) == 0
    mask = pl.read_csv(tmp_path / "table2_mask_runtime.csv")
    assert mask.filter(pl.col("task") == "Mean")["fam-a"][0] == pytest.approx(0.4)
    assert cli.main(report_args(grid, tmp_path, "--runtime-n", "32")) == 2


def test_missing_metric_is_an_error(grid, tmp_path, capsys):
    assert cli.main(report_args(grid, tmp_path, "--task-metric", "rte=f1")) == 2
    err = capsys.readouterr().err
    assert "no metric 'f1'" in err and "metrics present: accuracy" in err and ".json" in err


def test_missing_finetuned_is_an_error(grid, tmp_path, capsys):
    root, evals, fishers = grid
    kept = [e for e in evals if "ft-fam-b-rte" not in e]
    assert cli.main(["report", "--evals", *kept, "--out-dir", str(tmp_path)]) == 2
    assert "fam-b/rte" in capsys.readouterr().err


def near_chance_grid(grid, tmp_path, accuracy, **extra):
    """The grid with fam-b's rte fine-tuned model replaced by one at ``accuracy``."""
    root, evals, _ = grid
    bad = write_eval(tmp_path / "ft-fam-b-rte.json", "fam-b", "rte", "finetuned",
                     {"accuracy": accuracy}, **extra)
    listing = tmp_path / "evals.txt"
    listing.write_text("\n".join(e if "ft-fam-b-rte" not in e else bad for e in evals))
    return ["report", "--evals-from", str(listing), "--out-dir", str(tmp_path / "out"),
            "--task-metric", "mrpc=f1"]


def test_near_chance_is_an_error(grid, tmp_path, capsys):
    args = near_chance_grid(grid, tmp_path, accuracy=0.53)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "fam-b/rte" in err and "label_map" in err and "fam-b/finetuned-rte" in err
    # both causes and their fixes: train longer, or fix the label order; or accept it
    assert "did not learn" in err and "`finetune` section" in err and "`lr`" in err
    assert "report.accept_near_chance" in err and "--accept-near-chance" in err
    assert not (tmp_path / "out" / "summary.md").exists()


def test_below_chance_is_an_error(grid, tmp_path, capsys):
    """Swapped binary labels score far below chance: caught as well."""
    assert cli.main(near_chance_grid(grid, tmp_path, accuracy=0.12)) == 2
    assert "label_map" in capsys.readouterr().err


def test_majority_rate_raises_the_baseline(grid, tmp_path, capsys):
    args = near_chance_grid(grid, tmp_path, accuracy=0.68)
    assert cli.main(args) == 0  # 1/2 + 0.05 < 0.68
    path = tmp_path / "ft-fam-b-rte.json"
    data = json.loads(path.read_text())
    data["label_counts"] = [66, 34]  # majority class 0.66
    path.write_text(json.dumps(data))
    assert cli.main(args) == 2
    assert "chance (0.660)" in capsys.readouterr().err


def test_near_chance_accepted_is_a_warning(grid, tmp_path):
    args = near_chance_grid(grid, tmp_path, accuracy=0.53)
    assert cli.main(args + ["--accept-near-chance", "fam-b:rte"]) == 0
    warnings = (tmp_path / "out" / "warnings.md").read_text()
    assert "fam-b/rte" in warnings and "accepted" in warnings
    assert "fam-b/rte" in (tmp_path / "out" / "summary.md").read_text()
    assert cli.main(args + ["--accept-near-chance", "fam-b-rte"]) == 2  # malformed


def test_plots(grid, report_dir, tmp_path):
    root, _, fishers = grid
    args = ["plots", "--evals-from", str(root / "evals.txt"), "--fishers", *fishers,
            "--task-metric", "mrpc=f1"]
    assert cli.main(args + ["--out-dir", str(tmp_path / "a"), "--heatmap-n", "16"]) == 0
    names = ["scores_vs_n.png", "interference.png", "pair_heatmap.png", "runtime.png",
             "mask_fisher_layers_fam-a.png", "mask_fisher_layers_fam-b.png",
             "paired_fam-a.png", "paired_fam-b.png"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(names)
    per_family = {k for k, name in paths.PLOT_FILES.items() if "{family}" in name}
    assert sorted(names) == sorted(
        [paths.plot_file(k) for k in paths.PLOT_FILES if k not in per_family]
        + [paths.plot_file(k, f) for k in per_family for f in FAMILIES])
    for name in names:
        data = (tmp_path / "a" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    # Deterministic: the same figure drawn again (from the report's scores) has the same bytes.
    import matplotlib.pyplot as plt

    scores = pl.read_csv(report_dir / "scores_long.csv")
    with matplotlib.rc_context(plots.RC):
        plots.plot_scores_vs_n(plt, scores, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "a" / "scores_vs_n.png").read_bytes()
    assert cli.main(args + ["--out-dir", str(tmp_path / "c"), "--layers-n", "5"]) == 2
    assert cli.main(args + ["--out-dir", str(tmp_path / "c"), "--heatmap-n", "5"]) == 2


def test_undefined_metric(tmp_path):
    """An undefined (null) merged metric counts as 0 and is named in the warnings."""
    evals = [
        write_eval(tmp_path / "ft-cola.json", "fam", "cola", "finetuned",
                   {"matthews": 0.8, "accuracy": 0.9}),
        write_eval(tmp_path / "ft-rte.json", "fam", "rte", "finetuned", {"accuracy": 0.7}),
    ]
    for method, n, cola in (("average", None, 0.4), ("mask", 8, None)):
        ctx = {"method": method, "subset": "cola+rte", "n": n}
        evals.append(write_eval(tmp_path / f"{method}-cola.json", "fam", "cola", "merged",
                                {"matthews": cola}, **ctx))
        evals.append(write_eval(tmp_path / f"{method}-rte.json", "fam", "rte", "merged",
                                {"accuracy": 0.63}, **ctx))
    out = tmp_path / "out"
    assert cli.main(["report", "--evals", *evals, "--task-metric", "cola=matthews",
                     "--out-dir", str(out)]) == 0
    table = pl.read_csv(out / "table1_scores.csv")
    assert table.filter(pl.col("method") == "average")["median_normalised"][0] == pytest.approx(70.0)
    assert table.filter(pl.col("method") == "mask")["median_normalised"][0] == pytest.approx(45.0)
    assert "mask-cola.json" in (out / "warnings.md").read_text()
    assert "_No data._" in (out / "table2_mask_runtime.md").read_text()


def test_fewer_than_two_labels_is_an_error(tmp_path, capsys):
    """Every task is a classification: num_labels 1 (a regression head) is an error."""
    path = write_eval(tmp_path / "ft-stsb.json", "fam", "stsb", "finetuned", {"accuracy": 0.8},
                      num_labels=1)
    assert cli.main(["report", "--evals", path, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ft-stsb.json" in err and "num_labels is 1" in err


def test_metrics_are_the_engines(tmp_path, capsys):
    """--task-metric and --default-metric take only the metrics evaluate records."""
    path = write_eval(tmp_path / "ft-cola.json", "fam", "cola", "finetuned", {"accuracy": 0.8})
    args = ["report", "--evals", path, "--out-dir", str(tmp_path / "out")]
    assert cli.main(args + ["--task-metric", "cola=mcc"]) == 2
    assert "unknown metric 'mcc' (known: accuracy, f1, macro_f1, matthews, loss)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(args + ["--default-metric", "pearson"])
    assert exit_.value.code == 2 and "invalid choice: 'pearson'" in capsys.readouterr().err


def cola_args(tmp_path, **extra):
    """CoLA-like family: a fine-tuned cola model at accuracy 0.70 (``extra``: its JSON's
    label counts), a good rte model and their average merge."""
    evals = [write_eval(tmp_path / "ft-cola.json", "fam", "cola", "finetuned",
                        {"accuracy": 0.70}, **extra),
             write_eval(tmp_path / "ft-rte.json", "fam", "rte", "finetuned", {"accuracy": 0.8})]
    for task in ("cola", "rte"):
        evals.append(write_eval(tmp_path / f"average-{task}.json", "fam", task, "merged",
                                {"accuracy": 0.6}, method="average", subset="cola+rte", n=None))
    return ["report", "--evals", *evals, "--out-dir", str(tmp_path / "out")]


def test_majority_class_predictor_is_near_chance(tmp_path, capsys):
    """70 % of the validation labels are 1: a model that always predicts 1 scores 0.70, well
    above 1/2 + margin (it passed before label counts), but it is at the majority-class rate."""
    assert cli.main(cola_args(tmp_path, label_counts=[30, 70])) == 2
    err = capsys.readouterr().err
    assert "fam/cola" in err and "chance (0.700)" in err and "label_map" in err


def test_missing_label_counts_fall_back_to_one_over_k(tmp_path):
    """An evaluation from an older ``evaluate`` (no label counts): chance 1/K and a warning."""
    assert cli.main(cola_args(tmp_path, label_counts=None)) == 0
    warnings = (tmp_path / "out" / "warnings.md").read_text()
    assert "ft-cola.json records no label counts; chance taken as 1/2" in warnings
    assert "ft-rte.json" not in warnings
    finetuned = pl.read_csv(tmp_path / "out" / "finetuned.csv")
    assert finetuned.filter(pl.col("task") == "cola")["chance"][0] == pytest.approx(0.5)


@pytest.mark.parametrize("counts", [[70], [30, -70], [0, 0], "30,70"])
def test_malformed_label_counts_are_an_error(tmp_path, capsys, counts):
    assert cli.main(cola_args(tmp_path, label_counts=counts)) == 2
    err = capsys.readouterr().err
    assert "ft-cola.json" in err and "label_counts" in err


def variant_evals(root, n=8):
    """One family, rte+sst2 merged by every registry variant (at n where it takes one)."""
    evals = [write_eval(root / f"ft-{task}.json", "fam", task, "finetuned", {"accuracy": 0.8})
             for task in ("rte", "sst2")]
    for variant in all_variants():
        for task in ("rte", "sst2"):
            evals.append(write_eval(root / f"{variant.key}-{task}.json", "fam", task, "merged",
                                    {"accuracy": 0.6}, method=variant.key, subset="rte+sst2",
                                    n=n if variant.per_n else None))
    return evals


def all_variants():
    """Every registry variant; lambda methods at their default lambda (DARE: 0.3 and 1.0,
    so one method shows two lambda columns)."""
    out = []
    for v in registry.ALL_VARIANTS.values():
        if not v.method.takes_lambda:
            out.append(v)
        else:
            lams = [v.method.default_lambda] if v.method.default_lambda else [0.3, 1.0]
            out.extend(v.with_lambda(lam) for lam in lams)
    return out


def table1_header(path):
    return [c.strip() for c in path.read_text().splitlines()[0].strip("|").split("|")]


def test_methods_and_labels_come_from_the_registry(tmp_path, monkeypatch):
    """Table 1's columns: every registry variant, in registry order, under its label."""
    evals = variant_evals(tmp_path)
    write_report(load_inputs(evals, []), tmp_path / "out")
    variants = all_variants()
    # registry order, lambdas ascending
    expected = ["Model"] + [v.label + (", n = 8" if v.per_n else "") for v in variants]
    assert table1_header(tmp_path / "out" / "table1_scores.md") == expected
    assert "DARE (λ = 0.3)" in expected and "DARE (λ = 1)" in expected
    methods = pl.read_csv(tmp_path / "out" / "table1_scores.csv")["method"].to_list()
    assert methods == [v.key for v in variants]
    # a relabelled registry entry is what the report shows: no copy of the labels
    mask = registry.ALL_VARIANTS["mask"]
    renamed = dataclasses.replace(mask, method=dataclasses.replace(mask.method, label="Renamed"))
    monkeypatch.setitem(registry.ALL_VARIANTS, "mask", renamed)
    write_report(load_inputs(evals, []), tmp_path / "again")
    assert "Renamed, n = 8" in table1_header(tmp_path / "again" / "table1_scores.md")


def test_unknown_merge_method_names_the_known_ones(tmp_path):
    evals = variant_evals(tmp_path)
    bad = write_eval(tmp_path / "nope-rte.json", "fam", "rte", "merged", {"accuracy": 0.6},
                     method="nope", subset="rte+sst2", n=None)
    with pytest.raises(UserError) as caught:
        load_inputs(evals + [bad], [])
    assert "nope-rte.json" in str(caught.value)
    assert ", ".join(registry.ALL_VARIANTS) in str(caught.value)


def test_missing_evaluation_file(tmp_path, capsys):
    with pytest.raises(MissingFileError):
        load_inputs([tmp_path / "absent.json"], [])
    assert cli.main(["report", "--evals", str(tmp_path / "absent.json"),
                     "--out-dir", str(tmp_path / "out")]) == 2
    assert "absent.json does not exist" in capsys.readouterr().err


def write_lm_eval(path, task, kind, loss, **context):
    """A causal-LM evaluation JSON as ``evaluate --objective causal-lm`` writes it."""
    data = {"task": task, "model": f"lm/{kind}-{task}", "objective": "causal-lm",
            "n_examples": 50, "n_tokens": 900, "dropped_examples": 0,
            "metrics": {"loss": loss, "perplexity": math.exp(loss)}, "seconds": 1.0,
            "device": "cpu", "context": {"family": "lm", "kind": kind, "task": task, **context}}
    path.write_text(json.dumps(data))
    return str(path)


def lm_grid(root, finetuned_loss=None):
    """A causal-LM family: base loss 4, fine-tuned 2 (or ``finetuned_loss``), merges of the
    pair at 3 (average: half the gain kept) and 2.5 (mask: three quarters)."""
    evals = []
    for task in ("news", "tweets"):
        evals.append(write_lm_eval(root / f"base-{task}.json", task, "base", 4.0))
        evals.append(write_lm_eval(root / f"ft-{task}.json", task, "finetuned",
                                   finetuned_loss or 2.0))
        for method, loss in (("average", 3.0), ("mask", 2.5)):
            evals.append(write_lm_eval(root / f"m-{method}-{task}.json", task, "merged", loss,
                                       method=method, subset="news+tweets",
                                       **({"n": 8} if method == "mask" else {})))
    (root / "evals.txt").write_text("\n".join(evals) + "\n")
    return root / "evals.txt"


def test_a_causal_lm_family_scores_the_share_of_the_gain_kept(tmp_path):
    """Table 1 of a causal-LM family is (L_base - L_merged) / (L_base - L_ft) x 100, and the
    report says so: its definition and its findings speak of the fine-tuning gain, never of
    a merged / fine-tuned ratio."""
    evals = lm_grid(tmp_path)
    out = tmp_path / "report"
    assert cli.main(["report", "--evals-from", str(evals), "--out-dir", str(out)]) == 0
    table = {r["method"]: float(r["median_normalised"])
             for r in csv.DictReader((out / "table1_scores.csv").open())}
    assert table == {"average": pytest.approx(50.0), "mask": pytest.approx(75.0)}
    summary = (out / "summary.md").read_text()
    assert "(L_base - L_merged) / (L_base - L_ft) x 100" in summary
    assert "median 75.0 % of the fine-tuning gain" in summary
    assert "merged / fine-tuned" not in summary and "% of fine-tuned" not in summary
    assert "(L_base - L_merged)" in (out / "table1.html").read_text()


def test_a_causal_lm_fine_tune_without_gain_is_an_error(tmp_path, capsys):
    evals = lm_grid(tmp_path, finetuned_loss=4.5)  # worse than the base
    assert cli.main(["report", "--evals-from", str(evals), "--out-dir",
                     str(tmp_path / "report")]) != 0
    assert "no fine-tuning gain for a merge to keep" in capsys.readouterr().err
