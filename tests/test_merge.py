import json
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from workflow_scripts import architectures as arch
from workflow_scripts import cli
from workflow_scripts.artifacts import save_fisher
from workflow_scripts.errors import MergeError
from workflow_scripts.merging.core import merge_bodies, merge_parameter
from workflow_scripts.merging.files import merge_models
from workflow_scripts.merging.mask import mask_weights, ones_where_all_zero
from workflow_scripts.merging.merge import merge_loaded
from workflow_scripts.models import load_model
from workflow_scripts.testing import make_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Like conftest's tiny_checkpoint, but cached per module (tests only read them)
    and with every parameter (LayerNorms and zero-initialised biases included)
    jittered, so that models of different seeds differ everywhere."""
    cache = {}

    def make(model_type="bert", num_labels=2, seed=0, **overrides):
        key = (model_type, num_labels, seed, tuple(sorted(overrides.items())))
        if key not in cache:
            path = tmp_path_factory.mktemp(f"{model_type}-{num_labels}-{seed}")
            make_tiny_checkpoint(path, model_type, num_labels, seed, **overrides)
            model = AutoModelForSequenceClassification.from_pretrained(path)
            g = torch.Generator().manual_seed(1000 + seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
            model.save_pretrained(path)
            cache[key] = path
        return cache[key]

    return make


def load(path, label_map=None):
    model, _, _ = load_model(str(path), label_map=label_map)
    return model


def snapshot(model):
    return {k: v.detach().clone() for k, v in arch.body_state(model).items()}


def heads(model):
    return {k: v.detach().clone() for k, v in arch.head_state(model).items()}


def random_full_fisher(model, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=g) + 0.01 for k, v in arch.body_state(model).items()}


def random_mask_fisher(model, seed):
    d = arch.dims(model)
    g = torch.Generator().manual_seed(seed)
    return {
        "head": torch.rand(d.layers, d.heads, generator=g) + 0.01,
        "neuron": torch.rand(d.layers, d.intermediate, generator=g) + 0.01,
    }


def write_fisher(tmp_path, name, tensors, method):
    path = tmp_path / f"{name}.safetensors"
    save_fisher(tensors, {"method": method}, path)
    return path


def run_cli(monkeypatch, argv):
    return cli.main(argv)  # imports only the merge command's module


def assert_bodies_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- arithmetic ------------------------------------------------------------


@pytest.mark.parametrize("method", ["average", "fisher", "mask"])
def test_identical_inputs_give_input_back(tmp_path, checkpoint, method):
    ckpt = checkpoint("bert", 2, 0)
    ref = load(ckpt)
    fishers = None
    if method == "fisher":
        fishers = [write_fisher(tmp_path, f"f{s}", random_full_fisher(ref, s), "full") for s in (1, 2)]
    elif method == "mask":
        fishers = [write_fisher(tmp_path, f"m{s}", random_mask_fisher(ref, s), "mask") for s in (1, 2)]
    copy = tmp_path / "copy"  # the same weights in another folder (a path given twice is refused)
    shutil.copytree(ckpt, copy)
    out = merge_models([ckpt, copy], tmp_path / "out", method=method, fishers=fishers,
                       names=["x", "y"])
    for path in out:
        assert_bodies_equal(arch.body_state(load(path)), arch.body_state(ref))


def test_all_ones_weights_equal_plain_average(checkpoint):
    models = [load(checkpoint("bert", 2, s)) for s in (0, 1, 2)]
    bodies = [snapshot(m) for m in models]
    ones = [{k: torch.ones(v.shape) for k, v in bodies[0].items()} for _ in bodies]
    weighted = merge_bodies(bodies, ones)
    plain = merge_bodies(bodies, None)
    for k, v in plain.items():
        expected = sum(b[k].double() for b in bodies) / 3
        torch.testing.assert_close(v, expected.float(), rtol=0, atol=0)
        torch.testing.assert_close(weighted[k], v, rtol=0, atol=0)
    # the mask method with all-ones mask Fisher is plain averaging too
    d = arch.dims(models[0])
    mask = {"head": torch.ones(d.layers, d.heads), "neuron": torch.ones(d.layers, d.intermediate)}
    for scheme in ("paper", "released"):
        fresh = [load(checkpoint("bert", 2, s)) for s in (0, 1, 2)]
        merge_loaded(fresh, "mask", [mask] * 3, scheme=scheme)
        for k, v in arch.body_state(fresh[0]).items():
            torch.testing.assert_close(v, plain[k], rtol=1e-6, atol=1e-7)


def test_three_model_full_fisher_matches_formula(checkpoint):
    models = [load(checkpoint("bert", 2, s)) for s in (0, 1, 2)]
    bodies = [snapshot(m) for m in models]
    fishers = [random_full_fisher(m, 10 + j) for j, m in enumerate(models)]
    merge_loaded(models, "fisher", fishers)
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.1.attention.self.key.weight",
                 "encoder.layer.0.output.LayerNorm.bias", "pooler.dense.weight"):
        num = sum(f[name].double() * b[name].double() for f, b in zip(fishers, bodies))
        den = sum(f[name].double() for f in fishers)
        expected = (num / den).float()
        for m in models:
            torch.testing.assert_close(arch.body_state(m)[name], expected, rtol=1e-6, atol=1e-7)
        # distinct Fisher really made it differ from the plain average
        plain = (sum(b[name].double() for b in bodies) / 3).float()
        assert not torch.allclose(expected, plain)
    # a single element by hand
    name = "encoder.layer.0.intermediate.dense.weight"
    f = [fi[name][3, 4].item() for fi in fishers]
    t = [b[name][3, 4].item() for b in bodies]
    by_hand = sum(fj * tj for fj, tj in zip(f, t)) / sum(f)
    assert arch.body_state(models[0])[name][3, 4].item() == pytest.approx(by_hand, rel=1e-6)


def test_three_model_mask_merge_matches_formula(checkpoint):
    models = [load(checkpoint("bert", 2, s)) for s in (0, 1, 2)]
    bodies = [snapshot(m) for m in models]
    masks = [random_mask_fisher(m, 20 + j) for j, m in enumerate(models)]
    merge_loaded(models, "mask", masks, scheme="paper")
    merged = arch.body_state(models[0])
    hd = arch.dims(models[0]).head_dim
    # query row 5 of layer 1 belongs to head 5 // head_dim
    h = 5 // hd
    f = [m["head"][1, h].double() for m in masks]
    name = "encoder.layer.1.attention.self.query.weight"
    expected = sum(fj * b[name][5].double() for fj, b in zip(f, bodies)) / sum(f)
    torch.testing.assert_close(merged[name][5], expected.float(), rtol=1e-6, atol=1e-7)
    # intermediate bias entry 7 of layer 0
    f = [m["neuron"][0, 7].double() for m in masks]
    name = "encoder.layer.0.intermediate.dense.bias"
    expected = sum(fj * b[name][7].double() for fj, b in zip(f, bodies)) / sum(f)
    assert merged[name][7].item() == pytest.approx(expected.item(), rel=1e-6)
    # value weights are plain averages under the paper scheme
    name = "encoder.layer.0.attention.self.value.weight"
    torch.testing.assert_close(merged[name], (sum(b[name].double() for b in bodies) / 3).float())


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert", "electra"])
def test_paper_scheme_weights_exactly_qk_rows_and_ffn_in_rows(checkpoint, model_type):
    a, b = load(checkpoint(model_type, 2, 0)), load(checkpoint(model_type, 2, 1))
    spec, d = arch.spec_for(a), arch.dims(a)
    A, B = snapshot(a), snapshot(b)
    layer, head, neuron = 1, 2, 5
    fa = {"head": torch.zeros(d.layers, d.heads), "neuron": torch.zeros(d.layers, d.intermediate)}
    fa["head"][layer, head] = 3.0
    fa["neuron"][layer, neuron] = 3.0
    fb = {"head": torch.ones(d.layers, d.heads), "neuron": torch.ones(d.layers, d.intermediate)}
    merge_loaded([a, b], "mask", [fa, fb], scheme="paper")
    merged = arch.body_state(a)
    rows = slice(head * d.head_dim, (head + 1) * d.head_dim)
    toward_a = lambda k: (3 * A[k].double() + B[k].double()) / 4  # noqa: E731
    seen = set()
    for name in merged:
        role = arch.param_role(spec, name)
        got, avg = merged[name].double(), (A[name].double() + B[name].double()) / 2
        if role.role == arch.QK:
            seen.add(arch.QK)
            expected = B[name].double().clone()  # A's weight is 0 outside the one head
            if role.layer == layer:
                expected[rows] = toward_a(name)[rows]
        elif role.role == arch.FFN_IN:
            seen.add(arch.FFN_IN)
            expected = B[name].double().clone()
            if role.layer == layer:
                expected[neuron] = toward_a(name)[neuron]
        else:
            expected = avg
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7, msg=name)
    assert seen == {arch.QK, arch.FFN_IN}


def test_released_scheme_mapping(checkpoint):
    model = load(checkpoint("bert", 2, 0))
    spec, d = arch.spec_for(model), arch.dims(model)
    shapes = {k: v.shape for k, v in arch.body_state(model).items()}
    fisher = random_mask_fisher(model, 3)
    H, N = fisher["head"].double(), fisher["neuron"].double()
    w = mask_weights(spec, d, shapes, fisher, "released")
    p = mask_weights(spec, d, shapes, fisher, "paper")
    L = "encoder.layer.1."
    for name in ("attention.self.value.weight", "attention.self.value.bias",
                 "attention.output.dense.weight", "attention.output.LayerNorm.weight",
                 "attention.output.LayerNorm.bias"):
        assert torch.allclose(w[L + name], H[1].mean()), name
        assert float(p[L + name]) == 1.0
    for name in ("output.dense.weight", "output.dense.bias", "output.LayerNorm.weight"):
        assert torch.allclose(w[L + name], N[1].mean()), name
        assert float(p[L + name]) == 1.0
    g = (H.mean(1) + N.mean(1)).mean()
    for name in ("embeddings.word_embeddings.weight", "embeddings.LayerNorm.bias",
                 "pooler.dense.weight", "pooler.dense.bias"):
        assert torch.allclose(w[name], g), name
        assert float(p[name]) == 1.0
    q = w[L + "attention.self.query.weight"]
    assert q.shape == (d.hidden, 1)
    assert torch.equal(q[:, 0], H[1].repeat_interleave(d.head_dim))
    assert torch.equal(w[L + "attention.self.key.bias"], H[1].repeat_interleave(d.head_dim))
    assert torch.equal(w[L + "intermediate.dense.weight"][:, 0], N[1])
    assert torch.equal(w[L + "intermediate.dense.bias"], N[1])
    for name in shapes:  # broadcastable to every parameter
        torch.broadcast_shapes(w[name].shape, shapes[name])
        assert torch.broadcast_shapes(w[name].shape, shapes[name]) == shapes[name]


def test_released_scheme_both_zero_gives_plain_average(checkpoint):
    a, b = load(checkpoint("bert", 2, 0)), load(checkpoint("bert", 2, 1))
    A, B = snapshot(a), snapshot(b)
    fa, fb = random_mask_fisher(a, 1), random_mask_fisher(b, 2)
    for f in (fa, fb):
        f["head"][0] = 0.0  # layer 0 heads zero in both models
    merge_loaded([a, b], "mask", [fa, fb], scheme="released")
    merged = arch.body_state(a)
    for name in ("encoder.layer.0.attention.self.value.weight",
                 "encoder.layer.0.attention.output.LayerNorm.weight",
                 "encoder.layer.0.attention.self.query.weight"):
        assert torch.isfinite(merged[name]).all()
        torch.testing.assert_close(merged[name], ((A[name] + B[name]) / 2))


def test_released_zero_rule_acts_on_mask_nodes_before_the_means(checkpoint):
    # as in the released code: a head that is 0 in both models becomes 1 in both,
    # and the layer's mean head Fisher (value/attention-output weight) includes that 1
    a, b = load(checkpoint("bert", 2, 0)), load(checkpoint("bert", 2, 1))
    A, B = snapshot(a), snapshot(b)
    d = arch.dims(a)
    fa = {"head": torch.full((d.layers, d.heads), 0.2), "neuron": torch.full((d.layers, d.intermediate), 0.3)}
    fb = {"head": torch.full((d.layers, d.heads), 0.6), "neuron": torch.full((d.layers, d.intermediate), 0.1)}
    fa["head"][0, 1] = fb["head"][0, 1] = 0.0
    fa["head"][1, 2] = 0.0  # zero in one model only: stays zero
    fixed = ones_where_all_zero([fa, fb])
    assert fixed[0]["head"][0, 1] == 1 and fixed[1]["head"][0, 1] == 1
    assert fixed[0]["head"][1, 2] == 0 and fixed[1]["head"][1, 2] == 0.6
    assert fa["head"][0, 1] == 0  # inputs not modified
    merge_loaded([a, b], "mask", [fa, fb], scheme="released")
    merged = arch.body_state(a)
    wa, wb = (3 * 0.2 + 1) / 4, (3 * 0.6 + 1) / 4  # layer 0 mean head Fisher after the rule
    name = "encoder.layer.0.attention.self.value.weight"
    expected = (wa * A[name].double() + wb * B[name].double()) / (wa + wb)
    torch.testing.assert_close(merged[name].double(), expected, rtol=1e-6, atol=1e-7)
    ga = ((wa + 0.3) + ((3 * 0.2 + 0) / 4 + 0.3)) / 2  # mean over layers of (head + neuron means)
    gb = ((wb + 0.1) + (0.6 + 0.1)) / 2
    name = "embeddings.word_embeddings.weight"
    expected = (ga * A[name].double() + gb * B[name].double()) / (ga + gb)
    torch.testing.assert_close(merged[name].double(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["fisher", "mask"])
def test_zero_fisher_is_plain_average_without_nan(checkpoint, method):
    models = [load(checkpoint("bert", 2, s)) for s in (0, 1)]
    bodies = [snapshot(m) for m in models]
    if method == "fisher":
        fishers = [{k: torch.zeros(v.shape) for k, v in bodies[0].items()} for _ in models]
    else:
        d = arch.dims(models[0])
        fishers = [{"head": torch.zeros(d.layers, d.heads),
                    "neuron": torch.zeros(d.layers, d.intermediate)} for _ in models]
    merge_loaded(models, method, fishers, scheme="released")
    for k, v in arch.body_state(models[0]).items():
        assert torch.isfinite(v).all(), k
        torch.testing.assert_close(v, (bodies[0][k] + bodies[1][k]) / 2)


def test_floor():
    ta, tb = torch.tensor([1.0, 1.0, 4.0]), torch.tensor([7.0, 3.0, 10.0])
    fa, fb = torch.tensor([0.0, 0.0, 5.0]), torch.tensor([2e-6, 0.0, 5.0])
    no_floor = merge_parameter([ta, tb], [fa, fb])
    assert no_floor.tolist() == pytest.approx([7.0, 2.0, 7.0])  # zero/zero -> average
    floored = merge_parameter([ta, tb], [fa, fb], floor=1e-6)
    assert floored.tolist() == pytest.approx([(1 + 2 * 7) / 3, 2.0, 7.0])


def test_merge_parameter_broadcasts_row_weights():
    ta = torch.arange(6.0).reshape(3, 2)
    tb = torch.zeros(3, 2)
    out = merge_parameter([ta, tb], [torch.tensor([[1.0], [0.0], [3.0]]), torch.ones(3, 1)])
    expected = torch.stack([ta[0] / 2, tb[1], ta[2] * 3 / 4])
    torch.testing.assert_close(out, expected)


# --- heads, files, CLI -----------------------------------------------------


def test_heads_untouched_with_different_label_counts(tmp_path, checkpoint):
    paths = [checkpoint("bert", 2, 0), checkpoint("bert", 3, 1), checkpoint("bert", 1, 2)]
    inputs = [load(p) for p in paths]
    out = merge_models(paths, tmp_path / "out", method="average", names=["a", "b", "c"])
    outputs = [load(p) for p in out]
    merged_body = arch.body_state(outputs[0])
    for src, dst in zip(inputs, outputs):
        assert dst.config.num_labels == src.config.num_labels
        hs, hd = heads(src), heads(dst)
        assert hs.keys() == hd.keys()
        for k in hs:
            assert torch.equal(hs[k], hd[k]), k
        assert_bodies_equal(arch.body_state(dst), merged_body)


def test_label_maps_permute_saved_heads(tmp_path, checkpoint):
    a, b = checkpoint("bert", 3, 0), checkpoint("bert", 2, 1)
    out = merge_models([a, b], tmp_path / "out", method="average", label_maps=[[2, 0, 1], None])
    src, dst = load(a), load(out[0])
    assert torch.equal(dst.classifier.weight, src.classifier.weight[[2, 0, 1]])
    assert torch.equal(dst.classifier.bias, src.classifier.bias[[2, 0, 1]])


def test_cli_end_to_end_mask(tmp_path, checkpoint, monkeypatch):
    a, b = checkpoint("bert", 2, 0), checkpoint("bert", 3, 1)
    fa = write_fisher(tmp_path, "fa", random_mask_fisher(load(a), 1), "mask")
    fb = write_fisher(tmp_path, "fb", random_mask_fisher(load(b), 2), "mask")
    out = tmp_path / "merged"
    rc = run_cli(monkeypatch, ["merge", "--models", str(a), str(b), "--method", "mask",
                               "--fishers", str(fa), str(fb), "--scheme", "released",
                               "--floor", "1e-6", "--label-maps", "-", "1,2,0", "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([a.name, b.name])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]  # no temp left
    bodies = []
    for src, labels in ((a, 2), (b, 3)):
        d = out / src.name
        model = AutoModelForSequenceClassification.from_pretrained(d)
        AutoTokenizer.from_pretrained(d)
        assert model.config.num_labels == labels
        bodies.append(arch.body_state(model))
        info = json.loads((d / "merge.json").read_text())
        assert info["method"] == "mask" and info["scheme"] == "released"
        assert info["parameters"] == {"floor": 1e-6}
        assert [i["source"] for i in info["inputs"]] == [str(a), str(b)]
        assert all(i["fingerprint"].startswith("sha256:") for i in info["inputs"])
        assert [f["path"] for f in info["fisher_files"]] == [str(fa), str(fb)]
        assert info["inputs"][1]["label_map"] == [1, 2, 0]
    assert_bodies_equal(bodies[0], bodies[1])


def test_cli_errors_are_clear(tmp_path, checkpoint, monkeypatch, capsys):
    a, b = checkpoint("bert", 2, 0), checkpoint("bert", 2, 1)
    base = ["merge", "--models", str(a), str(b), "--out", str(tmp_path / "o")]
    assert run_cli(monkeypatch, base + ["--method", "average", "--names", "x", "x"]) == 2
    assert "distinct --names" in capsys.readouterr().err
    fa = write_fisher(tmp_path, "fa", random_mask_fisher(load(a), 1), "mask")
    assert run_cli(monkeypatch, base + ["--method", "mask", "--fishers", str(fa)]) == 2
    assert "2 models but 1 --fishers" in capsys.readouterr().err
    assert run_cli(monkeypatch, base + ["--method", "fisher", "--fishers", str(fa), str(fa)]) == 2
    assert "needs a 'full' Fisher" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- errors ----------------------------------------------------------------


def test_shape_mismatch_is_clear(tmp_path, checkpoint):
    a, b = checkpoint("bert", 2, 0), checkpoint("bert", 2, 1, intermediate=41)
    with pytest.raises(MergeError, match=r"intermediate\.dense\.weight.*shape \(37, 32\).*\(41, 32\)") as e:
        merge_models([a, b], tmp_path / "out", method="average")
    assert str(a) in str(e.value) and str(b) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_different_architectures_is_clear(tmp_path, checkpoint):
    a, b = checkpoint("bert", 2, 0), checkpoint("distilbert", 2, 0)
    with pytest.raises(MergeError, match="different architectures.*'bert'.*'distilbert'"):
        merge_models([a, b], tmp_path / "out", method="average")


def test_unknown_architecture_is_clear(tmp_path, checkpoint):
    a, b = checkpoint("bert", 2, 0), checkpoint("albert", 2, 0)
    with pytest.raises(arch.UnsupportedArchitectureError, match="unsupported architecture 'albert'"):
        merge_models([a, b], tmp_path / "out", method="average")


def test_wrong_fisher_shapes_are_clear(tmp_path, checkpoint):
    a, b = checkpoint("bert", 2, 0), checkpoint("bert", 2, 1)
    good = random_mask_fisher(load(a), 1)
    bad = {"head": torch.rand(2, 3), "neuron": good["neuron"]}
    fg = write_fisher(tmp_path, "good", good, "mask")
    fbad = write_fisher(tmp_path, "bad", bad, "mask")
    with pytest.raises(MergeError, match=r"bad\.safetensors.*'head' has shape \(2, 3\).*\(2, 4\)"):
        merge_models([a, b], tmp_path / "out", method="mask", fishers=[fg, fbad])
    full = random_full_fisher(load(a), 1)
    partial = dict(full)
    partial.pop("pooler.dense.bias")
    ff = write_fisher(tmp_path, "full", full, "full")
    fp = write_fisher(tmp_path, "partial", partial, "full")
    with pytest.raises(MergeError, match=r"partial\.safetensors.*lacks 1 body parameter.*pooler\.dense\.bias"):
        merge_models([a, b], tmp_path / "out", method="fisher", fishers=[ff, fp])
    reshaped = dict(full)
    reshaped["pooler.dense.bias"] = torch.rand(5)
    fr = write_fisher(tmp_path, "reshaped", reshaped, "full")
    with pytest.raises(MergeError, match=r"'pooler\.dense\.bias' has shape \(5,\)"):
        merge_models([a, b], tmp_path / "out", method="fisher", fishers=[ff, fr])
    assert not (tmp_path / "out").exists()


# --- the registry drives the dispatch --------------------------------------


def test_a_registered_method_is_dispatched_to_its_own_module(checkpoint, monkeypatch):
    """Adding a method is one module plus one registry entry: nothing else routes it."""
    import sys
    import types

    from workflow_scripts.merging import registry

    module = types.ModuleType("workflow_scripts.merging.keep_first")
    # every merged tensor is the first model's: the merge returns the first body
    module.tensor = lambda ctx, name: next(ctx.models(name)).clone()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(registry.METHODS, "keep-first",
                        registry.MergeMethod("keep-first", "Keep first", "black", "keep_first"))
    a, b = load(checkpoint(seed=0)), load(checkpoint(seed=1))
    expected = snapshot(a)
    merge_loaded([a, b], "keep-first")
    assert_bodies_equal(snapshot(b), expected)
    with pytest.raises(MergeError, match="unknown merge method 'nope'"):
        merge_loaded([a, b], "nope")
