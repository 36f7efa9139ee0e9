"""Held-out selection: the choice of each merge's candidate is made from held-out
evaluations alone (never a validation score), ties go to the first listed, and the report
shows the chosen candidate as its own column; the plan's candidates and their merge ids."""

from __future__ import annotations

import copy
import json
import re
import shutil

import polars as pl
import pytest

from workflow_scripts import cli
from workflow_scripts.config import check_config
from workflow_scripts.errors import ConfigError, UserError
from workflow_scripts.merging import registry
from workflow_scripts.plan import Plan
from workflow_scripts.reporting import selection
from workflow_scripts.reporting.inputs import load_inputs
from workflow_scripts.reporting.selection import choose, with_selection

TASKS = ("rte", "sst2", "mrpc")
SUBSETS = ("mrpc+rte", "rte+sst2", "mrpc+rte+sst2")
FINETUNED = {"rte": 0.8, "sst2": 0.9, "mrpc": 0.8}  # every split, every metric
# candidate lambda -> merged / fine-tuned on (holdout, validation): lambda 0.3 wins on the
# held-out rows, lambda 1 would win on the validation split
RATIOS = {0.3: (0.9, 0.6), 1.0: (0.7, 0.95)}


def write_eval(path, task, kind, score, split=None, **context):
    ctx = {"family": "fam", "replicate": "ft0", "kind": kind, "task": task, **context}
    if split:
        ctx["split"] = split
    data = {"task": task, "model": f"{kind}-{task}", "n_examples": 50, "num_labels": 2,
            "label_counts": [25, 25], "metrics": {"accuracy": score, "f1": score},
            "context": ctx}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def grid(root, ratios=RATIOS):
    """Fine-tuned and merged evaluations on both splits; the candidates listed lambda 0.3
    first. Returns {split: [paths]} with each candidate's files under its merge key."""
    files = {"holdout": [], "validation": []}
    for split in files:
        flag = "holdout" if split == "holdout" else None
        for task in TASKS:
            files[split].append(write_eval(root / split / "ft" / f"{task}.json", task,
                                           "finetuned", FINETUNED[task], flag))
        for subset in SUBSETS:
            for task in subset.split("+"):
                files[split].append(write_eval(
                    root / split / subset / "average" / f"{task}.json", task, "merged",
                    FINETUNED[task] * 0.75, flag, method="average", subset=subset))
            for lam, (on_holdout, on_validation) in ratios.items():
                key = registry.variant("task-arithmetic-lam1").with_lambda(lam).key
                ratio = on_holdout if split == "holdout" else on_validation
                for task in subset.split("+"):
                    files[split].append(write_eval(
                        root / split / subset / key / f"{task}.json", task, "merged",
                        FINETUNED[task] * ratio, flag, method=key, subset=subset))
    return files


def candidates_only(paths):
    return [p for p in paths if "task-arithmetic" in str(p) or "/ft/" in str(p)]


def test_the_choice_is_the_best_mean_held_out_score_and_a_tie_goes_to_the_first_listed():
    rows = []
    for key, scores in (("ties-lam0.5", (80.0, 90.0)), ("ties-lam1", (95.0, 75.0)),
                        ("ties-lam2", (70.0, 60.0))):
        for task, score in zip(("a", "b"), scores):
            rows.append({"family": "f", "replicate": "ft0", "subset": "a+b", "n": None,
                         "seed": None, "method": key, "task": task, "normalised": score})
    scores = pl.DataFrame(rows, schema_overrides={"n": pl.Int64, "seed": pl.Int64})
    chosen = choose(scores)
    assert chosen.columns[:9] == ["family", "replicate", "subset", "seed", "method", "setting",
                                  "value", "holdout_score", "selected"]
    assert chosen["candidate"].to_list() == ["ties-lam0.5", "ties-lam1", "ties-lam2"]
    assert chosen["holdout_score"].to_list() == [85.0, 85.0, 65.0]  # a tie of the first two
    assert chosen["selected"].to_list() == [True, False, False]  # the first listed wins it
    assert set(chosen["method"]) == {"ties"} and set(chosen["setting"]) == {"lambda"}
    assert chosen["value"].to_list() == ["0.5", "1", "2"]
    reordered = pl.concat([scores.filter(pl.col("method") == "ties-lam1"),
                           scores.filter(pl.col("method") != "ties-lam1")])
    assert choose(reordered).filter(pl.col("selected"))["candidate"].to_list() == ["ties-lam1"]
    better = scores.with_columns(normalised=pl.when(pl.col("method") == "ties-lam1")
                                 .then(pl.col("normalised") + 0.01).otherwise("normalised"))
    assert choose(better).filter(pl.col("selected"))["candidate"].to_list() == ["ties-lam1"]
    with pytest.raises(UserError, match="ties-lam2 .* has 1 held-out scores on 1 tasks"):
        choose(scores.filter(~((pl.col("method") == "ties-lam2") & (pl.col("task") == "b"))))


