"""Fisher (and Gram) artifacts: safetensors files with metadata and a content checksum.

The header's ``__metadata__`` holds two strings: ``fisher_metadata`` (JSON of
the run's facts: model, task, n, method, seconds, FLOPs, ...) and
``tensors_sha256`` (hash over the tensor names, dtypes, shapes and bytes).
Reading verifies both, so a truncated or edited file is reported with the
path to delete instead of silently feeding a merge.  Gram files (RegMean,
:mod:`.gram`) use the same format with ``method: gram`` in the metadata; their
values are checked for finiteness only (off-diagonal entries may be negative).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from . import outputs
from .artifactkinds import KINDS, NON_NEGATIVE, ArtifactKind
from .errors import CorruptArtifactError, FisherValueError, MissingFileError
from .io import atomic_path

META_KEY = "fisher_metadata"
SUM_KEY = "tensors_sha256"
VERIFY_BLOCK_BYTES = 64 << 20  # an artifact is verified this many bytes of a tensor at a time


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def check_values(tensors: dict[str, torch.Tensor], what: str = "Fisher") -> None:
    """NaN, infinite, negative or all-zero Fisher values are errors."""
    total = sum(tensor_total(name, t, what) for name, t in tensors.items())
    check_total(total, what)


def tensor_total(name: str, t: torch.Tensor, what: str = "Fisher") -> float:
    """The sum of one Fisher tensor's values; NaN, infinite or negative values are errors."""
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise FisherValueError(
            f"{what} tensor {name!r} has {bad} NaN or infinite values; the model or "
            "its samples produce non-finite gradients (check the checkpoint, the "
            "label mapping and --max-length)"
        )
    if (t < 0).any():
        raise FisherValueError(f"{what} tensor {name!r} has negative values")
    return float(t.sum(dtype=torch.float64))


def check_total(total: float, what: str = "Fisher") -> None:
    if total == 0.0 or not math.isfinite(total):
        raise FisherValueError(
            f"{what} is zero everywhere: every gradient vanished (a saturated or "
            "degenerate model, or samples that all give zero loss); it cannot weight a merge"
        )


def check_finite(tensors: dict[str, torch.Tensor], what: str = "Gram") -> None:
    """NaN or infinite values are errors (a Gram may hold negative entries)."""
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            raise FisherValueError(f"{what} tensor {name!r} has NaN or infinite values; "
                                   "the model produces non-finite activations")
    if not tensors:
        raise FisherValueError(f"{what} holds no tensors")


def save_fisher(tensors: dict[str, torch.Tensor], metadata: dict, path, check=check_values) -> None:
    """Validate (``check``, default: refuses non-finite or all-zero Fisher) and write atomically
    (replacing only an earlier artifact: :data:`workflow_scripts.outputs.ARTIFACT`)."""
    from .tensorfiles import write_file

    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in tensors.items()}
    check(tensors)
    header = {
        META_KEY: json.dumps(metadata, sort_keys=True, default=str),
        SUM_KEY: tensors_digest(tensors),
    }
    with atomic_path(path, outputs.ARTIFACT) as tmp:
        write_file(tmp, tensors, header)


def _corrupt(path, why: str, what: str = "Fisher artifact") -> CorruptArtifactError:
    return CorruptArtifactError(
        f"{what} {path} is corrupt ({why}); delete it "
        f"(rm '{path}') and rerun the workflow to recompute it"
    )


