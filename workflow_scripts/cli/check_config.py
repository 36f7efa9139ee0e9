"""Validate a workflow config file without running anything.

Checks the schema (``schemas/config.schema.yaml``, its enums filled from the
registries), repeated keys, and what a schema cannot express (unknown task
names, missing local files or columns, checkpoint label counts, methods whose
Fisher is not computed, ...); prints the number of jobs the config implies.
Relative paths resolve against the current directory, as in the workflow.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import options


def register(subparsers) -> None:
    parser = options.add_command(subparsers, "check-config", "validate a workflow config file",
                                 __doc__)
    parser.add_argument("config", help="config YAML file")
    parser.set_defaults(func=run)


def run(args) -> None:
    import yaml

    from ..config import check_config
    from ..errors import MissingFileError
    from ..plan import Plan

    path = Path(args.config)
    if not path.is_file():
        raise MissingFileError(f"config file {path} does not exist")
    config = yaml.safe_load(path.read_text())
    check_config(config, base_dir=os.getcwd(), config_files=[path])
    plan = Plan(config)
    selection = ""
    if plan.selection_on():
        selection = (f"; held-out selection: {len(plan.candidate_merges())} candidate merges "
                     f"of {', '.join(plan.candidate_methods()) or 'no method'}")
    print(
        f"config {args.config} is valid: {len(plan.families)} families, {len(plan.tasks)} tasks, "
        f"{len(plan.fisher_paths())} Fisher artifacts, {len(plan.gram_paths())} Gram artifacts, "
        f"{len(plan.merges())} merges, "
        f"{len(plan.eval_paths())} evaluations{selection}"
    )