def test_two_settings_listed_make_a_grid_whose_varied_settings_are_named():
    rows = [{"family": "f", "replicate": "ft0", "subset": "a+b", "n": 8, "seed": 0,
             "method": key, "task": t, "normalised": s}
            for key, s in (("ties-lam1-k10", 50.0), ("ties-lam1-k20", 60.0),
                           ("ties-lam2-k10", 70.0), ("ties-lam2-k20", 55.0)) for t in ("a", "b")]
    chosen = choose(pl.DataFrame(rows))
    assert set(chosen["setting"]) == {"lambda, ties_k"}
    assert chosen.filter(pl.col("selected"))["value"].to_list() == ["2, 10"]


def test_select_reads_held_out_evaluations_only(tmp_path):
    files = grid(tmp_path)
    out = tmp_path / "selection.csv"
    assert cli.main(["select", "--evals", *map(str, candidates_only(files["holdout"])),
                     "--out", str(out)]) == 0
    chosen = pl.read_csv(out)
    assert chosen.height == 2 * len(SUBSETS)
    assert chosen.filter(pl.col("selected"))["value"].to_list() == [0.3] * len(SUBSETS)
    assert chosen.filter(pl.col("selected"))["holdout_score"].to_list() == pytest.approx(
        [90.0] * len(SUBSETS))
    # a validation evaluation among the inputs is refused, naming it
    validation_file = candidates_only(files["validation"])[-1]
    with pytest.raises(UserError, match=re.escape(f"{validation_file} is of the validation split")):
        selection.holdout_scores(candidates_only(files["holdout"]) + [validation_file])
    # ... and a held-out one is refused by the report
    with pytest.raises(UserError, match="is of the holdout split"):
        load_inputs(files["validation"] + [files["holdout"][-1]], [])


def test_validation_scores_of_other_candidates_change_nothing(tmp_path):
    """The choice is made before any validation score is read: making the non-chosen
    candidate perfect on the validation split, corrupting or removing its validation files,
    changes neither the choice nor the selected column's scores."""
    files = grid(tmp_path)
    holdout = [str(p) for p in candidates_only(files["holdout"])]
    out = tmp_path / "selection.csv"
    assert cli.main(["select", "--evals", *holdout, "--out", str(out)]) == 0
    first = out.read_bytes()

    def selected_column(paths):
        data = with_selection(load_inputs(paths, []), out)
        return data.scores.filter(pl.col("method") == "task-arithmetic-selected").sort(
            "subset", "task")["normalised"].to_list()

    reported = selected_column(files["validation"])
    assert reported == pytest.approx([60.0] * 7)  # lambda 0.3's validation scores
    others = [p for p in files["validation"] if "task-arithmetic-lam1" in str(p)]
    for path in others:  # lambda 1, not chosen: now perfect on the validation split
        data = json.loads(path.read_text())
        data["metrics"] = {"accuracy": 1.0, "f1": 1.0}
        path.write_text(json.dumps(data))
    assert selected_column(files["validation"]) == reported
    for path in others:  # corrupt: the select command never opens them
        path.write_text("{ not json")
    shutil.rmtree(tmp_path / "validation" / "mrpc+rte" / "task-arithmetic-lam1")
    assert cli.main(["select", "--evals", *holdout, "--out", str(out)]) == 0
    assert out.read_bytes() == first
    kept = [p for p in files["validation"] if p not in others]
    assert selected_column(kept) == reported
    # the chosen candidate's own validation scores are what the report needs
    chosen = [p for p in kept if "task-arithmetic-lam0.3" in str(p) and "rte+sst2" in str(p)]
    with pytest.raises(UserError, match=r"1 chosen candidate\(s\) lack a validation evaluation "
                                        r"on each task of their subset, e.g. "
                                        r"task-arithmetic-lam0.3 of fam/ft0/rte\+sst2 \(1 of 2\)"):
        selected_column([p for p in kept if p != chosen[0]])


