"""Reliability (issue #4): interrupted runs, corrupted artifacts, determinism, bad input.

The interrupted-run tests kill a real ``snakemake --cores 2`` (its whole
process group) while a job is writing its output.  To hit that moment every
time, the jobs run with a ``sitecustomize`` hook (on PYTHONPATH, which the
workflow passes on to its jobs) that lets the first matching write through,
then writes the next one, cuts it to half its size and hangs: the state of a
job killed half-way through writing.  Without atomic writes that half file
would be the output.

Every test starts from a copy of one prepared workspace (tasks prepared,
checkpoints fetched, Fisher samples drawn), so only the jobs under test run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
import yaml
from test_workflow_e2e import REPO, SNAKEMAKE, planned_jobs, snakemake, tiny_config

from workflow_scripts import cli
from workflow_scripts.artifacts import CorruptArtifactError, FisherValueError, load_fisher, save_fisher
from workflow_scripts.config import check_config
from workflow_scripts.errors import ConfigError
from workflow_scripts.testing import make_tiny_checkpoint, write_toy_samples

pytestmark = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")

TASKS = ("topic", "pair")
LABELS = {"topic": 3, "pair": 2}
SETUP_TARGETS = [
    *(f"resources/tasks/{t}/{f}" for t in TASKS for f in ("validation.parquet", "info.json")),
    *(f"resources/models/tiny/{t}" for t in TASKS),
    *(f"results/samples/{t}/n8-seed0.parquet" for t in TASKS),
]
MASK_FISHERS = [f"results/fisher/tiny/ckpt/{t}/n8-seed0/mask.safetensors" for t in TASKS]

HOOK = '''
import os, time

PATTERN = os.environ.get("RELIABILITY_STALL")
DIR = os.environ.get("RELIABILITY_STALL_DIR", "")


def stall(path, write):
    """The first matching write goes through; the next is cut in half and hangs."""
    if not PATTERN or PATTERN not in str(path):
        return write()
    try:
        os.close(os.open(os.path.join(DIR, "passed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return write()
    except FileExistsError:
        pass
    result = write()
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    with open(os.path.join(DIR, "stalled.tmp"), "w") as handle:
        handle.write(str(path))
    os.replace(os.path.join(DIR, "stalled.tmp"), os.path.join(DIR, "stalled"))
    time.sleep(600)
    return result


if PATTERN:
    import importlib.abc
    import importlib.machinery
    import pathlib
    import sys

    write_text = pathlib.Path.write_text
    pathlib.Path.write_text = lambda self, *a, **k: stall(self, lambda: write_text(self, *a, **k))

    class Finder(importlib.abc.MetaPathFinder):
        """Wraps safetensors.torch.save_file and the package's own safetensors writer
        (workflow_scripts.tensorfiles.write_file, which writes the artifacts) as soon as
        their module is imported."""

        def find_spec(self, name, path, target=None):
            if name not in ("safetensors.torch", "workflow_scripts.tensorfiles"):
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            exec_module = spec.loader.exec_module

            def exec_and_wrap(module):
                exec_module(module)
                if name == "safetensors.torch":
                    save = module.save_file
                    module.save_file = lambda t, f, *a, **k: stall(f, lambda: save(t, f, *a, **k))
                else:
                    write = module.write_file
                    module.write_file = lambda f, t, *a, **k: stall(f, lambda: write(f, t, *a, **k))

            spec.loader.exec_module = exec_and_wrap
            return spec

    sys.meta_path.insert(0, Finder())
'''


def write_config(work: Path, **changes) -> dict:
    config = tiny_config(work)
    config["families"] = {"tiny": config["families"]["tiny"]}  # the BERT family alone
    config["families"]["tiny"]["checkpoints"] = {t: {"source": f"ckpt/{t}"} for t in TASKS}
    config["fisher"]["methods"] = ["mask", "full"]
    # two threads per Fisher job: with --cores 2 the Fisher jobs run one at a time
    config["compute"]["threads"] = 2
    config["merge"].update(methods=["average", "mask"], keep_merged=True)
    config.update(changes)
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A workspace with tasks prepared, checkpoints fetched, samples drawn, mask Fishers."""
    work = tmp_path_factory.mktemp("prepared") / "work"
    work.mkdir()
    for seed, task in enumerate(TASKS):
        make_tiny_checkpoint(work / "ckpt" / task, "bert", LABELS[task], seed + 1,
                             hidden=32, heads=4, intermediate=48)
    write_config(work)
    snakemake(work, *SETUP_TARGETS, *MASK_FISHERS, "--set-threads", "fisher=1")  # side by side
    return work


