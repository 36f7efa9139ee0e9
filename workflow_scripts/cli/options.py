"""Argument types and options shared by the commands (one definition each)."""

from __future__ import annotations

import argparse
import re

from ..errors import UserError


def add_command(subparsers, name: str, help: str, doc: str | None, short: bool = False):
    """A command's parser with its module docstring as the description (``{objectives}`` in
    it: what the command serves, :func:`served`).

    ``short`` keeps only the docstring's first paragraph.
    """
    doc = served(doc or "")
    description = doc.split("\n\n")[0] if short else doc
    return subparsers.add_parser(name, help=served(help), description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def served(doc: str) -> str:
    """``doc`` with ``{objectives}`` replaced by the models a command serves: every objective
    of :mod:`workflow_scripts.objectives` (``--objective``), one line each, and
    ``{objective_names}`` by their names."""
    from .. import objectives

    lines = "\n".join(f"``{o.name}``\n    {o.description}" for o in objectives.OBJECTIVES.values())
    names = " or ".join(objectives.OBJECTIVES)
    return doc.replace("{objectives}", lines).replace("{objective_names}", names)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, str]:
    """argparse type: ``KEY=VALUE`` (the value may be empty, the key may not)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


_INT = re.compile(r"^[+-]?\d+$")


def add_meta(parser) -> None:
    parser.add_argument("--meta", nargs="+", action="extend", type=key_value, default=[],
                        metavar="KEY=VALUE",
                        help="context recorded in the output (integers parsed; repeatable)")


def meta_context(pairs: list[tuple[str, str]]) -> dict:
    """``--meta`` pairs -> {key: value}; integer values become ints; a repeated key is an error."""
    context: dict = {}
    for key, value in pairs:
        if key in context:
            raise UserError(f"--meta key {key!r} is given twice")
        context[key] = int(value) if _INT.match(value) else value
    return context


def add_model_source(parser) -> None:
    """``--revision`` and ``--allow-pickle``, shared by every command that loads a model."""
    parser.add_argument("--revision", default=None, help="hub revision (commit, tag or branch; hub ids only)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow pickle (.bin) weights, which can run code when loaded")


def add_label_map(parser) -> None:
    parser.add_argument("--label-map", default=None, metavar="MAP",
                        help="data-set label i is model output MAP[i], e.g. 2,0,1")


def load_samples_and_model(args, device, settings):
    """(samples, model, tokenizer, info): the samples of ``--data`` (an error when there are
    none) and the model of ``--model`` (``--revision``, ``--allow-pickle``,
    ``--label-map``; loaded in ``settings``' dtype, for its objective), a classifier checked
    against the samples' labels."""
    from .. import data, taskkinds
    from ..models import load_model, parse_label_map

    samples = data.read_samples(args.data, nonempty=True)
    model, tokenizer, info = load_model(
        args.model, revision=args.revision, allow_pickle=args.allow_pickle,
        label_map=parse_label_map(args.label_map), device=device, dtype=settings.torch_dtype,
        objective=settings.objective,
    )
    taskkinds.of_settings(settings).check_samples(samples, info.num_labels, where=str(args.data))
    return samples, model, tokenizer, info


def add_artifact_command(subparsers, name: str, help: str, doc: str, settings, run) -> None:
    """The parser of a command that computes one model's artifact (``fisher``, ``gram``):
    ``--model`` and how to load it, ``--data``, the command's ``settings`` class, the
    artifact's context, ``--no-progress`` and ``--out``; ``run(args)`` runs it."""
    from ..settings import add_arguments

    p = add_command(subparsers, name, help, doc)
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    add_model_source(p)
    add_label_map(p)
    p.add_argument("--data", required=True, help="samples Parquet file (idx, text_a, text_b, label)")
    add_arguments(p, settings)
    add_artifact_context(p)
    add_progress(p)
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.set_defaults(func=run)


def start_artifact_job(args, settings_class):
    """(settings, context, device) of an artifact command, its ``--out`` checked before any
    compute."""
    from ..devices import resolve_device

    settings = settings_class.from_args(args)
    context = artifact_context(args)
    check_artifact_out(args)
    return settings, context, resolve_device(settings.device)


def check_artifact_out(args) -> None:
    """Before any compute: ``--out`` (an artifact) is not ``--model`` or ``--data`` (nor a
    folder holding them), holds nothing but an earlier artifact, and can be written."""
    from .. import outputs

    outputs.check_output(args.out, outputs.ARTIFACT, "--out",
                         outputs.inputs_of(model=args.model, data=args.data))


def add_artifact_context(parser) -> None:
    """``--task``, ``--n``, ``--seed`` and ``--meta``: recorded in an artifact's header."""
    parser.add_argument("--task", default=None)
    parser.add_argument("--n", type=int, default=None,
                        help="requested number of samples (metadata)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (metadata)")
    add_meta(parser)


def artifact_context(args):
    """The :class:`~workflow_scripts.artifacts.ArtifactContext` of
    :func:`add_artifact_context`'s options."""
    from ..artifacts import ArtifactContext

    return ArtifactContext(task=args.task, n=args.n, seed=args.seed,
                           meta=meta_context(args.meta))


def add_progress(parser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
