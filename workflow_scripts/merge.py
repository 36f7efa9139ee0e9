"""Weighted merging of fine-tuned models that share a body (Eq. 5 of the paper).

    theta* = sum_j F_j theta_j / sum_j F_j        (lambda_j = 1)

over the shared body (``model.base_model``) only; every model keeps its own task
head.  Three ways to get the weights F_j:

``average``
    F_j = 1: plain averaging.
``fisher``
    the full diagonal Fisher of every body parameter (Matena & Raffel 2022).
``mask``
    mask-node Fisher mapped to parameters by a scheme (see the notes):

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
set to 1 in every model (the released code's "both zero -> 1" rule, applied to
the mask Fisher before the layer means are taken, so it also shifts the
released scheme's means; under the paper scheme it only makes those rows a
plain average).  After that, wherever every model's weight for an element is
exactly zero, that element is the plain average: never a division by zero.
``floor`` replaces each weight F by max(F, floor), as in Matena & Raffel's code
(1e-6 there), after the mapping.

The arithmetic is done one parameter at a time in float64, so the extra memory
is a few copies of the largest parameter, not of the model.  Roles of the body
parameters come from :mod:`architectures` only; nothing here names modules.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import torch

from . import __version__
from . import architectures as arch
from .artifacts import check_values, load_fisher, read_metadata
from .io import atomic_path, sha256_file
from .models import load_model, parse_label_map, save_checkpoint

log = logging.getLogger(__name__)

METHODS = ("average", "fisher", "mask")
SCHEMES = ("paper", "released")
FISHER_KIND = {"fisher": "full", "mask": "mask"}  # --method -> Fisher metadata "method"


class MergeError(ValueError):
    """A user-fixable problem with the merge's inputs."""


# ---------------------------------------------------------------------------
# compatibility checks


def check_compatible(
    bodies: list[dict[str, torch.Tensor]],
    labels: list[str] | None = None,
    model_types: list[str] | None = None,
) -> None:
    """All bodies have the same model type, parameter names and shapes.

    The error names the two models and the first parameter that differs.
    """
    if len(bodies) < 2:
        raise MergeError(f"a merge needs two or more models, got {len(bodies)}")
    labels = labels or [f"model {j}" for j in range(len(bodies))]
    if model_types is not None:
        for j in range(1, len(bodies)):
            if model_types[j] != model_types[0]:
                raise MergeError(
                    f"cannot merge different architectures: {labels[0]} is "
                    f"{model_types[0]!r} but {labels[j]} is {model_types[j]!r}"
                )
    ref = bodies[0]
    for j in range(1, len(bodies)):
        other = bodies[j]
        for name in ref:
            if name not in other:
                raise MergeError(
                    f"cannot merge {labels[0]} and {labels[j]}: body parameter {name!r} "
                    f"of the first is missing from the second"
                )
            if tuple(ref[name].shape) != tuple(other[name].shape):
                raise MergeError(
                    f"cannot merge {labels[0]} and {labels[j]}: body parameter {name!r} "
                    f"has shape {tuple(ref[name].shape)} in the first but "
                    f"{tuple(other[name].shape)} in the second (different model sizes?)"
                )
        for name in other:
            if name not in ref:
                raise MergeError(
                    f"cannot merge {labels[0]} and {labels[j]}: body parameter {name!r} "
                    f"of the second is missing from the first"
                )


def check_mask_fisher(
    fisher: dict[str, torch.Tensor], dims: arch.Dims, label: str = "mask Fisher"
) -> None:
    """``head`` is [layers, heads] and ``neuron`` is [layers, intermediate]."""
    expected = {
        "head": (dims.layers, dims.heads),
        "neuron": (dims.layers, dims.intermediate),
    }
    for key, shape in expected.items():
        if key not in fisher:
            raise MergeError(
                f"{label} has no {key!r} tensor (has {sorted(fisher)}); is it a mask Fisher?"
            )
        if tuple(fisher[key].shape) != shape:
            raise MergeError(
                f"{label}: {key!r} has shape {tuple(fisher[key].shape)} but the models "
                f"need {shape} ([layers, {'heads' if key == 'head' else 'intermediate'}]); "
                "it was computed for a different model"
            )


