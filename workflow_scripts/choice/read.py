"""Choice rows read from a local file.

JSONL or Parquet: a prompt column, a ``choices`` column holding a list of strings per row
(lists may differ in length) and an ``answer`` column (an integer index, or the text of one
choice).  CSV or TSV: one column per choice, listed in the column map
(``{"prompt": "question", "choices": ["A", "B", "C", "D"], "answer": "label"}``); a row
with fewer choices leaves its last choice cells empty.  A CSV answer cell is the text of a
choice, or else an integer index.

Column names default to ``prompt``, ``choices``, ``answer`` (and ``idx`` when present).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SampleError, UserError
from .rows import ChoiceRow, check_rows, make_row

DEFAULT_COLUMNS = {"prompt": "prompt", "choices": "choices", "answer": "answer"}
KEYS = ("prompt", "choices", "answer", "idx")


def column_map(given: dict | None, fmt: str, where: str) -> dict:
    """The column map with defaults filled and checked (CSV/TSV: ``choices`` lists columns)."""
    given = dict(given or {})
    unknown = [k for k in given if k not in KEYS]
    if unknown:
        raise UserError(f"{where}: column_map key(s) {unknown} are not one of {', '.join(KEYS)} "
                        "(a choice task's columns)")
    cmap = {**DEFAULT_COLUMNS, **given}
    choices = cmap["choices"]
    if fmt in ("csv", "tsv"):
        if isinstance(choices, str):
            choices = [c.strip() for c in choices.split("|") if c.strip()]
        if not isinstance(choices, (list, tuple)) or len(choices) < 2:
            raise UserError(f"{where}: a {fmt} choice task lists its choice columns in the "
                            'column map, at least two: choices: ["A", "B", ...] (or "A|B|...")')
        cmap["choices"] = [str(c) for c in choices]
    elif not isinstance(choices, str):
        raise UserError(f"{where}: a {fmt} choice task has one choices column holding a list "
                        f"per row; column_map.choices must name it, not {choices!r}")
    return cmap


class _Records:
    """JSONL rows as a column-wise view (each line one JSON object; its answer may be an
    index on one line and a choice's text on the next, which a typed reader refuses)."""

    def __init__(self, path):
        import json

        from ..tasks.files import check_utf8

        check_utf8(path)
        self.records = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SampleError(f"{path}: line {n} is not JSON ({exc}); each line holds "
                                      "one object") from None
                if not isinstance(record, dict):
                    raise SampleError(f"{path}: line {n} is not a JSON object")
                self.records.append(record)
        self.column_names = list(dict.fromkeys(k for r in self.records for k in r))

    def column(self, name: str) -> list:
        return [r.get(name) for r in self.records]


def _column(table, name: str, path, key: str) -> list:
    if name not in table.column_names:
        raise SampleError(f"{path}: column {name!r} ({key}) is missing; the file has columns "
                          f"{table.column_names}: name the right one in the column map")
    column = table.column(name)
    return column if isinstance(column, list) else column.to_pylist()


def _csv_answer(value, choices: tuple[str, ...]):
    text = "" if value is None else str(value).strip()
    if text in choices:
        return text
    try:
        return int(text)
    except ValueError:
        return str(value)


def _csv_choices(cells: list, where: str) -> list:
    present = [c is not None and str(c).strip() != "" for c in cells]
    last = max((k for k, p in enumerate(present) if p), default=-1)
    gaps = [k for k in range(last) if not present[k]]
    if gaps:
        raise SampleError(f"{where}: choice column {gaps[0]} is empty but a later one is not; "
                          "a row with fewer choices leaves only its last choice columns empty")
    return [str(c) for c in cells[:last + 1]]


def read_choice_file(path, fmt: str | None = None, columns: dict | None = None,
                     quoting: str | None = None, header: bool = True) -> list[ChoiceRow]:
    """The checked rows of one choice-task file (see the module's description)."""
    from ..tasks.local import infer_format, read_table

    path = Path(path)
    fmt = fmt or infer_format(path)
    cmap = column_map(columns, fmt, str(path))
    texts = [cmap["prompt"]] + (cmap["choices"] if fmt in ("csv", "tsv") else [])
    table = (_Records(path) if fmt == "jsonl" and path.is_file()
             else read_table(path, fmt, texts, quoting, header))
    prompts = _column(table, cmap["prompt"], path, "prompt")
    answers = _column(table, cmap["answer"], path, "answer")
    if fmt in ("csv", "tsv"):
        cells = list(zip(*[_column(table, c, path, "choices") for c in cmap["choices"]]))
        choices = [_csv_choices(list(c), f"{path} row {i + 1}") for i, c in enumerate(cells)]
        answers = [_csv_answer(a, tuple(c)) for a, c in zip(answers, choices)]
    else:
        choices = _column(table, cmap["choices"], path, "choices")
    idx = (_column(table, cmap["idx"], path, "idx") if "idx" in cmap
           else list(range(len(prompts))))
    if len(set(idx)) != len(idx):
        raise SampleError(f"{path}: the idx column has duplicate values")
    rows = [make_row(p, c, a, f"{path} row {i + 1}", ix)
            for i, (p, c, a, ix) in enumerate(zip(prompts, choices, answers, idx))]
    return check_rows(rows, str(path))
