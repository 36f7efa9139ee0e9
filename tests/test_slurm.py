"""The SLURM profile end to end on a real single-node SLURM (controller + node daemon).

Needs Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) and root
(the daemons run as root, ``slurm.conf`` must sit at ``/etc/slurm/slurm.conf``
because the job-step plugin drops ``SLURM_CONF``).  It starts ``munged`` (unless
one answers already), ``slurmctld`` and ``slurmd`` without accounting, runs the
tiny config's BERT family through ``--profile profiles/slurm`` with CPU-only resources and
``--slurm-status-command squeue``, checks that every non-local job went through
``sbatch`` and completed in SLURM, and that the results equal a local run's.
It stops the daemons it started, by their process ids, and removes the
``slurm.conf`` it wrote.  Skipped, with the reason, where this cannot run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from test_workflow_e2e import REPO, SNAKEMAKE, planned_jobs, snakemake, tiny_config
from workflow_scripts.artifacts import load_fisher
from workflow_scripts.jobmemory import GPU_RULES

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by fisher-mask-merging tests/test_slurm.py"
DAEMONS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")
LOCAL_RULES = {"all", "fetch_base_model", "fetch_model", "prepare_task"}


def why_not() -> str | None:
    """Why SLURM daemons cannot run here (None: they can)."""
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the SLURM daemons need root to start"
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text():
        return f"{SLURM_CONF} exists and is not ours: not touching a real SLURM set-up"
    if subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0:
        return "a slurmctld already runs on this machine"
    if SNAKEMAKE is None:
        return "snakemake is not installed"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed"
    return None


REASON = why_not()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _munge_works() -> bool:
    try:
        enc = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return enc.returncode == 0 and subprocess.run(
            ["unmunge"], input=enc.stdout, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A single-node SLURM on localhost; yields its partition name."""
    root = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(f"""{MARKER}
ClusterName=fishertest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
NodeName={host} CPUs={cpus} RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    started: list[subprocess.Popen] = []
    try:
        if not _munge_works():
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            started.append(subprocess.Popen(["munged", "-F", "--force"], stdout=open(root / "munged.out", "w"),
                                            stderr=subprocess.STDOUT))
            deadline = time.time() + 20
            while not _munge_works():
                if time.time() > deadline or started[-1].poll() is not None:
                    pytest.skip(f"munged did not start: {(root / 'munged.out').read_text()[-500:]}")
                time.sleep(0.2)
        for daemon in ("slurmctld", "slurmd"):
            started.append(subprocess.Popen([daemon, "-D"], stdout=open(root / f"{daemon}.out", "w"),
                                            stderr=subprocess.STDOUT))
        deadline = time.time() + 60
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip()
            if state == "idle":
                break
            if time.time() > deadline or any(p.poll() is not None for p in started):
                logs = "\n".join((root / f"{d}.out").read_text()[-800:] for d in ("slurmctld", "slurmd"))
                pytest.fail(f"SLURM did not come up (sinfo state {state!r}):\n{logs}")
            time.sleep(0.5)
        yield "debug"
    finally:
        _stop(started)
        if SLURM_CONF.exists() and MARKER in SLURM_CONF.read_text():
            SLURM_CONF.unlink()


def small_config(work: Path) -> dict:
    config = tiny_config(work)
    # the BERT family alone: the test is of the executor and the profile (every rule's job
    # through sbatch, the same results as a local run), which the Llama family's jobs would
    # repeat at twice the time (the local end-to-end test runs that family)
    del config["families"]["tinyllama"]
    config["fisher"]["methods"] = ["mask"]
    config["merge"]["methods"] = ["average", "mask"]
    config["compute"]["threads"] = 1  # same arithmetic in both runs
    return config


def test_slurm_profile_runs_every_job_through_sbatch(tmp_path, slurm_cluster):
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for work in (local, cluster):
        work.mkdir()
        (work / "config.yaml").write_text(yaml.safe_dump(small_config(work), sort_keys=False))

    snakemake(local)

    overrides = [f"{rule}:{key}={value}" for rule in GPU_RULES
                 for key, value in (("gpu", 0), ("cpus_per_gpu", 0), ("mem_mb", 1000), ("runtime", 10))]
    proc = snakemake(cluster, "-n")
    expected = planned_jobs(proc.stdout + proc.stderr)
    submitted_expected = sum(count for rule, count in expected.items() if rule not in LOCAL_RULES | {"total"})
    cmd = [
        SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(cluster),
        "--configfile", str(cluster / "config.yaml"),
        "--profile", str(REPO / "profiles" / "slurm"),
        "--default-resources", f"slurm_partition={slurm_cluster}", "mem_mb=1000", "runtime=10",
        "--set-resources", *overrides,
        "--slurm-status-command", "squeue", "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", "--jobs", "4",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]

    # every non-local job was submitted with sbatch and completed in SLURM
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    assert len(ids) == submitted_expected > 10, (ids, expected)
    for job_id in ids:
        show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        assert "JobState=COMPLETED" in show, show
        assert f"WorkDir={cluster}" in show, show
    slurm_logs = {p.stem: p for p in (cluster / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(slurm_logs) >= set(ids), sorted(slurm_logs)
    assert "Nothing to be done" in snakemake(cluster, "-n").stdout

    # the cluster run's results equal the local run's
    for name in ("table1_scores.csv", "scores_long.csv", "finetuned.csv"):
        assert (local / "results/report" / name).read_text() == (cluster / "results/report" / name).read_text(), name
    for path in (local / "results/fisher").rglob("*.safetensors"):
        (ta, ma), (tb, mb) = load_fisher(path), load_fisher(cluster / path.relative_to(local))
        assert all(torch.equal(ta[k], tb[k]) for k in ta), path
    for path in (local / "results/eval").rglob("*.json"):
        a = json.loads(path.read_text())["metrics"]
        b = json.loads((cluster / path.relative_to(local)).read_text())["metrics"]
        assert a == b, path
