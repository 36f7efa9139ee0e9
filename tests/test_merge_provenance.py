"""Fisher provenance (model fingerprint, task) and the model cards of merged checkpoints."""

import json
import logging

import pytest
import torch
import yaml

from workflow_scripts import architectures as arch
from workflow_scripts import cli
from workflow_scripts.artifacts import save_fisher
from workflow_scripts.errors import FisherProvenanceError
from workflow_scripts.io import sha256_file
from workflow_scripts.merging.card import add_scores, read_card
from workflow_scripts.merging.files import merge_models
from workflow_scripts.models import load_model


def mask_fisher(info, model, seed, task):
    d = arch.dims(model)
    g = torch.Generator().manual_seed(seed)
    tensors = {"head": torch.rand(d.layers, d.heads, generator=g) + 0.01,
               "neuron": torch.rand(d.layers, d.intermediate, generator=g) + 0.01}
    return tensors, {"method": "mask", "model": info.source, "fingerprint": info.fingerprint,
                     "task": task, "n": 32, "seed": 7}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two tiny checkpoints and a mask Fisher file recorded for each (tasks ta, tb)."""
    root = tmp_path_factory.mktemp("pair")
    from workflow_scripts.testing import make_tiny_checkpoint

    models, fishers = [], []
    for seed, task in ((0, "ta"), (1, "tb")):
        path = make_tiny_checkpoint(root / task, "bert", 2, seed)
        model, _, info = load_model(str(path))
        tensors, meta = mask_fisher(info, model, seed + 10, task)
        fisher = root / f"{task}.mask.safetensors"
        save_fisher(tensors, meta, fisher)
        models.append(path)
        fishers.append(fisher)
    return models, fishers


def test_swapped_fishers_are_an_error_naming_both(tmp_path, pair):
    (a, b), (fa, fb) = pair
    with pytest.raises(FisherProvenanceError) as err:
        merge_models([a, b], tmp_path / "out", method="mask", fishers=[fb, fa])
    message = str(err.value)
    _, _, info_a = load_model(str(a))
    _, _, info_b = load_model(str(b))
    assert str(fb) in message and str(a) in message and str(b) in message
    assert info_a.fingerprint in message and info_b.fingerprint in message
    assert "--allow-fisher-mismatch" in message
    assert not (tmp_path / "out").exists()


def test_allow_fisher_mismatch_merges_with_a_warning(tmp_path, pair, caplog):
    (a, b), (fa, fb) = pair
    with caplog.at_level(logging.WARNING):
        out = merge_models([a, b], tmp_path / "out", method="mask", fishers=[fb, fa],
                           tasks=["ta", "tb"], allow_fisher_mismatch=True)
    assert len(out) == 2 and all(p.is_dir() for p in out)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(fb) in w and "--allow-fisher-mismatch" in w for w in warnings)
    assert any("on task 'tb'" in w and "on task 'ta'" in w for w in warnings)


def test_fisher_of_another_task_is_an_error(tmp_path, pair, capsys):
    (a, b), (fa, fb) = pair
    merge_models([a, b], tmp_path / "ok", method="mask", fishers=[fa, fb], tasks=["ta", "tb"])
    with pytest.raises(FisherProvenanceError, match=r"computed on task 'ta'.*on task 'tx'"):
        merge_models([a, b], tmp_path / "out", method="mask", fishers=[fa, fb],
                     tasks=["tx", "tb"])
    capsys.readouterr()
    base = ["merge", "--models", str(a), str(b), "--method", "mask",
            "--fishers", str(fa), str(fb), "--out", str(tmp_path / "cli")]
    assert cli.main(base + ["--tasks", "ta", "tx"]) == 2
    err = capsys.readouterr().err
    assert "error: Fisher file" in err and str(fb) in err and "'tx'" in err
    assert cli.main(base + ["--tasks", "ta", "tx", "--allow-fisher-mismatch"]) == 0
    assert (tmp_path / "cli" / a.name / "merge.json").is_file()


def test_workflow_passes_the_tasks_of_fisher_merges():
    from workflow_scripts.plan import Plan

    from workflow_scripts.config import fill_defaults

    config = fill_defaults({
        "tasks": {"x": {}, "y": {}}, "families": {"f": {"checkpoints": {"x": {}, "y": {}}}},
        "fisher": {"n": [32]}, "merge": {"methods": ["average", "mask"]}})
    plan = Plan(config)
    flags = {m.method: plan.merge_flags(m) for m in plan.merges()}
    assert "--tasks x y" in flags["mask"] and "--names x y" in flags["mask"]
    assert "--tasks" not in flags["average"]


def test_model_card_and_recipe(tmp_path, pair, samples_file):
    (a, b), (fa, fb) = pair
    out = merge_models([a, b], tmp_path / "out", method="mask", fishers=[fa, fb],
                       names=["ta", "tb"], tasks=["ta", "tb"], floor=1e-6)
    for j, directory in enumerate(out):
        recipe = json.loads((directory / "merge.json").read_text())
        front, body = read_card(directory)
        assert front["base_model"] == [str(a), str(b)]
        assert front["tags"] == ["merge", "fisher-merging"]
        assert front["library_name"] == "transformers"
        assert front["pipeline_tag"] == "text-classification"
        assert "model-index" not in front
        assert recipe["method"] == "mask" and recipe["scheme"] == "paper"
        assert recipe["n"] == 32 and recipe["seed"] == 7
        assert recipe["parameters"] == {"floor": 1e-6}
        assert recipe["name"] == ["ta", "tb"][j] and recipe["head_of"] == str([a, b][j])
        assert [f["sha256"] for f in recipe["fisher_files"]] == [sha256_file(fa), sha256_file(fb)]
        for text in ("mask", "`paper`", "`32`", "`7`", "floor", "`1e-06`",
                     sha256_file(fa), sha256_file(fb), str(fa), str(fb), str(a), str(b),
                     recipe["inputs"][0]["fingerprint"]):
            assert text in body, text
        assert "## Scores" not in body

    # the workflow's evaluate step (keep_merged) adds the task's scores to the card
    samples = samples_file(n=12)
    target = out[0]
    rc = cli.main(["evaluate", "--model", str(target), "--data", str(samples), "--task", "ta",
                   "--card", "--out", str(tmp_path / "ta.json")])
    assert rc == 0
    metrics = json.loads((tmp_path / "ta.json").read_text())["metrics"]
    front, body = read_card(target)
    result = front["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "ta"
    assert {m["type"]: m["value"] for m in result["metrics"]} == metrics
    assert "## Scores" in body and f"{metrics['accuracy']:.4f}" in body
    add_scores(target, "other", {"accuracy": 0.5})  # a second task: both kept, sorted
    front, _ = read_card(target)
    assert [r["dataset"]["name"] for r in front["model-index"][0]["results"]] == ["other", "ta"]
    assert yaml.safe_load((target / "README.md").read_text().split("---")[1])["tags"]


def test_evaluate_card_needs_a_merged_checkpoint(tmp_path, pair, samples_file, capsys):
    (a, _), _ = pair
    rc = cli.main(["evaluate", "--model", str(a), "--data", str(samples_file(n=4)), "--task",
                   "ta", "--card", "--out", str(tmp_path / "x.json")])
    assert rc == 2 and "has no merge.json" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
