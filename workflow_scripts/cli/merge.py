"""Merging of fine-tuned models that share a body: weighted averages (Eq. 5 of the paper),

    theta* = sum_j F_j theta_j / sum_j F_j        (lambda_j = 1),

task-vector methods and RegMean, for every objective (``--objective``):

{objectives}

A classifier merge covers the shared body (``model.base_model``) only and every
model keeps its own task head; a causal-LM merge covers the whole model
(embeddings and ``lm_head`` included).  The methods (``--method``):

{methods}

``mask`` maps the mask-node Fisher to parameters by a scheme (``--scheme``):

    ============================================  ===============  ==========================
    parameters                                    ``paper``        ``released``
    ============================================  ===============  ==========================
    query/key rows (weights, biases) of head h    head h Fisher    same
    FFN-in row r (weight row, bias entry)         neuron r Fisher  same
    value, attention output, attention LayerNorm  1                mean head Fisher of layer
    FFN output, FFN LayerNorm                     1                mean neuron Fisher of layer
    embeddings, pooler (global)                   1                mean over layers of
                                                                   (mean head + mean neuron)
    ============================================  ===============  ==========================

For ``mask``, mask nodes whose Fisher is exactly zero in every model are first
set to 1 in every model (the released code's "both zero -> 1" rule).  Wherever
every model's weight for an element is exactly zero, that element is the plain
average: never a division by zero.  ``--floor`` replaces each weight F by
max(F, floor), as in Matena & Raffel's code (1e-6 there), after the mapping.

Each Fisher file must come from its own model: a file whose recorded model
fingerprint differs from the model it weights is an error naming both (files
given in the wrong order, or the Fisher of another checkpoint), and so is one
whose recorded task differs from the model's ``--tasks`` entry.
``--allow-fisher-mismatch`` turns both into warnings.

Task-vector methods (``task-arithmetic``, ``ties``, ``dare``) need the
pre-trained model the checkpoints were fine-tuned from (``--base``) and take a
scaling factor ``--lambda`` (default: the method's, {lambdas}); ``regmean``
needs one Gram file per model (``--grams``, from the ``gram`` command).  Their
defaults: ``--ties-k`` {ties_k:g}, ``--ties-scope`` {ties_scope}, ``--dare-p``
{dare_p:g}, ``--dare-combine`` {dare_combine}, ``--seed`` {seed},
``--regmean-alpha`` {regmean_alpha:g}, ``--floor`` {floor:g}.

Writes one ``save_pretrained`` checkpoint per input model under ``--out`` (the
merged body, that model's own head and tokenizer), each with ``merge.json``
(the recipe: method, scheme, n, seed, inputs and their fingerprints, Fisher
files with their sha256, the merge's parameters) and ``README.md``, a Hugging
Face model card rendered from the same recipe.  With ``--eval-data`` and
``--eval-out`` it also evaluates each merged model on its task's samples, in
the same process, writing the ``evaluate`` command's JSON (the workflow's one
job per merge) and adding the scores to the model card.  Without ``--out`` no
checkpoint is written at all: the merged models are evaluated in memory, in the
dtype their checkpoints would be written in, with the same scores.
"""

from __future__ import annotations

import logging

from ..artifactkinds import KINDS, of_method
from ..merging.registry import METHODS
from . import options

log = logging.getLogger(__name__)


def _doc() -> str:
    from ..settings import MergeSettings

    defaults = {e.name: e.default for e in MergeSettings.entries()}
    return options.served(__doc__).replace("{methods}", "\n".join(
        f"``{m.name}``\n    {m.description}" for m in METHODS.values())).format(
        lambdas=", ".join(f"{m.name} {m.default_lambda:g}" for m in METHODS.values()
                          if m.default_lambda is not None) + ", dare: that of --dare-combine",
        **defaults)


