"""Results are refused when impossible (issue #23): a merged tensor that is NaN or overflows
the dtype it is saved in, a metric outside its range (or null where it cannot be undefined)
in ``report`` and ``select``, a Fisher recorded for another objective, and models whose
tokenizers differ; each refusal leaves every file as it was."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tree_bytes import assert_unchanged, snapshot

from workflow_scripts import cli
from workflow_scripts.artifacts import load_fisher, save_fisher
from workflow_scripts.data import Samples, write_samples
from workflow_scripts.errors import FisherProvenanceError, MergeError, UserError
from workflow_scripts.merging.files import merge_models
from workflow_scripts.models import load_model, save_checkpoint
from workflow_scripts.testing import make_tiny_checkpoint

import test_selection
from test_report import write_eval

pytestmark = pytest.mark.usefixtures("one_thread")
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
QUERY = "bert.encoder.layer.0.attention.self.query.weight"


@pytest.fixture
def pair(tmp_path):
    a = make_tiny_checkpoint(tmp_path / "in" / "a", seed=0)
    b = make_tiny_checkpoint(tmp_path / "in" / "b", seed=1)
    return tmp_path, a, b


def set_tensor(folder: Path, name: str, change) -> None:
    tensors = load_file(folder / "model.safetensors")
    tensors[name] = change(tensors[name].clone())
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_a_nan_merged_weight_is_refused_naming_the_tensor_and_inputs(pair):
    root, a, b = pair
    set_tensor(b, QUERY, lambda t: t.index_fill_(0, torch.tensor([3]), float("nan")))
    before = snapshot(root)
    with pytest.raises(MergeError, match=f"the average merge of '{a}', '{b}' gives 32 NaN or "
                       f"infinite value\\(s\\) in tensor 'encoder.layer.0.attention.self.query"):
        merge_models([str(a), str(b)], root / "out", method="average")
    assert_unchanged(root, before)


def test_a_value_that_overflows_the_saved_dtype_names_it_and_the_wider_one(pair):
    """A float32 value that overflows the first model's float16 was written silently (as inf)."""
    root, a, b = pair
    model, tok, _ = load_model(str(a))
    save_checkpoint(model.half(), tok, root / "in" / "a16")
    set_tensor(b, QUERY, lambda t: t.fill_(3e5))
    before = snapshot(root)
    with pytest.raises(MergeError, match=r"beyond the range of float16 \(largest magnitude "
                       r"1\.5e\+05, float16 holds at most 6\.55e\+04\).* Save the merge in "
                       r"float32: give a float32 checkpoint first in --models"):
        merge_models([str(root / "in" / "a16"), str(b)], root / "out", method="average")
    assert_unchanged(root, before)
    out = merge_models([str(b), str(root / "in" / "a16")], root / "out", method="average")
    assert load_file(out[0] / "model.safetensors")[QUERY].dtype == torch.float32


# ---------------------------------------------------------------- metrics


def finetuned_and_merged(tmp_path, merged_metrics, finetuned_metrics=None):
    return [
        write_eval(tmp_path / "ft-x.json", "fam", "x", "finetuned",
                   finetuned_metrics or {"accuracy": 0.9, "f1": 0.9}),
        write_eval(tmp_path / "ft-y.json", "fam", "y", "finetuned", {"accuracy": 0.8}),
        write_eval(tmp_path / "m-x.json", "fam", "x", "merged", merged_metrics,
                   method="average", subset="x+y"),
        write_eval(tmp_path / "m-y.json", "fam", "y", "merged", {"accuracy": 0.7},
                   method="average", subset="x+y"),
    ]


