"""Every merge method of the registry on every supported architecture, through the real
commands (``fisher``, ``gram``, ``merge``), in process, on tiny models: for each family a
base and two 'fine-tunes' of it (the base plus a small seeded perturbation of every
parameter).  Each merge must load, keep every model's own head, change the body exactly
where the inputs differ, and satisfy its method's own formula where one is cheap to write
down independently (average, Fisher, task arithmetic, RegMean with the orientation of each
layer read off its module class: GPT-2's Conv1D stores its weight [in, out])."""

import json

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from workflow_scripts import architectures as arch
from workflow_scripts import cli
from workflow_scripts.artifacts import load_fisher
from workflow_scripts.merging import registry
from workflow_scripts.models import load_model
from workflow_scripts.settings import MergeSettings
from workflow_scripts.testing import make_tiny_checkpoint, write_toy_samples

NOISE = 0.02  # std of each fine-tune's perturbation (the base's weights have std ~0.02)


class Family:
    """A base, two fine-tunes of it, and their artifacts (computed once, when first asked)."""

    def __init__(self, root, model_type, samples):
        self.root, self.samples = root, samples
        self.base = make_tiny_checkpoint(root / "base", model_type, seed=0)
        self.tuned = [self._finetune(model_type, j) for j in (1, 2)]
        self._artifacts = {}

    def _finetune(self, model_type, j):
        path = make_tiny_checkpoint(self.root / f"task{j}", model_type, seed=0)  # the base
        model = load_model(str(path))[0]
        g = torch.Generator().manual_seed(j)
        with torch.no_grad():  # body and head: the base plus this task's perturbation
            for p in model.parameters():
                p.add_(NOISE * torch.randn(p.shape, generator=g))
        model.save_pretrained(path)
        return path

    def artifacts(self, kind):
        """One file per fine-tune: a Fisher of ``kind`` (mask, full) or the Grams."""
        if kind not in self._artifacts:
            paths = []
            for j, model in enumerate(self.tuned):
                out = self.root / f"{kind}{j}.safetensors"
                command = (["gram"] if kind == registry.GRAM else
                           ["fisher", "--method", kind, "--no-count-flops"])
                assert cli.main([*command, "--model", str(model), "--data", str(self.samples),
                                 "--out", str(out), "--no-progress"]) == 0
                paths.append(str(out))
            self._artifacts[kind] = paths
        return self._artifacts[kind]


@pytest.fixture(scope="module")
def families(tmp_path_factory, one_thread):
    """families(model_type) -> its Family, built on first use and shared by the module."""
    root = tmp_path_factory.mktemp("families")
    samples = write_toy_samples(root / "samples.parquet", n=6, pair=True)
    built = {}

    def get(model_type):
        if model_type not in built:
            built[model_type] = Family(root / model_type, model_type, samples)
        return built[model_type]

    return get


def state(path, part=arch.body_state):
    model = load_model(str(path))[0]
    return {k: v.detach().clone() for k, v in part(model).items() if v.is_floating_point()}


def run_merge(family, method, out, *extra):
    spec = registry.METHODS[method]
    args = ["merge", "--models", *map(str, family.tuned), "--method", method,
            "--names", "a", "b", "--out", str(out), "--no-progress", *extra]
    if spec.fisher:
        args += ["--fishers", *family.artifacts(spec.fisher)]
    if spec.artifact == registry.GRAM:
        args += ["--grams", *family.artifacts(registry.GRAM)]
    if spec.needs_base:
        args += ["--base", str(family.base)]
    assert cli.main(args) == 0
    return [out / "a", out / "b"]


def linear_modules(path):
    """The body's nn.Linear and Conv1D modules by weight name, read off their classes."""
    model = load_model(str(path))[0]
    return {f"{name}.weight": m for name, m in arch.body(model).named_modules()
            if isinstance(m, (nn.Linear, Conv1D))}


