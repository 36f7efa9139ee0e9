"""What the workflow's jobs need from the machine that plans them: fixed-order flags,
the job environment, GPU detection, stable list files, the failure summary.

No torch and no Snakemake: ``rules/common.smk`` calls these while it parses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .settings.core import flag


def cli_flags(values: dict) -> str:
    """``{key: value}`` as flags (``max_length`` -> ``--max-length``; True ``--x``, False
    ``--no-x``, None nothing, lists and dicts as several words), in sorted key order so the
    command line never depends on the order the entries were written in."""
    words = (flag("--" + key.replace("_", "-"), values[key]) for key in sorted(values))
    return " ".join(w for w in words if w)


def visible_gpu_count() -> int:
    """GPUs that ``nvidia-smi -L`` lists here (0 without the tool); no torch import."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def write_if_changed(path: str | Path, lines: list[str]) -> bool:
    """Write one line per entry unless the file already holds exactly that.

    Keeps the file's mtime (and so Snakemake's view of it) stable across runs
    of an unchanged config.
    """
    path = Path(path)
    text = "".join(f"{line}\n" for line in lines)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def export_job_environment(package_root: str, python: str) -> None:
    """Let shell jobs find this package and, outside conda envs, this Python."""
    parts = [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(python), os.environ.get("PATH", "")])


def failed_jobs(run_log: str) -> list[dict]:
    """The failed jobs of a Snakemake run, from its log's ``Error in rule NAME:`` blocks:
    ``{"rule", "output", "log"}`` each (``log`` and ``output`` may be empty)."""
    jobs: list[dict] = []
    for line in run_log.splitlines():
        match = re.match(r"^Error in rule ([\w-]+):", line)
        if match:
            jobs.append({"rule": match.group(1), "output": "", "log": ""})
        elif jobs and line.startswith("    ") and not line.startswith("     "):
            key, _, value = line.strip().partition(": ")
            if key in ("output", "log") and not jobs[-1][key]:
                jobs[-1][key] = value.removesuffix(" (check log file(s) for error details)")
    return jobs


def last_error(log_file: str | Path) -> str:
    """The last ``error: ...`` line of a job's log (what the command said), or ''."""
    try:
        lines = Path(log_file).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.startswith("error:")), "")


def failure_summary(run_log_path) -> str:
    """The closing message of a failed run: each failed job, its error and the log to read.

    ``run_log_path``: Snakemake's log of the run (``log`` in ``onerror``; Snakemake 9
    passes a list of paths, of which the first is read)."""
    if isinstance(run_log_path, (list, tuple)):
        run_log_path = run_log_path[0] if run_log_path else None
    try:
        text = Path(run_log_path).read_text(errors="replace") if run_log_path else ""
    except OSError:
        text = ""
    jobs = failed_jobs(text)
    if not jobs:
        return f"the run failed outside any job; Snakemake's own log: {run_log_path}"
    lines = [f"{len(jobs)} job(s) failed; every job that did not depend on them ran "
             "(keep-going). Fix the cause and rerun the same command: finished outputs are kept."]
    for job in jobs:
        first_log = job["log"].split(", ")[0]
        said = last_error(first_log) if first_log else ""
        lines.append(f"  rule {job['rule']}: {job['output'] or '(no output)'}")
        if said:
            lines.append(f"    {said}")
        lines.append(f"    log: {first_log or '(none)'}")
    lines.append(f"Snakemake's own log of this run: {run_log_path}")
    return "\n".join(lines)