def test_the_report_shows_the_selected_candidate_and_every_candidate_apart(tmp_path):
    files = grid(tmp_path)
    out = tmp_path / "selection.csv"
    assert cli.main(["select", "--evals", *map(str, candidates_only(files["holdout"])),
                     "--out", str(out)]) == 0
    (tmp_path / "evals.txt").write_text("".join(f"{p}\n" for p in files["validation"]))
    report = tmp_path / "report"
    assert cli.main(["report", "--evals-from", str(tmp_path / "evals.txt"), "--selection",
                     str(out), "--out-dir", str(report)]) == 0
    table1 = pl.read_csv(report / "table1_scores.csv")
    assert set(table1["method"]) == {"average", "task-arithmetic-selected"}
    assert sorted(set(table1["subset_size"])) == [2, 3]
    selected = table1.filter(pl.col("method") == "task-arithmetic-selected")
    assert selected["median_normalised"].to_list() == pytest.approx([60.0, 60.0])
    md = (report / "table1_scores.md").read_text()
    assert "Task arithmetic (selected)" in md and "λ" not in md and "Tasks merged" in md
    supplementary = pl.read_csv(report / "table1_candidates.csv")
    assert set(supplementary["method"]) == {"average", "task-arithmetic-lam0.3",
                                            "task-arithmetic-lam1"}
    assert "Task arithmetic (λ = 1)" in (report / "table1_candidates.md").read_text()
    paired = pl.read_csv(report / "paired_comparisons.csv")
    assert set(paired["method"]) == {"task-arithmetic-selected"}
    assert sorted(set(paired["subset_size"])) == [2, 3]
    summary = (report / "summary.md").read_text()
    assert "## Held-out selection" in summary and "| lambda" in summary and "2 of 2" in summary
    assert "**fam, 3 tasks merged**" in summary and "## Metric per task" in summary
    # a candidate the selection does not list is an error, not a silent column
    stale = pl.read_csv(out).filter(pl.col("subset") != "rte+sst2")
    stale.write_csv(tmp_path / "stale.csv")
    with pytest.raises(UserError, match="does not list; rerun select"):
        with_selection(load_inputs(files["validation"], []), tmp_path / "stale.csv")


def test_plots_draw_the_interference_curve(tmp_path):
    files = grid(tmp_path)
    out = tmp_path / "selection.csv"
    assert cli.main(["select", "--evals", *map(str, candidates_only(files["holdout"])),
                     "--out", str(out)]) == 0
    plots = tmp_path / "plots"
    assert cli.main(["plots", "--evals", *map(str, files["validation"]), "--selection", str(out),
                     "--out-dir", str(plots)]) == 0
    assert (plots / "interference.png").read_bytes().startswith(b"\x89PNG")


