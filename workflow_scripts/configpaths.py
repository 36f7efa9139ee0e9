"""Paths named in the workflow config: the one rule for where they point.

Standard library only: the config check (run while Snakemake parses the
workflow) and the task sources import it.
"""

from __future__ import annotations

from pathlib import Path


def resolve_path(path: str | Path, base_dir: str | Path = ".") -> Path:
    """A config path (``~`` expanded) relative to ``base_dir`` unless absolute."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path
