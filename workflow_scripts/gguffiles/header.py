"""A GGUF file's header, read with the standard library: its metadata and tensor table.

The format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), little-endian:
``GGUF`` magic, version (uint32; 2 or 3), tensor count and metadata count (uint64), the
metadata (key string, value type uint32, value), the tensor table (name, dimension count
uint32, dimensions uint64 fastest-moving first, ggml type uint32, offset uint64 from the
data section), then the tensor data from the next ``general.alignment`` (default 32)
boundary.  A string is a uint64 length and UTF-8 bytes.

Read with plain file reads (no memory map), so the config check can read it while
Snakemake parses the workflow; long string arrays (the vocabulary, the merges) are kept as
their length.  A file that is not GGUF, is cut short (its header or its tensor data), or
holds a ggml type this reader does not know is a :class:`GGUFError` naming the file and
the fix.  ``tests/test_gguf.py`` checks this reader and its type table against the
``gguf`` package's.
"""

from __future__ import annotations

import math
import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# ggml type id -> (name, elements per block, bytes per block), as gguf.GGML_QUANT_SIZES
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
# the types that store plain numbers, not quantised blocks
UNQUANTISED = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})
# metadata value types: fixed-size ones by struct format; 8 is a string, 9 an array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_SHORT_ARRAY = 64  # longer arrays (a vocabulary, merges, scores) are kept as their length
MAX_DIMS = 8


class GGUFError(ModelLoadError):
    """A GGUF file that cannot be read (not GGUF, cut short, or of an unknown layout)."""


@dataclass(frozen=True)
class GGUFTensor:
    """One entry of the tensor table: name, shape in torch order, ggml type, data offset."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.type_id][0]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        _, block, size = GGML_TYPES[self.type_id]
        return self.numel // block * size


@dataclass(frozen=True)
class GGUFHeader:
    """A GGUF file's version, metadata (arrays of more than 64 items as their length), tensor
    table, where its tensor data start and its size."""

    path: Path
    version: int
    metadata: dict
    tensors: tuple[GGUFTensor, ...]
    data_start: int
    file_size: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture"))

    def text(self, key: str) -> str | None:
        """A string metadata value (None when absent or not a string)."""
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str | None:
        return self.text("general.name")

    @property
    def tokenizer_model(self) -> str | None:
        return self.text("tokenizer.ggml.model")

    def type_counts(self) -> dict[str, int]:
        """Tensors per ggml type, most common first."""
        return dict(Counter(t.type_name for t in self.tensors).most_common())

    def type_parameters(self) -> dict[str, int]:
        """Parameters (elements) per ggml type, most first."""
        counts: Counter = Counter()
        for t in self.tensors:
            counts[t.type_name] += t.numel
        return dict(counts.most_common())

    def quantisation(self) -> tuple[str, ...]:
        """The quantised (block) types its tensors are stored in, sorted; () for none."""
        return tuple(sorted({t.type_name for t in self.tensors} - UNQUANTISED))


class _Reader:
    """Sequential reads of a file that fail as 'cut short' at its end."""

    def __init__(self, handle, path: Path, size: int):
        self.handle, self.path, self.size = handle, path, size

    @property
    def left(self) -> int:
        return self.size - self.handle.tell()

    def take(self, count: int) -> bytes:
        if count > self.left:
            raise _damaged(self.path, "it is cut short inside its header")
        return self.handle.read(count)

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self, keep: bool = True) -> str | None:
        (length,) = self.unpack("<Q")
        if not keep:
            if length > self.left:
                raise _damaged(self.path, "it is cut short inside its header")
            self.handle.seek(length, os.SEEK_CUR)
            return None
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise _damaged(self.path, "a metadata string is not UTF-8") from None

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])[0]
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise _damaged(self.path, f"a metadata value has the unknown type {kind}")
        item, count = self.unpack("<IQ")
        if count > self.left:  # every item takes at least a byte
            raise _damaged(self.path, "it is cut short inside its header")
        if count <= _SHORT_ARRAY:
            return [self.value(item) for _ in range(count)]
        if item in _SCALARS:
            size = struct.calcsize(_SCALARS[item]) * count
            if size > self.left:
                raise _damaged(self.path, "it is cut short inside its header")
            self.handle.seek(size, os.SEEK_CUR)
        elif item == _STRING:
            for _ in range(count):
                self.string(keep=False)
        else:
            for _ in range(count):
                self.value(item)
        return count


def _damaged(path: Path, why: str) -> GGUFError:
    return GGUFError(f"GGUF file {path} cannot be read: {why}; download or copy it again "
                     "(a copy that was cut short, or not a GGUF file)")


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """The header of the GGUF file ``path``, its tensor data checked to lie inside the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        handle = open(path, "rb")
    except OSError as exc:
        raise GGUFError(f"cannot read GGUF file {path}: {exc.strerror or exc}") from None
    with handle:
        reader = _Reader(handle, path, size)
        if size < 24 or handle.read(4) != MAGIC:
            raise GGUFError(f"{path} is not a GGUF file (it does not start with the GGUF magic "
                            "bytes); give a .gguf model file as written by llama.cpp or the "
                            "gguf package")
        version, tensor_count, kv_count = reader.unpack("<IQQ")
        if version not in VERSIONS:
            raise GGUFError(f"GGUF file {path} is of version {version}; versions "
                            f"{' and '.join(map(str, VERSIONS))} are read")
        if kv_count > size or tensor_count > size:
            raise _damaged(path, "its counts exceed its size")
        metadata = {}
        for _ in range(kv_count):
            key = reader.string()
            (kind,) = reader.unpack("<I")
            metadata[key] = reader.value(kind)
        tensors = tuple(_tensor(reader) for _ in range(tensor_count))
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise _damaged(path, f"its general.alignment is {alignment!r}")
        position = handle.tell()
    data_start = -(-position // alignment) * alignment
    header = GGUFHeader(path, version, metadata, tensors, data_start, size)
    _check_complete(header)
    return header


def _tensor(reader: _Reader) -> GGUFTensor:
    name = reader.string()
    (dims,) = reader.unpack("<I")
    if dims > MAX_DIMS:
        raise _damaged(reader.path, f"tensor {name!r} has {dims} dimensions")
    shape = reader.unpack(f"<{dims}Q")
    kind, offset = reader.unpack("<IQ")
    if kind not in GGML_TYPES:
        raise GGUFError(f"GGUF file {reader.path}: tensor {name!r} is stored in ggml type "
                        f"{kind}, which this reader does not know; give a file quantised with "
                        f"one of {', '.join(n for n, _, _ in GGML_TYPES.values())}")
    return GGUFTensor(name, tuple(reversed(shape)), kind, offset)


def _check_complete(header: GGUFHeader) -> None:
    if "general.architecture" not in header.metadata:
        raise _damaged(header.path, "its metadata has no general.architecture")
    for t in header.tensors:
        block = GGML_TYPES[t.type_id][1]
        if t.shape and t.shape[-1] % block:
            raise _damaged(header.path, f"tensor {t.name!r} of type {t.type_name} has rows of "
                           f"{t.shape[-1]} values, not whole blocks of {block}")
    end = max((header.data_start + t.offset + t.nbytes for t in header.tensors),
              default=header.data_start)
    if end > header.file_size:
        raise _damaged(header.path, f"it is cut short: its tensors end at byte {end:,} but the "
                       f"file has {header.file_size:,}")
