"""Outputs never destroy what a command did not write (issue #23): ``io.atomic_path`` replaces
only an earlier output of the writer's kind, temporaries are named by host and process and
only dead writers' are cleaned, outputs follow the umask, and a full or read-only file
system is one error line naming the path."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from tree_bytes import assert_unchanged, snapshot

from workflow_scripts import io, outputs
from workflow_scripts.artifacts import save_fisher
from workflow_scripts.errors import OutputError

EVAL = {"task": "t", "metrics": {"accuracy": 0.5}}


def test_an_earlier_output_of_the_kind_is_replaced(tmp_path):
    path = tmp_path / "e.json"
    io.write_json(path, EVAL, outputs.EVALUATION)
    io.write_json(path, dict(EVAL, task="u"), outputs.EVALUATION)
    assert json.loads(path.read_text())["task"] == "u"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json"]  # no temporary left


@pytest.mark.parametrize("content", [b'{"mine": "a user file"}\n', b"not json", b""])
def test_a_file_of_another_kind_is_refused_untouched(tmp_path, content):
    path = tmp_path / "e.json"
    path.write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match=r"e\.json already exists and is a file .* only an "
                       r"evaluation JSON .* Move or delete it yourself, or choose another"):
        io.write_json(path, EVAL, outputs.EVALUATION)
    assert_unchanged(tmp_path, before)


def test_a_writer_without_a_kind_replaces_nothing(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="replaces nothing that is already there"):
        io.write_text(tmp_path / "x.txt", "theirs")
    assert_unchanged(tmp_path, before)


def test_folder_outputs(tmp_path):
    """A folder of merged checkpoints is replaced, a folder of anything else is not (nor a
    file where a folder goes, nor a symbolic link); an empty folder is."""
    merged = tmp_path / "merged"
    for name in ("a", "b"):
        (merged / name).mkdir(parents=True)
        (merged / name / "merge.json").write_text("{}")
    with io.atomic_path(merged, outputs.MERGED) as tmp:
        (tmp / "c").mkdir(parents=True)
        (tmp / "c" / "merge.json").write_text("{}")
    assert sorted(p.name for p in merged.iterdir()) == ["c"]
    (tmp_path / "empty").mkdir()
    with io.atomic_path(tmp_path / "empty", outputs.MERGED) as tmp:
        tmp.mkdir()
    user = tmp_path / "user"
    (user / "a").mkdir(parents=True)
    (user / "a" / "merge.json").write_text("{}")
    (user / "notes.txt").write_text("mine")  # one entry that no merge wrote
    (tmp_path / "file").write_text("mine")
    (tmp_path / "link").symlink_to(merged)
    before = snapshot(tmp_path)
    for path in (user, tmp_path / "file", tmp_path / "link"):
        with pytest.raises(OutputError, match=f"{path.name} already exists and is a"):
            with io.atomic_path(path, outputs.MERGED) as tmp:
                tmp.mkdir()
    assert_unchanged(tmp_path, before)


def test_an_output_that_is_or_holds_an_input_is_refused(tmp_path):
    model = tmp_path / "ckpts" / "a"
    model.mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "ckpts")
    inputs = [("--models", str(model))]
    for out, relation in ((tmp_path / "ckpts", "holds"), (model, "is"),
                          (tmp_path / "alias" / "a", "is"), (tmp_path / "alias", "holds")):
        with pytest.raises(OutputError, match=f"{relation} the input --models"):
            outputs.check_output(out, outputs.MERGED, "--out", inputs)
    outputs.check_output(tmp_path / "elsewhere", outputs.MERGED, "--out", inputs)


def test_outputs_that_overlap_are_refused(tmp_path):
    with pytest.raises(OutputError, match="overlap"):
        outputs.check_outputs([("--out-train", tmp_path / "x.parquet", outputs.SAMPLES),
                               ("--out-validation", tmp_path / "x.parquet", outputs.SAMPLES)])


# ---------------------------------------------------------------- temporaries


def temporary(folder: Path, output: str, host: str, pid: int) -> Path:
    path = folder / f".{output}.{host}.{pid}.abcd1234.part"
    path.mkdir()
    (path / output).write_text("half written")
    return path


def test_temporaries_are_named_by_host_and_pid(tmp_path):
    seen = []
    with io.atomic_path(tmp_path / "out.txt", outputs.TEXT) as tmp:
        seen.append(tmp.parent.name)
        tmp.write_text("x")
    assert io.temporary_owner(seen[0], "out.txt") == (io.host(), os.getpid())


def test_only_dead_writers_temporaries_of_this_host_are_cleaned(tmp_path):
    """A live writer's temporary (another merge to the same --out) and another host's (a
    shared cluster file system) are left alone; a dead writer's of this host is removed."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live = temporary(tmp_path, "out", io.host(), sleeper.pid)
        other_host = temporary(tmp_path, "out", "another-node.cluster", dead.pid)
        stale = temporary(tmp_path, "out", io.host(), dead.pid)
        with io.atomic_path(tmp_path / "out", outputs.MERGED) as tmp:
            tmp.mkdir()
        assert live.exists() and other_host.exists() and not stale.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_two_writers_of_one_output_both_finish(tmp_path):
    """A second merge to the same --out while the first runs: neither deletes the other's
    temporary, both finish without an error, the output is whole (the last one's)."""
    out = tmp_path / "out"
    first = io.atomic_path(out, outputs.MERGED)
    tmp1 = first.__enter__()
    (tmp1 / "a").mkdir(parents=True)
    (tmp1 / "a" / "merge.json").write_text('{"by": 1}')
    with io.atomic_path(out, outputs.MERGED) as tmp2:
        assert tmp1.parent.exists()
        (tmp2 / "a").mkdir(parents=True)
        (tmp2 / "a" / "merge.json").write_text('{"by": 2}')
    assert tmp1.parent.exists()
    first.__exit__(None, None, None)
    assert json.loads((out / "a" / "merge.json").read_text()) == {"by": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ---------------------------------------------------------------- modes and failures


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_artifacts_and_folders_follow_the_umask(tmp_path, mask):
    """Fisher and Gram files were 0600 whatever the umask (safetensors' writer)."""
    old = os.umask(mask)
    try:
        save_fisher({"a": torch.ones(3)}, {"method": "mask"}, tmp_path / "f.safetensors")
        with io.atomic_path(tmp_path / "folder", outputs.MERGED) as tmp:
            tmp.mkdir()
            (tmp / "w.bin").write_bytes(b"x")
            os.chmod(tmp / "w.bin", 0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "f.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "folder" / "w.bin").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_full_disk_while_writing_is_one_error_naming_the_output(tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match=r"cannot write --out .*f\.bin: the file system is full "
                       r".*free space there, or choose an output path on another file system"):
        with io.atomic_path(tmp_path / "f.bin", outputs.ARTIFACT, "--out") as tmp:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert_unchanged(tmp_path, before)


def test_a_read_only_folder_is_found_before_any_compute(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(OutputError, match=r"--out .*the file system is read-only .*choose an "
                       "output path you can write to"):
        outputs.check_output(tmp_path / "sub" / "f.safetensors", outputs.ARTIFACT, "--out")
    assert list(tmp_path.iterdir()) == []


def test_not_enough_space_is_found_before_any_compute(tmp_path):
    free = outputs.shutil.disk_usage(tmp_path).free
    with pytest.raises(OutputError, match="needs about .* MiB free; free space there"):
        outputs.check_space(tmp_path / "out", free * 2, "--out")
    outputs.check_space(tmp_path / "out", 1, "--out")
