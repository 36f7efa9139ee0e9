"""evaluation.harness: lm-evaluation-harness run on a model in memory over local task YAMLs,
its metrics named as the harness names them; the settings checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workflow_scripts import harness
from workflow_scripts.errors import ConfigError, UserError

pytest.importorskip("lm_eval.models.huggingface")



def test_harness_run_on_local_yaml_equals_our_scoring(tmp_path, monkeypatch, one_thread):
    from workflow_scripts.choice.encode import encode_rows
    from workflow_scripts.choice.metrics import choice_metrics, predictions
    from workflow_scripts.choice.read import read_choice_file
    from workflow_scripts.choice.score import loglikelihoods
    from workflow_scripts.choice.testing import (harness_task_yaml, make_bpe_tokenizer,
                                                 make_causal_lm)

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rows = [{"prompt": f"Review: the {w} movie.\nSentiment:", "choices": ["positive", "negative",
                                                                         "sad song"][:2 + i % 2],
             "answer": i % 2} for i, w in enumerate(["good", "bad", "sad", "great", "fine"])]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "toy_mc.yaml").write_text(harness_task_yaml("toy_mc", data))
    tokenizer = make_bpe_tokenizer()
    model = make_causal_lm("llama", tokenizer)
    config = harness.settings({"tasks": ["toy_mc"], "include_path": str(tmp_path / "tasks"),
                               "num_fewshot": 0, "limit": 4})
    got = harness.run(model, tokenizer, config, batch_size=2, max_length=64)
    assert set(got) == {"toy_mc"} and {"acc,none", "acc_norm,none"} <= set(got["toy_mc"])
    ours = read_choice_file(data)[:4]
    lls = loglikelihoods(model, encode_rows(tokenizer, ours, 64)[0], 64)
    assert all(np.diff(np.sort(x)[-2:])[0] > 1e-3 for x in lls)
    mine = choice_metrics(predictions(ours, lls), "toy_mc")
    assert got["toy_mc"]["acc,none"] == pytest.approx(mine["accuracy"])
    assert got["toy_mc"]["acc_norm,none"] == pytest.approx(mine["acc_norm"])
    with pytest.raises(UserError, match=r"\['arc_easy'\] are not tasks of the task YAMLs in"):
        harness.run(model, tokenizer, harness.settings(
            {"tasks": ["arc_easy"], "include_path": str(tmp_path / "tasks")}))


@pytest.mark.parametrize("spec,message", [
    ({}, "name at least one harness task"),
    ({"tasks": ["x"], "include_path": "/no/such/folder"}, "is not a folder of task YAMLs"),
    ({"tasks": ["x"], "num_fewshot": -1}, "must be a whole number >= 0"),
    ({"tasks": ["x"], "limit": 2.5}, "must be a row count >= 1 or a share"),
    ({"tasks": ["x"], "limits": 2}, r"unknown key\(s\) \['limits'\]"),
])
def test_bad_harness_settings(spec, message):
    with pytest.raises(ConfigError, match=message):
        harness.settings(spec)
    assert harness.settings({"tasks": "arc_easy", "limit": 0.5}).limit == 0.5
