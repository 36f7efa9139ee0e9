"""``python -m workflow_scripts <command>``: one entry point per workflow step.

Each command lives in its own module, which defines ``register(subparsers)``
adding its parser with ``set_defaults(func=run)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command name -> the module defining it (``register(subparsers)``); running a
# command imports only its module (importing every command pulls in the whole of
# transformers and sklearn).
COMMANDS = {
    "fisher": "fisher",  # fisher --method mask|full
    "merge": "merge",  # merge --models ... --method ...
    "evaluate": "evaluate",  # evaluate --model DIR --data VALID.parquet
    "prepare-task": "tasks",  # a task's train/validation Parquet
    "sample": "sampling",  # n Fisher samples per (task, n, seed)
    "finetune": "finetune",  # fine-tune a base model on a task
    "fetch-model": "fetch",  # hub id or local path -> resources/
    "report": "report",  # tables from evaluation and Fisher results
    "plots": "plots",  # figures for the Snakemake report
    "check-config": "plan",  # validate a workflow config
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))  # for --help: all of them


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def _command_of(argv) -> str | None:
    """The sub-command named in ``argv`` (first word not starting with '-')."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known ``command``, only that command's module is imported."""
    modules = COMMAND_MODULES
    if command in COMMANDS and COMMANDS[command] in COMMAND_MODULES:
        modules = (COMMANDS[command],)
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in modules:
        try:
            module = importlib.import_module(f"workflow_scripts.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"workflow_scripts.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .data import SampleError
    from .models import ModelLoadError
    from .architectures import UnsupportedArchitectureError

    try:
        args.func(args)
    except (UserError, SampleError, ModelLoadError, UnsupportedArchitectureError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
