"""Inputs that were refused weakly (issue #23): each is now one ``error:`` line naming the
input and the fix (no traceback), or counted right; files are left as they were."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tree_bytes import assert_unchanged, snapshot

from workflow_scripts import cli
from workflow_scripts.artifacts import read_metadata
from workflow_scripts.data import Samples, write_samples
from workflow_scripts.testing import make_tiny_checkpoint, write_toy_samples

pytestmark = pytest.mark.usefixtures("one_thread")
QUERY = "bert.encoder.layer.0.attention.self.query.weight"


def one_error(capsys, args: list[str], root: Path, *patterns: str) -> str:
    """The command exits 2 with exactly one ``error:`` line (no traceback) holding every
    pattern, and changes nothing under ``root``."""
    before = snapshot(root)
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    assert_unchanged(root, before)
    return lines[0]


@pytest.fixture
def models(tmp_path):
    return tmp_path, make_tiny_checkpoint(tmp_path / "a", seed=0), make_tiny_checkpoint(
        tmp_path / "b", seed=1)


def test_the_same_model_given_twice_is_named_as_such(models, capsys):
    """It was reported as a clash of output names."""
    root, a, _ = models
    line = one_error(capsys, ["merge", "--models", str(a), str(a), "--method", "average",
                              "--out", str(root / "out")], root,
                     "--models gives the same checkpoint twice", "give each once")
    assert "--names" not in line
    (root / "alias").symlink_to(a)
    one_error(capsys, ["merge", "--models", str(a), str(root / "alias"), "--method", "average",
                       "--names", "x", "y", "--out", str(root / "out")], root,
              "the same checkpoint twice")


def relabel(path: Path, name: str, dtype: str) -> None:
    """Change one tensor's dtype in the header (same byte size), as an edit would."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    header[name]["dtype"] = dtype
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])


@pytest.mark.parametrize("first", [True, False])
def test_a_relabelled_tensor_dtype_is_an_error_line(models, capsys, first):
    """In the first model it gave an AttributeError traceback; in another, its integer bits
    were merged as weights without a word."""
    root, a, b = models
    relabel((a if first else b) / "model.safetensors", QUERY, "I32")
    one_error(capsys, ["merge", "--models", str(a), str(b), "--method", "average", "--out",
                       str(root / "out")], root,
              "tensor 'encoder.layer.0.attention.self.query.weight' is",
              "int32", "float32", "download or save the altered checkpoint again")


def test_a_config_that_transformers_rejects_is_an_error_line(models, capsys):
    """transformers' loader raised a ValueError traceback."""
    root, a, _ = models
    config = json.loads((a / "config.json").read_text())
    (a / "config.json").write_text(json.dumps(dict(config, num_attention_heads=5)))
    write_toy_samples(root / "s.parquet", n=4)
    one_error(capsys, ["evaluate", "--model", str(a), "--data", str(root / "s.parquet"),
                       "--task", "t", "--out", str(root / "e.json")], root,
              f"cannot load model '{a}'", "not a multiple of the number of attention heads",
              "download or save the checkpoint again")
    one_error(capsys, ["merge", "--models", str(a), str(root / "b"), "--method", "average",
                       "--out", str(root / "out")], root, f"'{a}'", "attention heads")


def test_pickle_weights_torch_refuses_are_an_error_line_without_unsafe_advice(models, capsys):
    """torch's UnpicklingError (recommending weights_only=False) came as a traceback."""
    import fractions

    root, a, _ = models
    pickled = root / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(a / name, pickled / name)
    state = load_file(a / "model.safetensors")
    state["extra"] = fractions.Fraction(1, 3)
    torch.save(state, pickled / "pytorch_model.bin")
    write_toy_samples(root / "s.parquet", n=4)
    line = one_error(capsys, ["evaluate", "--model", str(pickled), "--allow-pickle", "--data",
                              str(root / "s.parquet"), "--task", "t", "--out",
                              str(root / "e.json")], root,
                     f"the pickle weights of model '{pickled}' hold objects beyond tensors "
                     "(it holds fractions.Fraction)", "Convert the checkpoint to safetensors")
    assert "weights_only=False" not in line


def test_non_utf8_jsonl_is_an_error_line_naming_the_line(tmp_path, capsys):
    rows = [json.dumps({"text": f"row {i}", "label": i % 2}).encode() for i in range(20)]
    rows[6] = b'{"text": "caf\xe9", "label": 0}'
    (tmp_path / "train.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    one_error(capsys, ["prepare-task", "--source", "local", "--train-file",
                       str(tmp_path / "train.jsonl"), "--validation-file",
                       str(tmp_path / "train.jsonl"), "--column-map", "text_a=text",
                       "label=label", "--out-train", str(tmp_path / "t.parquet"),
                       "--out-validation", str(tmp_path / "v.parquet"), "--out-info",
                       str(tmp_path / "i.json")], tmp_path,
              "train.jsonl: line 7 is not UTF-8 text (byte 0xe9 at column 14)",
              "save the file as UTF-8")


def test_all_empty_responses_are_refused_by_prepare_task(tmp_path, capsys):
    rows = "prompt,response\n" + "".join(f"question {i},\n" for i in range(20))
    (tmp_path / "train.csv").write_text(rows)
    one_error(capsys, ["prepare-task", "--source", "local", "--objective", "causal-lm",
                       "--train-file", str(tmp_path / "train.csv"), "--validation-file",
                       str(tmp_path / "train.csv"), "--out-train", str(tmp_path / "t.parquet"),
                       "--out-validation", str(tmp_path / "v.parquet"), "--out-info",
                       str(tmp_path / "i.json")], tmp_path,
              "train.csv: column 'response' is empty in 20 of 20 row(s)",
              "every row needs a response to learn")


def test_examples_dropped_by_truncation_are_not_counted_in_the_fisher(tmp_path):
    """``num_samples`` counted the examples a causal LM's truncation dropped."""
    model = make_tiny_checkpoint(tmp_path / "lm", "llama", objective="causal-lm", seed=1,
                                 hidden=32, heads=4, intermediate=40)
    long_prompt = " ".join(["the good movie"] * 20)
    samples = Samples(list(range(4)), ["a sad story", long_prompt, "hello there", long_prompt],
                      [None, "yes", None, "no"], [0] * 4)
    write_samples(samples, tmp_path / "texts.parquet")
    assert cli.main(["fisher", "--method", "mask", "--objective", "causal-lm", "--model",
                     str(model), "--data", str(tmp_path / "texts.parquet"), "--max-length",
                     "16", "--no-progress", "--out", str(tmp_path / "f.safetensors")]) == 0
    meta = read_metadata(tmp_path / "f.safetensors")
    assert (meta["num_samples"], meta["dropped_samples"]) == (2, 2)
    assert meta["objective"] == "causal-lm"
