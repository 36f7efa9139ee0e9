"""The task info file (``resources/tasks/T/info.json``): its version, its reader and
the per-class row counts it records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..data import Samples

INFO_VERSION = 1


def label_counts(samples: Samples, num_labels: int) -> list[int]:
    counts = [0] * num_labels
    for y in samples.label:
        counts[y] += 1
    return counts


def read_info(path) -> dict:
    """A task info file, checked for the fields downstream steps need."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read task info {path}: {exc}") from exc
    for key in ("num_labels", "label_names"):
        if key not in info:
            raise UserError(f"task info {path} lacks {key!r}; regenerate it with prepare-task")
    if len(info["label_names"]) != info["num_labels"]:
        raise UserError(f"task info {path}: {info['num_labels']} labels but "
                        f"{len(info['label_names'])} label names")
    return info
