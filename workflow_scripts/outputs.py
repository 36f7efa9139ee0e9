"""What a command may write over: its outputs' kinds, checked before it computes anything.

A command replaces an existing path only when it holds what that command writes there
(:class:`Kind`: a folder of merged checkpoints with their ``merge.json``, an artifact with
its header metadata, an evaluation JSON, ...) and is not one of its inputs; anything else
at the path is an :class:`~workflow_scripts.errors.OutputError` naming the path and the
fix.  :func:`check_outputs` runs these checks, and probes that each output's folder can
be written, before any compute; :func:`workflow_scripts.io.atomic_path` checks the kind
again when it puts the finished output in place.

Standard library only at import (the sniffing of Parquet and CSV files imports what it
needs when a file is there).
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ARTIFACT_KEY = "fisher_metadata"  # artifacts.META_KEY (no torch import here)
SAMPLE_COLUMNS = ("idx", "text_a", "text_b", "label")  # data.SCHEMA's names


@dataclass(frozen=True)
class Kind:
    """What a command writes at an output path: ``noun`` (for messages), whether it is a
    ``folder``, and ``test(path)``: whether an existing path holds such an output, which
    the command may then replace (an empty folder may always be replaced by a folder)."""

    noun: str
    test: Callable[[Path], bool]
    folder: bool = False


# ---------------------------------------------------------------- recognising outputs


def json_object(path: Path, limit: int = 64 << 20) -> dict | None:
    """The JSON object in ``path``, or None (not a file, too big, not a JSON object)."""
    try:
        if path.stat().st_size > limit:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _json_with(*keys: str) -> Callable[[Path], bool]:
    def test(path: Path) -> bool:
        data = json_object(path)
        return data is not None and all(k in data for k in keys)

    return test


def safetensors_metadata(path: Path) -> dict | None:
    """The ``__metadata__`` of a safetensors file's header ({} without one), or None when
    the file does not start with a safetensors header."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if length > 100 << 20:
                return None
            header = json.loads(handle.read(length))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    metadata = header.get("__metadata__") or {}
    return metadata if isinstance(metadata, dict) else None


def _artifact(path: Path) -> bool:
    return ARTIFACT_KEY in (safetensors_metadata(path) or {})


def _folder_with(*names: str) -> Callable[[Path], bool]:
    def test(path: Path) -> bool:
        return all((path / name).is_file() for name in names)

    return test


def _merged_folder(path: Path) -> bool:
    """Every entry a merged checkpoint: a folder with its ``merge.json``."""
    entries = list(path.iterdir())
    return bool(entries) and all(e.is_dir() and not e.is_symlink() and (e / "merge.json").is_file()
                                 for e in entries)


