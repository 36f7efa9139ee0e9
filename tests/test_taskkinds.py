"""Objectives and task kinds are registries of one module each, passed explicitly: nothing
chooses an objective or a task kind from a model's class name."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from workflow_scripts import objectives, taskkinds
from workflow_scripts.errors import UserError
from workflow_scripts.reporting import selection
from workflow_scripts.taskkinds.base import TaskKind
from workflow_scripts.testing import make_tiny_checkpoint, toy_samples

PACKAGE = Path(__file__).resolve().parent.parent / "workflow_scripts"


def test_each_objective_is_one_module_with_a_registered_default_task_kind():
    assert objectives.NAMES == ("classification", "causal-lm")
    for name, objective in objectives.OBJECTIVES.items():
        assert (PACKAGE / "objectives" / f"{name.replace('-', '_')}.py").is_file()
        kind = taskkinds.of_objective(name)
        assert kind.name == objective.task_kind and kind.objective == name
    assert objectives.objective("causal-lm").whole_model
    assert not objectives.objective("classification").whole_model
    with pytest.raises(UserError, match="unknown objective 'seq2seq'"):
        objectives.objective("seq2seq")


def test_each_task_kind_is_one_module_implementing_the_whole_interface():
    interface = [name for name, value in vars(TaskKind).items()
                 if callable(value) and not name.startswith("_")]
    for name, kind in taskkinds.KINDS.items():
        assert (PACKAGE / "taskkinds" / f"{name}.py").is_file()
        assert kind.objective in objectives.OBJECTIVES
        for attribute in ("description", "higher_is_better", "needs_base", "caption", "unit",
                          "labels", "expected_fisher"):
            assert hasattr(kind, attribute), (name, attribute)
        missing = [m for m in interface if m != "chunk_labels"
                   and getattr(type(kind), m) is getattr(TaskKind, m)]
        assert not missing, (name, missing)


def test_the_kind_comes_from_the_task_or_the_record_never_the_model():
    assert taskkinds.of_task("causal-lm", {"task": "x"}).name == "text"
    assert taskkinds.of_task("causal-lm", {"task": "x", "task_kind": "text"}).name == "text"
    with pytest.raises(UserError, match="'x' is a label task.*classification models"):
        taskkinds.of_task("causal-lm", {"task": "x", "task_kind": "label"})
    assert taskkinds.of_record({"task_kind": "text"}).name == "text"
    assert taskkinds.of_record({"objective": "causal-lm"}).name == "text"  # older records
    assert taskkinds.of_record({}).name == "label"
    with pytest.raises(UserError, match="unknown task kind 'poem'"):
        taskkinds.kind("poem")


def test_no_module_infers_an_objective_from_a_class_name():
    """``objectives.of_model`` is gone; no code compares a model class's name with a
    suffix to choose what it computes."""
    assert not hasattr(objectives, "of_model")
    found = []
    for file in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "of_model":
                found.append(str(file))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "endswith" and "__name__" in ast.unparse(node)):
                found.append(f"{file}: {ast.unparse(node)}")
    assert not found, found


def test_a_model_of_another_objective_is_refused_not_reinterpreted(tmp_path):
    from workflow_scripts import fisher
    from workflow_scripts.models import load_model

    path = make_tiny_checkpoint(tmp_path / "lm", "llama", objective="causal-lm",
                                padding_side="left", pad_token_id=None)
    model, tokenizer, _ = load_model(str(path), objective="causal-lm")
    samples = toy_samples(4)
    with pytest.raises(ValueError, match="is not a classification model"):
        fisher.mask_fisher(model, tokenizer, samples)  # the default kind: a classifier's
    got = fisher.mask_fisher(model, tokenizer, samples, kind="text")
    assert float(got["head"].sum()) > 0


def test_the_kinds_losses_are_their_objectives_training_losses(tmp_path):
    """The per-example loss the Fisher differentiates is, averaged, the loss transformers
    trains with from the kind's labels (class ids; token labels)."""
    from workflow_scripts import architectures as arch
    from workflow_scripts.models import load_model

    for objective, model_type in (("classification", "bert"), ("causal-lm", "llama")):
        path = make_tiny_checkpoint(tmp_path / objective, model_type, objective=objective)
        model, tokenizer, _ = load_model(str(path), objective=objective)
        kind = taskkinds.of_objective(objective)
        batch = kind.batches(model, tokenizer, toy_samples(3), batch_size=1, max_length=16,
                             sort_by_length=False, device="cpu")[0]
        inputs = arch.model_inputs(model, batch.inputs)
        with torch.no_grad():
            out = model(**inputs, labels=batch.labels)
            mine = kind.example_losses(out.logits, batch.labels)
        assert mine.shape == (1,) and math.isclose(float(mine[0]), float(out.loss), rel_tol=1e-5)


def _lm_eval(path, task, kind, loss, split="holdout", **context):
    data = {"task": task, "model": f"lm/{kind}-{task}", "objective": "causal-lm",
            "task_kind": "text", "n_examples": 20, "n_tokens": 300, "dropped_examples": 0,
            "metrics": {"loss": loss, "perplexity": math.exp(loss)},
            "context": {"family": "lm", "replicate": "ft0", "kind": kind, "task": task,
                        "split": split, **context}}
    path.write_text(json.dumps(data))
    return path


def test_select_scores_a_causal_lm_family_by_the_held_out_gain_kept(tmp_path):
    """The held-out score of a text task is the share of the held-out fine-tuning gain kept,
    normalised by the base model's held-out loss (which select used to lack)."""
    paths = [_lm_eval(tmp_path / "ft.json", "news", "finetuned", 2.0)]
    for lam, loss in ((0.3, 3.0), (1.0, 2.5)):
        paths.append(_lm_eval(tmp_path / f"m{lam}.json", "news", "merged", loss,
                              method=f"task-arithmetic-lam{lam:g}", subset="news+tweets"))
    with pytest.raises(UserError, match="no evaluation of family 'lm''s base model on task "
                                        "'news'.*same split"):
        selection.holdout_scores(paths)
    paths.append(_lm_eval(tmp_path / "base.json", "news", "base", 4.0))
    scores = selection.holdout_scores(paths)
    assert sorted(scores["normalised"].to_list()) == pytest.approx([50.0, 75.0])
