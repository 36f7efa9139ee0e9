"""Mask-node and full diagonal Fisher against brute-force definitions.

Tiny random models in float64; every reference below is computed without the
code under test: one example per backward pass, the masks applied by the
test's own hooks with plain multiplications.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from workflow_scripts import architectures as arch
from workflow_scripts import cli, data, fisher
from workflow_scripts.artifacts import load_fisher
from workflow_scripts.models import load_model
from workflow_scripts.testing import toy_samples

MODEL_TYPES = ("bert", "roberta", "distilbert", "electra")


pytestmark = pytest.mark.usefixtures("one_thread")


def load(path, dtype=torch.float64):
    """A tiny checkpoint in ``dtype``, its zero-initialised biases made non-zero
    (so that, e.g., the pre-activation mask's ``- b1`` matters)."""
    model, tokenizer, info = load_model(str(path))
    model.to(dtype)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=generator, dtype=dtype))
    return model, tokenizer, info


def close(a: torch.Tensor, b: torch.Tensor, rtol=1e-9, atol=0.0) -> bool:
    """Equal up to rtol relative to the larger tensor's largest entry (plus atol)."""
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-300)
    return float((a - b).abs().max()) <= rtol * scale + atol


# --------------------------------------------------------------------------- #
# References
# --------------------------------------------------------------------------- #


def _reference_hooks(model, head, neuron, position):
    """The masks by the test's own hooks: plain multiplications, autograd only."""
    d = arch.dims(model)
    handles = []
    for l, proj in enumerate(arch.head_out_projections(model)):

        def head_hook(module, args, l=l):
            x = args[0]
            split = x.reshape(*x.shape[:-1], d.heads, d.head_dim)
            return ((split * head[l][:, None]).reshape(x.shape),)

        handles.append(proj.register_forward_pre_hook(head_hook))
    if position == "post-activation":
        for l, proj in enumerate(arch.ffn_outputs(model)):
            handles.append(proj.register_forward_pre_hook(lambda m, a, l=l: (a[0] * neuron[l],)))
    else:
        for l, proj in enumerate(arch.ffn_inputs(model)):

            def pre_act(module, args, out, l=l):
                # GELU(m * W1 x + b1)
                return neuron[l] * F.linear(args[0], module.weight) + module.bias

            handles.append(proj.register_forward_hook(pre_act))
    return handles


def _mask_gradient(model, batch, position, reduction):
    d = arch.dims(model)
    dtype = next(model.parameters()).dtype
    head = torch.ones(d.layers, d.heads, dtype=dtype, requires_grad=True)
    neuron = torch.ones(d.layers, d.intermediate, dtype=dtype, requires_grad=True)
    handles = _reference_hooks(model, head, neuron, position)
    try:
        loss = F.cross_entropy(model(**batch.inputs).logits, batch.labels, reduction=reduction)
        return torch.autograd.grad(loss, (head, neuron))
    finally:
        for h in handles:
            h.remove()


def brute_mask_per_example(model, tokenizer, samples, position):
    """Eq. 4: one example per backward pass, no padding."""
    total_h = total_n = 0
    for b in data.batches(tokenizer, samples, 1):
        gh, gn = _mask_gradient(model, b, position, "mean")
        total_h, total_n = total_h + gh**2, total_n + gn**2
    return total_h / len(samples), total_n / len(samples)


def released_per_batch(model, tokenizer, samples, position, batch_size):
    """Released code: sum over consecutive batches of the squared batch-mean gradient."""
    total_h = total_n = 0
    for b in data.batches(tokenizer, samples, batch_size):  # file order
        gh, gn = _mask_gradient(model, b, position, "mean")
        total_h, total_n = total_h + gh**2, total_n + gn**2
    return total_h, total_n


def brute_full(model, tokenizer, samples, labels):
    """Diagonal Fisher with one plain ``loss.backward()`` per example (and class)."""
    body = dict(model.base_model.named_parameters())
    total = {k: torch.zeros_like(p) for k, p in body.items()}
    for b in data.batches(tokenizer, samples, 1):
        if labels == "empirical":
            terms = [(b.labels[0], 1.0)]
        else:
            with torch.no_grad():
                probs = model(**b.inputs).logits.softmax(-1)[0]
            terms = [(c, float(p)) for c, p in enumerate(probs)]
        for c, weight in terms:
            model.zero_grad(set_to_none=True)
            log_p = model(**b.inputs).logits.log_softmax(-1)[0, c]
            (-log_p).backward()
            for k, p in body.items():
                if p.grad is not None:
                    total[k] += weight * p.grad**2
    model.zero_grad(set_to_none=True)
    return {k: v / len(samples) for k, v in total.items()}


