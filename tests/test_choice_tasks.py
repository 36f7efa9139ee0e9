"""Choice rows: read from JSONL, Parquet, CSV and TSV, verbalised from a classification task,
and every bad input refused with an error naming the input and the fix."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workflow_scripts.choice.read import read_choice_file
from workflow_scripts.choice.rows import ChoiceRow, from_samples, make_row, to_samples
from workflow_scripts.choice.verbalise import verbalise
from workflow_scripts.data import Samples, read_samples, write_samples
from workflow_scripts.errors import ConfigError, SampleError, UserError


def jsonl(tmp_path, rows, name="rows.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_rows_of_varying_choices_answers_as_index_or_text(tmp_path):
    path = jsonl(tmp_path, [
        {"prompt": "Q1:", "choices": ["a", "b"], "answer": 1},
        {"prompt": "Q2:", "choices": ["x", "y", "z", "w"], "answer": "z"},
        {"prompt": "Q3:", "choices": ["p", "q", "r"], "answer": 0.0},
    ])
    rows = read_choice_file(path)
    assert [r.answer for r in rows] == [1, 2, 0]
    assert [len(r.choices) for r in rows] == [2, 4, 3]
    assert [r.chance for r in rows] == [0.5, 0.25, pytest.approx(1 / 3)]


def test_parquet_rows_and_the_prepared_round_trip(tmp_path):
    table = pa.table({"question": ["Q1:", "Q2:"], "options": [["a", "b"], ["c", "d", "e"]],
                      "gold": [0, 2]})
    pq.write_table(table, tmp_path / "rows.parquet")
    rows = read_choice_file(tmp_path / "rows.parquet",
                            columns={"prompt": "question", "choices": "options", "answer": "gold"})
    assert rows == [ChoiceRow("Q1:", ("a", "b"), 0, 0), ChoiceRow("Q2:", ("c", "d", "e"), 2, 1)]
    write_samples(to_samples(rows), tmp_path / "prepared.parquet")
    assert from_samples(read_samples(tmp_path / "prepared.parquet"), "prepared") == rows
    with pytest.raises(SampleError, match="text_b holds no JSON list of choices"):
        from_samples(Samples([0], ["Q:"], [None], [0]), "prepared")


@pytest.mark.parametrize("fmt,sep", [("csv", ","), ("tsv", "\t")])
def test_csv_and_tsv_choices_as_columns(tmp_path, fmt, sep):
    lines = [["question", "A", "B", "C", "label"], ["Is it hot?", "yes", "no", "maybe", "2"],
             ["Sun or rain?", "sun", "rain", "", "rain"]]
    path = tmp_path / f"rows.{fmt}"
    path.write_text("\n".join(sep.join(cells) for cells in lines) + "\n")
    rows = read_choice_file(path, columns={"prompt": "question", "choices": ["A", "B", "C"],
                                           "answer": "label"})
    assert rows[0].choices == ("yes", "no", "maybe") and rows[0].answer == 2
    assert rows[1].choices == ("sun", "rain") and rows[1].answer == 1
    with pytest.raises(UserError, match="lists its choice columns in the column map"):
        read_choice_file(path, columns={"prompt": "question", "choices": "A", "answer": "label"})


@pytest.mark.parametrize("row,message", [
    ({"prompt": "Q:", "choices": ["a", "b"], "answer": 2},
     r"answer index 2 lies outside its 2 choices \(0..1\)"),
    ({"prompt": "Q:", "choices": ["Yes", "No"], "answer": "yes "},
     "equals choice 'Yes' only up to case or spaces; make the answer the choice's exact text"),
    ({"prompt": "Q:", "choices": ["yes", "no"], "answer": "perhaps"},
     "answer 'perhaps' equals none of its choices"),
    ({"prompt": "Q:", "choices": ["yes", "no", "yes"], "answer": 0},
     "choices 0 and 2 are both 'yes'; duplicate choices cannot be told apart"),
    ({"prompt": "  ", "choices": ["yes", "no"], "answer": 0}, "the prompt is empty"),
    ({"prompt": "Q:", "choices": ["yes"], "answer": 0}, "1 choice.s.; a row needs at least 2"),
    ({"prompt": "Q:", "choices": ["yes", ""], "answer": 0}, "choice 1 is empty"),
    ({"prompt": "Q:", "choices": ["yes", " no"], "answer": 0},
     "choice 1 ' no' starts with whitespace"),
    ({"prompt": "Q:", "choices": "yes", "answer": 0}, "choices must be a list of strings"),
    ({"prompt": "Q:", "choices": ["yes", "no"], "answer": True}, "neither a choice's index"),
])
def test_bad_rows_are_refused_naming_the_row_and_the_fix(tmp_path, row, message):
    path = jsonl(tmp_path, [{"prompt": "ok:", "choices": ["a", "b"], "answer": 0}, row])
    with pytest.raises(SampleError, match=message) as err:
        read_choice_file(path)
    assert f"{path} row 2" in str(err.value)


def test_missing_column_and_csv_gaps(tmp_path):
    path = jsonl(tmp_path, [{"question": "Q:", "choices": ["a", "b"], "answer": 0}])
    with pytest.raises(SampleError, match=r"column 'prompt' \(prompt\) is missing.*column map"):
        read_choice_file(path)
    csv = tmp_path / "gap.csv"
    csv.write_text("q,A,B,C,y\nQ?,a,,c,0\n")
    with pytest.raises(SampleError, match="choice column 1 is empty but a later one is not"):
        read_choice_file(csv, columns={"prompt": "q", "choices": ["A", "B", "C"], "answer": "y"})


def samples(pair=False):
    return Samples([0, 1, 2], ["a good film", "a bad plot", "it was fine"],
                   ["b1", "b2", "b3"] if pair else [None] * 3, [1, 0, 2])


def test_verbalised_classification_task():
    rows = verbalise(samples(), "Review: {text_a}\nSentiment:", ["negative", "positive",
                                                                 "neutral"], "tasks.sst2",
                     num_labels=3)
    assert rows[0] == ChoiceRow("Review: a good film\nSentiment:",
                                ("negative", "positive", "neutral"), 1, 0)
    pairs = verbalise(samples(pair=True), "{text_a} / {text_b}?", ["n", "p", "o"], "t")
    assert pairs[2].prompt == "it was fine / b3?"


@pytest.mark.parametrize("template,words,labels,message", [
    ("Review: {sentence}\nSentiment:", ["n", "p", "o"], 3,
     r"template field \{sentence\} names no column of the task; the columns are text_a, text_b"),
    ("Review: {text_a}\nSentiment: ", ["n", "p", "o"], 3,
     "ends in whitespace; the target delimiter .* strip it"),
    ("Review: {text_a}\nSentiment:", ["n", "p"], 3,
     "2 label_words for a task with 3 labels; give one word per label"),
    ("Review: {text_a}\nSentiment:", ["n", "p", "n"], 3, r"label_words repeat \['n'\]"),
    ("Review: {text_a}\nSentiment:", ["n", " p", "o"], 3, "label word 1 ' p' is empty or has"),
    ("{text_a} {text_b}", ["n", "p", "o"], 3, r"names \{text_b\} but the task has single texts"),
    ("Review: {text_a", ["n", "p", "o"], 3, "is not a format string"),
    ("Review:", ["n", "p", "o"], 3, "uses no column"),
])
def test_bad_templates_and_label_words(template, words, labels, message):
    with pytest.raises(ConfigError, match=message) as err:
        verbalise(samples(), template, words, "tasks.sst2", num_labels=labels)
    assert "tasks.sst2" in str(err.value)


def test_make_row_keeps_index():
    assert make_row("Q:", ["a", "b"], "b", "w", idx=7) == ChoiceRow("Q:", ("a", "b"), 1, 7)


def test_builtin_and_glue_tasks_ship_default_verbalisations():
    from workflow_scripts.choice.verbalise import check_label_words, template_fields
    from workflow_scripts.tasks.builtin import BUILTIN_TASKS, SOURCE as BUILTIN, builtin_examples
    from workflow_scripts.tasks.glue import GLUE, SOURCE as GLUE_SOURCE

    for name in BUILTIN_TASKS:
        template, words = BUILTIN.verbalisation(name)
        examples, label_names, _ = builtin_examples(name)
        template_fields(template, name)
        assert check_label_words(words, len(label_names), name) == words
        # in label order: the words are the label names, or no/yes for not_reply/reply
        assert list(words) == (["no", "yes"] if name == "reply" else label_names)
        pair = examples[0].text_b is not None
        assert ("{text_b}" in template) == pair, name
    for name, spec in GLUE.items():
        template, words = GLUE_SOURCE.verbalisation(name)
        fields = template_fields(template, name)
        check_label_words(words, len(spec.label_names), name)
        assert ("text_b" in fields) == (spec.text_b is not None), name
    assert BUILTIN.verbalisation("nope") is None


def test_a_builtin_task_verbalised():
    from workflow_scripts.tasks.builtin import SOURCE

    train, _, names, _, _ = SOURCE.prepare("reply", {}, 0)
    template, words = SOURCE.verbalisation("reply")
    rows = verbalise(train, template, words, "tasks.reply", num_labels=len(names))
    assert len(rows) == len(train) and {r.answer for r in rows} == {0, 1}
    assert rows[0].prompt.startswith("Message: ") and rows[0].choices == ("no", "yes")