def regmean_reference(weights, grams, alpha, conv1d):
    """(sum G~)^-1 sum G~ W with W as [in, out]: Conv1D's weight as is, Linear's transposed."""
    regs = [alpha * g.double() + (1 - alpha) * torch.diag(torch.diagonal(g.double())) for g in grams]
    ws = [w.double() if conv1d else w.double().T for w in weights]
    merged = torch.linalg.solve(sum(regs), sum(r @ w for r, w in zip(regs, ws)))
    return merged if conv1d else merged.T


def expected_body(method, family, inputs):
    """The merged body by the method's formula (None where the test has none)."""
    names = list(inputs[0])
    if method == "average":
        return {k: (inputs[0][k] + inputs[1][k]) / 2 for k in names}
    if method == "task-arithmetic":
        base, lam = state(family.base), registry.METHODS[method].default_lambda
        return {k: base[k] + lam * sum(b[k] - base[k] for b in inputs) for k in names}
    if method == "fisher":
        fishers = [load_fisher(f)[0] for f in family.artifacts("full")]
        out = {}
        for k in names:
            den = fishers[0][k].double() + fishers[1][k].double()
            num = sum(f[k].double() * b[k].double() for f, b in zip(fishers, inputs))
            out[k] = torch.where(den > 0, num / den.clamp_min(1e-300),
                                 (inputs[0][k].double() + inputs[1][k].double()) / 2).float()
        return out
    if method == "regmean":
        grams = [load_fisher(f, what="Gram artifact")[0] for f in family.artifacts(registry.GRAM)]
        modules = linear_modules(family.tuned[0])
        assert set(grams[0]) == set(modules)  # a Gram for every nn.Linear and Conv1D of the body
        out = {k: (inputs[0][k] + inputs[1][k]) / 2 for k in names}
        for k, module in modules.items():
            conv1d = isinstance(module, Conv1D)
            d = module.weight.shape[0 if conv1d else 1]
            assert grams[0][k].shape == (d, d)
            out[k] = regmean_reference([b[k] for b in inputs], [g[k] for g in grams],
                                       MergeSettings.entry("regmean_alpha").default, conv1d).float()
        return out
    return None


