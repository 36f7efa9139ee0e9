"""The held-out selection split: seeded, stratified, moved out of the training rows, checked
at config time; prepare-task's command line and outputs unchanged without it."""

from __future__ import annotations

import copy
import csv
import json
import random
from collections import Counter

import pytest

from workflow_scripts import cli
from workflow_scripts.config import check_config
from workflow_scripts.data import Samples, read_samples
from workflow_scripts.errors import ConfigError, UserError
from workflow_scripts.plan import Plan
from workflow_scripts.settings import PrepareSettings, SettingError
from workflow_scripts.tasks import holdout
from workflow_scripts.tasks.prepare import prepare, prepare_task


def labelled(n: int, classes: int = 3) -> Samples:
    rng = random.Random(1)
    labels = [i % classes for i in range(n)]
    rng.shuffle(labels)
    return Samples(list(range(100, 100 + n)), [f"text {i}" for i in range(n)], [None] * n, labels)


def test_split_is_seeded_stratified_and_moves_rows():
    samples = labelled(300)
    kept, held = holdout.split_holdout(samples, 0.2, None, seed=0, task="t")
    assert len(held) == 60 and len(kept) == 240
    assert set(kept.idx).isdisjoint(held.idx) and set(kept.idx) | set(held.idx) == set(samples.idx)
    assert kept.idx == sorted(kept.idx) and held.idx == sorted(held.idx)  # file order kept
    assert Counter(held.label) == {0: 20, 1: 20, 2: 20}  # stratified: 1/3 of each class
    # a row keeps its text and label when it moves
    by_idx = dict(zip(samples.idx, zip(samples.text_a, samples.label)))
    assert all(by_idx[i] == (t, y) for i, t, y in zip(held.idx, held.text_a, held.label))
    again = holdout.split_holdout(samples, 0.2, None, seed=0, task="t")[1]
    other = holdout.split_holdout(samples, 0.2, None, seed=1, task="t")[1]
    assert again.idx == held.idx and other.idx != held.idx
    capped = holdout.split_holdout(samples, 0.2, 15, seed=0, task="t")[1]
    assert len(capped) == 15 == holdout.holdout_count(300, 0.2, 15)


def test_a_split_too_small_is_refused_with_the_task_named():
    assert holdout.too_small(100, 0.1) is None  # 10 held out, 90 left
    assert "9 held-out rows, fewer than 10" in holdout.too_small(90, 0.1)
    assert "leaves 5, fewer than 10" in holdout.too_small(50, 0.9)
    with pytest.raises(UserError, match=r"task tiny: 0.1 of its 40 training rows is 4 held-out"):
        holdout.split_holdout(labelled(40), 0.1, None, seed=0, task="tiny")
    one_of_a_class = Samples(list(range(60)), ["x"] * 60, [None] * 60, [0] * 59 + [1])
    with pytest.raises(UserError, match="task odd: cannot hold out 12 training rows stratified"):
        holdout.split_holdout(one_of_a_class, 0.2, None, seed=0, task="odd")


def test_holdout_settings_need_the_fraction():
    with pytest.raises(SettingError, match="--max-holdout need --holdout-fraction"):
        PrepareSettings(source="builtin", task="topic", max_holdout=5)
    with pytest.raises(SettingError, match="holdout_fraction"):
        PrepareSettings(source="builtin", task="topic", holdout_fraction=1.0)


def write_task_files(root, rows=200, classes=2):
    rng = random.Random(0)
    for split, n in (("train", rows), ("valid", 40)):
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in range(n):
                writer.writerow([f"{split} sentence {i} {rng.random():.6f}", i % classes])
    return {"source": "local", "train_file": str(root / "train.csv"),
            "validation_file": str(root / "valid.csv"),
            "column_map": {"text_a": "text", "label": "label"}}


