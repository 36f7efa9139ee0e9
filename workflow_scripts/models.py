"""Loading and saving sequence-classification checkpoints.

Safetensors only unless the caller opts in to pickle weights; remote code is
never trusted.  A label mapping (data-set label -> model output index) is
applied at load time by permuting the rows of the label layer, so that
everything downstream sees outputs in the data set's label order.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from . import architectures as arch
from .io import atomic_path, sha256_file


class ModelLoadError(RuntimeError):
    pass


@dataclass
class ModelInfo:
    source: str
    revision: str | None
    fingerprint: str
    model_type: str
    num_labels: int
    label_map: list[int] | None = None
    extra: dict = field(default_factory=dict)


def parse_label_map(text: str | None) -> list[int] | None:
    """``"2,0,1"`` -> [2, 0, 1]: data-set label i is model output ``map[i]``."""
    if text is None or text == "":
        return None
    if isinstance(text, (list, tuple)):
        values = [int(v) for v in text]
    else:
        try:
            values = [int(v) for v in str(text).split(",")]
        except ValueError as exc:
            raise ValueError(
                f"label map {text!r} must be comma-separated integers, e.g. '2,0,1'"
            ) from exc
    if sorted(values) != list(range(len(values))):
        raise ValueError(
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


def load_model(
    source: str,
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    label_map: list[int] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """Load (model, tokenizer, info) from a hub id or a local directory."""
    source = str(source)
    if not is_local(source) and (source.startswith((".", "/")) or os.sep in source.strip("/").split("/", 1)[-1]):
        raise ModelLoadError(f"model directory {source!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=False)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model config from {source!r}: {exc}") from exc
    arch.spec_for(config)  # unsupported architecture -> clear error before weights load
    if is_local(source) and not allow_pickle:
        if not any(Path(source).glob("*.safetensors")):
            raise ModelLoadError(
                f"{source!r} has no .safetensors weights; pickle weights are refused unless "
                "you opt in (--allow-pickle / allow_pickle: true), or convert the checkpoint"
            )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            revision=revision,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=False,
            dtype=dtype,
        )
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=False)
    except OSError as exc:
        raise ModelLoadError(f"cannot load checkpoint {source!r}: {exc}") from exc
    if label_map is not None:
        apply_label_map(model, label_map)
    model.to(device)
    model.eval()
    info = ModelInfo(
        source=source,
        revision=revision or getattr(config, "_commit_hash", None),
        fingerprint=fingerprint(source, revision),
        model_type=config.model_type,
        num_labels=int(config.num_labels),
        label_map=label_map,
    )
    return model, tokenizer, info


def apply_label_map(model, label_map: list[int]) -> None:
    """Permute the label layer so output i is the data set's label i."""
    num_labels = model.config.num_labels
    if len(label_map) != num_labels:
        raise ValueError(
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


def save_checkpoint(model, tokenizer, out_dir: str | os.PathLike, extra: dict | None = None) -> None:
    """Write a Hugging Face checkpoint directory atomically (safetensors)."""
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if extra:
            (Path(tmp) / "merge_info.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
