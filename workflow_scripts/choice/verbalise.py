"""A classification task verbalised as a choice task: a ``template`` over the task's columns
gives each row's prompt, and ``label_words`` (one per label, in label order) its choices;
the answer is the row's label.

``template`` uses ``str.format`` fields naming the samples' columns (``text_a``, and
``text_b`` for a task of pairs): ``"Review: {text_a}\\nSentiment:"``.  It must not end in
whitespace: the target delimiter (a space) comes before each label word, and a trailing
space would be moved onto it (the harness's rule) and double it.
"""

from __future__ import annotations

from string import Formatter

from ..errors import ConfigError, SampleError
from .rows import ChoiceRow, check_rows, make_row

COLUMNS = ("text_a", "text_b")


def template_fields(template: str, where: str) -> list[str]:
    """The column names ``template`` uses, checked (known columns, plain fields)."""
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"{where}: the template is empty; give a prompt such as "
                          '"Review: {text_a}\\nSentiment:"')
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: template {template!r} is not a format string ({exc}); "
                          "write literal braces as {{ and }}") from None
    fields = [name for _, name, _, _ in parsed if name is not None]
    for name in fields:
        if name not in COLUMNS:
            raise ConfigError(f"{where}: template field {{{name}}} names no column of the task; "
                              f"the columns are {', '.join(COLUMNS)}")
    if not fields:
        raise ConfigError(f"{where}: template {template!r} uses no column; every prompt would "
                          "be the same: include {text_a}")
    if template != template.rstrip():
        raise ConfigError(f"{where}: template {template!r} ends in whitespace; the target "
                          "delimiter (a space) already separates prompt and answer: strip it")
    return fields


def check_label_words(label_words, num_labels: int | None, where: str) -> tuple[str, ...]:
    if not isinstance(label_words, (list, tuple)) or not label_words:
        raise ConfigError(f"{where}: label_words must be a list of words, one per label")
    words = tuple(label_words)
    if num_labels is not None and len(words) != num_labels:
        raise ConfigError(f"{where}: {len(words)} label_words for a task with {num_labels} "
                          "labels; give one word per label, in label order")
    for k, word in enumerate(words):
        if not isinstance(word, str) or not word.strip() or word != word.strip():
            raise ConfigError(f"{where}: label word {k} {word!r} is empty or has surrounding "
                              "whitespace; the delimiter adds the space")
    dupes = sorted({w for w in words if words.count(w) > 1})
    if dupes:
        raise ConfigError(f"{where}: label_words repeat {dupes}; each label needs its own word")
    return words


def verbalise(samples, template: str, label_words, where: str,
              num_labels: int | None = None) -> list[ChoiceRow]:
    """The choice rows of classification ``samples`` (:class:`~workflow_scripts.data.Samples`)."""
    fields = template_fields(template, f"{where}.template")
    words = check_label_words(label_words, num_labels, f"{where}.label_words")
    if "text_b" in fields and not samples.is_pair:
        raise ConfigError(f"{where}.template: names {{text_b}} but the task has single texts "
                          "(no text_b column); use {text_a} only")
    rows = []
    for i in range(len(samples)):
        values = {"text_a": samples.text_a[i], "text_b": samples.text_b[i] or ""}
        label = samples.label[i]
        if not 0 <= label < len(words):
            raise SampleError(f"{where}: row {i + 1} has label {label}, outside the "
                              f"{len(words)} label_words")
        rows.append(make_row(template.format(**values), words, label, f"{where} row {i + 1}",
                             samples.idx[i]))
    return check_rows(rows, where)