@pytest.mark.parametrize("metrics, message", [
    ({"accuracy": 1.7}, "accuracy is 1.7, outside its possible range [0, 1]"),
    ({"accuracy": -0.2}, "accuracy is -0.2, outside its possible range [0, 1]"),
    ({"accuracy": 0.5, "f1": 1.2}, "f1 is 1.2, outside its possible range [0, 1]"),
    ({"accuracy": 0.5, "matthews": -1.5}, "matthews is -1.5, outside its possible range [-1, 1]"),
    ({"accuracy": None}, "accuracy is null, but accuracy is always defined"),
])
def test_the_report_refuses_an_impossible_metric_naming_the_file(tmp_path, capsys, metrics,
                                                                 message):
    """A report accepted accuracy 1.7 (Table 1 showed 310.0) or -0.2; accuracy null counted
    as 0."""
    evals = finetuned_and_merged(tmp_path, metrics)
    before = snapshot(tmp_path)
    assert cli.main(["report", "--evals", *evals, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: evaluation file {tmp_path / 'm-x.json'}: {message}" in err
    assert_unchanged(tmp_path, before)


def test_a_fine_tuned_score_out_of_range_is_refused_too(tmp_path, capsys):
    evals = finetuned_and_merged(tmp_path, {"accuracy": 0.5}, {"accuracy": 1.25})
    assert cli.main(["report", "--evals", *evals, "--out-dir", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'ft-x.json'}: accuracy is 1.25, outside" in capsys.readouterr().err


def lm_eval(path: Path, kind: str, metrics: dict, **context) -> str:
    path.write_text(json.dumps({"task": "t", "objective": "causal-lm", "metrics": metrics,
                                "context": {"family": "f", "kind": kind, "task": "t",
                                            **context}}))
    return str(path)


@pytest.mark.parametrize("metrics, message", [
    ({"loss": -0.1, "perplexity": 0.9}, "loss is -0.1, outside its possible range [0, inf]"),
    ({"loss": 1.0, "perplexity": 0.5}, "perplexity is 0.5, outside its possible range [1, inf]"),
    ({"loss": None, "perplexity": None}, "loss is null, but loss is always defined"),
])
def test_a_causal_lm_loss_below_0_or_perplexity_below_1_is_refused(tmp_path, capsys, metrics,
                                                                  message):
    merged = dict(method="average", subset="t+u")
    evals = [lm_eval(tmp_path / "base.json", "base", {"loss": 3.0, "perplexity": 20.1}),
             lm_eval(tmp_path / "ft.json", "finetuned", {"loss": 2.0, "perplexity": 7.4}),
             lm_eval(tmp_path / "merged.json", "merged", metrics, **merged)]
    before = snapshot(tmp_path)
    assert cli.main(["report", "--evals", *evals, "--out-dir", str(tmp_path / "out")]) == 2
    assert f"error: evaluation file {evals[-1]}: {message}" in capsys.readouterr().err
    assert_unchanged(tmp_path, before)


def test_select_refuses_an_impossible_metric(tmp_path, capsys):
    paths = test_selection.grid(tmp_path)["holdout"]
    data = json.loads(Path(paths[-1]).read_text())
    data["metrics"]["accuracy"] = 1.5
    Path(paths[-1]).write_text(json.dumps(data))
    before = snapshot(tmp_path)
    assert cli.main(["select", "--evals", *map(str, paths), "--out",
                     str(tmp_path / "selection.csv")]) == 2
    assert (f"error: evaluation file {paths[-1]}: accuracy is 1.5, outside its possible range"
            in capsys.readouterr().err)
    assert_unchanged(tmp_path, before)


# ---------------------------------------------------------------- Fisher objective


def test_a_fisher_of_another_objective_is_refused_like_one_of_another_model(tmp_path):
    """A Fisher computed for the classification objective weighted a causal-LM merge
    unchecked (here the second model's full Fisher, its header saying so)."""
    write_samples(Samples([0, 1, 2], ["the good movie", "a sad story", "hello there"],
                          [None] * 3, [0] * 3), tmp_path / "texts.parquet")
    models, fishers = [], []
    for seed in (1, 2):
        model = make_tiny_checkpoint(tmp_path / f"lm{seed}", "llama", objective="causal-lm",
                                     seed=seed, hidden=32, heads=4, intermediate=40)
        out = tmp_path / f"f{seed}.safetensors"
        assert cli.main(["fisher", "--method", "full", "--objective", "causal-lm", "--model",
                         str(model), "--data", str(tmp_path / "texts.parquet"),
                         "--no-count-flops", "--no-progress", "--out", str(out)]) == 0
        models.append(str(model))
        fishers.append(str(out))
    tensors, meta = load_fisher(fishers[1])
    out = Path(fishers[1])
    out.unlink()
    save_fisher(tensors, dict(meta, objective="classification"), out)
    before = snapshot(tmp_path)
    with pytest.raises(FisherProvenanceError, match=r"Fisher file .*f2\.safetensors was computed "
                       r"for the classification objective, but it is used for .*lm2' in a "
                       r"causal-lm merge .* \(fisher --objective causal-lm\), or pass "
                       "--allow-fisher-mismatch"):
        merge_models(models, tmp_path / "out", method="fisher", fishers=fishers,
                     objective="causal-lm")
    assert_unchanged(tmp_path, before)


# ---------------------------------------------------------------- tokenizers


def swap_tokens(folder: Path, first: str, second: str) -> None:
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    path.write_text(json.dumps(data))


def test_tokenizers_that_differ_are_refused_unless_allowed(pair, caplog):
    """Two models with different tokenizers of the same vocabulary size merged without a word
    (embedding rows of different tokens averaged)."""
    root, a, b = pair
    swap_tokens(b, "good", "bad")
    before = snapshot(root)
    with pytest.raises(MergeError, match=rf"the tokenizers of '{a}' and '{b}' differ \(token "
                       r"'(good|bad)' is id \d+ in one and id \d+ in the other\).* pass "
                       r"--allow-tokenizer-mismatch "
                       r"\(config: merge.allow_tokenizer_mismatch: true\)"):
        merge_models([str(a), str(b)], root / "out", method="average")
    assert_unchanged(root, before)
    with caplog.at_level(logging.WARNING):
        assert cli.main(["merge", "--models", str(a), str(b), "--method", "average",
                         "--allow-tokenizer-mismatch", "--out", str(root / "out")]) == 0
    assert any("tokenizers of" in r.message and str(b) in r.message
               and "--allow-tokenizer-mismatch" in r.message for r in caplog.records)


def test_special_and_added_token_ids_count_but_padding_settings_do_not(pair):
    root, a, b = pair
    config = b / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps(dict(settings, padding_side="left", model_max_length=17)))
    data = json.loads((b / "tokenizer.json").read_text())
    data["padding"] = {"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": 8,
                       "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
    data["truncation"] = {"direction": "Right", "max_length": 16, "strategy": "LongestFirst",
                          "stride": 0}
    (b / "tokenizer.json").write_text(json.dumps(data))
    merge_models([str(a), str(b)], root / "out", method="average")  # merges
    config.write_text(json.dumps(dict(settings, mask_token="[SEP]")))
    with pytest.raises(MergeError, match="the mask token is id 4 against 3"):
        merge_models([str(a), str(b)], root / "out2", method="average")


def test_the_config_passes_the_tokenizer_opt_in_to_the_merge_jobs(tmp_path):
    from workflow_scripts.config import check_config
    from workflow_scripts.plan import Plan

    (tmp_path / "base").mkdir()

    def flags(**merge) -> str:
        config = {"tasks": {"a": {"source": "builtin", "name": "sentiment"},
                            "b": {"source": "builtin", "name": "topic"}},
                  "families": {"fam": {"base": str(tmp_path / "base"), "checkpoints": {
                      "a": {"finetune": True}, "b": {"finetune": True}}}},
                  "fisher": {"n": [8]}, "merge": {"methods": ["average"], **merge}}
        plan = Plan(check_config(config, base_dir=tmp_path))
        return " ".join(plan.merge_flags(m) for m in plan.merges())

    assert "tokenizer" not in flags()
    assert "--allow-tokenizer-mismatch" in flags(allow_tokenizer_mismatch=True)
