"""Local data files (Parquet, CSV, TSV): their format and header, standard library only.

Kept light on purpose: the config check (run by Snakemake while it parses the
workflow) reads headers with it; :mod:`.local` reads the files.
"""

from __future__ import annotations

import bz2
import csv
import gzip
from pathlib import Path

FORMATS = ("parquet", "csv", "tsv")
COMPRESSIONS = (".gz", ".bz2", ".zst", ".xz")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open}  # what csv_header can read


def guess_format(path: str | Path) -> str | None:
    """``parquet``, ``csv`` or ``tsv`` from the file name (compression suffix ignored)."""
    name = Path(path).name.lower()
    for comp in COMPRESSIONS:
        name = name.removesuffix(comp)
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    return None


def delimiter(fmt: str) -> str:
    return "\t" if fmt == "tsv" else ","


def csv_header(path: str | Path, delim: str) -> list[str]:
    """The first row of a CSV/TSV file (plain, .gz or .bz2); [] if unreadable."""
    path = Path(path)
    opener = _OPENERS.get(path.suffix.lower(), open)
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
            return next(csv.reader(handle, delimiter=delim), [])
    except OSError:
        return []


def file_columns(path: str | Path, fmt: str | None = None) -> list[str] | None:
    """A data file's column names from its header; None when they cannot be read here
    (unknown format, a compression only pyarrow reads, a damaged file)."""
    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception:  # unreadable here: prepare-task reports it with the details
            return None
    if fmt in ("csv", "tsv"):
        compressed = path.suffix.lower() in COMPRESSIONS
        if compressed and path.suffix.lower() not in _OPENERS:
            return None
        return csv_header(path, delimiter(fmt)) or None
    return None
