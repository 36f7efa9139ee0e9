"""Atomic file output: nothing half-written is ever taken as complete, and nothing a command
did not write is replaced.

:func:`atomic_path` yields a temporary path beside the output, in a hidden folder named
``.NAME.HOST.PID.XXXXXXXX.part`` (the writer's host and process id), and puts the finished
output in place with one rename.  An output already at the path is replaced only when it
is of the writer's :class:`~workflow_scripts.outputs.Kind`; anything else there is an
:class:`~workflow_scripts.errors.OutputError` and stays untouched.  A temporary left by a
writer killed outright (SIGKILL, power loss) is removed by the next write of the same
output, but only one of this host whose process is gone: a live writer's temporary, or
another host's on a shared file system, is never touched.  Outputs follow the umask
(whatever mode the library that wrote them chose).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from . import outputs
from .errors import OutputError

SUFFIX = ".part"


def host() -> str:
    """This machine's name as it appears in temporaries' names."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


def temporary_owner(name: str, output: str) -> tuple[str, int] | None:
    """``(host, pid)`` of the writer of temporary ``name`` of ``output`` (None: not one)."""
    prefix = f".{output}."
    if not (name.startswith(prefix) and name.endswith(SUFFIX)):
        return None
    parts = name[len(prefix):-len(SUFFIX)].rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by dead writers of this host; returns them."""
    removed = []
    here = host()
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{SUFFIX}"):
        owner = temporary_owner(stale.name, path.name)
        if owner is not None and owner[0] == here and not alive(owner[1]):
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed


def umask() -> int:
    """The process's umask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(target: Path) -> None:
    """Give ``target`` (and, a folder, everything in it) the modes the umask gives new files
    and folders (some writers, such as safetensors', make files readable by their owner only)."""
    mask = umask()
    for path in [target, *(target.rglob("*") if target.is_dir() else ())]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _within(filename, folders: tuple[Path, ...]) -> bool:
    if filename is None:
        return True
    path = Path(os.fsdecode(filename)).absolute()
    return any(path == f or f in path.parents for f in folders)


def _put(target: Path, path: Path, kind, tmp: Path, flag: str | None) -> None:
    """Rename the finished ``target`` onto ``path``; an output already there (of ``kind``)
    is moved into ``tmp`` first, and back if the rename fails."""
    if os.path.lexists(path):
        outputs.check_replaceable(path, kind, flag)
        if path.is_dir() and not path.is_symlink():
            aside = tmp / ".replaced"
            os.rename(path, aside)
            try:
                os.replace(target, path)
            except OSError:
                os.rename(aside, path)
                raise
            return
    os.replace(target, path)


def make_folder(folder: Path, flag: str | None = None) -> None:
    """``mkdir -p folder``; a file in the way, or a folder that cannot be written, is an
    OutputError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"cannot make the folder {folder}{f' ({flag})' if flag else ''}: a "
                          "file is in the way; choose another output path") from None
    except OSError as exc:
        failure = outputs.write_failure(folder, exc, flag)
        if failure is None:
            raise
        raise failure from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, kind: outputs.Kind | None = None,
                flag: str | None = None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Works for files and for folders (the caller creates either at the yielded path).  An
    existing ``path`` is replaced only when it is an output of ``kind``
    (:func:`workflow_scripts.outputs.check_replaceable`; ``kind`` None: only a new path is
    written).  On error the temporary is removed and ``path`` is untouched; a full or
    read-only file system is an OutputError naming ``path`` (and ``flag``).
    """
    path = Path(path)
    make_folder(path.parent, flag)
    tmp = None
    try:
        remove_stale(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{host()}.{os.getpid()}.",
                                    suffix=SUFFIX, dir=path.parent))
        target = tmp / path.name
        yield target
        follow_umask(target)
        _put(target, path, kind, tmp, flag)
    except OSError as exc:
        failure = outputs.write_failure(path, exc, flag)
        if failure is None or not _within(exc.filename, (path.parent.absolute(),)):
            raise
        raise failure from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str, kind: outputs.Kind | None = None) -> None:
    """Write a text file atomically (replacing only an earlier output of ``kind``)."""
    with atomic_path(path, kind) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data, kind: outputs.Kind | None = None, **dumps) -> None:
    """Write ``data`` as indented JSON (no NaN) atomically, with a final newline."""
    dumps.setdefault("indent", 2)
    write_text(path, json.dumps(data, allow_nan=False, **dumps) + "\n", kind)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()