def read_metadata(path, what: str = "Fisher artifact") -> dict:
    """The metadata only (cheap: reads the header)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise _corrupt(path, f"unreadable header: {exc}", what) from exc
    if META_KEY not in header:
        raise _corrupt(path, "no fisher_metadata in its header", what)
    try:
        return json.loads(header[META_KEY])
    except json.JSONDecodeError as exc:
        raise _corrupt(path, "metadata is not valid JSON", what) from exc


def load_fisher(path, verify: bool = True, what: str = "Fisher artifact",
                ) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata); with ``verify`` the checksum must match."""
    path = Path(path)
    if not path.exists():
        command = next((k.command for k in KINDS.values()
                        if what.lower().startswith(k.noun.lower())), "fisher")
        raise MissingFileError(f"{what} {path} does not exist; compute it with "
                               f"`python -m workflow_scripts {command}` (or rerun the workflow)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:
        raise _corrupt(path, f"unreadable: {exc}", what) from exc
    if META_KEY not in header or SUM_KEY not in header:
        raise _corrupt(path, "header lacks its metadata or checksum", what)
    if verify and tensors_digest(tensors) != header[SUM_KEY]:
        raise _corrupt(path, "checksum mismatch: its values were changed after it was written", what)
    return tensors, json.loads(header[META_KEY])


def verify_artifact(path, kind: ArtifactKind | str = "fisher") -> tuple[dict, str]:
    """Check an artifact file of ``kind`` (an :class:`~.artifactkinds.ArtifactKind` or its
    name) as :func:`load_fisher` and the kind's value check do (the checksum; Fisher values
    finite, non-negative and not all zero, or Gram values finite), reading the file once,
    front to back, block by block (a tensor that comes before its turn in name order is held
    until then); returns its metadata and the sha256 of the file's
    bytes (its provenance in ``merge.json``), taken in the same pass."""
    from .errors import ModelLoadError
    from .tensorfiles import read_header

    kind = KINDS[kind] if isinstance(kind, str) else kind
    path, what = Path(path), f"{kind.noun} artifact"
    if not path.exists():
        raise MissingFileError(f"{what} {path} does not exist; compute it with `python -m "
                               f"workflow_scripts {kind.command}` (or rerun the workflow)")
    try:
        infos, header = read_header(path)
    except ModelLoadError as exc:
        raise _corrupt(path, f"unreadable: {exc}", what) from exc
    if META_KEY not in header or SUM_KEY not in header:
        raise _corrupt(path, "header lacks its metadata or checksum", what)
    content, file_digest = _ContentDigest(infos, kind, f"{kind.file} {path}"), hashlib.sha256()
    with open(path, "rb") as handle:  # the layout is contiguous (read_header checked it)
        file_digest.update(handle.read(min((i.start for i in infos.values()),
                                           default=path.stat().st_size)))
        for info in sorted(infos.values(), key=lambda i: i.start):
            if content.wants(info):  # in name order too: checked block by block as read
                content.stream(info, _blocks(handle, info, path, what), file_digest)
                continue
            raw = _read_exactly(handle, info.nbytes, info, path, what)
            file_digest.update(raw)
            content.add(info, raw)
        while block := handle.read(1 << 20):
            file_digest.update(block)
    if content.hexdigest() != header[SUM_KEY]:
        raise _corrupt(path, "checksum mismatch: its values were changed after it was written", what)
    content.raise_bad_values()
    return json.loads(header[META_KEY]), file_digest.hexdigest()


def _read_exactly(handle, size: int, info, path, what: str) -> bytearray:
    raw = bytearray(size)  # read into place: one copy of the bytes
    if handle.readinto(raw) != size:
        raise _corrupt(path, f"tensor {info.name!r} is cut short", what)
    return raw


def _blocks(handle, info, path, what: str):
    """A tensor's bytes in blocks of at most ``VERIFY_BLOCK_BYTES`` (whole elements)."""
    itemsize = getattr(torch, info.dtype).itemsize
    step, left = max(itemsize, VERIFY_BLOCK_BYTES // itemsize * itemsize), info.nbytes
    while left:
        raw = _read_exactly(handle, min(step, left), info, path, what)
        left -= len(raw)
        yield raw


class _ContentDigest:
    """:func:`tensors_digest` and the kind's value check over tensors given in file order;
    the digest takes them in name order (the same order for the files this package
    writes, so one tensor is held at a time)."""

    def __init__(self, infos: dict, kind: ArtifactKind, label: str):
        self.names, self.next, self.pending = sorted(infos), 0, {}
        self.digest, self.kind, self.label = hashlib.sha256(), kind, label
        self.total, self.bad_value = 0.0, None  # a bad value is reported after the checksum

    def add(self, info, raw: bytearray) -> None:
        self.pending[info.name] = (info, raw)
        while self.next < len(self.names) and self.names[self.next] in self.pending:
            self._take(*self.pending.pop(self.names[self.next]))
            self.next += 1

    def wants(self, info) -> bool:
        """Whether ``info`` is the next tensor in name order (nothing held back)."""
        return (not self.pending and self.next < len(self.names)
                and self.names[self.next] == info.name)

    def stream(self, info, blocks, file_digest) -> None:
        """Take the next tensor in name order from its bytes in blocks (no whole copy)."""
        self._digest_header(info)
        for raw in blocks:
            file_digest.update(raw)
            self.digest.update(raw)
            self._check(info.name, torch.frombuffer(raw, dtype=getattr(torch, info.dtype)))
        self.next += 1

    def _take(self, info, raw: bytearray) -> None:
        dtype = getattr(torch, info.dtype)
        t = (torch.frombuffer(raw, dtype=dtype) if raw else
             torch.empty(0, dtype=dtype)).reshape(info.shape)
        self._digest_header(info)
        self.digest.update(raw)
        self._check(info.name, t)

    def _digest_header(self, info) -> None:
        """:func:`tensors_digest`'s line for one tensor (name, dtype, shape)."""
        self.digest.update(f"{info.name}|torch.{info.dtype}|{tuple(info.shape)}|".encode())

    def _check(self, name: str, t: torch.Tensor) -> None:
        try:
            if self.kind.values == NON_NEGATIVE:
                self.total += tensor_total(name, t, self.label)
            else:
                check_finite({name: t}, what=self.label)
        except FisherValueError as exc:
            self.bad_value = self.bad_value or exc

    def hexdigest(self) -> str:
        return self.digest.hexdigest()

    def raise_bad_values(self) -> None:
        if self.bad_value is not None:
            raise self.bad_value
        if self.kind.values == NON_NEGATIVE:
            check_total(self.total, self.label)
        elif not self.names:
            raise FisherValueError(f"{self.label} holds no tensors")


# ---------------------------------------------------------------- shared header fields


@dataclass(frozen=True)
class ArtifactContext:
    """What an artifact's header records about the job that made it: the task, the requested
    sample count and the sampling seed (metadata, for the merge's checks and the report),
    and free ``meta`` context (``--meta KEY=VALUE``)."""

    task: str | None = None
    n: int | None = None
    seed: int | None = None
    meta: dict = field(default_factory=dict)


def source_metadata(model, info, samples, context: ArtifactContext | None = None,
                    batches=None, objective: str | None = None) -> dict:
    """Header fields naming what an artifact was computed from: the model (``info``: the
    ``ModelInfo`` of :func:`workflow_scripts.models.load_model`), its objective (the one it
    was loaded and computed for; None: the default) and its samples; ``num_samples`` counts
    those its ``batches`` hold (a causal LM's examples with no token left to predict after
    truncation are dropped, and counted apart)."""
    from . import objectives

    objective = objectives.objective(objective or objectives.DEFAULT).name
    context = context or ArtifactContext()
    used = len(samples) if batches is None else sum(len(b.rows) for b in batches)
    return {
        "model": getattr(info, "source", None),
        "fingerprint": getattr(info, "fingerprint", None),
        "revision": getattr(info, "revision", None),
        "model_type": model.config.model_type,
        "num_labels": int(model.config.num_labels),
        "label_map": getattr(info, "label_map", None),
        "objective": objective,
        "task": context.task,
        "n": context.n,
        "num_samples": used,
        "dropped_samples": len(samples) - used,
        "seed": context.seed,
        "context": dict(context.meta),
    }


def environment_metadata(device) -> dict:
    """Header fields naming where an artifact was computed: device, threads, versions."""
    import platform

    import transformers

    from .devices import device_name

    device = torch.device(device)
    return {
        "device": str(device),
        "device_name": device_name(device),
        "torch_num_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
