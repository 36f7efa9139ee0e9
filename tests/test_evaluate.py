import argparse
import json
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import AutoModelForSequenceClassification

from workflow_scripts import cli
from workflow_scripts.cli.options import key_value, meta_context
from workflow_scripts.data import read_samples
from workflow_scripts.errors import SampleError, UserError
from workflow_scripts.evaluate import compute_metrics, evaluate_checkpoint, evaluate_model, predict
from workflow_scripts.metrics import COMPUTED_FOR, METRICS
from workflow_scripts.models import load_model
from workflow_scripts.testing import make_tiny_checkpoint, make_tokenizer


Y_TRUE = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1])
Y_PRED = np.array([0, 1, 0, 0, 1, 1, 0, 1, 0, 1])


def test_binary_metrics_equal_sklearn():
    m = compute_metrics("mrpc", Y_TRUE, Y_PRED, 2)
    assert m == {
        "accuracy": pytest.approx(accuracy_score(Y_TRUE, Y_PRED)),
        "f1": pytest.approx(f1_score(Y_TRUE, Y_PRED)),
    }
    assert m["accuracy"] == pytest.approx(0.7)
    # scores give the same metrics as their argmax
    scores = np.eye(2)[Y_PRED] + 0.1
    assert compute_metrics("mrpc", Y_TRUE, scores, 2) == m


def test_cola_adds_matthews():
    m = compute_metrics("cola", Y_TRUE, Y_PRED, 2)
    assert m["matthews"] == pytest.approx(matthews_corrcoef(Y_TRUE, Y_PRED))
    assert set(m) == {"accuracy", "f1", "matthews"}


def test_computed_metrics_are_the_owners():
    """Every metric compute_metrics records is one of metrics.METRICS, and each is recorded
    for some task (the schema, report and its help read that tuple)."""
    y3 = np.array([0, 1, 2, 2, 1, 0])
    seen = set(compute_metrics("cola", Y_TRUE, Y_PRED, 2)) | set(compute_metrics("t", y3, y3, 3))
    assert seen == set(METRICS) == set(COMPUTED_FOR)


def test_multiclass_metrics_equal_sklearn():
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0, 2])
    p = np.array([0, 2, 2, 2, 1, 0, 1, 1, 1, 2])
    m = compute_metrics("mnli", y, p, 3)
    assert set(m) == {"accuracy", "macro_f1"}
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))


def test_one_label_is_not_classification(tmp_path, samples_file):
    with pytest.raises(ValueError, match=">= 2 labels"):
        compute_metrics("stsb", Y_TRUE, Y_PRED, 1)
    ckpt = make_tiny_checkpoint(tmp_path / "one", "bert", 1, 0)
    with pytest.raises(UserError, match=re.escape(f"checkpoint {ckpt} has 1 output label")):
        evaluate_checkpoint(str(ckpt), samples_file(n=4, num_labels=1), "stsb", device="cpu",
                            progress=False)


def test_parse_meta():
    pairs = [key_value(t) for t in ["seed=3", "pair=mnli+rte", "n=-2", "x=1.5"]]
    assert meta_context(pairs) == {"seed": 3, "pair": "mnli+rte", "n": -2, "x": "1.5"}
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        key_value("oops")
    with pytest.raises(UserError, match="twice"):
        meta_context([("a", "1"), ("a", "2")])


def test_batched_predictions_in_file_order(tiny_checkpoint, samples_file):
    model, tok, _ = load_model(str(tiny_checkpoint("bert", 3, 0)))
    samples = read_samples(samples_file(n=21, pair=True, num_labels=3))
    batched = predict(model, tok, samples, batch_size=4, progress=False)
    with torch.inference_mode():
        for i in (0, 7, 20):
            enc = tok(samples.text_a[i], samples.text_b[i], return_tensors="pt")
            one = model(**enc).logits[0].numpy()
            np.testing.assert_allclose(batched[i], one, rtol=1e-4, atol=1e-5)
    m = evaluate_model(model, tok, samples, "mnli", batch_size=4, progress=False)
    assert m["accuracy"] == pytest.approx(accuracy_score(samples.label, batched.argmax(1)))


