"""``report``: the paper's tables from evaluation JSONs and Fisher artifacts.

Inputs
------
Evaluation JSONs (one per evaluated model and task)::

    {"task", "model", "n_examples", "num_labels", "label_counts": [c0, c1, ...],
     "metrics": {"accuracy", ...}, "seconds", "device",
     "context": {"family", "kind": "finetuned"|"merged",
                 "method": a merge variant key ("average", "mask-released", "ties-lam1", ...),
                 "n" (methods with a per-n artifact: fisher, mask, regmean),
                 "subset": "a+b[+c]", "task"}}

Every task is a classification (num_labels >= 2).  For the near-chance check a
fine-tuned model's chance level is its majority-class rate on the evaluated
validation samples, max(1/num_labels, max(label_counts) / sum(label_counts));
a JSON without label_counts (from an older ``evaluate``) falls back to
1/num_labels, with a warning.

Fisher artifacts (safetensors) are read through their header only
(:func:`artifacts.read_metadata`): ``method`` ("mask"|"full"), ``task``, ``n``,
``seconds``, ``flops``, ``device`` and ``context.family``.

Metrics (``--task-metric TASK=METRIC``, ``--default-metric``), as ``evaluate``
records them:

{metrics}

With ``--selection`` (the ``select`` command's file), each merge with candidates is
reported by its chosen candidate, ``METHOD-selected`` ("Task arithmetic (selected)"),
in Table 1, the paired comparisons and the findings; every candidate's scores go to
``table1_candidates`` (written with ``--selection`` only).

Outputs (under ``--out-dir``)
-----------------------------
{outputs}
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import metrics, paths
from . import options

__doc__ = (__doc__
           .replace("{metrics}", "\n".join(f"- {line}" for line in metrics.describe()))
           .replace("{outputs}", "\n".join(f"- ``{name}``" for name in paths.report_listing())))


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """The evaluations and their metrics: shared by ``report``, ``plots`` and ``select``."""
    parser.add_argument("--evals", nargs="+", action="extend", default=[], metavar="JSON",
                        help="evaluation JSON files")
    parser.add_argument("--evals-from", action="append", default=[], metavar="FILE",
                        help="file listing evaluation JSONs, one path per line (repeatable)")
    parser.add_argument("--task-metric", nargs="+", action="extend", default=[],
                        metavar="TASK=METRIC",
                        help=f"metric per task, e.g. mrpc={metrics.F1} cola={metrics.MATTHEWS}; "
                             f"METRIC: one of {', '.join(metrics.KNOWN)} (repeatable; loss: a "
                             "causal LM's)")
    parser.add_argument("--default-metric", default=metrics.ACCURACY, choices=metrics.METRICS,
                        help="metric for tasks without --task-metric (default: %(default)s)")


def eval_paths(args) -> list:
    """The evaluation files of :func:`add_eval_args` (at least one)."""
    from ..errors import UserError
    from ..reporting.inputs import gather_paths

    paths = gather_paths(args.evals, args.evals_from, "evaluation files")
    if not paths:
        raise UserError("no evaluation files: give --evals or --evals-from")
    return paths


def add_input_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``report`` and ``plots``."""
    add_eval_args(parser)
    parser.add_argument("--fishers", nargs="+", action="extend", default=[], metavar="SAFETENSORS",
                        help="Fisher artifacts (mask and full)")
    parser.add_argument("--fishers-from", action="append", default=[], metavar="FILE",
                        help="file listing Fisher artifacts, one path per line (repeatable)")
    parser.add_argument("--runtime-n", type=int, default=None, metavar="N",
                        help="sample count for the runtime and FLOP tables (default: the "
                             "smallest n that every Fisher method has)")
    parser.add_argument("--selection", default=None, metavar="CSV",
                        help="the select command's choice of each merge's candidate: the "
                             "chosen one is reported as METHOD-selected, every candidate in "
                             "the supplementary table")


def input_paths(args) -> list[tuple[str, str]]:
    """Every file the report, the plots or select read (``(flag, path)``), for the check
    that no output replaces one."""
    from .. import outputs

    return outputs.inputs_of(evals=args.evals, evals_from=args.evals_from,
                             fishers=getattr(args, "fishers", None),
                             fishers_from=getattr(args, "fishers_from", None),
                             selection=getattr(args, "selection", None))


def check_out_dir(args, names) -> None:
    """Before writing: each of ``names`` under ``--out-dir`` is absent or an earlier output
    of its kind, and none is an input; nothing else in the folder is touched."""
    from .. import outputs

    outputs.check_files_in(args.out_dir, names, outputs.report_kind, "--out-dir",
                           input_paths(args))


def load_from_args(args):
    """The :class:`~workflow_scripts.reporting.inputs.Inputs` named by :func:`add_input_args`."""
    from ..reporting.inputs import gather_paths, load_inputs, parse_task_metrics
    from ..reporting.selection import with_selection

    fisher_paths = gather_paths(args.fishers, args.fishers_from, "Fisher artifacts")
    data = load_inputs(eval_paths(args), fisher_paths, parse_task_metrics(args.task_metric),
                       args.default_metric, args.runtime_n)
    return data if args.selection is None else with_selection(data, args.selection)


def register(subparsers) -> None:
    parser = options.add_command(
        subparsers, "report", "tables (Table 1-4) from evaluation JSONs and Fisher artifacts",
        __doc__)
    add_input_args(parser)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--chance-warning-margin", type=float, default=0.05, metavar="M",
                        help="a fine-tuned model whose own-task accuracy is at most chance + M "
                             "is an error (default: 0.05)")
    parser.add_argument("--accept-near-chance", nargs="+", action="extend", default=[],
                        metavar="FAMILY:TASK",
                        help="report these near-chance fine-tuned models as warnings instead")
    parser.set_defaults(func=run)


def run(args) -> None:
    from ..errors import UserError
    from ..reporting.summary import write_report

    if args.chance_warning_margin < 0:
        raise UserError("--chance-warning-margin must not be negative")
    tables = paths.REPORT_TABLES + (paths.SELECTION_TABLES if args.selection else ())
    check_out_dir(args, [paths.table_file(t, f) for t in tables for f in paths.TABLE_FORMATS]
                  + list(paths.REPORT_FILES.values()))
    write_report(load_from_args(args), args.out_dir, args.chance_warning_margin,
                 args.accept_near_chance)
