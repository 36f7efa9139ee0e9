"""Safetensors files and checkpoints read and written one tensor at a time.

The format (https://huggingface.co/docs/safetensors): 8 bytes little-endian header
length N, N bytes of JSON header (``{name: {"dtype", "shape", "data_offsets": [begin,
end]}, "__metadata__": {...}}``, offsets relative to the data after the header), then
the tensors' bytes.  Reading a header needs only the standard library (the plan reads
parameter counts and dtypes while Snakemake parses); a tensor is read with plain file
reads into its own buffer, so reading every tensor of a checkpoint once keeps at most
one tensor in memory (memory-mapping would leave every touched page resident), and a
large tensor can be read a block of rows at a time from its file offsets
(:func:`read_rows`, :func:`read_blocks`).

A checkpoint directory holds ``model.safetensors`` or shards named by
``model.safetensors.index.json``'s ``weight_map`` (:class:`Checkpoint`).  Every file is
checked before a tensor is read as the safetensors library checks it, and the folder as
:mod:`.tensorlayout` says (one layout, files only inside the folder, shards agreeing with
the index); a fault is an error naming the file and the fix.  :class:`CheckpointWriter`
writes a checkpoint in the same layout (``save_pretrained``'s), tensor by tensor in a
planned order, shards of at most ``max_shard_bytes``; :func:`write_file` one file.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelLoadError
from .tensorlayout import (
    check_layout, check_one_layout, check_shards, checkpoint_root, damaged, entry_fields,
    header_metadata, inside, parse_header, read_weight_map,
)

if TYPE_CHECKING:
    import torch

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
# safetensors dtype codes -> (torch dtype name, bytes per element)
DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U8": ("uint8", 1), "BOOL": ("bool", 1),
}
CODES = {name: code for code, (name, _) in DTYPES.items()}
ITEMSIZES = {code: size for code, (_, size) in DTYPES.items()}
FLOATING = ("float64", "float32", "float16", "bfloat16")
MAX_HEADER = 100 << 20  # safetensors' own limit on the header's size


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes lie: its file, absolute byte range, dtype and shape."""

    name: str
    file: Path
    dtype: str  # a torch dtype name (float32, bfloat16, ...)
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING

    def is_floating_point(self) -> bool:  # as a torch.Tensor answers
        return self.floating


_damaged = damaged


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict]:
    """``({name: TensorInfo}, metadata)`` of a safetensors file, checked as the safetensors
    library checks it (:mod:`.tensorlayout`) against the file's size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise _damaged(path, f"{size} bytes: no header")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER, size - 8):
                raise _damaged(path, f"its header claims {length} bytes of {size}")
            raw = handle.read(length)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    header = parse_header(path, raw)
    metadata = header_metadata(path, header.pop("__metadata__", None))
    base, out, spans = 8 + length, {}, []
    for name, entry in header.items():
        code, shape, begin, end = entry_fields(path, name, entry, ITEMSIZES)
        out[name] = TensorInfo(name, path, DTYPES[code][0], shape, base + begin, base + end)
        spans.append((name, begin, end))
    check_layout(path, spans, size - base)
    return out, metadata


def read_tensor(info: TensorInfo) -> torch.Tensor:
    """One tensor, read into its own memory (no memory map)."""
    if not info.shape:
        return _read(info, info.start, info.nbytes, ())
    return read_rows(info, 0, info.shape[0])


def row_bytes(info: TensorInfo) -> int:
    """The bytes of one row (one index of the first axis) of a tensor of at least one axis."""
    return info.nbytes // info.shape[0] if info.shape and info.shape[0] else 0


def read_rows(info: TensorInfo, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` (of the first axis) of a tensor, read from the file's offsets into
    their own memory: only those rows' bytes are read and held."""
    if not 0 <= start <= stop <= info.shape[0]:
        raise ValueError(f"rows {start}:{stop} of {info.name!r} of shape {info.shape}")
    size = row_bytes(info)
    return _read(info, info.start + start * size, (stop - start) * size,
                 (stop - start, *info.shape[1:]))