def test_cli_writes_json(tmp_path, tiny_checkpoint, samples_file):
    ckpt, data = tiny_checkpoint("bert", 2, 0), samples_file(n=12, num_labels=2)
    out = tmp_path / "res" / "eval.json"
    rc = cli.main(["evaluate", "--model", str(ckpt), "--data", str(data),
                               "--task", "cola", "--batch-size", "5", "--device", "cpu",
                               "--meta", "seed=7", "pair=cola+sst2", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    for key in ("task", "model", "fingerprint", "n_examples", "num_labels", "label_counts",
                "metrics", "seconds", "device", "context"):
        assert key in result, key
    assert result["task"] == "cola" and result["model"] == str(ckpt)
    assert result["n_examples"] == 12 and result["num_labels"] == 2
    assert result["device"] == "cpu" and result["fingerprint"].startswith("sha256:")
    assert set(result["metrics"]) == {"accuracy", "f1", "matthews"}
    assert result["context"] == {"seed": 7, "pair": "cola+sst2"}
    labels = read_samples(data).label
    assert result["label_counts"] == [labels.count(0), labels.count(1)]
    assert sum(result["label_counts"]) == 12
    assert [p.name for p in out.parent.iterdir()] == ["eval.json"]  # no temp left
    # --meta may also be repeated; the engine function gives the same result
    rc = cli.main(["evaluate", "--model", str(ckpt), "--data", str(data),
                               "--task", "cola", "--batch-size", "5", "--device", "cpu",
                               "--meta", "seed=7", "--meta", "pair=cola+sst2", "--out", str(out)])
    assert rc == 0
    again = json.loads(out.read_text())
    direct = evaluate_checkpoint(str(ckpt), str(data), "cola", batch_size=5, device="cpu",
                                 context={"seed": 7, "pair": "cola+sst2"}, progress=False)
    for r in (again, direct):
        assert {k: v for k, v in r.items() if k != "seconds"} == \
            {k: v for k, v in result.items() if k != "seconds"}


def test_cli_evaluates_several_checkpoints_in_one_process(tmp_path, tiny_checkpoint,
                                                          samples_file, capsys):
    ckpts = [tiny_checkpoint("bert", 2, 0), tiny_checkpoint("bert", 3, 1)]
    data = [samples_file(n=10, num_labels=2), samples_file(n=9, pair=True, num_labels=3)]
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    rc = cli.main(["evaluate", "--model", *map(str, ckpts), "--data", *map(str, data),
                   "--task", "sst2", "mnli", "--device", "cpu", "--meta", "kind=merged",
                   "--out", *map(str, outs)])
    assert rc == 0
    for ckpt, d, task, out in zip(ckpts, data, ("sst2", "mnli"), outs):
        got = json.loads(out.read_text())
        alone = evaluate_checkpoint(str(ckpt), str(d), task, device="cpu", progress=False,
                                    context={"kind": "merged", "task": task})
        assert {k: v for k, v in got.items() if k != "seconds"} == \
            {k: v for k, v in alone.items() if k != "seconds"}
    assert cli.main(["evaluate", "--model", *map(str, ckpts), "--data", str(data[0]),
                     "--task", "sst2", "--out", str(outs[0])]) == 2
    assert "--model names 2 checkpoint(s) but --data 1, --task 1, --out 1" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", *map(str, ckpts), "--data", *map(str, data),
                     "--task", "sst2", "mnli", "--label-map", "1,0",
                     "--out", *map(str, outs)]) == 2
    assert "--label-map apply to one checkpoint" in capsys.readouterr().err


def test_task_info_label_count(tmp_path, tiny_checkpoint, samples_file, capsys):
    ckpt, data = tiny_checkpoint("bert", 3, 0), samples_file(n=9, num_labels=3)
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"task": "mnli", "num_labels": 2, "label_names": ["a", "b"]}))
    argv = ["evaluate", "--model", str(ckpt), "--data", str(data), "--task", "mnli",
            "--task-info", str(info), "--device", "cpu", "--out", str(tmp_path / "e.json")]
    assert cli.main(argv) == 2
    assert "has 3 labels but task mnli needs 2" in capsys.readouterr().err
    info.write_text(json.dumps({"task": "mnli", "num_labels": 3, "label_names": ["a", "b", "c"]}))
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert len(result["label_counts"]) == 3 and sum(result["label_counts"]) == 9


def test_label_count_mismatch_is_clear(tmp_path, tiny_checkpoint, samples_file, capsys):
    model, tok, _ = load_model(str(tiny_checkpoint("bert", 2, 0)))
    data = samples_file(n=30, num_labels=3)
    samples = read_samples(data)
    assert max(samples.label) == 2
    with pytest.raises(SampleError, match=r"labels \[2\] lie outside the model's 2 labels"):
        evaluate_model(model, tok, samples, "mnli", progress=False)
    base = ["evaluate", "--model", str(tiny_checkpoint("bert", 2, 0)), "--task", "mnli",
            "--out", str(tmp_path / "e.json")]
    assert cli.main(base + ["--data", str(data)]) == 2
    assert "outside the model's 2 labels" in capsys.readouterr().err
    ok = samples_file(n=8, num_labels=2)
    assert cli.main(base + ["--data", str(ok), "--num-labels", "3"]) == 2
    assert "has 2 labels but task mnli needs 3" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


def test_label_map_undoes_a_permuted_head(tmp_path, tiny_checkpoint, samples_file):
    original = tiny_checkpoint("bert", 3, 0)
    model = AutoModelForSequenceClassification.from_pretrained(original)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # large random weights, so that predictions vary by input
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3, generator=g)
        model.classifier.bias.copy_(torch.tensor([0.0, 0.3, -0.1]))
    model.save_pretrained(original)
    label_map = [2, 0, 1]  # data label i -> output label_map[i]
    inverse = np.argsort(label_map).tolist()
    with torch.no_grad():  # permuted[label_map[i]] = original[i]
        model.classifier.weight.copy_(model.classifier.weight[inverse].clone())
        model.classifier.bias.copy_(model.classifier.bias[inverse].clone())
    permuted = tmp_path / "permuted"
    model.save_pretrained(permuted)
    make_tokenizer(permuted).save_pretrained(permuted)

    samples = read_samples(samples_file(n=40, num_labels=3, seed=4))
    m0, tok, _ = load_model(str(original))
    m1, _, _ = load_model(str(permuted))
    m2, _, _ = load_model(str(permuted), label_map=label_map)
    p0 = predict(m0, tok, samples, progress=False).argmax(1)
    p1 = predict(m1, tok, samples, progress=False).argmax(1)
    p2 = predict(m2, tok, samples, progress=False).argmax(1)
    np.testing.assert_array_equal(p2, p0)
    np.testing.assert_array_equal(p1, np.array(label_map)[p0])  # consistently relabelled
    assert len(set(p0.tolist())) > 1  # the check is not vacuous

    results = []
    for path, extra in ((original, []), (permuted, ["--label-map", "2,0,1"])):
        out = tmp_path / f"{path.name}.json"
        assert cli.main(["evaluate", "--model", str(path), "--data",
                                     str(samples_file(n=40, num_labels=3, seed=4)),
                                     "--task", "mnli", "--out", str(out)] + extra) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[1]["label_map"] == label_map
