"""``python -m workflow_scripts <command>`` (or ``fisher-merge <command>``).

One entry point per workflow step.  Each command is a module of this package
defining ``register(subparsers)`` (its parser, with ``set_defaults(func=run)``)
and ``run(args)``; it imports the engine inside ``run`` only, so ``--help`` and
argument errors come back at once.  A command may define ``ENVIRONMENT``, a
mapping of environment variables set (unless already set) before ``run``.

Domain errors (:class:`workflow_scripts.errors.UserError` and its subclasses)
print as ``error: ...`` and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# command name -> the module of this package that defines it.  Running a command
# imports only its module (importing every command would pull in the whole of
# transformers and sklearn).
COMMANDS = {
    "fisher": "fisher",  # a mask-node or full diagonal Fisher artifact
    "gram": "gram",  # RegMean's Gram matrices of the body's linear-layer inputs
    "merge": "merge",  # merge fine-tuned models
    "evaluate": "evaluate",  # evaluate a checkpoint on a task's validation samples
    "prepare-task": "prepare_task",  # a task's train/validation Parquet
    "sample": "sample",  # n Fisher samples per (task, n, seed)
    "finetune": "finetune",  # fine-tune a base model on a task
    "fetch-model": "fetch_model",  # hub id, package or local path -> resources/
    "select": "select",  # each merge's candidate chosen on held-out evaluations
    "report": "report",  # tables from evaluation and Fisher results
    "plots": "plots",  # figures for the Snakemake report
    "check-config": "check_config",  # validate a workflow config
}
PROG = "python -m workflow_scripts"
SCRIPT = "fisher-merge"  # the console script of pyproject.toml's [project.scripts]: this main
QUIET_LOGGERS = ("huggingface_hub", "httpx", "httpcore")


def _command_of(argv) -> str | None:
    """The sub-command named in ``argv`` (first word not starting with '-')."""
    return next((word for word in argv if not word.startswith("-")), None)


def command_module(command: str):
    return importlib.import_module(f"{__name__}.{COMMANDS[command]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known ``command``, only that command's module is imported."""
    names = [command] if command in COMMANDS else list(COMMANDS)
    prog = SCRIPT if os.path.basename(sys.argv[0] or "") == SCRIPT else PROG
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in names:
        command_module(name).register(sub)
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
    if not args.verbose:
        # the hub client's own lines ("... thrown while requesting HEAD https://...",
        # "Retrying in 1s", httpx's "HTTP Request: ...") say nothing the error does not
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    for key, value in getattr(command_module(args.command), "ENVIRONMENT", {}).items():
        os.environ.setdefault(key, value)
    from ..errors import UserError

    try:
        args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
