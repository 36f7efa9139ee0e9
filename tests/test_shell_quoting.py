"""No shell from data (issue #23): every path a rule puts on a shell line is quoted.

A config whose checkpoint, base and task-file paths hold spaces, quotes, ``;``, ``|``,
``&``, ``$()``, backticks, ``#`` and non-ASCII letters passes the config check; every job
of its dry run (``-p``) splits (``shlex``) into exactly the intended arguments, parsed by
the command's own parser; and one-job runs with those paths succeed without running any of
the commands the paths spell (a folder named ``ckpt||touch PWNED;#`` ran ``touch``).
"""

from __future__ import annotations

import random
import shlex
from pathlib import Path

import pytest
import yaml
from test_workflow_e2e import SNAKEMAKE, snakemake, toy_task_rows, write_csv

from workflow_scripts import cli
from workflow_scripts.config import check_config
from workflow_scripts.testing import make_tiny_checkpoint

pytestmark = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")

ODD = "odd ;|& $(touch PWNED) `touch PWNED` 'q' \"dq\" #é中"
CHECKPOINT = "ckpt||touch PWNED;#"


@pytest.fixture(scope="module")
def odd_work(tmp_path_factory):
    """A workflow folder (itself oddly named) whose config names odd paths: a relative local
    checkpoint, an absolute base, local task files."""
    work = tmp_path_factory.mktemp("quoting") / f"work {ODD}"
    data = work / f"data {ODD}"
    data.mkdir(parents=True)
    rng = random.Random(0)
    write_csv(data / f"topic train {ODD}.csv", toy_task_rows("topic", 80, rng))
    write_csv(data / "topic valid.csv", toy_task_rows("topic", 24, rng))
    write_csv(data / f"pair 'train'.tsv", toy_task_rows("pair", 80, rng), "\t")
    write_csv(data / "pair valid.tsv", toy_task_rows("pair", 24, rng), "\t")
    base = make_tiny_checkpoint(work / f"base {ODD}", "bert", with_head=False, hidden=32,
                                heads=4, intermediate=48)
    make_tiny_checkpoint(work / CHECKPOINT, "bert", num_labels=3, hidden=32, heads=4,
                         intermediate=48)
    config = {
        "tasks": {
            "topic": {"source": "local", "train_file": f"data {ODD}/topic train {ODD}.csv",
                      "validation_file": f"data {ODD}/topic valid.csv",
                      "column_map": {"text_a": "text", "label": "category"},
                      "label_names": ["business", "sport", "arts"]},
            "pair": {"source": "local", "train_file": f"data {ODD}/pair 'train'.tsv",
                     "validation_file": f"data {ODD}/pair valid.tsv",
                     "column_map": {"text_a": "first", "text_b": "second", "label": "same"}},
        },
        "families": {"tiny": {"base": str(base), "checkpoints": {
            "topic": {"source": CHECKPOINT}, "pair": {"finetune": True}}}},
        "fisher": {"n": [8], "batch_size": 4, "max_length": 32},
        "merge": {"methods": ["average", "fisher", "mask", "ties", "regmean", "task-arithmetic"],
                  "task_arithmetic_lambda": [0.3, 1.0], "subset_sizes": [2],
                  "keep_merged": True},
        "selection": {"holdout_fraction": 0.25},
        "finetune": {"max_steps": 2, "batch_size": 8, "max_length": 32},
        "evaluation": {"batch_size": 8, "max_length": 32},
        "compute": {"device": "cpu", "gpu": 0, "threads": 1},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return work, config


def shell_lines(output: str) -> list[str]:
    return [line.split("Shell command: ", 1)[1] for line in output.splitlines()
            if line.startswith("Shell command: ") and line.strip() != "Shell command: None"]


def test_the_config_check_accepts_odd_legal_paths(odd_work, monkeypatch):
    work, config = odd_work
    monkeypatch.chdir(work)
    check_config(yaml.safe_load((work / "config.yaml").read_text()), base_dir=".")


def test_every_job_of_a_dry_run_gets_exactly_its_arguments(odd_work):
    work, config = odd_work
    proc = snakemake(work, "-n", "-p")
    commands = shell_lines(proc.stdout + proc.stderr)
    odd_values = {config["families"]["tiny"]["base"], CHECKPOINT,
                  *(config["tasks"][t][k] for t in ("topic", "pair")
                    for k in ("train_file", "validation_file"))}
    seen_rules = set()
    for command in commands:
        words = shlex.split(command)
        operators = [w for w in shlex.shlex(command, posix=True, punctuation_chars=True)
                     if w and set(w) <= set("();<>|&")]
        assert operators == [">", ">&"], command  # only the log redirection: `> LOG 2>&1`
        assert words[:3] == ["python", "-m", "workflow_scripts"] and words[-3] == ">" \
            and words[-1] == "2>&1", command
        argv = words[3:-3]
        args = cli.build_parser(argv[0]).parse_args(argv)
        seen_rules.add(argv[0])
        for word in words:  # an odd path is only ever one whole argument
            if "PWNED" in word or ODD in word:
                assert word in odd_values, (word, command)
        if argv[0] == "fetch-model":
            assert args.source in (config["families"]["tiny"]["base"], CHECKPOINT)
        if argv[0] == "prepare-task":
            spec = config["tasks"][args.task]
            assert (args.train_file, args.validation_file) == (spec["train_file"],
                                                               spec["validation_file"])
        if argv[0] == "merge":
            assert sorted(args.models) == ["resources/models/tiny/topic",
                                           "results/finetuned/tiny/ft0/pair"]
            assert all(p.startswith("results/") for p in (args.fishers or args.grams or []))
            assert args.holdout_data and args.out.startswith("results/merged/")
            if args.method in ("ties", "task-arithmetic"):
                assert args.base == "resources/base_models/tiny"
    assert {"fetch-model", "prepare-task", "finetune", "fisher", "gram", "merge", "evaluate",
            "sample", "select", "report", "plots"} <= seen_rules


def test_one_job_runs_with_odd_paths_succeed_and_run_nothing_else(odd_work):
    work, _ = odd_work
    targets = ["resources/models/tiny/topic", "resources/base_models/tiny",
               "resources/tasks/topic/train.parquet", "resources/tasks/pair/train.parquet"]
    snakemake(work, *targets)
    assert (work / "resources/models/tiny/topic/model.safetensors").is_file()
    assert (work / "resources/base_models/tiny/model.safetensors").is_file()
    for task in ("topic", "pair"):
        assert (work / f"resources/tasks/{task}/info.json").is_file()
    snakemake(work, *targets, "--forcerun", "fetch_model", "prepare_task")  # over their outputs
    assert not list(work.parent.rglob("PWNED")) and not Path("PWNED").exists()