@pytest.mark.parametrize("method", list(registry.METHODS))
@pytest.mark.parametrize("model_type", arch.SUPPORTED)
def test_every_method_on_every_architecture(tmp_path, families, model_type, method):
    family = families(model_type)
    out = run_merge(family, method, tmp_path / "out")
    inputs = [state(p) for p in family.tuned]
    merged = [state(p) for p in out]  # each merged checkpoint loads
    assert json.loads((out[0] / "merge.json").read_text())["method"] == method
    for name, value in merged[0].items():
        torch.testing.assert_close(merged[1][name], value, rtol=0, atol=0)  # one shared body
        if torch.equal(inputs[0][name], inputs[1][name]):  # buffers: left as they are
            torch.testing.assert_close(value, inputs[0][name], rtol=0, atol=1e-7)
        else:
            assert not torch.equal(value, inputs[0][name]), name
            assert not torch.equal(value, inputs[1][name]), name
        if registry.METHODS[method].module in ("average", "fisher", "mask"):  # weighted averages
            low = torch.minimum(inputs[0][name], inputs[1][name])
            high = torch.maximum(inputs[0][name], inputs[1][name])
            assert bool(((value >= low - 1e-6) & (value <= high + 1e-6)).all()), name
    for src, dst in zip(family.tuned, out):  # every model keeps its own head
        own, got = state(src, arch.head_state), state(dst, arch.head_state)
        assert own.keys() == got.keys() and all(torch.equal(own[k], got[k]) for k in own)
    expected = expected_body(method, family, inputs)
    if expected is not None:
        for name, want in expected.items():
            torch.testing.assert_close(merged[0][name], want.to(merged[0][name].dtype),
                                       rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def token_inputs(path, samples_path):
    """Each Conv1D's inputs over the samples, one example at a time (no padding): [T, in]."""
    from workflow_scripts.data import read_samples

    model, tokenizer, _ = load_model(str(path))
    samples = read_samples(samples_path)
    modules = {f"{n}.weight": m for n, m in arch.body(model).named_modules()
               if isinstance(m, Conv1D)}
    rows = {name: [] for name in modules}
    handles = [m.register_forward_pre_hook(lambda _, args, name=name: rows[name].append(
        args[0].reshape(-1, args[0].shape[-1]).double())) for name, m in modules.items()]
    with torch.no_grad():
        for a, b in zip(samples.text_a, samples.text_b):
            model(**tokenizer(a, b, return_tensors="pt"))
    for handle in handles:
        handle.remove()
    return {name: torch.cat(x) for name, x in rows.items()}, arch.body_state(model)


def test_gram_and_regmean_on_two_gpt2_models(tmp_path, families):
    """The Grams of GPT-2's Conv1D layers are X^T X / T of their inputs, and RegMean with
    alpha = 1 is the least-squares fit of both models' outputs on their inputs, stacked,
    each model's rows scaled by 1/sqrt(T_j) as the Grams' normalisation weighs them."""
    family = families("gpt2")
    grams = [load_fisher(f, what="Gram artifact")[0] for f in family.artifacts(registry.GRAM)]
    seen = [token_inputs(p, family.samples) for p in family.tuned]
    assert set(grams[0]) == set(seen[0][0]) and len(grams[0]) == 4 * 2  # c_attn, c_proj, c_fc, c_proj
    for gram, (xs, _) in zip(grams, seen):
        for name, x in xs.items():
            torch.testing.assert_close(gram[name].double(), x.T @ x / len(x), rtol=1e-4, atol=1e-6)
    out = run_merge(family, "regmean", tmp_path / "out", "--regmean-alpha", "1")
    merged = state(out[0])
    for name in grams[0]:
        xs = [x[name] / len(x[name]) ** 0.5 for x, _ in seen]
        ys = [x @ body[name].double() for x, (_, body) in zip(xs, seen)]  # Conv1D: x W + b
        want = torch.linalg.lstsq(torch.cat(xs), torch.cat(ys)).solution  # [in, out]
        assert merged[name].shape == want.shape
        torch.testing.assert_close(merged[name].double(), want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("model_type", arch.SUPPORTED)
def test_linear_layers_are_every_linear_module_with_its_orientation(model_type):
    from transformers import AutoModelForSequenceClassification

    from workflow_scripts.testing import tiny_config

    model = AutoModelForSequenceClassification.from_config(tiny_config(model_type))
    layers = arch.linear_layers(model)
    spec = arch.spec_for(model)
    modules = {f"{n}.weight": m for n, m in arch.body(model).named_modules()
               if isinstance(m, (nn.Linear, Conv1D))}
    assert layers.keys() == modules.keys() and layers
    for name, layer in layers.items():
        conv1d = isinstance(modules[name], Conv1D)
        assert layer.module is modules[name]
        assert layer.kind == arch.weight_kind(spec, name) == (arch.CONV1D if conv1d else arch.LINEAR)
        assert layer.in_features == (modules[name].nx if conv1d else modules[name].in_features)
    assert (model_type == "gpt2") == all(layer.kind == arch.CONV1D for layer in layers.values())


def test_gram_on_deberta_with_position_keys_shared_with_the_content_keys(tmp_path, one_thread):
    """DeBERTa-v3 as released (share_att_key): query_proj and key_proj also project the
    relative-position embeddings, rows that are not tokens: the Gram counts them too."""
    from transformers import AutoModelForSequenceClassification

    from workflow_scripts.gram import compute_gram
    from workflow_scripts.testing import make_tokenizer, tiny_config, toy_samples

    config = tiny_config("deberta-v2", share_att_key=True)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    grams, meta = compute_gram(model, make_tokenizer(tmp_path), toy_samples(6), batch_size=4)
    prefix = "encoder.layer.0.attention.self"
    rows = meta["rows"]
    assert rows[f"{prefix}.query_proj.weight"] == rows[f"{prefix}.value_proj.weight"] + 2 * 2 * 8
    assert all(torch.isfinite(g).all() and g.shape[0] == g.shape[1] for g in grams.values())