def register(subparsers) -> None:
    from ..settings import EvaluateSettings, MergeSettings, add_arguments

    p = options.add_command(subparsers, "merge", "merge fine-tuned models (" + ", ".join(METHODS)
                            + ")", _doc())
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="two or more checkpoints (directories or hub ids) sharing a body")
    add_arguments(p, MergeSettings)
    for kind in KINDS.values():  # one flag per artifact kind: the methods that take it
        users = ", ".join(f"{m.name} ({m.artifact})" for m in METHODS.values()
                          if of_method(m.artifact) is kind)
        p.add_argument(kind.flag, nargs="+", metavar=kind.noun.upper(),
                       help=f"{kind.help}; for {users}")
    p.add_argument("--base", default=None,
                   help="task-vector methods: the pre-trained model the checkpoints come from")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="output directory names (default: the inputs' basenames)")
    p.add_argument("--tasks", nargs="+", metavar="TASK",
                   help="the task of each model, same order: each Fisher file must have been "
                   "computed on its model's task")
    p.add_argument("--allow-fisher-mismatch", action="store_true",
                   help="merge even if a Fisher file records another model or task (a warning)")
    p.add_argument("--label-maps", nargs="+", metavar="MAP",
                   help="one per model: '2,0,1' (data label i -> model output MAP[i]) or '-'")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading pickle (.bin) weights")
    p.add_argument("--out", default=None,
                   help="output directory (one checkpoint per model); optional with --eval-out")
    e = p.add_argument_group("evaluation of the merged models (instead of reloading them with "
                             "the evaluate command)")
    e.add_argument("--eval-data", nargs="+", metavar="DATA",
                   help="one validation samples file per model, same order; the task of model "
                        "j is its output name (--names)")
    e.add_argument("--eval-out", default=None,
                   help="directory of one evaluate-style JSON per model (NAME.json)")
    e.add_argument("--holdout-data", nargs="+", metavar="DATA",
                   help="also evaluate on these held-out samples (one per model, same order; "
                        "the selection split)")
    e.add_argument("--holdout-out", default=None,
                   help="directory of the held-out evaluations (NAME.json each)")
    e.add_argument("--eval-task-infos", nargs="+", metavar="INFO",
                   help="the tasks' info JSONs: each label count must match its model")
    add_arguments(e, EvaluateSettings, prefix="eval", exclude=("objective",))  # the merge's
    options.add_meta(e)
    options.add_progress(e)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..allocator import return_freed_memory
    from ..errors import UserError
    from ..merging.evaluation import EvalSplit, MergeEvaluation
    from ..merging.files import merge_models
    from ..merging.sources import MergeSources
    from ..models import parse_label_map
    from ..settings import EvaluateSettings, MergeSettings

    return_freed_memory()  # the streamed merge's peak must not grow with what it reads
    settings = MergeSettings.from_args(args)
    label_maps = None
    if args.label_maps is not None:
        label_maps = [None if m in ("-", "") else parse_label_map(m) for m in args.label_maps]
    ignored = [e for e in ("scheme", "lam") if e not in settings.relevant()
               and getattr(settings, e) != MergeSettings.entry(e).default]
    for name in ignored:
        log.warning("%s has no effect with --method %s",
                    MergeSettings.entry(name).spec.flag_name(name), settings.method)
    splits = []
    for name, data, out in (("validation", args.eval_data, args.eval_out),
                            ("holdout", args.holdout_data, args.holdout_out)):
        flag = "--eval" if name == "validation" else "--holdout"
        if (data is None) != (out is None):
            raise UserError(f"{flag}-data and {flag}-out go together")
        if data is not None:
            splits.append(EvalSplit(data, out, name))
    if splits and args.eval_out is None:
        raise UserError("--holdout-data needs --eval-data and --eval-out as well")
    evaluation = None
    if splits:
        evaluation = MergeEvaluation(
            splits, task_infos=args.eval_task_infos,
            settings=EvaluateSettings.from_args(args, prefix="eval"),
            context=options.meta_context(args.meta), progress=args.progress,
        )
    sources = MergeSources(
        args.models, **{k.option: getattr(args, k.option) for k in KINDS.values()},
        base=args.base, names=args.names,
        tasks=args.tasks, label_maps=label_maps, allow_pickle=args.allow_pickle,
        allow_fisher_mismatch=args.allow_fisher_mismatch,
    )
    merge_models(sources, args.out, settings, evaluation=evaluation)
