"""The commands never lose a user's files (issue #23): every refused command leaves the files
in and next to its inputs and outputs byte for byte as they were (:mod:`tree_bytes`), and a
rerun over a command's own earlier output still works."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from tree_bytes import assert_unchanged, snapshot

from workflow_scripts import cli
from workflow_scripts.testing import make_tiny_checkpoint, write_toy_samples


@pytest.fixture(scope="module")
def work(tmp_path_factory, one_thread):
    """Two tiny fine-tuned checkpoints in work/ckpts, samples, a mask Fisher of each."""
    root = tmp_path_factory.mktemp("safety")
    for name, seed in (("a", 0), ("b", 1)):
        make_tiny_checkpoint(root / "ckpts" / name, seed=seed)
    write_toy_samples(root / "samples.parquet", n=8)
    for name in ("a", "b"):
        assert cli.main(["fisher", "--method", "mask", "--model", str(root / "ckpts" / name),
                         "--data", str(root / "samples.parquet"), "--no-progress",
                         "--out", str(root / "fishers" / f"{name}.safetensors")]) == 0
    return root


@pytest.fixture
def space(work, tmp_path):
    """A fresh copy of the work folder per test (a refused command must leave it as it was)."""
    shutil.copytree(work, tmp_path / "w")
    return tmp_path / "w"


def merge(space: Path, *extra: str) -> list[str]:
    return ["merge", "--models", str(space / "ckpts" / "a"), str(space / "ckpts" / "b"),
            "--method", "average", *extra]


def refused(capsys, args: list[str], root: Path, *patterns: str) -> str:
    """Run a command that must be refused: exit 2 with one ``error:`` line matching every
    pattern, and nothing under ``root`` changed."""
    before = snapshot(root)
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for pattern in patterns:
        assert pattern in errors[0], errors[0]
    assert_unchanged(root, before)
    return errors[0]


def test_merge_out_holding_the_inputs_is_refused(space, capsys):
    """``merge --models ckpts/a ckpts/b --out ckpts`` replaced the fine-tuned models with the
    merged ones and deleted everything else in ckpts/."""
    (space / "ckpts" / "notes.txt").write_text("my notes")
    refused(capsys, merge(space, "--out", str(space / "ckpts")), space,
            f"--out {space / 'ckpts'} holds the input --models", "Choose an output path")


def test_merge_out_that_is_an_input_is_refused(space, capsys):
    """``merge ... --out ckpts/a`` deleted input model a (also through a link to it)."""
    refused(capsys, merge(space, "--out", str(space / "ckpts" / "a")), space,
            "is the input --models")
    (space / "link").symlink_to(space / "ckpts" / "a")
    refused(capsys, merge(space, "--out", str(space / "link")), space, "is the input --models")


def test_merge_out_that_is_someone_elses_folder_is_refused(space, capsys):
    (space / "mine").mkdir()
    (space / "mine" / "thesis.tex").write_text("chapter 1")
    refused(capsys, merge(space, "--out", str(space / "mine")), space,
            "already exists and is a folder holding 1 entries (thesis.tex)",
            "Move or delete it yourself, or choose another output path")


def test_fisher_out_that_is_a_folder_is_refused(space, capsys):
    """``fisher --out some_folder`` deleted the folder: a model, or a folder of Fisher
    artifacts."""
    fisher = ["fisher", "--method", "mask", "--model", str(space / "ckpts" / "a"), "--data",
              str(space / "samples.parquet"), "--no-progress", "--out"]
    refused(capsys, fisher + [str(space / "fishers")], space,
            f"--out {space / 'fishers'} already exists and is a folder holding 2 entries",
            "only a Fisher or Gram artifact")
    refused(capsys, fisher + [str(space / "ckpts" / "b")], space, "already exists and is a folder")
    refused(capsys, fisher + [str(space / "ckpts")], space, "holds the input --model")


def test_merge_eval_out_touches_nothing_else_in_its_folder(space, capsys):
    """``merge --eval-out scores`` deleted the other merges' JSON files in scores/."""
    scores = space / "scores"
    scores.mkdir()
    (scores / "other-merge.json").write_text('{"task": "x", "metrics": {"accuracy": 0.5}}\n')
    (scores / "README.txt").write_text("what these are")
    others = snapshot(scores)
    data = [str(space / "samples.parquet")] * 2
    assert cli.main(merge(space, "--eval-data", *data, "--eval-out", str(scores),
                          "--no-progress")) == 0
    after = snapshot(scores)
    assert {k: after[k] for k in others} == others
    assert set(after) - set(others) == {"a.json", "b.json"}
    assert json.loads((scores / "a.json").read_text())["task"] == "a"
    # a rerun replaces its own evaluations; a NAME.json of another kind is refused
    assert cli.main(merge(space, "--eval-data", *data, "--eval-out", str(scores),
                          "--no-progress")) == 0
    (scores / "b.json").write_text('{"mine": true}\n')
    refused(capsys, merge(space, "--eval-data", *data, "--eval-out", str(scores)), space,
            f"--eval-out file {scores / 'b.json'} already exists", "only an evaluation JSON")


