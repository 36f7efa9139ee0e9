"""Local task files (Parquet, CSV, TSV) mapped onto the engine's columns by a column map."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..configpaths import resolve_path
from ..errors import ConfigError, MissingFileError, UserError
from .base import Source
from .files import (
    FORMATS,
    QUOTINGS,
    check_utf8,
    column_names,
    count_rows,
    csv_header,
    default_quoting,
    delimiter,
    file_columns,
    first_malformed_row,
    guess_format,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from ..data import Samples

# a causal-LM task's columns: a text, or a prompt and its response (only its tokens count),
# and the engine column each fills
TEXT_KEYS = {"text": "text_a", "prompt": "text_a", "response": "text_b"}
# the columns a column map may name: a classification task's (text_a and label required),
# a causal-LM task's (text, or prompt and response)
COLUMN_KEYS = ("text_a", "text_b", "label", "idx", *TEXT_KEYS)


def parse_column_map(text: str | dict) -> dict[str, str]:
    """``"text_a=sentence,label=y"`` (or that mapping) -> {"text_a": "sentence", "label": "y"},
    checked: known keys, each once, text_a and label present."""
    if isinstance(text, dict):
        text = ",".join(f"{key}={value}" for key, value in text.items())
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise UserError(f"--column-map entry {item!r} must look like KEY=COLUMN")
        if key not in COLUMN_KEYS or key in TEXT_KEYS:
            raise UserError(
                f"--column-map key {key!r} is not one of "
                f"{', '.join(k for k in COLUMN_KEYS if k not in TEXT_KEYS)} (a classification "
                f"task's; {', '.join(TEXT_KEYS)} name a causal-LM task's columns)"
            )
        if key in mapping:
            raise UserError(f"--column-map names {key!r} twice")
        mapping[key] = value
    for key in ("text_a", "label"):
        if key not in mapping:
            raise UserError(f"--column-map must map {key!r} (e.g. text_a=sentence,label=label)")
    return mapping


def infer_format(path: str | Path) -> str:
    fmt = guess_format(path)
    if fmt is None:
        raise UserError(
            f"cannot infer the format of {path} from its suffix; pass --format "
            + ", ".join(FORMATS)
        )
    return fmt


def read_table(path: str | Path, fmt: str | None, text_columns=(), quoting: str | None = None,
               header: bool = True) -> pa.Table:
    """A data file as a table.  CSV/TSV: a UTF-8 byte-order mark is dropped from the
    header, quote characters are read per ``quoting`` (default: ``none`` for TSV,
    ``double`` for CSV), and without a ``header`` row the columns are named by their
    0-based indices (``"0"``, ``"1"``, ...)."""
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"data file {path} does not exist")
    fmt = fmt or infer_format(path)
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; use {', '.join(FORMATS)}")
    quoting = quoting or default_quoting(fmt)
    if quoting not in QUOTINGS:
        raise UserError(f"unknown quoting {quoting!r}; use {' or '.join(QUOTINGS)}")
    if fmt != "parquet":
        check_utf8(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if fmt == "jsonl":
            import pyarrow.json as pjson

            return pjson.read_json(path)
        import pyarrow.csv as pcsv

        delim = delimiter(fmt)
        names = column_names(csv_header(path, delim, quoting), header)
        types = {c: pa.string() for c in text_columns if c in names}
        quoted = quoting != "none"
        return pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1 if header else 0),
            parse_options=pcsv.ParseOptions(delimiter=delim, quote_char='"' if quoted else False,
                                            newlines_in_values=quoted),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        bad = (first_malformed_row(path, delimiter(fmt), quoting) if fmt in ("csv", "tsv")
               else None)
        if bad is not None:
            line, got, expected = bad
            raise UserError(
                f"{path}: line {line} has {got} columns but the {'header' if header else 'first row'}"
                f" has {expected} (read as {fmt} with quoting: {quoting}); fix that row, or set "
                "the task's quoting if the file quotes its fields differently"
            ) from exc
        raise UserError(f"cannot read {path} as {fmt}: {exc}") from exc


def column_keys(column_map: dict, header: bool = True) -> dict[str, str]:
    """The column map with column names as strings; without a header row its values
    must be 0-based column indices."""
    cmap = {key: str(value).strip() for key, value in column_map.items()}
    if not header:
        bad = {k: v for k, v in cmap.items() if not v.isdigit()}
        if bad:
            raise UserError(
                f"column map {bad} must name 0-based column indices (e.g. label=1), because "
                "the files have no header row (header: false)"
            )
        cmap = {key: str(int(value)) for key, value in cmap.items()}
    return cmap


def _column(table: pa.Table, column: str, path, key: str) -> list:
    if column not in table.column_names:
        raise UserError(
            f"{path}: column {column!r} (mapped to {key}) is missing; the file has columns "
            f"{table.column_names}"
        )
    return table.column(column).to_pylist()


def _is_integral(value) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and value == int(value)
    return False


def encode_labels(
    train_raw: list, valid_raw: list, label_names: list[str] | None, files=("train", "validation")
) -> tuple[list[int], list[int], list[str], str]:
    """Raw label values of both splits -> integer labels, label names, and how they were mapped."""
    for raw, path in ((train_raw, files[0]), (valid_raw, files[1])):
        nulls = [i for i, v in enumerate(raw) if v is None or (isinstance(v, str) and not v.strip())]
        if nulls:
            raise UserError(
                f"{path}: {len(nulls)} row(s) have no label (first at data row {nulls[0] + 1})"
            )
    values = train_raw + valid_raw
    if all(isinstance(v, str) for v in values):
        stripped = [v.strip() for v in values]
        if all(re.fullmatch(r"[+-]?\d+", v) for v in stripped) and not (
            label_names and set(stripped) <= set(label_names)
        ):
            values = [int(v) for v in stripped]
        else:
            if label_names:
                order = list(label_names)
                how = "label names given (--label-names)"
            else:
                order = sorted(set(v.strip() for v in train_raw))
                how = "sorted distinct train labels"
            index = {name: i for i, name in enumerate(order)}
            for raw, path in ((train_raw, files[0]), (valid_raw, files[1])):
                unknown = sorted({v.strip() for v in raw} - set(index))
                if unknown:
                    raise UserError(
                        f"{path}: label(s) {unknown[:10]} are not among the known labels "
                        f"{order} ({how})"
                    )
            return ([index[v.strip()] for v in train_raw], [index[v.strip()] for v in valid_raw],
                    order, how)
    bad = [v for v in values if not _is_integral(v)]
    if bad:
        raise UserError(
            f"labels must be integers 0..K-1 or strings (class names); found {bad[:5]} in "
            f"{files[0]} / {files[1]} (regression targets are not supported here)"
        )
    ints = [int(v) for v in values]
    if min(ints) < 0:
        raise UserError(f"integer labels must be >= 0; found {min(ints)} in {files[0]} / {files[1]}")
    n_train = len(train_raw)
    if label_names:
        if max(ints) >= len(label_names):
            raise UserError(
                f"integer label {max(ints)} has no name among --label-names {label_names} "
                f"(labels index that list from 0)"
            )
        names = list(label_names)
    else:
        names = [str(i) for i in range(max(ints) + 1)]
    return ints[:n_train], ints[n_train:], names, "integer labels"


def local_splits(
    train_file, validation_file, column_map: dict[str, str], fmt: str | None = None,
    label_names: list[str] | None = None, quoting: str | None = None, header: bool = True,
) -> tuple[Samples, Samples, list[str], dict]:
    from ..data import Samples

    column_map = column_keys(column_map, header)
    text_cols = [column_map[k] for k in ("text_a", "text_b") if k in column_map]
    raw = {}
    for split, path in (("train", train_file), ("validation", validation_file)):
        table = read_table(path, fmt, text_cols, quoting, header)
        cols = {key: _column(table, col, path, key) for key, col in column_map.items()}
        if len(cols["text_a"]) == 0:
            raise UserError(f"{path} has no rows")
        for key in ("text_a",):
            empty = [i for i, v in enumerate(cols[key]) if v is None or not str(v).strip()]
            if empty:
                raise UserError(
                    f"{path}: column {column_map[key]!r} ({key}) is empty in {len(empty)} row(s) "
                    f"(first at data row {empty[0] + 1})"
                )
        raw[split] = cols
    train_labels, valid_labels, names, how = encode_labels(
        raw["train"]["label"], raw["validation"]["label"], label_names,
        files=(str(train_file), str(validation_file)),
    )
    out = []
    for split, labels, path in (("train", train_labels, train_file),
                                ("validation", valid_labels, validation_file)):
        cols = raw[split]
        n = len(labels)
        if "idx" in cols:
            try:
                idx = [int(v) for v in cols["idx"]]
            except (TypeError, ValueError) as exc:
                raise UserError(f"{path}: idx column {column_map['idx']!r} must hold integers") from exc
            if len(set(idx)) != n:
                raise UserError(f"{path}: idx column {column_map['idx']!r} has duplicate values")
        else:
            idx = list(range(n))
        text_a = [str(v) for v in cols["text_a"]]
        text_b = ([None if v is None else str(v) for v in cols["text_b"]]
                  if "text_b" in cols else [None] * n)
        out.append(Samples(idx, text_a, text_b, labels))
    return out[0], out[1], names, {"label_mapping": how}


def text_column_map(column_map, columns: list[str] | None, where: str) -> dict[str, str]:
    """A causal-LM task's columns: ``column_map`` (``text`` or ``prompt`` and ``response``,
    or the engine's ``text_a`` and ``text_b``; a ``label`` has no use), else the file's own
    ``text`` column, or its ``prompt`` and ``response`` columns."""
    if column_map:
        given = dict(column_map) if isinstance(column_map, dict) else dict(
            item.split("=", 1) for item in str(column_map).split(",") if "=" in item)
        cmap = {}
        for key, value in given.items():
            if key in ("label",):
                raise UserError(f"{where}: a causal-LM task has no labels; drop 'label' from "
                                "its column_map")
            engine = TEXT_KEYS.get(key, key)
            if engine not in ("text_a", "text_b", "idx"):
                raise UserError(f"{where}: column_map key {key!r} is not one of text, prompt, "
                                "response, idx")
            cmap[engine] = str(value)
        if "text_a" not in cmap or (set(given) >= {"prompt"} and "text_b" not in cmap):
            raise UserError(f"{where}: a causal-LM task's column_map names a text column, or "
                            "prompt and response columns")
        return cmap
    columns = columns or []
    if "text" in columns:
        return {"text_a": "text"}
    if "prompt" in columns and "response" in columns:
        return {"text_a": "prompt", "text_b": "response"}
    raise UserError(f"{where}: a causal-LM task needs a 'text' column, or 'prompt' and "
                    f"'response' columns; it has {columns}: name them in column_map "
                    "(text: COLUMN, or prompt: COLUMN and response: COLUMN)")


def local_text_splits(train_file, validation_file, cmap: dict, fmt: str, quoting, header):
    """A causal-LM task's two splits: text (or prompt and response), no labels (0)."""
    from ..data import Samples

    out = []
    for path in (train_file, validation_file):
        table = read_table(path, fmt, [cmap[k] for k in ("text_a", "text_b") if k in cmap],
                           quoting, header)
        cols = {key: _column(table, col, path, key) for key, col in cmap.items()}
        n = len(cols["text_a"])
        if n == 0:
            raise UserError(f"{path} has no rows")
        for key in ("text_a", "text_b"):  # the text (or prompt), and the response if any
            empty = ([i for i, v in enumerate(cols[key]) if v is None or not str(v).strip()]
                     if key in cols else [])
            if empty:
                what = "a response to learn" if key == "text_b" else "a text"
                raise UserError(f"{path}: column {cmap[key]!r} is empty in {len(empty)} of {n} "
                                f"row(s) (first at data row {empty[0] + 1}); every row needs "
                                f"{what}: fill or drop those rows")
        idx = [int(v) for v in cols["idx"]] if "idx" in cols else list(range(n))
        text_b = ([None if v is None else str(v) for v in cols["text_b"]] if "text_b" in cols
                  else [None] * n)
        out.append(Samples(idx, [str(v) for v in cols["text_a"]], text_b, [0] * n))
    return out[0], out[1]


