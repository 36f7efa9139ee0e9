"""The config check of causal-LM families (before any job runs): what is refused, by name."""

from __future__ import annotations

import copy
import json

import pytest

from workflow_scripts.config import check_config
from workflow_scripts.errors import ConfigError, UserError
from workflow_scripts.plan import Plan
from workflow_scripts.tasks import local


def checkpoint(path, architectures, model_type="llama"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type,
                                                  "architectures": architectures}))
    return str(path)


@pytest.fixture
def config(tmp_path):
    (tmp_path / "texts.csv").write_text("text\nthe good movie\na sad story\n")
    return {
        "tasks": {
            "notes": {"source": "local", "train_file": str(tmp_path / "texts.csv"),
                      "validation_file": str(tmp_path / "texts.csv")},
            "tweets": {"source": "builtin", "name": "sentiment"},
        },
        "families": {"lm": {"objective": "causal-lm",
                            "base": checkpoint(tmp_path / "base", ["LlamaForCausalLM"]),
                            "checkpoints": {"notes": {"finetune": True},
                                            "tweets": {"finetune": True}}}},
        "fisher": {"n": [8]},
        "merge": {"methods": ["average", "mask", "ties"]},
    }


def test_a_causal_lm_family_plans_its_jobs_with_the_objective(config, tmp_path):
    check_config(config, base_dir=tmp_path)
    plan = Plan(config)
    assert plan.base_tasks("lm") == plan.family_tasks("lm")
    assert "--objective causal-lm" in plan.prepare_task_flags("notes")
    assert "--objective causal-lm" in plan.fisher_flags(8, "mask", "lm")
    assert "--objective causal-lm" in plan.merge_flags(plan.merges()[0])
    assert plan.base_eval_paths() == ["results/eval/lm/base/notes.json",
                                      "results/eval/lm/base/tweets.json"]
    assert plan.task_metrics() == {"notes": "loss", "tweets": "loss"}


@pytest.mark.parametrize("change, entry, words", [
    (lambda c, p: c["families"].update(cls={"base": checkpoint(p / "b2", ["BertModel"], "bert"),
                                            "checkpoints": {"notes": {"finetune": True},
                                                            "tweets": {"finetune": True}}}),
     r"tasks\.notes", "define it twice"),
    (lambda c, p: c["tasks"].update(tweets={"source": "glue", "name": "sst2"}),
     r"tasks\.tweets", "needs text tasks"),
    (lambda c, p: c["families"]["lm"].update(base=checkpoint(p / "enc", ["BertModel"], "bert")),
     r"families\.lm\.base", "causal-lm families are decoders"),
    (lambda c, p: c["families"]["lm"]["checkpoints"].update(
        notes={"source": checkpoint(p / "cls", ["LlamaForSequenceClassification"])}),
     r"families\.lm\.checkpoints\.notes\.source", "is a classification checkpoint"),
    (lambda c, p: c["families"]["lm"]["checkpoints"]["notes"].update(label_map=[0, 1]),
     r"families\.lm\.checkpoints\.notes\.label_map", "no labels"),
])
def test_what_a_causal_lm_family_cannot_have_is_refused_by_name(config, tmp_path, change,
                                                                  entry, words):
    bad = copy.deepcopy(config)
    change(bad, tmp_path)
    with pytest.raises(ConfigError, match=f"{entry}.*{words}"):
        check_config(bad, base_dir=tmp_path)


def test_a_causal_lm_checkpoint_in_a_classification_family_is_refused(config, tmp_path):
    config["families"]["lm"]["objective"] = "classification"
    config["tasks"]["notes"]["column_map"] = {"text_a": "text", "label": "text"}
    config["families"]["lm"]["base"] = checkpoint(tmp_path / "lmbase", ["Qwen2ForCausalLM"], "qwen2")
    with pytest.raises(ConfigError, match=r"families\.lm\.base.*causal-lm checkpoint.*objective"):
        check_config(config, base_dir=tmp_path)