# --------------------------------------------------------------------------- #
# Mask Fisher
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("position", fisher.NEURON_MASKS)
def test_mask_per_example_matches_brute_force(tiny_checkpoint, model_type, position):
    model, tok, _ = load(tiny_checkpoint(model_type, num_labels=3, seed=1))
    samples = toy_samples(9, pair=True, num_labels=3, seed=2)
    got = fisher.mask_fisher(model, tok, samples, estimator="per-example",
                             neuron_mask=position, batch_size=4)
    head, neuron = brute_mask_per_example(model, tok, samples, position)
    d = arch.dims(model)
    assert got["head"].shape == (d.layers, d.heads)
    assert got["neuron"].shape == (d.layers, d.intermediate)
    assert close(got["head"], head) and close(got["neuron"], neuron)
    assert float(got["head"].min()) > 0 and float(got["neuron"].sum()) > 0


@pytest.mark.parametrize("model_type", ("bert", "roberta"))
def test_mask_per_batch_matches_released_definition(tiny_checkpoint, model_type):
    model, tok, _ = load(tiny_checkpoint(model_type, num_labels=2))
    samples = toy_samples(11, num_labels=2, seed=3)
    got = fisher.mask_fisher(model, tok, samples, estimator="per-batch", batch_size=4)
    head, neuron = released_per_batch(model, tok, samples, "post-activation", 4)
    assert close(got["head"], head) and close(got["neuron"], neuron)
    per_example = fisher.mask_fisher(model, tok, samples, batch_size=4)
    assert not close(got["head"], per_example["head"], rtol=1e-3)


def test_pre_and_post_activation_masks_differ(tiny_checkpoint):
    model, tok, _ = load(tiny_checkpoint("bert", num_labels=2, seed=4))
    samples = toy_samples(6, num_labels=2, seed=5)
    post = fisher.mask_fisher(model, tok, samples, neuron_mask="post-activation")
    pre = fisher.mask_fisher(model, tok, samples, neuron_mask="pre-activation")
    assert close(post["head"], pre["head"])  # the head masks are the same nodes
    assert not close(post["neuron"], pre["neuron"], rtol=1e-3)


@pytest.mark.parametrize("position", fisher.NEURON_MASKS)
def test_mask_gradient_matches_finite_differences(tiny_checkpoint, position):
    model, tok, _ = load(tiny_checkpoint("bert", num_labels=3, seed=6))
    samples = toy_samples(5, pair=True, num_labels=3, seed=7)
    batch = next(data.batches(tok, samples, 5))  # padded: examples of different lengths
    d = arch.dims(model)
    shapes = {"head": (5, d.layers, d.heads), "neuron": (5, d.layers, d.intermediate)}

    def loss(masks):
        with fisher.mask_hooks(model, masks["head"], masks["neuron"], neuron_position=position):
            return F.cross_entropy(model(**batch.inputs).logits, batch.labels, reduction="sum")

    grads = ones_gradients(loss, shapes)
    for which, index in [("head", (0, 0, 1)), ("head", (3, 1, 3)), ("neuron", (1, 0, 5)),
                         ("neuron", (4, 1, 36)), ("neuron", (2, 1, 0))]:
        numeric = central_difference(loss, shapes, which, index, eps=1e-5)
        scale = float(grads[which].abs().max())
        assert abs(float(grads[which][index]) - numeric) <= 1e-5 * scale, (which, index)


def ones_gradients(loss, shapes) -> dict:
    """The gradient of ``loss(masks)`` with respect to masks of ones (float64)."""
    ones = {k: torch.ones(s, dtype=torch.float64, requires_grad=True) for k, s in shapes.items()}
    return dict(zip(ones, torch.autograd.grad(loss(ones), list(ones.values()))))


def central_difference(loss, shapes, which: str, index, eps: float) -> float:
    """d loss / d masks[which][index] at masks of ones, by a central difference."""
    values = []
    for sign in (1, -1):
        masks = {k: torch.ones(s, dtype=torch.float64) for k, s in shapes.items()}
        masks[which][index] += sign * eps
        with torch.no_grad():
            values.append(float(loss(masks)))
    return (values[0] - values[1]) / (2 * eps)  # O(eps^2) error