class LocalSource(Source):
    """Two files (train, validation) and a column map; any task name goes."""

    name = "local"
    tasks = None

    def label_count(self, key: str, spec: dict) -> int | None:
        return len(spec["label_names"]) if spec.get("label_names") else None

    def check_config(self, key: str, spec: dict, base_dir, objective: str | None = None) -> None:
        """Both files and the column map are given, the files exist, the mapped columns
        are in their headers (when this check can read the header; Parquet imports pyarrow).
        A causal-LM task's column map is optional (the files' text, or prompt and response,
        columns) and names no label."""
        where = f"tasks.{key}"
        from ..objectives import objective as registered

        text = objective is not None and registered(objective).task_kind == "text"
        for option in ("train_file", "validation_file") + (() if text else ("column_map",)):
            if option not in spec:
                raise ConfigError(f"{where}: a local task needs '{option}'")
        header = spec.get("header", True)
        if text:
            self._check_text_columns(where, spec, base_dir, header)
            return
        try:
            cmap = column_keys(spec["column_map"], header)
            parse_column_map(spec["column_map"])  # the keys a classification task needs
        except UserError as exc:
            raise ConfigError(f"{where}.column_map: {exc}") from None
        for option in ("train_file", "validation_file"):
            path = resolve_path(spec[option], base_dir)
            if not path.is_file():
                raise ConfigError(f"{where}.{option}: file {spec[option]!r} does not exist")
            fmt = spec.get("format") or guess_format(path)
            if fmt == "parquet":
                for csv_only in ("quoting", "header"):
                    if csv_only in spec:
                        raise ConfigError(f"{where}.{csv_only}: applies to CSV and TSV files "
                                          f"only, and {option} {spec[option]!r} is Parquet")
            columns = file_columns(path, fmt, spec.get("quoting"), header)
            missing = [c for c in cmap.values() if c not in (columns or [])]
            if columns is not None and missing:
                has = (f"{len(columns)} columns (indices 0..{len(columns) - 1})" if not header
                       else f"columns {columns}")
                raise ConfigError(
                    f"{where}.column_map: column(s) {missing} are not in {option} "
                    f"{spec[option]!r}, which has {has}; fix the column_map or the file"
                )

    def _check_text_columns(self, where: str, spec: dict, base_dir, header: bool) -> None:
        for option in ("train_file", "validation_file"):
            path = resolve_path(spec[option], base_dir)
            if not path.is_file():
                raise ConfigError(f"{where}.{option}: file {spec[option]!r} does not exist")
            fmt = spec.get("format") or guess_format(path)
            columns = file_columns(path, fmt, spec.get("quoting"), header)
            try:
                cmap = text_column_map(spec.get("column_map"), columns, f"{where}.column_map")
            except UserError as exc:
                if columns is None and not spec.get("column_map"):
                    return  # the columns cannot be read here: prepare-task checks them
                raise ConfigError(str(exc)) from None
            missing = [c for c in cmap.values() if columns is not None and c not in columns]
            if missing:
                raise ConfigError(f"{where}.column_map: column(s) {missing} are not in {option} "
                                  f"{spec[option]!r}, which has columns {columns}")

    def train_rows(self, key: str, spec: dict, base_dir) -> int | None:
        """The data rows of the train file (read here: a Parquet file's metadata, a CSV or
        TSV file's records)."""
        if "train_file" not in spec:
            return None
        path = resolve_path(spec["train_file"], base_dir)
        return count_rows(path, spec.get("format"), spec.get("quoting"),
                          spec.get("header", True)) if path.is_file() else None

    def info_name(self, name: str | None, spec: dict) -> str:
        """The given name, else the train file's name up to its first dot."""
        return name or Path(spec["train_file"]).name.split(".")[0]

    def prepare(self, name, spec: dict, seed: int):
        train_file, validation_file = spec.get("train_file"), spec.get("validation_file")
        column_map, fmt = spec.get("column_map"), spec.get("format")
        if spec.get("task_kind") == "text":
            return self.prepare_text(spec)
        if train_file is None or validation_file is None or column_map is None:
            raise UserError("--source local needs --train-file, --validation-file and --column-map")
        cmap = parse_column_map(column_map)
        header = spec.get("header")
        header = True if header is None else header
        fmt = fmt or infer_format(train_file)
        quoting = spec.get("quoting") or (None if fmt == "parquet" else default_quoting(fmt))
        train, valid, names, how = local_splits(train_file, validation_file, cmap, fmt,
                                                spec.get("label_names"), quoting, header)
        origin = f"local files {train_file}, {validation_file}"
        extra = dict(files={"train": str(train_file), "validation": str(validation_file)},
                     column_map=column_keys(cmap, header), format=fmt, **how)
        if fmt != "parquet":
            extra.update(quoting=quoting, header=header)
        return train, valid, names, origin, extra


    def prepare_text(self, spec: dict):
        """A causal-LM task of local files: their text (or prompt and response) columns."""
        train_file, validation_file = spec.get("train_file"), spec.get("validation_file")
        if train_file is None or validation_file is None:
            raise UserError("--source local needs --train-file and --validation-file")
        fmt = spec.get("format") or infer_format(train_file)
        header = True if spec.get("header") is None else spec.get("header")
        quoting = spec.get("quoting") or (None if fmt in ("parquet", "jsonl")
                                          else default_quoting(fmt))
        cmap = text_column_map(spec.get("column_map"), file_columns(train_file, fmt, quoting, header),
                               str(train_file))
        train, valid = local_text_splits(train_file, validation_file, cmap, fmt, quoting, header)
        extra = dict(files={"train": str(train_file), "validation": str(validation_file)},
                     column_map=cmap, format=fmt)
        return train, valid, [], f"local files {train_file}, {validation_file}", extra


SOURCE = LocalSource()
