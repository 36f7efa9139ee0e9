"""``docs/settings.md``: every command's settings as tables, rendered from the settings
objects, so the reference cannot disagree with the flags, the schema or the defaults.

    python -m workflow_scripts.settings.reference --write   # regenerate (also: make docs)
    python -m workflow_scripts.settings.reference --check   # exit 1 if the file is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .commands import (
    EvaluateSettings, FinetuneSettings, FisherSettings, GramSettings, MergeSettings,
    PrepareSettings,
)
from .core import text

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"
COMMANDS = (
    ("fisher", FisherSettings), ("gram", GramSettings), ("merge", MergeSettings),
    ("evaluate", EvaluateSettings), ("finetune", FinetuneSettings),
    ("prepare-task", PrepareSettings),
)
HEADER = """\
# Settings of the commands

(Part of the reference; start at the [README](../README.md).  Generated from
`workflow_scripts/settings/commands.py` by `python -m workflow_scripts.settings.reference
--write` (or `make docs`): do not edit.)

Each command's settings are one object: its command-line flags, the config keys the
workflow passes to it (in the section named, for a task under `tasks.NAME`), their
defaults and ranges all come from it.  A setting without a config key is given per job
(the Fisher method of one artifact, a fine-tune's seed).  A job's command line holds the
settings the config gives, in this order, whatever order the config is written in.
"""


def _range(entry) -> str:
    spec = entry.spec
    if spec.choices is not None:
        return ", ".join(f"`{c}`" for c in spec.choices)
    return spec.range_text().replace(">", "&gt;").replace("<", "&lt;") or "-"


def _default(entry) -> str:
    if entry.spec.required:
        return "(required)"
    if entry.default is None:
        return "-"
    value = entry.default
    return "`" + (" ".join(map(text, value)) if isinstance(value, list) else text(value)) + "`"


def render() -> str:
    parts = [HEADER]
    for command, cls in COMMANDS:
        parts += [f"\n## `{command}`\n", f"{(cls.__doc__ or '').strip().splitlines()[0]}\n",
                  "| flag | config key | type | default | range / choices | meaning |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for entry in cls.entries():
            section = "tasks.NAME" if entry.section == "task" else entry.section
            key = f"`{section}.{entry.key}`" if entry.spec.config and section else "-"
            kind = entry.spec.type.__name__ + (" list" if entry.spec.many else "") + (
                " map" if entry.spec.mapping else "") + (
                " (config: or a list)" if entry.spec.listable else "")
            meaning = entry.spec.help.replace("|", "\\|")
            parts.append(f"| `{entry.spec.flag_name(entry.name)}` | {key} | {kind} | "
                         f"{_default(entry)} | {_range(entry)} | {meaning} |")
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {DOC}")
    mode.add_argument("--check", action="store_true", help=f"exit 1 if {DOC} is stale")
    args = parser.parse_args(argv)
    rendered = render()
    if args.write:
        DOC.write_text(rendered)
        return 0
    if args.check:
        current = DOC.read_text() if DOC.exists() else ""
        if current != rendered:
            print(f"{DOC} is stale: run python -m workflow_scripts.settings.reference --write",
                  file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
