"""What the workflow's jobs need from the machine that plans them: config sections
as command-line flags, the job environment, GPU detection, stable list files.

No torch and no Snakemake: ``rules/common.smk`` calls these while it parses.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path


def flag(key: str, value) -> str:
    """One config entry as a command-line flag, shell-quoted.

    ``key`` ``max_length`` -> ``--max-length``.  True -> ``--key``; False ->
    ``--no-key``; None -> nothing; a list -> ``--key a b``; a dict ->
    ``--key k=v k2=v2``; anything else -> ``--key value``.
    """
    name = "--" + key.replace("_", "-")
    if value is None:
        return ""
    if value is True:
        return name
    if value is False:
        return "--no-" + key.replace("_", "-")
    if isinstance(value, dict):
        value = [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return " ".join([name] + [shlex.quote(str(v)) for v in value])
    return f"{name} {shlex.quote(str(value))}"


def cli_flags(section: dict, exclude=()) -> str:
    """A config section as flags (:func:`flag` per entry), leaving out ``exclude``."""
    return " ".join(f for key, value in section.items() if key not in exclude
                    if (f := flag(key, value)))


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