@pytest.fixture
def workspace(prepared, tmp_path):
    """A private copy of the prepared workspace (mtimes and .snakemake kept)."""
    work = tmp_path / "work"
    shutil.copytree(prepared, work, symlinks=True)
    return work


def mtimes(work: Path, *folders: str) -> dict[str, int]:
    return {
        str(p.relative_to(work)): p.stat().st_mtime_ns
        for folder in folders for p in (work / folder).rglob("*") if p.is_file()
    }


def start_and_stall(work: Path, pattern: str, targets, finished: str | None = None):
    """Start snakemake in its own process group; return once a write of ``pattern`` hangs.

    ``finished``: also wait until Snakemake reports a job of that rule finished.
    """
    hook = work.parent / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    env = dict(os.environ, PYTHONPATH=str(hook), RELIABILITY_STALL=pattern,
               RELIABILITY_STALL_DIR=str(hook))
    stderr = open(work.parent / "snakemake.err", "w")
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", str(work / "config.yaml"), "--cores", "2", *targets]
    proc = subprocess.Popen(cmd, stdout=stderr, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while True:
        text = (work.parent / "snakemake.err").read_text()
        done = finished is None or re.search(rf"Finished jobid: \d+ \(Rule: {finished}\)", text)
        if (hook / "stalled").exists() and done:
            return proc, work / (hook / "stalled").read_text()
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no job hung in a write of {pattern!r}:\n{text[-5000:]}")
        time.sleep(0.2)


def kill(proc, sig) -> None:
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if sig == signal.SIGINT:
        time.sleep(0.5)  # jobs still unwinding in the group
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # nothing of the run may outlive the test
    except ProcessLookupError:
        pass


def leftovers(work: Path) -> list[Path]:
    return [p for p in (work / "results").rglob("*.part")]


# --- interrupted runs -------------------------------------------------------


def test_sigint_during_fisher_write_then_rerun_reuses_completed(workspace):
    targets = [f"results/fisher/tiny/ckpt/{t}/n8-seed0/full.safetensors" for t in TASKS]
    proc, hung = start_and_stall(workspace, "full.safetensors", targets)
    kill(proc, signal.SIGINT)
    assert proc.returncode != 0
    # the completed artifacts are whole; the interrupted one left no file, not even a temporary
    written = sorted((workspace / "results" / "fisher").rglob("*.safetensors"))
    done = [t for t in targets if (workspace / t).parent != hung.parent.parent]  # hung: a temporary
    assert len(done) == 1 and sorted(map(str, written)) == sorted(
        str(workspace / p) for p in MASK_FISHERS + done)
    for path in written:
        load_fisher(path)
    assert not leftovers(workspace)
    before = mtimes(workspace, "results", "resources")

    # the README command (the profile sets rerun-incomplete) finishes the run
    snakemake(workspace, *targets)
    after = mtimes(workspace, "results", "resources")
    assert {k: after[k] for k in before} == before  # everything complete was reused
    for target in targets:
        load_fisher(workspace / target)


def test_sigkill_during_evaluation_write_then_rerun_reuses_completed(workspace):
    targets = [f"results/eval/tiny/ckpt/finetuned/{t}.json" for t in TASKS]
    proc, hung = start_and_stall(workspace, "results/eval/", targets, finished="evaluate_finetuned")
    kill(proc, signal.SIGKILL)
    # the evaluation killed half-way left only its temporary; the other one is whole
    evals = [p for p in (workspace / "results" / "eval").rglob("*.json") if ".part" not in str(p)]
    assert len(evals) == 1 and evals[0].name != hung.name
    assert json.loads(evals[0].read_text())["metrics"]
    assert hung.parent.name.endswith(".part") and hung.exists()
    before = mtimes(workspace, "results", "resources")

    # a hard kill leaves Snakemake's lock: unlock, then the README command
    snakemake(workspace, "--unlock", *targets)
    snakemake(workspace, *targets)
    after = mtimes(workspace, "results", "resources")
    assert {k: after[k] for k in before if ".part" not in k} == {
        k: v for k, v in before.items() if ".part" not in k}
    for task in TASKS:
        result = json.loads((workspace / f"results/eval/tiny/ckpt/finetuned/{task}.json").read_text())
        assert result["num_labels"] == LABELS[task]
    assert not leftovers(workspace)  # the killed writer's temporary was cleaned up


# --- corrupted artifacts ----------------------------------------------------


def test_corrupt_fisher_is_named_and_only_it_and_dependants_rerun(workspace):
    fishers = MASK_FISHERS  # written by the prepared workspace
    merged = "results/merged/tiny/ckpt/pair+topic/mask-n8-seed0"
    bad = workspace / fishers[1]
    data = bytearray(bad.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # edit values, keep the size
    bad.write_bytes(bytes(data))

    proc = snakemake(workspace, merged, check=False)
    assert proc.returncode != 0
    log = (workspace / "logs/merge/tiny/ckpt/pair+topic/mask-n8-seed0.log").read_text()
    assert "checksum mismatch" in log and f"rm '{fishers[1]}'" in log
    assert not (workspace / merged).exists()

    bad.write_bytes(bytes(data[: len(data) // 2]))  # truncated: caught by the same reader
    with pytest.raises(CorruptArtifactError, match=f"rm '{bad}'"):
        load_fisher(bad)

    bad.unlink()
    before = mtimes(workspace, "results", "resources")
    dry = snakemake(workspace, "-n", merged)
    assert planned_jobs(dry.stdout + dry.stderr) == {"fisher": 1, "merge": 1, "total": 2}
    assert "task=pair" in dry.stdout and "task=topic" not in dry.stdout
    snakemake(workspace, merged)
    after = mtimes(workspace, "results", "resources")
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed == set(), changed  # the good Fisher, samples, models, tasks reused
    load_fisher(bad)
    assert (workspace / merged / "topic" / "model.safetensors").exists()


# --- determinism ------------------------------------------------------------


def test_fisher_samples_merges_and_scores_bit_identical_across_processes(tmp_path):
    """Two processes (different hash seeds) draw the samples, compute both Fishers of
    two models, merge them by mask Fisher and evaluate the merge: every artifact is
    bit-identical, so Table 1 (a function of the scores) is identical too."""
    model = make_tiny_checkpoint(tmp_path / "model", "bert", 3, 0)
    other = make_tiny_checkpoint(tmp_path / "other", "bert", 3, 1)
    train = write_toy_samples(tmp_path / "train.parquet", n=40, pair=True, num_labels=3, seed=2)
    script = ("import json, sys\nfrom workflow_scripts import cli\n"
              "for argv in json.loads(sys.argv[1]):\n    assert cli.main(argv) == 0, argv\n")
    runs = []
    for run, hashseed in (("a", "1"), ("b", "2")):
        sample = str(tmp_path / f"samples-{run}.parquet")
        commands = [["sample", "--train", str(train), "--n", "12", "--seed", "3", "--out", sample]]
        commands += [["fisher", "--model", str(ckpt), "--data", sample, "--method", method,
                      "--device", "cpu", "--batch-size", "5", "--no-progress",
                      "--out", str(tmp_path / f"{method}-{ckpt.name}-{run}.safetensors")]
                     for method in ("mask", "full") for ckpt in (model, other)]
        commands += [["merge", "--models", str(model), str(other), "--method", "mask", "--fishers",
                      *(str(tmp_path / f"mask-{c.name}-{run}.safetensors") for c in (model, other)),
                      "--out", str(tmp_path / f"merged-{run}")],
                     ["evaluate", "--model", str(tmp_path / f"merged-{run}" / "model"), "--data", sample,
                      "--task", "toy", "--device", "cpu", "--out", str(tmp_path / f"eval-{run}.json")]]
        env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(REPO))
        runs.append(subprocess.Popen([sys.executable, "-c", script, json.dumps(commands)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for proc in runs:
        assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()[-3000:]
    assert (tmp_path / "samples-a.parquet").read_bytes() == (tmp_path / "samples-b.parquet").read_bytes()
    for method in ("mask", "full"):
        for ckpt in (model, other):
            (ta, ma), (tb, mb) = (load_fisher(tmp_path / f"{method}-{ckpt.name}-{r}.safetensors") for r in "ab")
            assert ta.keys() == tb.keys()
            for name in ta:
                assert ta[name].dtype == tb[name].dtype and torch.equal(ta[name], tb[name]), name
            ma.pop("seconds"), mb.pop("seconds")  # timing differs by nature
            assert ma == mb
    for name in ("model", "other"):
        wa, wb = (load_file(tmp_path / f"merged-{r}" / name / "model.safetensors") for r in "ab")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    ea, eb = (json.loads((tmp_path / f"eval-{r}.json").read_text()) for r in "ab")
    assert ea["metrics"] == eb["metrics"]


# --- bad config and bad input -------------------------------------------------


def test_local_file_missing_a_mapped_column_fails_the_config_check(tmp_path):
    config = tiny_config(tmp_path)
    config["tasks"]["pair"]["column_map"]["text_b"] = "secnd"
    with pytest.raises(ConfigError, match=r"tasks\.pair\.column_map: column\(s\) \['secnd'\] are not in "
                                          r"train_file 'data/pair_train\.tsv', which has columns "
                                          r"\['first', 'second', 'same'\]"):
        check_config(config, base_dir=tmp_path)
    config["tasks"]["pair"]["column_map"]["text_b"] = "second"
    check_config(config, base_dir=tmp_path)  # the right columns pass


def test_checkpoint_whose_label_count_differs_from_its_task_fails_its_evaluation(prepared, tmp_path,
                                                                                   capsys):
    # the workflow passes the task's info to the evaluation of each checkpoint
    dry = snakemake(prepared, "-n", "-p", "results/eval/tiny/ckpt/finetuned/topic.json")
    assert "--task-info resources/tasks/topic/info.json" in dry.stdout
    # a 2-label checkpoint given to the 3-label topic task; also a 3-label one for pair
    for task, wrong in (("topic", "pair"), ("pair", "topic")):
        out = tmp_path / f"{task}.json"
        code = cli.main(["evaluate", "--model", str(prepared / "ckpt" / wrong), "--data",
                         str(prepared / f"resources/tasks/{task}/validation.parquet"),
                         "--task-info", str(prepared / f"resources/tasks/{task}/info.json"),
                         "--task", task, "--device", "cpu", "--out", str(out)])
        assert code == 2 and not out.exists()
        err = capsys.readouterr().err
        assert str(prepared / "ckpt" / wrong) in err
        assert f"has {LABELS[wrong]} labels but task {task} needs {LABELS[task]}" in err


# --- numerical faults -------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0])
def test_non_finite_or_all_zero_fisher_is_refused_when_written(tmp_path, bad):
    tensors = {"head": torch.full((2, 4), bad), "neuron": torch.zeros(2, 8)}
    out = tmp_path / "f.safetensors"
    with pytest.raises(FisherValueError, match="NaN or infinite" if bad else "zero everywhere"):
        save_fisher(tensors, {"method": "mask"}, out)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left