def check_full_fisher(
    fisher: dict[str, torch.Tensor],
    body_shapes: dict[str, torch.Size],
    label: str = "full Fisher",
) -> None:
    """Same keys and shapes as the body's floating-point tensors."""
    wanted = {k: tuple(s) for k, s in body_shapes.items()}
    missing = [k for k in wanted if k not in fisher]
    if missing:
        raise MergeError(
            f"{label} lacks {len(missing)} body parameter(s), first {missing[0]!r}; "
            "it was computed for a different model (or is a mask Fisher)"
        )
    extra = [k for k in fisher if k not in wanted]
    if extra:
        raise MergeError(
            f"{label} has {len(extra)} tensor(s) that are not body parameters of the "
            f"models, first {extra[0]!r}; it was computed for a different model"
        )
    for k, shape in wanted.items():
        if tuple(fisher[k].shape) != shape:
            raise MergeError(
                f"{label}: {k!r} has shape {tuple(fisher[k].shape)} but the models' "
                f"parameter has shape {shape}"
            )


# ---------------------------------------------------------------------------
# weights


def _rows(values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Per-row weights shaped to broadcast over a parameter of ``shape``."""
    return values.reshape((shape[0],) + (1,) * (len(shape) - 1))


def ones_where_all_zero(mask_fishers: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Copies of the mask Fishers with nodes that are 0 in every model set to 1 in all.

    The released code's rule (for its pairs: "where both are 0, both become 1"),
    generalised to any number of models.
    """
    out = [dict(f) for f in mask_fishers]
    for key in ("head", "neuron"):
        values = [f[key].detach().cpu() for f in mask_fishers]
        zero = torch.stack([v == 0 for v in values]).all(dim=0)
        if bool(zero.any()):
            for f, v in zip(out, values):
                f[key] = torch.where(zero, torch.ones_like(v), v)
    return out


def mask_weights(
    spec: arch.ArchSpec,
    dims: arch.Dims,
    body_shapes: dict[str, torch.Size],
    mask_fisher: dict[str, torch.Tensor],
    scheme: str = "paper",
) -> dict[str, torch.Tensor]:
    """Per-element weights (float64, broadcastable to each body parameter).

    ``body_shapes`` maps body parameter names (as in ``base_model.state_dict()``)
    to shapes; ``mask_fisher`` holds ``head`` [layers, heads] and ``neuron``
    [layers, intermediate].  The cross-model zero rule is not applied here:
    pass the Fishers through :func:`ones_where_all_zero` first (merge_loaded does).
    """
    if scheme not in SCHEMES:
        raise MergeError(f"unknown mask scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    check_mask_fisher(mask_fisher, dims)
    head = mask_fisher["head"].detach().to(torch.float64).cpu()
    neuron = mask_fisher["neuron"].detach().to(torch.float64).cpu()
    one = torch.tensor(1.0, dtype=torch.float64)
    head_mean = head.mean(dim=1)  # [layers]
    neuron_mean = neuron.mean(dim=1)  # [layers]
    global_weight = (head_mean + neuron_mean).mean()

    weights: dict[str, torch.Tensor] = {}
    for name, shape in body_shapes.items():
        shape = torch.Size(shape)
        role = arch.param_role(spec, name)
        layer = role.layer
        if layer is not None and not 0 <= layer < dims.layers:
            raise MergeError(
                f"body parameter {name!r} belongs to layer {layer} but the model has "
                f"{dims.layers} layers"
            )
        if role.role == arch.QK:
            if len(shape) == 0 or shape[0] % dims.heads:
                raise MergeError(
                    f"query/key parameter {name!r} of shape {tuple(shape)} does not "
                    f"split into {dims.heads} heads"
                )
            per_head = shape[0] // dims.heads
            weights[name] = _rows(head[layer].repeat_interleave(per_head), shape)
        elif role.role == arch.FFN_IN:
            if len(shape) == 0 or shape[0] != dims.intermediate:
                raise MergeError(
                    f"FFN input parameter {name!r} of shape {tuple(shape)} does not have "
                    f"{dims.intermediate} rows (one per neuron)"
                )
            weights[name] = _rows(neuron[layer], shape)
        elif scheme == "paper":
            weights[name] = one
        elif role.role in (arch.VALUE, arch.ATTN_OUT):
            weights[name] = head_mean[layer]
        elif role.role == arch.FFN_OUT:
            weights[name] = neuron_mean[layer]
        elif role.role == arch.GLOBAL:
            weights[name] = global_weight
        else:  # a role added to architectures.py but not mapped here
            raise MergeError(f"no mask-Fisher mapping for role {role.role!r} of {name!r}")
    return weights


def full_weights(
    fisher: dict[str, torch.Tensor], body_shapes: dict[str, torch.Size], label: str = "full Fisher"
) -> dict[str, torch.Tensor]:
    """The full diagonal Fisher, checked against the body, as weights."""
    check_full_fisher(fisher, body_shapes, label)
    return {k: fisher[k] for k in body_shapes}


# ---------------------------------------------------------------------------
# arithmetic


def merge_parameter(
    tensors: list[torch.Tensor],
    weights: list[torch.Tensor] | None = None,
    floor: float = 0.0,
) -> torch.Tensor:
    """sum_j w_j t_j / sum_j w_j in float64, cast back to the tensors' dtype.

    ``weights[j]`` broadcasts to ``tensors[j]``; elements whose weights are all
    zero get the plain average.  ``floor`` replaces w by max(w, floor).
    """
    out_dtype = tensors[0].dtype
    if weights is None:
        total = torch.zeros(tensors[0].shape, dtype=torch.float64)
        for t in tensors:
            total.add_(t.detach().cpu().to(torch.float64))
        return total.div_(len(tensors)).to(out_dtype)
    if len(weights) != len(tensors):
        raise MergeError(f"{len(tensors)} tensors but {len(weights)} weights")
    num = torch.zeros(tensors[0].shape, dtype=torch.float64)
    den = None
    for t, w in zip(tensors, weights):
        w = torch.as_tensor(w).detach().cpu().to(torch.float64)
        if floor:
            w = w.clamp_min(floor)
        num.addcmul_(t.detach().cpu().to(torch.float64), w)
        den = w.clone() if den is None else den + w
    zero = den == 0
    merged = num / torch.where(zero, torch.ones_like(den), den)
    if bool(zero.any()):
        plain = merge_parameter(tensors, None).to(torch.float64)
        merged = torch.where(zero, plain, merged)
    return merged.to(out_dtype)


def merge_bodies(
    bodies: list[dict[str, torch.Tensor]],
    weights: list[dict[str, torch.Tensor]] | None = None,
    floor: float = 0.0,
    inplace: bool = False,
    labels: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Merge body state dicts parameter by parameter.

    ``weights`` is one dict per body (same keys, tensors broadcastable to each
    parameter) or None for plain averaging.  Non-floating tensors (integer
    buffers) are not averaged: they must be equal and are kept.  With
    ``inplace`` the merged values are copied into every body's tensors (which
    share storage with their models' parameters) and ``bodies[0]`` is returned,
    so no second copy of the body is held.
    """
    check_compatible(bodies, labels)
    labels = labels or [f"model {j}" for j in range(len(bodies))]
    if weights is not None and len(weights) != len(bodies):
        raise MergeError(f"{len(bodies)} bodies but {len(weights)} weight sets")
    merged: dict[str, torch.Tensor] = {}
    for name, ref in bodies[0].items():
        tensors = [b[name] for b in bodies]
        if not ref.is_floating_point():
            for j, t in enumerate(tensors[1:], 1):
                if not torch.equal(t.cpu(), ref.cpu()):
                    raise MergeError(
                        f"cannot merge {labels[0]} and {labels[j]}: their integer body "
                        f"buffer {name!r} differs"
                    )
            value = ref
        else:
            w = None
            if weights is not None:
                missing = [j for j, ws in enumerate(weights) if name not in ws]
                if missing:
                    raise MergeError(f"no merge weights for {name!r} of {labels[missing[0]]}")
                w = [ws[name] for ws in weights]
            value = merge_parameter(tensors, w, floor)
        if inplace:
            with torch.no_grad():
                for t in tensors:
                    t.copy_(value)
            merged[name] = tensors[0]
        else:
            merged[name] = value
    return merged


def merge_loaded(
    models: list,
    method: str,
    fishers: list[dict[str, torch.Tensor]] | None = None,
    scheme: str = "paper",
    floor: float = 0.0,
    labels: list[str] | None = None,
    fisher_labels: list[str] | None = None,
) -> None:
    """Merge the bodies of loaded models in place; heads are left alone.

    ``fishers`` holds one Fisher tensor dict per model (mask: ``head`` and
    ``neuron``; fisher: one tensor per body parameter); ``labels`` and
    ``fisher_labels`` name the models and Fisher files in error messages.
    """
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; choose from {', '.join(METHODS)}")
    labels = labels or [f"model {j}" for j in range(len(models))]
    if len(models) < 2:
        raise MergeError(f"a merge needs two or more models, got {len(models)}")
    specs = [arch.spec_for(m) for m in models]
    model_types = [s.model_type for s in specs]
    bodies = [arch.body_state(m) for m in models]
    check_compatible(bodies, labels, model_types)
    all_dims = [arch.dims(m) for m in models]
    for j in range(1, len(models)):
        if all_dims[j] != all_dims[0]:
            raise MergeError(
                f"cannot merge {labels[0]} and {labels[j]}: dimensions {all_dims[0]} "
                f"differ from {all_dims[j]}"
            )
    if method == "average":
        weights = None
    else:
        if fishers is None or len(fishers) != len(models):
            got = 0 if fishers is None else len(fishers)
            raise MergeError(
                f"--method {method} needs one Fisher file per model: {len(models)} models "
                f"but {got} Fisher file(s)"
            )
        kind = "mask" if method == "mask" else "full"
        fisher_labels = fisher_labels or [f"{kind} Fisher of {label}" for label in labels]
        shapes = {k: v.shape for k, v in bodies[0].items() if v.is_floating_point()}
        if method == "mask":
            for j, f in enumerate(fishers):  # all shapes checked before any arithmetic
                check_mask_fisher(f, all_dims[0], fisher_labels[j])
            fishers = ones_where_all_zero(fishers)
            weights = [
                mask_weights(specs[0], all_dims[0], shapes, f, scheme) for f in fishers
            ]
        else:
            weights = [full_weights(f, shapes, fisher_labels[j]) for j, f in enumerate(fishers)]
    merge_bodies(bodies, weights, floor=floor, inplace=True, labels=labels)


# ---------------------------------------------------------------------------
# files


_NAME_OK = re.compile(r"^[A-Za-z0-9._+=@-]+$")


def output_names(sources: list[str], names: list[str] | None = None) -> list[str]:
    """One directory name per model: ``names`` or each source's basename."""
    if names is not None:
        if len(names) != len(sources):
            raise MergeError(f"--names gives {len(names)} names for {len(sources)} models")
        result = list(names)
    else:
        result = [Path(str(s).rstrip("/")).name for s in sources]
    for name in result:
        if not name or name in (".", "..") or not _NAME_OK.match(name):
            raise MergeError(
                f"output name {name!r} is not a plain directory name; give --names"
            )
    seen: dict[str, int] = {}
    for j, name in enumerate(result):
        if name in seen:
            raise MergeError(
                f"models {sources[seen[name]]!r} and {sources[j]!r} would both be written "
                f"as {name!r}; give distinct --names"
            )
        seen[name] = j
    return result


def load_fisher_for(path, method: str, label: str):
    """Load a Fisher file and check its kind and values."""
    tensors, metadata = load_fisher(path)
    kind = metadata.get("method")
    want = FISHER_KIND[method]
    if kind != want:
        raise MergeError(
            f"Fisher file {path} (for {label}) has method {kind!r} but --method {method} "
            f"needs a {want!r} Fisher"
        )
    check_values(tensors, what=f"Fisher file {path}")
    return tensors, metadata


def merge_models(
    models: list[str],
    out_dir,
    method: str = "average",
    fishers: list[str] | None = None,
    scheme: str = "paper",
    floor: float = 0.0,
    names: list[str] | None = None,
    label_maps: list[list[int] | None] | None = None,
    allow_pickle: bool = False,
    revisions: list[str | None] | None = None,
) -> list[Path]:
    """Load, merge and write one checkpoint per model under ``out_dir`` (atomically).

    Returns the checkpoint directories.
    """
    models = [str(m) for m in models]
    if len(models) < 2:
        raise MergeError(f"a merge needs two or more models, got {len(models)}")
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; choose from {', '.join(METHODS)}")
    if scheme not in SCHEMES:
        raise MergeError(f"unknown mask scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    if floor < 0:
        raise MergeError(f"--floor must be >= 0, got {floor}")
    if method == "average":
        if fishers:
            raise MergeError("--method average takes no --fishers")
        if floor:
            log.warning("--floor %g has no effect with --method average", floor)
    elif not fishers or len(fishers) != len(models):
        raise MergeError(
            f"--method {method} needs one Fisher file per model, in the same order: "
            f"{len(models)} models but {len(fishers or [])} --fishers"
        )
    label_maps = label_maps if label_maps is not None else [None] * len(models)
    if len(label_maps) != len(models):
        raise MergeError(f"--label-maps gives {len(label_maps)} maps for {len(models)} models")
    revisions = revisions if revisions is not None else [None] * len(models)
    out_names = output_names(models, names)
    for j, path in enumerate(fishers or []):  # cheap header checks before loading models
        if not Path(path).is_file():
            raise MergeError(f"Fisher file {path} (for {models[j]!r}) does not exist")
        kind = read_metadata(path).get("method")
        if kind != FISHER_KIND[method]:
            raise MergeError(
                f"Fisher file {path} (for {models[j]!r}) has method {kind!r} but --method "
                f"{method} needs a {FISHER_KIND[method]!r} Fisher"
            )

    loaded = []
    for j, source in enumerate(models):
        log.info("loading %s", source)
        loaded.append(
            load_model(source, revision=revisions[j], allow_pickle=allow_pickle, label_map=label_maps[j])
        )
    labels = [f"{models[j]!r}" for j in range(len(models))]
    fisher_tensors, fisher_records = None, []
    if method != "average":
        fisher_tensors = []
        for j, path in enumerate(fishers):
            tensors, metadata = load_fisher_for(path, method, labels[j])
            fisher_tensors.append(tensors)
            expected = loaded[j][2].fingerprint
            if metadata.get("fingerprint") not in (None, expected):
                log.warning(
                    "Fisher file %s was computed for a checkpoint with fingerprint %s, but "
                    "%s has %s: is it the Fisher of another model?",
                    path, metadata["fingerprint"], models[j], expected,
                )
            fisher_records.append(
                {"path": str(path), "sha256": sha256_file(path), "metadata": metadata}
            )
    log.info("merging %d models (%s%s)", len(models), method,
             f", {scheme} scheme" if method == "mask" else "")
    fisher_labels = [
        f"{FISHER_KIND[method]} Fisher file {fishers[j]} (for {labels[j]})"
        for j in range(len(models))
    ] if method != "average" else None
    merge_loaded(
        [m for m, _, _ in loaded], method, fisher_tensors, scheme=scheme, floor=floor,
        labels=labels, fisher_labels=fisher_labels,
    )
    del fisher_tensors

    inputs = [
        {
            "name": out_names[j],
            "source": info.source,
            "revision": info.revision,
            "fingerprint": info.fingerprint,
            "model_type": info.model_type,
            "num_labels": info.num_labels,
            "label_map": info.label_map,
            "fisher": fisher_records[j]["path"] if fisher_records else None,
        }
        for j, (_, _, info) in enumerate(loaded)
    ]
    common = {
        "method": method,
        "scheme": scheme if method == "mask" else None,
        "floor": floor if method != "average" else None,
        "inputs": inputs,
        "fisher_files": fisher_records,
        "workflow_scripts_version": __version__,
    }
    out_dir = Path(out_dir)
    written = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for j, (model, tokenizer, info) in enumerate(loaded):
            extra = dict(common, model_index=j, name=out_names[j], head_of=info.source)
            save_checkpoint(model, tokenizer, tmp / out_names[j], extra=extra)
            written.append(out_dir / out_names[j])
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written


# ---------------------------------------------------------------------------
# CLI


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge fine-tuned models (average, full Fisher or mask Fisher)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="two or more checkpoints (directories or hub ids) sharing a body")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--fishers", nargs="+", metavar="FISHER",
                   help="one Fisher file per model, same order (fisher: full, mask: mask)")
    p.add_argument("--scheme", choices=SCHEMES, default="paper",
                   help="mask Fisher -> parameter mapping (default: paper)")
    p.add_argument("--floor", type=float, default=0.0,
                   help="weight floor max(F, EPS) (Matena & Raffel use 1e-6; default 0)")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="output directory names (default: the inputs' basenames)")
    p.add_argument("--label-maps", nargs="+", metavar="MAP",
                   help="one per model: '2,0,1' (data label i -> model output MAP[i]) or '-'")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading pickle (.bin) weights")
    p.add_argument("--out", required=True, help="output directory (one checkpoint per model)")
    p.set_defaults(func=run)


def run(args) -> None:
    label_maps = None
    if args.label_maps is not None:
        label_maps = [None if m in ("-", "") else parse_label_map(m) for m in args.label_maps]
    if args.method != "mask" and args.scheme != "paper":
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
    )
