"""Weighted merging of fine-tuned models that share a body (Eq. 5 of the paper).

    theta* = sum_j F_j theta_j / sum_j F_j        (lambda_j = 1)

over the shared body (``model.base_model``) only; every model keeps its own task
head.  The methods (``--method``) and how they get the weights F_j:

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

Writes one ``save_pretrained`` checkpoint per input model under ``--out`` (the
merged body, that model's own head and tokenizer), each with ``merge.json``
(the recipe: method, scheme, n, seed, inputs and their fingerprints, Fisher
files with their sha256, the merge's parameters) and ``README.md``, a Hugging
Face model card rendered from the same recipe (``evaluate --card`` adds scores).
"""

from __future__ import annotations

import logging

from ..merging.registry import METHODS
from ..merging.schemes import DEFAULT_SCHEME, SCHEMES
from . import options

log = logging.getLogger(__name__)

__doc__ = __doc__.replace("{methods}", "\n".join(
    f"``{m.name}``\n    {m.description}" for m in METHODS.values()))


def register(subparsers) -> None:
    p = options.add_command(subparsers, "merge", "merge fine-tuned models (" + ", ".join(METHODS)
                            + ")", __doc__)
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="two or more checkpoints (directories or hub ids) sharing a body")
    p.add_argument("--method", choices=tuple(METHODS), required=True)
    p.add_argument("--fishers", nargs="+", metavar="FISHER",
                   help="one Fisher file per model, same order (" + ", ".join(
                       f"{m.name}: {m.fisher}" for m in METHODS.values() if m.fisher) + ")")
    p.add_argument("--scheme", choices=tuple(SCHEMES), default=DEFAULT_SCHEME,
                   help=f"mask Fisher -> parameter mapping (default: {DEFAULT_SCHEME})")
    p.add_argument("--floor", type=options.non_negative_float, default=0.0,
                   help="weight floor max(F, EPS) (Matena & Raffel use 1e-6; default 0)")
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
    p.add_argument("--out", required=True, help="output directory (one checkpoint per model)")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..merging.files import merge_models
    from ..models import parse_label_map

    label_maps = None
    if args.label_maps is not None:
        label_maps = [None if m in ("-", "") else parse_label_map(m) for m in args.label_maps]
    if not METHODS[args.method].takes_scheme and args.scheme != DEFAULT_SCHEME:
        log.warning("--scheme %s has no effect with --method %s", args.scheme, args.method)
    merge_models(
        args.models,
        args.out,
        method=args.method,
        fishers=args.fishers,
        scheme=args.scheme,
        floor=args.floor,
        names=args.names,
        label_maps=label_maps,
        allow_pickle=args.allow_pickle,
        tasks=args.tasks,
        allow_fisher_mismatch=args.allow_fisher_mismatch,
    )