def test_prepare_task_moves_the_held_out_rows_and_leaves_validation_alone(tmp_path):
    spec = write_task_files(tmp_path)
    base = ["prepare-task", "--source", "local", "--train-file", spec["train_file"],
            "--validation-file", spec["validation_file"], "--column-map", "text_a=text",
            "label=label", "--max-train", "150"]
    plain, split = tmp_path / "plain", tmp_path / "split"
    outs = {d: ["--out-train", str(d / "train.parquet"), "--out-validation",
                str(d / "validation.parquet"), "--out-info", str(d / "info.json")]
            for d in (plain, split)}
    assert cli.main(base + outs[plain]) == 0
    assert not (plain / "holdout.parquet").exists()
    assert cli.main(base + outs[split] + ["--holdout-fraction", "0.2", "--holdout-seed", "3",
                                          "--out-holdout", str(split / "holdout.parquet")]) == 0
    before = read_samples(plain / "train.parquet")
    train, held = read_samples(split / "train.parquet"), read_samples(split / "holdout.parquet")
    assert len(held) == 30 and len(train) == 120  # 20 % of the 150 capped training rows
    assert set(train.idx).isdisjoint(held.idx) and set(train.idx) | set(held.idx) == set(before.idx)
    valid = read_samples(split / "validation.parquet")
    assert valid == read_samples(plain / "validation.parquet")
    assert set(held.text_a).isdisjoint(valid.text_a) and set(held.text_a) <= set(before.text_a)
    info = json.loads((split / "info.json").read_text())
    assert info["sizes"] == {"train": 120, "validation": 40, "holdout": 30}
    assert info["holdout"] == {"fraction": 0.2, "max_rows": None, "seed": 3}
    assert sum(info["label_counts"]["holdout"]) == 30
    assert "holdout" not in json.loads((plain / "info.json").read_text())
    # the flags go together; prepare() (no held-out split) refuses to drop one silently
    assert cli.main(base + outs[split] + ["--holdout-fraction", "0.2"]) == 2
    with pytest.raises(UserError, match="call prepare_task"):
        prepare("local", settings=None, train_file=spec["train_file"],
                validation_file=spec["validation_file"], column_map=spec["column_map"],
                holdout_fraction=0.2)
    task = prepare_task("local", train_file=spec["train_file"],
                        validation_file=spec["validation_file"], column_map=spec["column_map"])
    assert task.holdout is None


@pytest.fixture
def config(tmp_path):
    spec = write_task_files(tmp_path)
    base = tmp_path / "base"
    base.mkdir()
    return {
        "tasks": {"small": spec, "rte": {"source": "glue"}, "cola": {"source": "glue"}},
        "families": {"fam": {"base": str(base), "checkpoints": {
            t: {"finetune": True} for t in ("small", "rte", "cola")}}},
        "merge": {"methods": ["average", "task-arithmetic"], "task_arithmetic_lambda": [0.3, 1.0]},
    }


def test_without_selection_prepare_task_keeps_its_command_line(config, tmp_path):
    plan = Plan(check_config(copy.deepcopy(config), base_dir=tmp_path))
    assert not plan.selection_on() and plan.candidate_merges() == []
    assert plan.prepare_task_flags("rte") == "--task rte --source glue"
    assert plan.holdout_outputs() == [] and "--selection" not in plan.report_flags()
    on = copy.deepcopy(config)
    on["selection"] = {"holdout_fraction": 0.1, "max_holdout": 500, "seed": 4}
    plan = Plan(check_config(on, base_dir=tmp_path))
    assert plan.prepare_task_flags("rte") == (
        "--task rte --source glue --holdout-fraction 0.1 --max-holdout 500 --holdout-seed 4")


def without(config, task):
    config["tasks"].pop(task)
    config["families"]["fam"]["checkpoints"].pop(task)


@pytest.mark.parametrize("selection, mutate, message", [
    ({"holdout_fraction": 0.02}, None,
     r"tasks.small: its training split is too small for held-out selection \(selection."
     r"holdout_fraction 0.02\): 0.02 of its 200 training rows is 4 held-out rows, fewer than 10"),
    ({"holdout_fraction": 0.003}, lambda c: without(c, "small"),
     r"tasks.rte: .*0.003 of its 2490 training rows is 7"),
    ({"holdout_fraction": 0.2}, lambda c: c["tasks"]["small"].update(max_train=20),
     r"tasks.small: .*of its 20 training rows is 4"),
    ({"holdout_fraction": 0.96}, None, r"tasks.small: .*192 of its 200 training rows leaves 8"),
    ({"max_holdout": 10}, None, r"selection.max_holdout: held-out selection is off"),
    ({"seed": 1}, None, r"selection.seed: held-out selection is off"),
])
def test_config_refuses_a_task_too_small_for_the_held_out_split(config, tmp_path, selection,
                                                                mutate, message):
    bad = copy.deepcopy(config)
    bad["selection"] = selection
    if mutate:
        mutate(bad)
    with pytest.raises(ConfigError, match=message):
        check_config(bad, base_dir=tmp_path)


def test_builtin_and_local_training_rows_are_counted(tmp_path):
    from workflow_scripts.tasks.registry import SOURCES

    spec = write_task_files(tmp_path, rows=37)
    assert SOURCES["local"].train_rows("small", spec, tmp_path) == 37
    assert SOURCES["glue"].train_rows("x", {"source": "glue", "name": "qqp"}, tmp_path) == 363_846
    rows = SOURCES["builtin"].train_rows("topic", {"source": "builtin"}, tmp_path)
    train, _, _ = prepare("builtin", "topic")
    assert rows == len(train)