@pytest.fixture
def config(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    return {
        "tasks": {"a": {"source": "builtin", "name": "sentiment"},
                  "b": {"source": "glue", "name": "mrpc"}, "c": {"source": "builtin", "name": "topic"}},
        "families": {"fam": {"base": str(base), "checkpoints": {
            t: {"finetune": True} for t in "abc"}}},
        "fisher": {"n": [8]},
        "merge": {"methods": ["average", "mask", "task-arithmetic", "ties", "dare", "regmean"],
                  "subset_sizes": [2, 3]},
    }


def ids(plan, subset="a+b"):
    return [m.merge_id for m in plan.merges() if m.subset_id == subset]


def test_listed_settings_give_candidates_and_single_values_keep_their_ids(config, tmp_path):
    plain = Plan(check_config(copy.deepcopy(config), base_dir=tmp_path))
    assert ids(plain) == ["average", "mask-n8-seed0", "task-arithmetic-lam0.3", "ties-lam1",
                          "dare-lam0.3", "regmean-n8-seed0"]
    assert plain.candidate_methods() == []
    one = copy.deepcopy(config)
    one["merge"].update(ties_k=[20], regmean_alpha=[0.9], floor=0.0)  # one value: no change
    one_plan = Plan(check_config(one, base_dir=tmp_path))
    assert ids(one_plan) == ids(plain)
    assert [one_plan.merge_flags(m) for m in one_plan.merges()] == [
        plain.merge_flags(m) for m in plain.merges()]
    many = copy.deepcopy(config)
    many["merge"].update(ties_lambda=[1.0, 0.5], ties_k=[20, 10], regmean_alpha=[0.9, 0.5],
                         dare_p=[0.9, 0.5], floor=[0.0, 1e-6])
    plan = Plan(check_config(many, base_dir=tmp_path))
    assert ids(plan) == [
        "average", "mask-floor0-n8-seed0", "mask-floor1e-06-n8-seed0", "task-arithmetic-lam0.3",
        "ties-lam1-k20", "ties-lam1-k10", "ties-lam0.5-k20", "ties-lam0.5-k10",
        "dare-lam0.3-p0.9", "dare-lam0.3-p0.5",  # DARE reads ties_k with TIES only
        "regmean-alpha0.9-n8-seed0", "regmean-alpha0.5-n8-seed0"]
    assert plan.candidate_methods() == ["mask", "ties", "dare", "regmean"]
    merges = {m.merge_id: m for m in plan.merges() if m.subset_id == "a+b"}
    assert "--lambda 0.5 --ties-k 10.0" in plan.merge_flags(merges["ties-lam0.5-k10"])
    dare = plan.merge_flags(merges["dare-lam0.3-p0.5"])
    assert "--dare-p 0.5" in dare and "--ties-k 20.0" in dare  # the first ties_k: not read
    assert "--floor 1e-06" in plan.merge_flags(merges["mask-floor1e-06-n8-seed0"])
    assert "--regmean-alpha 0.5" in plan.merge_flags(merges["regmean-alpha0.5-n8-seed0"])
    for merge_id in merges:  # the wildcard constraint and the parser agree with the plan
        variant, n, seed = registry.parse_merge_id(merge_id)
        assert variant.merge_id(n, seed) == merge_id
    assert not plan.candidate_merges()  # candidates, but selection is off
    many["selection"] = {"holdout_fraction": 0.1}
    plan = Plan(check_config(many, base_dir=tmp_path))
    candidates = plan.candidate_merges()
    assert {m.variant.method.name for m in candidates} == {"mask", "ties", "dare", "regmean"}
    listed = plan.holdout_paths()
    assert listed[:3] == [f"results/holdout/fam/ft0/finetuned/{t}.json" for t in "abc"]
    assert all(p.startswith("results/holdout/") for p in listed)  # no validation evaluation
    assert "results/holdout/fam/ft0/merged/a+b/ties-lam0.5-k10/b.json" in listed
    assert not any("/average/" in p for p in listed)
    assert "--selection results/report/selection.csv" in plan.report_flags()
    with pytest.raises(ConfigError, match=r"merge.ties_k"):
        check_config(copy.deepcopy(config) | {"merge": {"ties_k": [10, 10]}}, base_dir=tmp_path)


def test_each_task_is_scored_by_its_own_metric(config, tmp_path):
    config["tasks"].update(cola={"source": "glue"}, q={"source": "glue", "name": "qqp"},
                           r={"source": "glue", "name": "rte", "metric": "f1"})
    plan = Plan(check_config(copy.deepcopy(config), base_dir=tmp_path))
    assert plan.task_metrics() == {"a": "accuracy", "b": "f1", "c": "accuracy",
                                   "cola": "matthews", "q": "f1", "r": "f1"}
    assert plan.metric_flags() == ("--task-metric a=accuracy b=f1 c=accuracy cola=matthews "
                                   "q=f1 r=f1")
    overridden = copy.deepcopy(config)
    overridden["report"] = {"default_metric": "accuracy"}
    assert Plan(check_config(overridden, base_dir=tmp_path)).task_metrics() == {
        "a": "accuracy", "b": "accuracy", "c": "accuracy", "cola": "accuracy", "q": "accuracy",
        "r": "f1"}  # the task's own metric setting stays
    for task, spec, message in (
            ("c", {"source": "builtin", "name": "topic", "metric": "matthews"},
             r"tasks.c.metric: task 'c' is scored by matthews"),
            ("x", {"source": "glue", "name": "cola"}, r"tasks.x: task 'x' is scored by matthews"),
            ("b", {"source": "glue", "name": "mrpc", "metric": "macro_f1"}, r"tasks.b.metric")):
        bad = copy.deepcopy(config)
        bad["tasks"][task] = spec
        with pytest.raises(ConfigError, match=message):
            check_config(bad, base_dir=tmp_path)


def test_selection_plans_the_same_jobs_whatever_the_key_order(config, tmp_path):
    import random

    import yaml

    config["merge"].update(task_arithmetic_lambda=[1.0, 0.3], ties_k=[10, 20])
    config["selection"] = {"seed": 3, "max_holdout": 50, "holdout_fraction": 0.1}

    def planned(cfg):
        plan = Plan(check_config(cfg, base_dir=tmp_path))
        return ([plan.prepare_task_flags(t) for t in plan.tasks], plan.holdout_paths(),
                [plan.merge_flags(m) for m in plan.candidate_merges()], plan.report_flags(True))

    def shuffled(value, rng):
        if isinstance(value, dict):
            keys = list(value)
            rng.shuffle(keys)
            return {k: shuffled(value[k], rng) for k in keys}
        return value

    reference = planned(copy.deepcopy(config))
    assert "--holdout-fraction 0.1 --max-holdout 50 --holdout-seed 3" in reference[0][0]
    # the first listed value is the first candidate (ties go to it)
    assert reference[1].index("results/holdout/fam/ft0/merged/a+b/task-arithmetic-lam1/a.json") \
        < reference[1].index("results/holdout/fam/ft0/merged/a+b/task-arithmetic-lam0.3/a.json")
    for seed in range(3):
        assert planned(shuffled(copy.deepcopy(config), random.Random(seed))) == reference
    assert planned(yaml.safe_load(yaml.safe_dump(config, sort_keys=True))) == reference