def _checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and (
        (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file())


def _samples(path: Path) -> bool:
    try:
        import pyarrow.parquet as pq

        return tuple(pq.read_schema(path).names) == SAMPLE_COLUMNS
    except Exception:  # not a Parquet file (pyarrow raises its own types)
        return False


def _text(path: Path) -> bool:
    """A UTF-8 text file (its first 64 KiB: no NUL byte, valid UTF-8)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except (OSError, UnicodeDecodeError):
        return False
    return b"\0" not in head


def first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return ""


def _card(path: Path) -> bool:
    return _text(path) and first_line(path) == "---"


def _png(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


MERGED = Kind("a folder of merged checkpoints (each a folder with its merge.json) that merge "
              "wrote", _merged_folder, folder=True)
FINETUNED = Kind("a checkpoint that finetune wrote (with its finetune_info.json)",
                 _folder_with("finetune_info.json", "config.json"), folder=True)
FETCHED = Kind("a checkpoint copy that fetch-model wrote (with its source.json)",
               _folder_with("source.json"), folder=True)
CHECKPOINT = Kind("a checkpoint folder (config.json and safetensors weights)", _checkpoint,
                  folder=True)
ARTIFACT = Kind("a Fisher or Gram artifact (a safetensors file with fisher_metadata in its "
                "header)", _artifact)
EVALUATION = Kind("an evaluation JSON (with its task and metrics)", _json_with("task", "metrics"))
TASK_INFO = Kind("a task info JSON (with task, num_labels and sizes) that prepare-task wrote",
                 _json_with("task", "num_labels", "sizes"))
RECIPE = Kind("a merge recipe (merge.json)", _json_with("method", "inputs"))
SAMPLES = Kind("a samples Parquet file (columns idx, text_a, text_b, label)", _samples)
CARD = Kind("a model card (README.md opening with YAML front matter)", _card)
TEXT = Kind("a text file (a table or page of the report)", _text)
PNG = Kind("a PNG figure", _png)


def report_kind(name: str) -> Kind:
    """The kind of a file the report or the plots write, by its name."""
    return PNG if name.endswith(".png") else TEXT


# ---------------------------------------------------------------- checks


def _label(path, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def describe(path: Path) -> str:
    """What is at ``path``, in words."""
    if path.is_symlink():
        return f"a symbolic link to {os.readlink(path)}"
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return f"a folder holding {len(names)} entries ({shown})"
    if path.is_file():
        return f"a file of {path.stat().st_size:,} bytes"
    return "neither a file nor a folder"


def replaceable(path: Path, kind: Kind | None) -> bool:
    """Whether an existing ``path`` holds an output of ``kind`` (None: nothing is)."""
    if kind is None or path.is_symlink():
        return False
    if kind.folder:
        return path.is_dir() and (not any(path.iterdir()) or kind.test(path))
    return path.is_file() and kind.test(path)


def check_replaceable(path, kind: Kind | None, flag: str | None = None) -> None:
    """An existing ``path`` must hold an output of ``kind``; else an OutputError."""
    path = Path(path)
    if not os.path.lexists(path) or replaceable(path, kind):
        return
    allowed = (f"only {kind.noun} is replaced there" if kind is not None
               else "this command replaces nothing that is already there")
    raise OutputError(
        f"{_label(path, flag)} already exists and is {describe(path)}; {allowed}, so it is left "
        "untouched. Move or delete it yourself, or choose another output path")


def resolved(path) -> Path:
    """``path`` made absolute with its links resolved (as far as it exists)."""
    path = Path(path).expanduser()
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return path.absolute()


def inputs_of(**given) -> list[tuple[str, str]]:
    """``(flag, path)`` pairs from ``flag_name=path or [paths]`` (None left out);
    ``eval_data`` becomes ``--eval-data``."""
    pairs = []
    for name, value in given.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        pairs += [("--" + name.replace("_", "-"), str(v)) for v in values if v is not None]
    return pairs


def check_not_input(path, inputs: Iterable[tuple[str, str]], flag: str | None = None) -> None:
    """``path`` must not be one of the ``inputs`` (``(flag, path)``) nor a folder holding
    one: writing it would replace them.  Compared after resolving links; an input that is
    not a local path (a hub id) is no file to lose."""
    out = resolved(path)
    for name, given in inputs:
        if not os.path.lexists(Path(given).expanduser()):
            continue
        src = resolved(given)
        if src == out or out in src.parents:
            relation = "is" if src == out else "holds"
            raise OutputError(
                f"{_label(path, flag)} {relation} the input {name} {given}: writing the output "
                "would replace it. Choose an output path that is neither an input nor a folder "
                "holding one")


def check_distinct(outputs: Iterable[tuple[str, str]]) -> None:
    """No output may be another, or a folder holding another."""
    seen: list[tuple[str, str, Path]] = []
    for flag, path in outputs:
        mine = resolved(path)
        for other_flag, other, theirs in seen:
            if mine == theirs or mine in theirs.parents or theirs in mine.parents:
                raise OutputError(f"{other_flag} {other} and {flag} {path} overlap: one output "
                                  "would replace the other; give each output its own path")
        seen.append((flag, str(path), mine))


def existing_folder(path) -> Path:
    """The nearest folder at or above ``path``'s folder that exists."""
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


WRITE_ERRORS = {
    errno.ENOSPC: "the file system is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is too large for the file system",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_failure(path, exc: OSError, flag: str | None = None) -> OutputError | None:
    """The OutputError for an OSError met while writing ``path`` (None: not a write error
    a user can fix by freeing space or choosing another path)."""
    reason = WRITE_ERRORS.get(exc.errno)
    if reason is None:
        return None
    fix = ("free space there, or choose an output path on another file system"
           if exc.errno in FULL else "choose an output path you can write to")
    return OutputError(f"cannot write {_label(path, flag)}: {reason} "
                       f"({exc.strerror or exc}); {fix}")


def check_writable(path, flag: str | None = None) -> None:
    """The output's folder (or the nearest existing one above it) accepts new entries:
    probed by making and removing a temporary folder there, so nothing is left."""
    folder = existing_folder(path)
    if not folder.is_dir():
        raise OutputError(f"{_label(path, flag)}: {folder} is a file, not a folder; choose "
                          "another output path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-probe.", dir=folder))
    except OSError as exc:
        failure = write_failure(folder, exc)
        if failure is None:
            raise OutputError(f"cannot write {_label(path, flag)}: {exc.strerror or exc}; "
                              "choose another output path") from None
        raise OutputError(f"{_label(path, flag)}: {failure}") from None


def check_space(path, needed: int, flag: str | None = None) -> None:
    """The file system of ``path`` has ``needed`` bytes free."""
    folder = existing_folder(path)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OutputError(
            f"{_label(path, flag)} needs about {needed / 2**20:,.1f} MiB but the file system of "
            f"{folder} has {free / 2**20:,.1f} MiB free; free space there, or choose an output "
            "path on another file system")


def check_output(path, kind: Kind | None, flag: str | None = None,
                 inputs: Iterable[tuple[str, str]] = ()) -> None:
    """Before any compute: ``path`` is not an input (nor holds one), whatever is there is
    an output of ``kind``, and its folder can be written."""
    check_not_input(path, list(inputs), flag)
    check_replaceable(path, kind, flag)
    check_writable(path, flag)


def check_outputs(outputs: Iterable[tuple[str, str | os.PathLike, Kind | None]],
                  inputs: Iterable[tuple[str, str]] = ()) -> None:
    """:func:`check_output` of every ``(flag, path, kind)`` (None paths skipped), and no
    two outputs overlap."""
    outputs = [(flag, path, kind) for flag, path, kind in outputs if path is not None]
    inputs = list(inputs)
    check_distinct((flag, str(path)) for flag, path, _ in outputs)
    for flag, path, kind in outputs:
        check_output(path, kind, flag, inputs)


def check_files_in(folder, names: Iterable[str], kind_of: Callable[[str], Kind | None],
                   flag: str | None = None, inputs: Iterable[tuple[str, str]] = ()) -> None:
    """Outputs written as files into ``folder`` (``names``; nothing else in it is touched):
    the folder is one (or absent), and each file passes :func:`check_output`."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{_label(folder, flag)} exists and is {describe(folder)}, not a "
                          "folder; move or delete it, or choose another output folder")
    inputs = list(inputs)
    for name in names:
        check_output(folder / name, kind_of(name), f"{flag} file" if flag else None, inputs)