def test_a_text_task_without_a_text_column_is_refused(config, tmp_path):
    (tmp_path / "bad.csv").write_text("sentence,label\na,0\n")
    config["tasks"]["notes"].update(train_file=str(tmp_path / "bad.csv"),
                                    validation_file=str(tmp_path / "bad.csv"))
    with pytest.raises(ConfigError, match=r"needs a 'text' column, or 'prompt' and 'response'"):
        check_config(config, base_dir=tmp_path)
    config["tasks"]["notes"]["column_map"] = {"text": "sentence"}
    check_config(config, base_dir=tmp_path)  # named in the column map: fine


def test_text_column_maps():
    assert local.text_column_map(None, ["id", "text"], "x") == {"text_a": "text"}
    assert local.text_column_map(None, ["prompt", "response"], "x") == {
        "text_a": "prompt", "text_b": "response"}
    assert local.text_column_map({"prompt": "q", "response": "a"}, None, "x") == {
        "text_a": "q", "text_b": "a"}
    with pytest.raises(UserError, match="no labels"):
        local.text_column_map({"text": "t", "label": "y"}, None, "x")
    with pytest.raises(UserError, match="prompt and response"):
        local.text_column_map({"prompt": "q"}, None, "x")


def test_prepare_a_jsonl_task_of_prompts_and_responses(tmp_path):
    from workflow_scripts.tasks.prepare import prepare

    rows = [{"prompt": f"question {i}", "response": f"answer {i}", "id": 10 + i} for i in range(6)]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, valid, info = prepare("local", train_file=path, validation_file=path,
                                 objective="causal-lm")
    assert train.text_a[0] == "question 0" and train.text_b[0] == "answer 0"
    assert set(train.label) == {0} and info["num_labels"] == 0 and info["label_names"] == []
    assert info["objective"] == "causal-lm" and info["format"] == "jsonl" and info["is_pair"]
    (tmp_path / "plain.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(UserError, match="needs a 'text' column"):
        prepare("local", train_file=tmp_path / "plain.jsonl",
                validation_file=tmp_path / "plain.jsonl", objective="causal-lm")


def test_builtin_tasks_as_text():
    import importlib.util

    from workflow_scripts.tasks.prepare import prepare

    if importlib.util.find_spec("chatterbot_corpus") is None:
        pytest.skip("chatterbot-corpus is not installed")
    train, valid, info = prepare("builtin", "reply", max_train=50, max_validation=20,
                                 objective="causal-lm")
    assert all(b for b in train.text_b) and set(train.label) == {0}
    assert info["text"] == "each utterance a prompt, its real reply the response"
    classified, _, _ = prepare("builtin", "reply", max_train=50, max_validation=20)
    assert set(classified.label) == {0, 1}  # the classification task keeps its labels


def test_held_out_selection_of_a_causal_lm_family_plans_the_base_on_the_held_out_split(
        config, tmp_path):
    """select normalises a text task's held-out score by the base model's held-out loss: the
    plan evaluates the base on each task's held-out split and lists it for select."""
    (tmp_path / "texts.csv").write_text("text\n" + "".join(f"text {i}\n" for i in range(80)))
    config["merge"] = {"methods": ["task-arithmetic"], "task_arithmetic_lambda": [0.3, 1.0]}
    config["selection"] = {"holdout_fraction": 0.25}
    check_config(config, base_dir=tmp_path)
    plan = Plan(config)
    bases = ["results/holdout/lm/base/notes.json", "results/holdout/lm/base/tweets.json"]
    assert plan.base_eval_paths("holdout") == bases
    assert set(bases) <= set(plan.holdout_outputs()) and set(bases) <= set(plan.holdout_paths())
    assert plan.base_eval_meta("lm", "notes", "holdout") == [
        "family=lm", "kind=base", "task=notes", "split=holdout"]
    assert not any(p.startswith("results/holdout/") for p in plan.eval_paths())
