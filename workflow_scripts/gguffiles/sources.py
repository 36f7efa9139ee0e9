"""GGUF model sources in the config: what the config check can tell from the file's header
before any job runs (standard library only; Snakemake runs it while it parses).

* the file is GGUF, complete, and of an architecture :mod:`workflow_scripts.architectures`
  knows (whether transformers can dequantise it is checked by ``fetch-model``, which
  imports it);
* a GGUF holds a causal language model, so only a ``causal-lm`` family takes one;
* a checkpoint whose quantisation differs from its family's base is warned about: its task
  vector (checkpoint minus base) would hold the difference of the two quantisations'
  rounding errors besides the fine-tuning.

A ``python-package:`` GGUF whose package is not installed yet is checked when it is fetched.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from .. import objectives
from ..errors import ConfigError, UserError
from ..fetch import is_gguf, resolve_gguf
from .checks import check_architecture
from .header import GGUFHeader, read_header

log = logging.getLogger(__name__)

@functools.lru_cache(maxsize=32)
def _header(path: str, mtime_ns: int, size: int) -> GGUFHeader:
    return read_header(path)


def header_of(source: str, base_dir: str | Path = ".") -> GGUFHeader | None:
    """The header of a GGUF source, or None where its package is not installed (yet)."""
    try:
        path = resolve_gguf(source, base_dir)[0]
    except UserError:
        if source.startswith("python-package:"):
            return None
        raise
    stat = path.stat()
    return _header(str(path), stat.st_mtime_ns, stat.st_size)


def check_source(source: str, base_dir: Path, where: str, objective: str | None = None) -> None:
    """A GGUF source in the config: readable, complete, of a known architecture, and (with
    ``objective``) in a causal-LM family.  Errors are ConfigErrors naming ``where``."""
    if objective is not None and objective != objectives.CAUSAL_LM:
        raise ConfigError(
            f"{where}: {source!r} is a GGUF file, which holds a causal language model, but the "
            f"family's objective is {objective}; set the family's objective: "
            f"{objectives.CAUSAL_LM}, or give a checkpoint saved for {objective}")
    try:
        header = header_of(source, base_dir)
        if header is not None:
            check_architecture(header)
    except UserError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def quantisation(source: str, base_dir: Path) -> tuple[str, ...] | None:
    """The quantised types a model source is stored in: () for a plain checkpoint (not GGUF),
    None where that cannot be read now (a package not installed yet)."""
    if not is_gguf(source):
        return ()
    try:
        header = header_of(source, base_dir)
    except UserError:
        return None
    return None if header is None else header.quantisation()


def describe(types: tuple[str, ...]) -> str:
    return ", ".join(types) if types else "none (plain floats)"


def warn_mixed_quantisation(family: str, spec: dict, base_dir: Path) -> list[str]:
    """Warn about each given checkpoint of ``family`` whose quantisation differs from its
    base's (fine-tuned ones start from the dequantised base itself); returns the warnings."""
    base = spec.get("base")
    if base is None:
        return []
    base_types = quantisation(base, base_dir)
    warnings = []
    for task, ckpt in spec["checkpoints"].items():
        source = ckpt.get("source")
        if source is None or base_types is None or not (is_gguf(base) or is_gguf(source)):
            continue
        types = quantisation(source, base_dir)
        if types is None or types == base_types:
            continue
        warnings.append(
            f"families.{family}.checkpoints.{task}.source: its quantisation "
            f"({describe(types)}) differs from the base's ({describe(base_types)}); its task "
            "vector (checkpoint minus base) holds the difference of the two quantisations' "
            "rounding errors besides the fine-tuning; give checkpoints and a base of one "
            "quantisation, or fine-tune from the base (finetune: true)")
        log.warning("%s", warnings[-1])
    return warnings
