"""``python -m workflow_scripts <command>``: one entry point per workflow step.

Each command lives in its own module, which defines ``register(subparsers)``
adding its parser with ``set_defaults(func=run)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = (
    "fisher",  # fisher --method mask|full
    "merge",  # merge --models ... --method ...
    "evaluate",  # evaluate --model DIR --data VALID.parquet
    "tasks",  # prepare-task: a task's train/validation Parquet
    "sampling",  # sample: n Fisher samples per (task, n, seed)
    "finetune",  # finetune: fine-tune a base model on a task
    "fetch",  # fetch-model: hub id or local path -> resources/
    "report",  # report: tables from evaluation and Fisher results
    "plots",  # plots: figures for the Snakemake report
    "plan",  # check-config: validate a workflow config
)


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"workflow_scripts.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"workflow_scripts.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
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
