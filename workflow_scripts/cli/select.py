"""``select``: each merge's candidate chosen on the held-out selection split.

A merge whose settings the config lists with several values (``task_arithmetic_lambda:
[0.3, 1.0]``, ``ties_k: [10, 20]``) has one candidate per value (per combination).  From
held-out evaluations only (their ``context.split`` is ``holdout``; any other file is an
error naming it): the fine-tuned models' on their tasks and each candidate's on each task
of its subset.  Each candidate scores the mean over its subset's tasks of merged /
fine-tuned held-out metric x 100 (``--task-metric``, ``--default-metric``); per merge
(family, replicate, subset, n, Fisher seed, method) the best is chosen, a tie (within
1e-9) going to the candidate listed first (the order of ``--evals``/``--evals-from``).
No validation score is read.

Writes ``--out`` (CSV), one row per candidate, with the columns
``family, replicate, subset, seed, method, setting, value, holdout_score, selected, n,
subset_size, candidate, tasks``: ``setting`` names the settings the merge's candidates
differ in (``lambda``; ``lambda, ties_k``), ``value`` the candidate's values,
``candidate`` its merge key, ``tasks`` the held-out scores averaged.  ``report
--selection`` reads it.
"""

from __future__ import annotations

from pathlib import Path

from . import options
from .report import add_eval_args, eval_paths


def register(subparsers) -> None:
    parser = options.add_command(subparsers, "select",
                                 "choose each merge's candidate on held-out evaluations", __doc__)
    add_eval_args(parser)
    parser.add_argument("--out", required=True, type=Path, help="the selection CSV")
    parser.set_defaults(func=run)


def run(args) -> None:
    import logging

    from ..reporting.inputs import parse_task_metrics
    from ..reporting.selection import select

    from .. import outputs
    from ..reporting.selection import SELECTION_FILE
    from .report import input_paths

    outputs.check_output(args.out, SELECTION_FILE, "--out", input_paths(args))
    chosen = select(eval_paths(args), args.out, parse_task_metrics(args.task_metric),
                    args.default_metric)
    for r in chosen.filter(chosen["selected"]).iter_rows(named=True):
        logging.getLogger(__name__).info(
            "%s/%s/%s %s: %s = %s (held-out score %.2f)", r["family"], r["replicate"],
            r["subset"], r["method"], r["setting"], r["value"], r["holdout_score"])
