"""Local data files (Parquet, JSON Lines, CSV, TSV): their format and header, standard
library only.

Kept light on purpose: the config check (run by Snakemake while it parses the
workflow) reads headers with it; :mod:`.local` reads the files.
"""

from __future__ import annotations

import bz2
import csv
import gzip
from pathlib import Path

FORMATS = ("parquet", "jsonl", "csv", "tsv")
# how quote characters in CSV/TSV files are read (the ``quoting`` setting of a local task):
# none: '"' is ordinary text (GLUE's TSV files are written so); double: a field may be
# enclosed in double quotes, '""' being a quote inside one (RFC 4180)
QUOTINGS = ("none", "double")
BOM = "\ufeff"
COMPRESSIONS = (".gz", ".bz2", ".zst", ".xz")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open}  # what csv_header can read


def guess_format(path: str | Path) -> str | None:
    """``parquet``, ``jsonl``, ``csv`` or ``tsv`` from the file name (compression suffix
    ignored)."""
    name = Path(path).name.lower()
    for comp in COMPRESSIONS:
        name = name.removesuffix(comp)
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    return None


def delimiter(fmt: str) -> str:
    return "\t" if fmt == "tsv" else ","


def default_quoting(fmt: str | None) -> str:
    """TSV files are read without quote processing, CSV files with double quotes."""
    return "none" if fmt == "tsv" else "double"


def _reader(handle, delim: str, quoting: str):
    if quoting == "none":
        return csv.reader(handle, delimiter=delim, quoting=csv.QUOTE_NONE)
    return csv.reader(handle, delimiter=delim, quotechar='"', doublequote=True)


def _open(path: Path):
    opener = _OPENERS.get(path.suffix.lower(), open)
    return opener(path, "rt", encoding="utf-8", errors="replace", newline="")


def first_non_utf8(path: str | Path) -> tuple[int, int, int] | None:
    """``(line, column, byte)`` of the first byte of a text file (plain, .gz or .bz2) that is
    not UTF-8, or None (all of it is, or it cannot be read here)."""
    path = Path(path)
    opener = _OPENERS.get(path.suffix.lower(), open)
    if path.suffix.lower() in COMPRESSIONS and path.suffix.lower() not in _OPENERS:
        return None
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return number, exc.start + 1, raw[exc.start]
    except OSError:
        return None
    return None


def check_utf8(path: str | Path) -> None:
    """A text data file must be UTF-8: the first other byte is an error naming its line."""
    from ..errors import UserError

    bad = first_non_utf8(path)
    if bad is not None:
        line, column, byte = bad
        raise UserError(f"{path}: line {line} is not UTF-8 text (byte 0x{byte:02x} at column "
                        f"{column}); save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) "
                        "and prepare the task again")


def csv_header(path: str | Path, delim: str, quoting: str = "double") -> list[str]:
    """The first row of a CSV/TSV file (plain, .gz or .bz2), without a UTF-8 byte-order
    mark; [] if unreadable."""
    path = Path(path)
    try:
        with _open(path) as handle:
            row = next(_reader(handle, delim, quoting), [])
    except (OSError, csv.Error):
        return []
    if row:
        row[0] = row[0].removeprefix(BOM)
    return row


def column_names(header_row: list[str], header: bool) -> list[str]:
    """The column names of a file whose first row is ``header_row``: that row itself,
    or, for a file without a header row, the 0-based column indices as strings."""
    return list(header_row) if header else [str(i) for i in range(len(header_row))]


def first_malformed_row(path: str | Path, delim: str, quoting: str) -> tuple[int, int, int] | None:
    """``(line, columns, expected)`` of the first row whose column count differs from
    the first row's (line numbers from 1; empty lines skipped), or None."""
    path = Path(path)
    with _open(path) as handle:
        reader = _reader(handle, delim, quoting)
        expected, line = None, 1
        for row in reader:
            if row:
                if expected is None:
                    expected = len(row)
                elif len(row) != expected:
                    return line, len(row), expected
            line = reader.line_num + 1
    return None


def file_columns(path: str | Path, fmt: str | None = None, quoting: str | None = None,
                 header: bool = True) -> list[str] | None:
    """A data file's column names from its header (0-based indices ``"0"``, ``"1"``,
    ... without one); None when they cannot be read here (unknown format, a
    compression only pyarrow reads, a damaged file)."""
    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception:  # unreadable here: prepare-task reports it with the details
            return None
    if fmt == "jsonl":
        first = _first_json(path)
        return list(first) if first is not None else None
    if fmt in ("csv", "tsv"):
        compressed = path.suffix.lower() in COMPRESSIONS
        if compressed and path.suffix.lower() not in _OPENERS:
            return None
        row = csv_header(path, delimiter(fmt), quoting or default_quoting(fmt))
        return column_names(row, header) or None
    return None


def count_rows(path: str | Path, fmt: str | None = None, quoting: str | None = None,
               header: bool = True) -> int | None:
    """The data rows of a file (header and empty lines not counted); None when they cannot
    be counted here (see :func:`file_columns`)."""
    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.read_metadata(path).num_rows)
        except Exception:  # unreadable here: prepare-task reports it with the details
            return None
    if fmt == "jsonl" and path.suffix.lower() not in COMPRESSIONS:
        try:
            with _open(path) as handle:
                return sum(1 for line in handle if line.strip())
        except OSError:
            return None
    if fmt not in ("csv", "tsv") or (path.suffix.lower() in COMPRESSIONS
                                     and path.suffix.lower() not in _OPENERS):
        return None
    try:
        with _open(path) as handle:
            rows = sum(1 for row in _reader(handle, delimiter(fmt), quoting or default_quoting(fmt))
                       if row)
    except (OSError, csv.Error):
        return None
    return max(0, rows - (1 if header else 0))


def _first_json(path: Path) -> dict | None:
    """The first record of a JSON Lines file (plain, .gz or .bz2), or None."""
    import json

    if path.suffix.lower() in COMPRESSIONS and path.suffix.lower() not in _OPENERS:
        return None
    try:
        with _open(path) as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None
    return None