def test_mask_hooks_validate_and_clean_up(tiny_checkpoint):
    model, tok, _ = load(tiny_checkpoint("distilbert"))
    batch = next(data.batches(tok, toy_samples(3), 3))
    with torch.no_grad():
        before = model(**batch.inputs).logits
        d = arch.dims(model)
        zero_heads = torch.ones(d.layers, d.heads, dtype=torch.float64)
        zero_heads[0] = 0
        with fisher.mask_hooks(model, head_mask=zero_heads):
            masked = model(**batch.inputs).logits
        after = model(**batch.inputs).logits
    assert not torch.allclose(masked, before)
    assert torch.equal(after, before)
    with pytest.raises(ValueError, match="head mask must have shape"):
        with fisher.mask_hooks(model, head_mask=torch.ones(d.layers + 1, d.heads)):
            pass


def test_mask_fisher_uses_eval_mode_and_restores_state(tiny_checkpoint):
    model, tok, _ = load(tiny_checkpoint("bert", seed=8))
    samples = toy_samples(4, seed=9)
    reference = fisher.mask_fisher(model, tok, samples)
    model.train()
    again = fisher.mask_fisher(model, tok, samples)  # dropout would change it
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert close(again["head"], reference["head"])


# --------------------------------------------------------------------------- #
# Full Fisher
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "model_type,labels",
    [("bert", "empirical"), ("bert", "expected"), ("roberta", "empirical"),
     ("distilbert", "expected"), ("electra", "empirical"), ("electra", "expected")],
)
def test_full_fisher_matches_brute_force(tiny_checkpoint, model_type, labels):
    model, tok, _ = load(tiny_checkpoint(model_type, num_labels=3, seed=10))
    samples = toy_samples(7, pair=True, num_labels=3, seed=11)
    got = fisher.full_fisher(model, tok, samples, labels=labels, batch_size=4, chunk_size=3)
    want = brute_full(model, tok, samples, labels)
    # key biases get rounding noise only (softmax ignores a shift shared by all keys)
    atol = 1e-12 * max(float(v.max()) for v in want.values())
    assert list(got) == list(model.base_model.state_dict())
    assert not any(k.startswith(("classifier", "pre_classifier")) for k in got)
    for k in want:
        assert got[k].shape == want[k].shape
        assert close(got[k], want[k], atol=atol), k
    emb = model.get_input_embeddings()
    name = next(k for k, p in model.base_model.named_parameters() if p is emb.weight)
    assert float(got[name][emb.padding_idx].abs().max()) == 0.0
    assert float(got[name].sum()) > 0


def test_full_fisher_labels_modes_differ(tiny_checkpoint):
    model, tok, _ = load(tiny_checkpoint("bert", num_labels=2, seed=12))
    samples = toy_samples(5, num_labels=2, seed=13)
    emp = fisher.full_fisher(model, tok, samples, labels="empirical")
    exp = fisher.full_fisher(model, tok, samples, labels="expected")
    key = "encoder.layer.0.attention.self.query.weight"
    assert not close(emp[key], exp[key], rtol=1e-3)


# --------------------------------------------------------------------------- #
# Padding
# --------------------------------------------------------------------------- #


def _with_neighbour(samples, row, neighbour):
    return samples.subset([row, neighbour])


def test_padding_does_not_change_an_examples_contribution(tiny_checkpoint):
    model, tok, _ = load(tiny_checkpoint("roberta", num_labels=2, seed=14))
    pool = toy_samples(40, pair=True, num_labels=2, seed=15)
    lengths = [len(e["input_ids"]) for e in data.tokenize(tok, pool)]
    order = sorted(range(len(pool)), key=lengths.__getitem__)
    short, short2, long = order[0], order[1], order[-1]
    assert lengths[long] > lengths[short] + 10

    def contribution(compute, neighbour):
        # n * F(pair) - F(neighbour alone) = the example's own term
        both = compute(_with_neighbour(pool, short, neighbour))
        alone = compute(pool.subset([neighbour]))
        return {k: 2 * both[k] - alone[k] for k in both}

    computations = {
        "mask": lambda s: fisher.mask_fisher(model, tok, s, batch_size=2),
        "full": lambda s: fisher.full_fisher(model, tok, s, batch_size=2, chunk_size=2),
    }
    for name, compute in computations.items():
        own = compute(pool.subset([short]))
        with_long = contribution(compute, long)
        with_short = contribution(compute, short2)
        atol = 1e-12 * max(float(v.max()) for v in own.values())
        for k in own:
            assert close(with_long[k], own[k], rtol=1e-8, atol=atol), (name, k)
            assert close(with_short[k], own[k], rtol=1e-8, atol=atol), (name, k)