def test_merge_eval_out_whose_parent_is_missing_is_made(space):
    """A missing --eval-out parent gave a traceback (the scratch folder beside it)."""
    out = space / "new" / "deeper" / "scores"
    data = [str(space / "samples.parquet")] * 2
    assert cli.main(merge(space, "--eval-data", *data, "--eval-out", str(out),
                          "--no-progress")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores"]  # no scratch left


def test_reruns_over_a_commands_own_output_work(space):
    out = space / "merged"
    for _ in range(2):
        assert cli.main(merge(space, "--out", str(out))) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    fisher = ["fisher", "--method", "mask", "--model", str(space / "ckpts" / "a"), "--data",
              str(space / "samples.parquet"), "--no-progress", "--out",
              str(space / "fishers" / "a.safetensors")]
    assert cli.main(fisher) == 0
    evaluate = ["evaluate", "--model", str(space / "ckpts" / "a"), "--data",
                str(space / "samples.parquet"), "--task", "t", "--out", str(space / "e.json")]
    assert cli.main(evaluate) == 0 and cli.main(evaluate) == 0
    sample = ["sample", "--train", str(space / "samples.parquet"), "--n", "4", "--out",
              str(space / "s4.parquet")]
    assert cli.main(sample) == 0 and cli.main(sample) == 0


def local_task(space: Path, out_train: str) -> list[str]:
    rows = "text,label\n" + "".join(f"words number {i},{i % 2}\n" for i in range(24))
    (space / "train.csv").write_text(rows)
    (space / "valid.csv").write_text(rows)
    return ["prepare-task", "--source", "local", "--train-file", str(space / "train.csv"),
            "--validation-file", str(space / "valid.csv"), "--column-map", "text_a=text",
            "label=label", "--out-train", out_train, "--out-validation",
            str(space / "task" / "validation.parquet"), "--out-info",
            str(space / "task" / "info.json")]


def test_prepare_task_never_overwrites_its_own_input(space, capsys):
    """``prepare-task --out-train`` equal to ``--train-file`` overwrote its input."""
    refused(capsys, local_task(space, str(space / "train.csv")), space,
            f"--out-train {space / 'train.csv'} is the input --train-file")
    args = local_task(space, str(space / "task" / "train.parquet"))
    assert cli.main(args) == 0 and cli.main(args) == 0  # a rerun replaces its own files
    args[args.index("--out-validation") + 1] = str(space / "task" / "train.parquet")
    refused(capsys, args, space, "overlap")


def test_fisher_into_a_read_only_folder_fails_before_its_compute(space, capsys, monkeypatch):
    """A read-only file system gave a traceback, and only after the Fisher's compute."""
    import tempfile

    import workflow_scripts.fisher as fisher_module

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def compute(*args, **kwargs):
        raise AssertionError("the Fisher was computed before the output was checked")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    monkeypatch.setattr(fisher_module, "compute_fisher", compute)
    refused(capsys, ["fisher", "--method", "mask", "--model", str(space / "ckpts" / "a"),
                     "--data", str(space / "samples.parquet"), "--out",
                     str(space / "ro" / "f.safetensors")], space,
            "the file system is read-only", "choose an output path you can write to")


def test_a_full_disk_is_one_error_line(space, capsys, monkeypatch):
    """A merge whose checkpoints do not fit is refused before it merges; a disk that fills
    while a Fisher is written is an error line naming the file, and nothing is left."""
    import workflow_scripts.outputs as outputs_module
    from workflow_scripts import tensorfiles

    usage = shutil.disk_usage(space)
    monkeypatch.setattr(outputs_module.shutil, "disk_usage",
                        lambda p: usage._replace(free=1000))
    refused(capsys, merge(space, "--out", str(space / "merged")), space,
            f"--out {space / 'merged'} needs about", "free space there")
    monkeypatch.undo()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tensorfiles, "write_bytes", full)
    refused(capsys, ["fisher", "--method", "mask", "--model", str(space / "ckpts" / "a"),
                     "--data", str(space / "samples.parquet"), "--no-progress", "--out",
                     str(space / "fishers" / "a2.safetensors")], space,
            f"cannot write {space / 'fishers' / 'a2.safetensors'}: the file system is full")


def test_fisher_files_follow_the_umask(space):
    old = os.umask(0o022)
    try:
        assert cli.main(["fisher", "--method", "mask", "--model", str(space / "ckpts" / "a"),
                         "--data", str(space / "samples.parquet"), "--no-progress", "--out",
                         str(space / "f.safetensors")]) == 0
    finally:
        os.umask(old)
    assert (space / "f.safetensors").stat().st_mode & 0o777 == 0o644
