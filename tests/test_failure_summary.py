"""The closing message of a failed run (the Snakefile's ``onerror``): each failed job,
its error line and the log to read; with keep-going the other jobs still run."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from workflow_scripts.jobs import failed_jobs, failure_summary

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

SNAKEFILE = '''import sys
from workflow_scripts.jobs import failure_summary


onerror:
    print(failure_summary(log), file=sys.stderr)


rule all:
    input:
        "out/good.txt",
        "out/bad.txt",


rule make:
    output:
        "out/{name}.txt",
    log:
        "logs/{name}.log",
    shell:
        "if [ {wildcards.name} = bad ]; then echo 'error: x.csv: line 3 has 4 columns' > {log}; "
        "exit 1; fi; touch {output} 2> {log}"
'''


def test_default_profile_keeps_going():
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert profile["keep-going"] is True and profile["show-failed-logs"] is True


def test_the_snakefile_names_failures_on_error():
    text = (ROOT / "Snakefile").read_text()
    assert "onerror:\n    print(failure_summary(log), file=sys.stderr)" in text


def test_failed_jobs_parses_snakemake_error_blocks(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("INFO loading\nerror: Fisher artifact f.safetensors is corrupt\n")
    run_log = tmp_path / "run.log"
    run_log.write_text(
        "Error in rule fisher:\n    jobid: 3\n    input: a, b\n    output: results/f.safetensors\n"
        f"    log: {log} (check log file(s) for error details)\n    shell:\n        python x\n"
        "        (command exited with non-zero exit code)\n"
        "Error in rule report:\n    jobid: 9\n    output: r.md\n"
    )
    assert failed_jobs(run_log.read_text()) == [
        {"rule": "fisher", "output": "results/f.safetensors", "log": str(log)},
        {"rule": "report", "output": "r.md", "log": ""},
    ]
    summary = failure_summary([str(run_log)])
    assert summary.splitlines()[0].startswith("2 job(s) failed")
    assert "  rule fisher: results/f.safetensors" in summary
    assert "    error: Fisher artifact f.safetensors is corrupt" in summary
    assert f"    log: {log}" in summary and "    log: (none)" in summary
    assert "failed outside any job" in failure_summary(str(tmp_path / "missing.log"))


def test_a_real_run_keeps_going_and_names_the_failed_job(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([str(SNAKEMAKE), "--cores", "1", "--keep-going"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert (tmp_path / "out" / "good.txt").exists()  # the other job ran
    out = proc.stdout + proc.stderr
    assert "1 job(s) failed" in out
    assert "  rule make: out/bad.txt\n    error: x.csv: line 3 has 4 columns\n    log: logs/bad.log" in out
    assert "Snakemake's own log of this run:" in out
