"""What a safetensors file, and a checkpoint folder of them, must be before a tensor is read.

The checks the safetensors library makes when it opens a file (and that
:mod:`workflow_scripts.tensorfiles`, which reads with plain file reads to bound memory,
must make itself): a UTF-8 JSON header of at most 100 MB without a repeated key, string
metadata, each tensor a known dtype, a shape of non-negative integers and two integer
offsets whose span holds exactly its elements, and the tensors laid out contiguously
from byte 0 of the data, without gaps, overlaps or bytes after the last one.  A dtype
the library knows but this package does not read (8-bit floats, unsigned 16-64 bit
integers, ...) is "unsupported", not damage.

And the checks of a checkpoint folder: one layout (``model.safetensors`` or an index
with its shards, never both), every weights file resolved inside the folder (an index
naming ``../other_model/...``, an absolute path, or a symbolic link out of the folder is
refused before anything is read), no tensor in two shards, and each shard holding
exactly the tensors the index places there.

Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ModelLoadError

# dtypes the safetensors format defines that this package does not read
UNSUPPORTED = ("U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2",
               "F4", "E8M0", "C64")


def damaged(path, why: str) -> ModelLoadError:
    return ModelLoadError(f"safetensors file {path} is damaged ({why}); download or save it again "
                          "(a copy that was cut short, or not a safetensors file)")


def parse_header(path, raw: bytes) -> dict:
    """The header's JSON object: UTF-8, valid JSON, no key given twice."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise damaged(path, "its header is not UTF-8") from None

    def unique(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise damaged(path, f"its header names {key!r} twice")
            seen[key] = value
        return seen

    try:
        header = json.loads(text, object_pairs_hook=unique)
    except ValueError:
        raise damaged(path, "its header is not JSON") from None
    if not isinstance(header, dict):
        raise damaged(path, "its header is not a JSON object")
    return header


def header_metadata(path, value) -> dict:
    """``__metadata__``: absent, or a map of strings to strings."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise damaged(path, "its __metadata__ is not a map of strings")
    return value


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def entry_fields(path, name: str, entry, itemsizes: dict[str, int]) -> tuple[str, tuple, int, int]:
    """``(dtype code, shape, begin, end)`` of one header entry, checked: a dtype of
    ``itemsizes`` (one of :data:`UNSUPPORTED`: a ModelLoadError saying so), a shape of
    non-negative integers, two integer offsets spanning exactly its elements."""
    if not isinstance(entry, dict):
        raise damaged(path, f"tensor {name!r} is not described by a JSON object")
    code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if code in UNSUPPORTED:
        raise ModelLoadError(
            f"safetensors file {path}: tensor {name!r} has dtype {code}, an unsupported dtype "
            f"here (supported: {', '.join(itemsizes)}); convert the checkpoint to one of those "
            "(e.g. bfloat16 or float32) first")
    if code not in itemsizes:
        raise damaged(path, f"tensor {name!r} has an unknown dtype {code!r}")
    if not isinstance(shape, list) or not all(_integer(d) for d in shape):
        raise damaged(path, f"tensor {name!r} has shape {shape!r}, not a list of sizes")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_integer, offsets))
            or offsets[0] > offsets[1]):
        raise damaged(path, f"tensor {name!r} has bad data_offsets {offsets!r}")
    count = 1
    for d in shape:
        count *= d
    begin, end = offsets
    if end - begin != count * itemsizes[code]:
        raise damaged(path, f"tensor {name!r} has {end - begin} bytes for shape {tuple(shape)} "
                            f"of {code}")
    return code, tuple(shape), begin, end


def check_layout(path, spans: list[tuple[str, int, int]], data_size: int) -> None:
    """The tensors' byte spans (relative to the data) cover the data exactly: contiguous
    from 0 in offset order, no gap, no overlap, nothing after the last one."""
    position, before = 0, None
    for name, begin, end in sorted(spans, key=lambda s: (s[1], s[2])):
        if begin < position:
            raise damaged(path, f"tensor {name!r} overlaps tensor {before!r} (bytes {begin}-{end} "
                                f"against {position})")
        if begin > position:
            raise damaged(path, f"a gap of {begin - position} bytes lies before tensor {name!r}")
        position, before = end, name
    if position > data_size:
        raise damaged(path, f"it is truncated: {data_size} bytes of data, its header needs "
                            f"{position}")
    if position < data_size:
        raise damaged(path, f"{data_size - position} bytes follow its last tensor")


# ---------------------------------------------------------------- checkpoint folders


def checkpoint_root(directory: Path) -> Path:
    """The folder a checkpoint's files must resolve into: the checkpoint folder itself, or,
    for a Hugging Face hub cache snapshot (``models--ORG--NAME/snapshots/REV``, whose files
    are links to ``../../blobs/``), that repository's cache folder."""
    real = directory.resolve()
    if real.parent.name == "snapshots" and (real.parent.parent / "blobs").is_dir():
        return real.parent.parent
    return real


def inside(directory: Path, root: Path, name, named_by) -> Path:
    """The weights file ``name`` of checkpoint ``directory``, which must resolve (links
    followed) inside ``root``: anything else is refused before it is read."""
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{named_by} names the weights file {name!r}, not a file name; "
                             "save or download the checkpoint again")
    path = directory / name
    real = path.resolve()
    if real != root and root not in real.parents:
        how = "an absolute path" if os.path.isabs(name) else (
            "a symbolic link" if path.is_symlink() else "a path")
        raise ModelLoadError(
            f"{named_by} names the weights file {name!r}, {how} leading out of the checkpoint "
            f"folder {directory} (to {real}); a checkpoint is read only inside its folder: fix "
            "the index's weight_map (file names in the folder) or copy the weights into the "
            "folder, or download the checkpoint again")
    return path


def read_weight_map(index: Path) -> dict[str, str]:
    """An index's ``weight_map`` (tensor name -> file name), checked to be one."""
    try:
        data = parse_header(index, index.read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"cannot read {index}: {exc.strerror or exc}") from None
    except ModelLoadError:
        data = None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelLoadError(f"{index} is not a safetensors index (no weight_map of tensor names "
                             "to file names, or a key given twice); save the checkpoint again")
    return weight_map


def check_one_layout(directory: Path, single: str, index: str) -> None:
    if (directory / single).is_file() and (directory / index).is_file():
        raise ModelLoadError(
            f"{directory} holds both {single} and {index}: two sets of weights, of which loaders "
            f"read different ones; delete the one that is not current (or save the checkpoint "
            "again into an empty folder)")


def check_shards(index: Path, placed: dict[Path, list[str]], found: dict[Path, list[str]]) -> None:
    """Each shard holds exactly the tensors the index places in it, and no tensor is in two
    shards."""
    owner: dict[str, Path] = {}
    for shard, names in found.items():
        for name in names:
            if name in owner:
                raise ModelLoadError(
                    f"tensor {name!r} is in two shards, {owner[name]} and {shard}; loaders would "
                    "read different copies: download or save the checkpoint again")
            owner[name] = shard
    for shard, names in placed.items():
        missing = sorted(set(names) - set(found[shard]))
        if missing:
            raise ModelLoadError(
                f"{shard} lacks tensor(s) {', '.join(missing[:3])} that {index} places there; the "
                "shard is from another save: download or save the checkpoint again")
        extra = sorted(set(found[shard]) - set(names))
        if extra:
            raise ModelLoadError(
                f"{shard} holds tensor(s) {', '.join(extra[:3])} that {index} does not place "
                "there; index and shards are from different saves: download or save the "
                "checkpoint again")