def test_batching_does_not_change_the_fisher(tiny_checkpoint):
    model, tok, _ = load(tiny_checkpoint("electra", num_labels=2, seed=16))
    samples = toy_samples(10, pair=True, num_labels=2, seed=17)
    one = fisher.mask_fisher(model, tok, samples, batch_size=1)
    all_ = fisher.mask_fisher(model, tok, samples, batch_size=10)
    assert close(one["neuron"], all_["neuron"]) and close(one["head"], all_["head"])
    one = fisher.full_fisher(model, tok, samples, batch_size=1, chunk_size=1)
    all_ = fisher.full_fisher(model, tok, samples, batch_size=10, chunk_size=10)
    atol = 1e-12 * max(float(v.max()) for v in one.values())
    assert all(close(one[k], all_[k], atol=atol) for k in one)


# --------------------------------------------------------------------------- #
# Package imports
# --------------------------------------------------------------------------- #


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout


def test_importing_the_package_and_kinds_imports_no_torch():
    out = _python("import sys\n"
                  "import workflow_scripts.fisher, workflow_scripts.fisher.kinds\n"
                  "from workflow_scripts import fisher\n"
                  "assert fisher.METHODS == ('mask', 'full') and fisher.default_chunk_size('cpu')\n"
                  "print([m for m in ('torch', 'transformers', 'pyarrow') if m in sys.modules])\n")
    assert out.strip() == "[]"


def test_importing_the_package_changes_no_environment():
    out = _python("import json, os\nbefore = dict(os.environ)\n"
                  "import workflow_scripts.fisher, workflow_scripts.fisher.kinds\n"
                  "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))\n")
    assert json.loads(out) == []


def test_public_names_load_lazily():
    assert set(fisher.__all__) <= set(dir(fisher))
    for name in fisher.__all__:
        assert getattr(fisher, name) is not None, name
    assert fisher.compute_fisher is fisher.runner.compute_fisher
    with pytest.raises(AttributeError):
        fisher.no_such_name  # noqa: B018


# --------------------------------------------------------------------------- #
# Command line and metadata
# --------------------------------------------------------------------------- #

META_FIELDS = {
    "model", "fingerprint", "revision", "task", "n", "num_samples", "seed", "method",
    "estimator", "labels", "neuron_mask", "max_length", "batch_size", "chunk_size",
    "seconds", "flops", "device", "device_name", "torch", "transformers", "dims", "context",
}


@pytest.fixture
def no_allocator_tuning(monkeypatch):
    # the command tunes glibc for its own short-lived process; not in pytest's
    monkeypatch.setattr(fisher, "tune_cpu_allocator", lambda: False)


@pytest.mark.parametrize("method", fisher.METHODS)
def test_cli_writes_artifact_with_metadata(tiny_checkpoint, samples_file, tmp_path,
                                           no_allocator_tuning, method):
    model_dir = tiny_checkpoint("bert", num_labels=3)
    samples = samples_file(n=6, pair=True, num_labels=3)
    out = tmp_path / f"{method}.safetensors"
    code = cli.main([
        "fisher", "--model", str(model_dir), "--data", str(samples), "--method", method,
        "--task", "mnli", "--n", "8", "--seed", "3", "--batch-size", "4",
        "--meta", "family=bert", "--meta", "note=a=b", "layers=2", "--device", "cpu",
        "--no-progress", "--out", str(out),
    ])
    assert code == 0
    tensors, meta = load_fisher(out)
    assert META_FIELDS <= set(meta)
    assert meta["method"] == method
    assert meta["n"] == 8 and meta["num_samples"] == 6 and meta["seed"] == 3
    assert meta["task"] == "mnli" and meta["model"] == str(model_dir)
    assert meta["fingerprint"].startswith("sha256:")
    assert meta["context"] == {"family": "bert", "note": "a=b", "layers": 2}  # ints parsed
    assert meta["seconds"] > 0 and meta["flops"] > 0
    assert meta["device"] == "cpu" and meta["device_name"]
    assert meta["dims"] == {"layers": 2, "heads": 4, "intermediate": 37, "hidden": 32}
    assert meta["max_length"] == 128 and meta["batch_size"] == 4
    assert all(t.dtype == torch.float32 for t in tensors.values())
    if method == "mask":
        assert set(tensors) == {"head", "neuron"}
        assert tensors["head"].shape == (2, 4) and tensors["neuron"].shape == (2, 37)
        assert meta["estimator"] == "per-example" and meta["neuron_mask"] == "post-activation"
        assert meta["labels"] == "empirical" and meta["chunk_size"] is None
    else:
        model, _, _ = load_model(str(model_dir))
        assert list(tensors) == sorted(model.base_model.state_dict())
        assert meta["labels"] == "empirical" and meta["chunk_size"] == fisher.default_chunk_size("cpu")
        assert meta["neuron_mask"] is None


