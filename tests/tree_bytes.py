"""A folder tree's bytes, to show that a refused command changed nothing in it.

``before = snapshot(root)`` records every entry under ``root`` (files by their bytes'
sha256 and size, folders, symbolic links by their target); ``assert_unchanged(root,
before)`` fails naming each entry added, removed or changed since (a leftover temporary
counts as added).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def snapshot(root) -> dict[str, tuple]:
    root = Path(root)
    tree = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                tree[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                tree[rel] = ("folder",)
            else:
                data = path.read_bytes()
                tree[rel] = ("file", len(data), hashlib.sha256(data).hexdigest())
    return tree


def differences(before: dict, after: dict) -> list[str]:
    out = [f"added {k}" for k in sorted(set(after) - set(before))]
    out += [f"removed {k}" for k in sorted(set(before) - set(after))]
    out += [f"changed {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return out


def assert_unchanged(root, before: dict) -> None:
    changes = differences(before, snapshot(root))
    assert not changes, f"{root} changed: " + "; ".join(changes[:20])