def row_blocks(shape: tuple[int, ...], itemsize: int, max_bytes: int) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of the first axis of a tensor of ``shape`` whose blocks
    hold at most ``max_bytes`` at ``itemsize`` bytes an element (one row at least)."""
    if not shape or shape[0] == 0:
        return [(0, shape[0] if shape else 0)]
    per_row = itemsize
    for d in shape[1:]:
        per_row *= d
    step = max(1, max_bytes // per_row) if per_row else shape[0]
    return [(r, min(shape[0], r + step)) for r in range(0, shape[0], step)]


def read_blocks(info: TensorInfo, max_bytes: int):
    """A tensor as row blocks of at most ``max_bytes`` (of its own dtype), in order."""
    if not info.shape:
        yield read_tensor(info)
        return
    itemsize = ITEMSIZES[CODES[info.dtype]]
    for start, stop in row_blocks(info.shape, itemsize, max_bytes):
        yield read_rows(info, start, stop)


def _read(info: TensorInfo, offset: int, nbytes: int, shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    dtype = getattr(torch, info.dtype)
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    buffer = bytearray(nbytes)
    with open(info.file, "rb") as handle:
        handle.seek(offset)
        if handle.readinto(buffer) != nbytes:
            raise _damaged(info.file, f"tensor {info.name!r} is cut short")
    return torch.frombuffer(buffer, dtype=dtype).reshape(shape)


class Checkpoint:
    """The weights of a checkpoint directory, by tensor name (as written in its files), read
    only inside the directory and only if valid (:mod:`.tensorlayout`)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.root = checkpoint_root(self.directory)
        self.files = self._weight_files()
        found = {path: read_header(path)[0] for path in self.files}
        if self.files and next(iter(self.files.values())) is not None:
            check_shards(self.directory / INDEX, self.files, {p: list(t) for p, t in found.items()})
        self.tensors: dict[str, TensorInfo] = {}
        for tensors in found.values():
            self.tensors.update(tensors)

    def _weight_files(self) -> dict[Path, list[str] | None]:
        check_one_layout(self.directory, WEIGHTS, INDEX)
        index = self.directory / INDEX
        if index.is_file():
            inside(self.directory, self.root, INDEX, self.directory)
            files: dict[Path, list[str] | None] = {}
            for name, file in read_weight_map(index).items():
                files.setdefault(inside(self.directory, self.root, file, index), []).append(name)
            absent = [p for p in files if not p.is_file()]
            if absent:
                raise ModelLoadError(
                    f"{absent[0]} is named by {index} but missing; the download or copy of this "
                    "sharded checkpoint is incomplete: fetch it again")
            return files
        single = self.directory / WEIGHTS
        if single.is_file():
            return {inside(self.directory, self.root, WEIGHTS, self.directory): None}
        raise ModelLoadError(f"{self.directory} has no {WEIGHTS} or {INDEX}: merges stream "
                             "safetensors weights (convert pickle weights with save_pretrained)")

    def read(self, name: str) -> torch.Tensor:
        return read_tensor(self.tensors[name])

    def parameter_count(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def weights_summary(directory: str | os.PathLike) -> tuple[int, int, str] | None:
    """``(parameters, bytes, dominant dtype)`` of a local checkpoint from its headers alone,
    or None when it has no safetensors weights (standard library only)."""
    try:
        ckpt = Checkpoint(directory)
    except ModelLoadError:
        return None
    by_dtype: dict[str, int] = {}
    for t in ckpt.tensors.values():
        by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
    dtype = max(by_dtype, key=by_dtype.get) if by_dtype else "float32"
    return ckpt.parameter_count(), ckpt.nbytes(), dtype


@dataclass(frozen=True)
class Entry:
    """A tensor to be written: its name, torch dtype name and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count * DTYPES[CODES[self.dtype]][1]


def plan_shards(entries: list[Entry], max_shard_bytes: int) -> list[list[Entry]]:
    """Consecutive entries in shards of at most ``max_shard_bytes`` (a bigger tensor alone)."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return shards


def header_bytes(entries: list[Entry], metadata: dict | None) -> bytes:
    """The length prefix and JSON header of a safetensors file holding ``entries`` in this
    order (contiguous from 0), padded so that the data start 8-byte aligned (as the library
    writes them)."""
    header, offset = ({"__metadata__": metadata} if metadata else {}), 0
    for e in entries:
        header[e.name] = {"dtype": CODES[e.dtype], "shape": list(e.shape),
                          "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_bytes(handle, tensor: torch.Tensor) -> None:
    """A tensor's bytes (little-endian, C order) written to an open file."""
    import torch

    data = tensor.detach().contiguous().cpu().reshape(-1)
    if data.numel():
        handle.write(memoryview(data.view(torch.uint8).numpy()))


def write_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
               metadata: dict[str, str] | None = None) -> None:
    """A safetensors file of ``tensors`` (sorted by name) with string ``metadata``, written
    with plain file writes one tensor at a time (a full disk is an OSError)."""
    entries = [Entry(name, str(tensors[name].dtype).replace("torch.", ""),
                     tuple(tensors[name].shape)) for name in sorted(tensors)]
    with open(path, "wb") as handle:
        handle.write(header_bytes(entries, metadata))
        for e in entries:
            write_bytes(handle, tensors[e.name])


class CheckpointWriter:
    """Writes the planned tensors of one checkpoint, one at a time, in ``entries`` order:
    ``model.safetensors``, or shards ``model-0000k-of-0000n.safetensors`` with their index
    when the tensors exceed ``max_shard_bytes``; a tensor may come whole (:meth:`write`) or
    as consecutive row blocks (:meth:`write_rows`), so it never needs to be in memory whole."""

    def __init__(self, directory: str | os.PathLike, entries: list[Entry],
                 max_shard_bytes: int, metadata: dict | None = None):
        self.directory = Path(directory)
        self.shards = plan_shards(entries, max_shard_bytes)
        count = len(self.shards)
        self.names = [WEIGHTS] if count == 1 else [
            f"model-{k + 1:05d}-of-{count:05d}.safetensors" for k in range(count)]
        self.metadata = {"format": "pt", **(metadata or {})}
        self.order = [e for shard in self.shards for e in shard]
        self.position = 0
        self.rows = None  # rows of the current tensor written so far (None: not started)
        self.handle = None
        self.shard = -1

    def _open_next(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.shard += 1
        entries = self.shards[self.shard]
        self.handle = open(self.directory / self.names[self.shard], "wb")
        self.handle.write(header_bytes(entries, self.metadata))
        self.left = len(entries)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """The next planned tensor (same name, dtype and shape as planned), whole."""
        self.write_rows(name, 0, tensor)

    def write_rows(self, name: str, start: int, rows: torch.Tensor) -> None:
        """Rows ``start:start + len(rows)`` of the next planned tensor (a scalar: whole), in
        order: the tensor is complete when its last row is written."""
        want = self.order[self.position] if self.position < len(self.order) else None
        if want is None:
            raise ValueError(f"every planned tensor is written; got {name!r}")
        expected = self.rows or 0
        shape = tuple(rows.shape)
        if (name != want.name or str(rows.dtype) != f"torch.{want.dtype}" or start != expected
                or (shape[1:] != want.shape[1:] if want.shape else shape != ())
                or (want.shape and start + shape[0] > want.shape[0])):
            raise ValueError(f"expected {want} next from row {expected}, got {name!r} "
                             f"{rows.dtype} {shape} from row {start}")
        if self.rows is None:
            if self.handle is None or self.left == 0:
                self._open_next()
            self.rows = 0
        write_bytes(self.handle, rows)
        self.rows += shape[0] if want.shape else 1
        if self.rows == (want.shape[0] if want.shape else 1):
            self._finish()

    def _finish(self) -> None:
        self.rows = None
        self.left -= 1
        self.position += 1

    def close(self) -> None:
        """Finish the last shard and write the index (sharded checkpoints); every planned
        tensor must have been written."""
        if self.position != len(self.order):
            raise ValueError(f"{len(self.order) - self.position} planned tensors not written"
                             + (f" ({self.order[self.position].name!r} written in part)"
                                if self.rows else ""))
        if self.handle is None and self.order == []:
            self._open_next()  # an empty checkpoint is still a file
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if len(self.names) > 1:
            index = {"metadata": {"total_size": sum(e.nbytes for e in self.order)},
                     "weight_map": {e.name: self.names[k] for k, shard in enumerate(self.shards)
                                    for e in shard}}
            (self.directory / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