def test_cli_options_and_skipped_flops(tiny_checkpoint, samples_file, tmp_path, no_allocator_tuning):
    model_dir = tiny_checkpoint("roberta", num_labels=2)
    samples = samples_file(n=5, num_labels=2)
    out = tmp_path / "f.safetensors"
    code = cli.main([
        "fisher", "--model", str(model_dir), "--data", str(samples), "--method", "mask",
        "--estimator", "per-batch", "--neuron-mask", "pre-activation", "--label-map", "1,0",
        "--max-length", "16", "--no-count-flops", "--no-progress", "--out", str(out),
    ])
    assert code == 0
    _, meta = load_fisher(out)
    assert meta["flops"] is None and meta["seconds"] > 0
    assert meta["estimator"] == "per-batch" and meta["neuron_mask"] == "pre-activation"
    assert meta["label_map"] == [1, 0] and meta["max_length"] == 16 and meta["context"] == {}


def test_cli_rejects_labels_outside_the_model(tiny_checkpoint, samples_file, tmp_path, capsys,
                                              no_allocator_tuning):
    model_dir = tiny_checkpoint("bert", num_labels=2)
    samples = samples_file(n=6, num_labels=3, seed=1)
    out = tmp_path / "f.safetensors"
    code = cli.main(["fisher", "--model", str(model_dir), "--data", str(samples),
                     "--method", "mask", "--no-progress", "--out", str(out)])
    assert code == 2
    assert "lie outside the model's 2 labels" in capsys.readouterr().err
    assert not out.exists()


def test_cli_rejects_an_estimator_for_the_full_fisher(tmp_path, capsys, no_allocator_tuning):
    out = tmp_path / "f.safetensors"
    code = cli.main(["fisher", "--model", "unused", "--data", "unused", "--method", "full",
                     "--estimator", "per-batch", "--out", str(out)])
    assert code == 2
    assert "--estimator applies to --method mask only" in capsys.readouterr().err
    assert not out.exists()


def test_compute_fisher_counts_flops_of_a_separate_pass(tiny_checkpoint):
    model, tok, info = load(tiny_checkpoint("bert"), dtype=torch.float32)
    samples = toy_samples(4)
    tensors, meta = fisher.compute_fisher(model, tok, samples, method="mask", info=info)
    again = fisher.mask_fisher(model, tok, samples)
    assert torch.allclose(tensors["head"], again["head"])
    # forward + backward of the linear layers alone: 2 * 2 * parameters * tokens
    tokens = sum(len(e["input_ids"]) for e in data.tokenize(tok, samples))
    assert meta["flops"] > 2 * 32 * 37 * 2 * tokens
    assert math.isfinite(meta["seconds"])


def test_bfloat16_mask_fisher_is_close_to_float32(tiny_checkpoint, one_thread):
    """--dtype bfloat16 runs the model in bfloat16 and accumulates in float32: its mask
    Fisher stays within a few percent of the float32 one (relative to the largest value),
    and the artifact records the dtype."""
    from workflow_scripts.fisher import compute_fisher
    from workflow_scripts.models import load_model as load

    path = tiny_checkpoint("bert", num_labels=3, seed=4)
    samples = toy_samples(24, num_labels=3, seed=2)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model, tok, info = load(str(path), dtype=dtype)
        tensors, meta = compute_fisher(model, tok, samples, method="mask", count_flops=False,
                                       info=info)
        assert meta["dtype"] == str(dtype)[6:]
        assert all(t.dtype == torch.float32 for t in tensors.values())
        results[dtype] = tensors
    for key in ("head", "neuron"):
        full, half = results[torch.float32][key], results[torch.bfloat16][key]
        assert not torch.equal(full, half)  # bfloat16 really ran
        assert float((full - half).abs().max() / full.abs().max()) < 0.05, key
