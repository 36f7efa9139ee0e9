"""Evaluate a checkpoint on a task's validation samples, for every objective (``--objective``):

{objectives}

A classifier's labels are class ids (int64) from every task source; a checkpoint
with fewer than two labels (a regression head) is an error.  Metrics
(scikit-learn): ``accuracy``; binary tasks also ``f1`` (positive class 1); tasks
with more than two labels also ``macro_f1``; ``cola`` also ``matthews`` (Matthews
correlation).  A causal language model's metrics are its mean next-token loss
over the task's counted tokens and its perplexity.

Inference is batched with length-sorted dynamic padding under
``torch.inference_mode``; predictions are put back in file order.

Several checkpoints at once (``--model A B --data a.parquet b.parquet --task a b
--out a.json b.json``, one of each per evaluation, in the same order) are
evaluated one after the other in one process, each exactly as alone; each
JSON's context gets its own ``task``.

Output: a JSON file with the metrics, ``label_counts`` (how many evaluated
samples carry each label id; the majority-class rate is a chance baseline),
the checkpoint's fingerprint, the settings and the ``--meta`` context.
With ``--card`` (a merged checkpoint directory), the metrics are also added to
its model card ``README.md`` (the workflow does so when ``merge.keep_merged``).
"""

from __future__ import annotations

from . import options


def register(subparsers) -> None:
    from ..settings import EvaluateSettings, add_arguments

    p = options.add_command(subparsers, "evaluate",
                            "evaluate a checkpoint ({objective_names}) on a task's validation "
                            "samples", __doc__)
    p.add_argument("--model", nargs="+", required=True,
                   help="checkpoint directory (or hub id); several: one per evaluation")
    p.add_argument("--data", nargs="+", required=True, help="validation samples (Parquet)")
    p.add_argument("--task", nargs="+", required=True, help="task name (e.g. sst2, mnli, cola)")
    options.add_label_map(p)
    p.add_argument("--num-labels", type=options.positive_int, default=None,
                   help="expected label count; an error if the checkpoint differs")
    p.add_argument("--task-info", default=None,
                   help="the task's info JSON (prepare-task): its num_labels must match the "
                   "checkpoint")
    add_arguments(p, EvaluateSettings)
    options.add_model_source(p)
    options.add_meta(p)
    p.add_argument("--card", action="store_true",
                   help="also add the metrics to the model card of each merged checkpoint")
    p.add_argument("--out", nargs="+", required=True, help="output JSON file")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..errors import UserError
    from ..evaluate import evaluate_checkpoint
    from ..models import ModelSource, parse_label_map
    from ..settings import EvaluateSettings

    settings = EvaluateSettings.from_args(args)
    context = options.meta_context(args.meta)
    count = len(args.model)
    lengths = {"--data": len(args.data), "--task": len(args.task), "--out": len(args.out)}
    if any(n != count for n in lengths.values()):
        raise UserError(f"--model names {count} checkpoint(s) but " + ", ".join(
            f"{k} {n}" for k, n in lengths.items()) + "; give one of each per evaluation")
    if count > 1:
        single = [flag for flag, value in (("--label-map", args.label_map),
                                           ("--num-labels", args.num_labels),
                                           ("--task-info", args.task_info),
                                           ("--meta task=", context.get("task"))) if value]
        if single:
            raise UserError(f"{', '.join(single)} apply to one checkpoint; evaluate the "
                            "checkpoints that need them one at a time")
    from .. import outputs

    outputs.check_outputs([("--out", out, outputs.EVALUATION) for out in args.out],
                          outputs.inputs_of(model=args.model, data=args.data,
                                            task_info=args.task_info))
    if args.card:
        from ..merging.card import add_scores, check_card

        for model in args.model:
            check_card(model)  # before the evaluations, not after
    source = ModelSource(revision=args.revision, allow_pickle=args.allow_pickle,
                         label_map=parse_label_map(args.label_map))
    for model, data, task, out in zip(args.model, args.data, args.task, args.out):
        result = evaluate_checkpoint(
            model, data, task, settings, source=source, num_labels=args.num_labels,
            task_info=args.task_info,
            context=context if count == 1 else {**context, "task": task}, out=out,
        )
        if args.card:
            add_scores(model, task, result["metrics"])
