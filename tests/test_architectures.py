"""Mask-node Fisher merging beyond BERT: DeBERTa-v2, ModernBERT, GPT-2, Llama, Qwen2, Mistral.

Tiny random models in float64.  The references are the test's own: one
example per backward pass, masks applied by hooks written here with plain
multiplications, and each scheme's expected weights built element by element
from a layout table written here (from the transformers sources), not from
``architectures.py``.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from test_fisher import brute_full, central_difference, close, load, ones_gradients
from workflow_scripts import architectures as arch
from workflow_scripts import data, fisher
from workflow_scripts.errors import UnsupportedArchitectureError
from workflow_scripts.merging.mask import mask_weights
from workflow_scripts.merging.merge import merge_loaded
from workflow_scripts.merging.schemes import SCHEMES
from workflow_scripts.models import ensure_pad_token
from workflow_scripts.testing import make_tokenizer, toy_samples

ARCHS = ("deberta-v2", "modernbert", "gpt2", "llama", "qwen2", "mistral")
DECODERS = ("gpt2", "llama", "qwen2", "mistral")
# Rotary embeddings (and Llama's RMSNorm) compute in float32 even in a float64
# model, so reorderings (vmap, padding) differ by float32 rounding there.
FLOAT32_INSIDE = ("modernbert", "llama", "qwen2", "mistral")


def rtol(model_type, float64=1e-9):
    return 1e-5 if model_type in FLOAT32_INSIDE else float64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from workflow_scripts.testing import make_tiny_checkpoint

    cache = {}

    def make(model_type, num_labels=3, seed=0):
        key = (model_type, num_labels, seed)
        if key not in cache:
            d = tmp_path_factory.mktemp(f"{model_type}-{num_labels}-{seed}")
            cache[key] = make_tiny_checkpoint(d, model_type, num_labels, seed)
        return cache[key]

    return make


# --------------------------------------------------------------------------- #
# The test's own masks
# --------------------------------------------------------------------------- #

# pre-activation: (module holding the activation's input, number of output blocks)
PRE_ACT = {"deberta-v2": ("intermediate.dense", 1), "modernbert": ("mlp.Wi", 2),
           "gpt2": ("mlp.c_fc", 1), "llama": ("mlp.gate_proj", 1), "qwen2": ("mlp.gate_proj", 1),
           "mistral": ("mlp.gate_proj", 1)}


def reference_hooks(model, head, neuron, position):
    model_type = model.config.model_type
    d = arch.dims(model)
    handles = []
    for l, proj in enumerate(arch.head_out_projections(model)):

        def head_hook(module, args, l=l):
            x = args[0]
            return ((x.reshape(*x.shape[:-1], d.heads, -1) * head[l][:, None]).reshape(x.shape),)

        handles.append(proj.register_forward_pre_hook(head_hook))
    if position == "post-activation":
        for l, proj in enumerate(arch.ffn_outputs(model)):
            handles.append(proj.register_forward_pre_hook(lambda m, a, l=l: (a[0] * neuron[l],)))
        return handles
    path, blocks = PRE_ACT[model_type]
    for l, layer in enumerate(arch.layers(model)):
        module = layer.get_submodule(path)
        bias = module.bias if module.bias is not None else torch.zeros(out_width(module), dtype=head.dtype)

        def pre_act(module, args, out, l=l, bias=bias):
            no_bias = out - bias
            width = d.intermediate
            scale = torch.ones(out.shape[-1], dtype=out.dtype)
            scale = torch.cat([neuron[l], scale[width:]]) if blocks == 2 else neuron[l]
            return no_bias * scale + bias  # act(m * W x + b) on the first (activated) block

        handles.append(module.register_forward_hook(pre_act))
    return handles


def out_width(module):
    return module.weight.shape[1] if module.__class__.__name__ == "Conv1D" else module.weight.shape[0]


def mask_gradients(model, batch, position):
    d = arch.dims(model)
    head = torch.ones(d.layers, d.heads, dtype=torch.float64, requires_grad=True)
    neuron = torch.ones(d.layers, d.intermediate, dtype=torch.float64, requires_grad=True)
    handles = reference_hooks(model, head, neuron, position)
    try:
        loss = F.cross_entropy(model(**batch.inputs).logits, batch.labels)
        return torch.autograd.grad(loss, (head, neuron))
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- #
# Mask Fisher
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("model_type", ARCHS)
def test_mask_fisher_matches_brute_force(ckpt, model_type):
    model, tok, _ = load(ckpt(model_type))
    samples = toy_samples(7, pair=True, num_labels=3, seed=2)
    d = arch.dims(model)
    singles = list(data.batches(tok, samples, 1))
    for position in fisher.NEURON_MASKS:
        got = fisher.mask_fisher(model, tok, samples, neuron_mask=position, batch_size=3)
        grads = [mask_gradients(model, b, position) for b in singles]
        head = sum(g[0] ** 2 for g in grads) / len(samples)
        neuron = sum(g[1] ** 2 for g in grads) / len(samples)
        assert got["head"].shape == (d.layers, d.heads)
        assert got["neuron"].shape == (d.layers, d.intermediate)
        assert close(got["head"], head) and close(got["neuron"], neuron), position
        assert float(got["head"].min()) > 0 and float(got["neuron"].sum()) > 0
    # per-batch (released code): squared batch-mean gradients of consecutive batches
    got = fisher.mask_fisher(model, tok, samples, estimator="per-batch", batch_size=7)
    head, neuron = mask_gradients(model, next(data.batches(tok, samples, 7)), "post-activation")
    assert close(got["head"], head**2) and close(got["neuron"], neuron**2)


@pytest.mark.parametrize("model_type", ARCHS)
def test_mask_gradient_matches_finite_differences(ckpt, model_type):
    model, tok, _ = load(ckpt(model_type, seed=1))
    samples = toy_samples(4, pair=True, num_labels=3, seed=7)
    batch = next(data.batches(tok, samples, 4))  # padded
    d = arch.dims(model)
    shapes = {"head": (4, d.layers, d.heads), "neuron": (4, d.layers, d.intermediate)}
    for position in fisher.NEURON_MASKS:

        def loss(masks):
            with fisher.mask_hooks(model, masks["head"], masks["neuron"], neuron_position=position):
                return F.cross_entropy(model(**batch.inputs).logits, batch.labels, reduction="sum")

        grads = ones_gradients(loss, shapes)
        # float32 inside (rotary, RMSNorm): a larger step against the loss's rounding
        # noise, checked at the largest entries; float64 models: any entry, tightly
        eps, tol = (1e-2, 2e-2) if model_type in FLOAT32_INSIDE else (1e-3, 1e-5)
        largest = {k: tuple(int(i) for i in torch.unravel_index(g.abs().argmax(), g.shape))
                   for k, g in grads.items()}
        entries = [("head", (1, 1, 3)), ("neuron", (2, 0, 5))]
        if model_type in FLOAT32_INSIDE:
            entries = [("head", largest["head"]), ("neuron", largest["neuron"])]
        for which, index in entries:
            numeric = central_difference(loss, shapes, which, index, eps)
            scale = float(grads[which].abs().max())
            assert scale > 0
            assert abs(float(grads[which][index]) - numeric) <= tol * scale, (position, which)


# --------------------------------------------------------------------------- #
# Full Fisher and padding
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("model_type", ARCHS)
def test_full_fisher_matches_brute_force(ckpt, model_type):
    model, tok, _ = load(ckpt(model_type, seed=3))
    samples = toy_samples(5, pair=True, num_labels=3, seed=11)
    got = fisher.full_fisher(model, tok, samples, batch_size=5, chunk_size=3)
    want = brute_full(model, tok, samples, "empirical")
    atol = rtol(model_type, 1e-12) * max(float(v.max()) for v in want.values())
    assert list(got) == list(model.base_model.state_dict())
    for k in want:
        assert close(got[k], want[k], rtol=rtol(model_type), atol=atol), k
    assert float(got[next(iter(got))].sum()) > 0


def test_full_fisher_expected_labels_on_a_decoder(ckpt):
    model, tok, _ = load(ckpt("llama", seed=4))
    samples = toy_samples(3, num_labels=3, seed=12)
    got = fisher.full_fisher(model, tok, samples, labels="expected", batch_size=3, chunk_size=3)
    want = brute_full(model, tok, samples, "expected")
    atol = rtol("llama", 1e-12) * max(float(v.max()) for v in want.values())
    assert all(close(got[k], want[k], rtol=rtol("llama"), atol=atol) for k in want)


@pytest.mark.parametrize(
    "model_type,side",
    [(t, "right") for t in ARCHS] + [(t, "left") for t in DECODERS],
)
def test_padding_never_changes_an_examples_fisher(ckpt, model_type, side):
    model, tok, _ = load(ckpt(model_type, num_labels=2, seed=5))
    tok.padding_side = side
    pool = toy_samples(30, pair=True, num_labels=2, seed=15)
    lengths = [len(e["input_ids"]) for e in data.tokenize(tok, pool)]
    order = sorted(range(len(pool)), key=lengths.__getitem__)
    short, long = order[0], order[-1]
    assert lengths[long] > lengths[short] + 8
    batch = next(data.batches(tok, pool.subset([short, long]), 2, sort_by_length=True))
    pads = batch.inputs["attention_mask"][0] == 0
    assert bool(pads[0] if side == "left" else pads[-1])  # the short one is padded on that side
    computations = {
        "mask": lambda s: fisher.mask_fisher(model, tok, s, batch_size=2),
        "full": lambda s: fisher.full_fisher(model, tok, s, batch_size=2, chunk_size=2),
    }
    for name, compute in computations.items():
        own = compute(pool.subset([short]))
        both = compute(pool.subset([short, long]))
        alone = compute(pool.subset([long]))
        atol = rtol(model_type, 1e-12) * max(float(v.max()) for v in own.values())
        for k in own:
            assert close(2 * both[k] - alone[k], own[k], rtol=rtol(model_type, 1e-8), atol=atol), (name, k)


# --------------------------------------------------------------------------- #
# Schemes, element by element
# --------------------------------------------------------------------------- #

# Per architecture: module (after the layer prefix) -> layout, from the transformers sources.
# ("rows", kind, blocks): output rows (columns of a Conv1D weight) in equal blocks (role, unit);
# ("cols", kind, role, unit): the weight's input axis is indexed by unit; ("plain", role).
_BERTISH = {
    "attention.output.dense": ("cols", "lin", "attn_out", "head"),
    "attention.output.LayerNorm": ("plain", "attn_out"),
    "intermediate.dense": ("rows", "lin", [("ffn_in", "neuron")]),
    "output.dense": ("cols", "lin", "ffn_out", "neuron"),
    "output.LayerNorm": ("plain", "ffn_out"),
}
_LLAMA = {
    "self_attn.q_proj": ("rows", "lin", [("qk", "head")]),
    "self_attn.k_proj": ("rows", "lin", [("qk", "kv")]),
    "self_attn.v_proj": ("rows", "lin", [("value", "kv")]),
    "self_attn.o_proj": ("cols", "lin", "attn_out", "head"),
    "input_layernorm": ("plain", "attn_out"),
    "mlp.gate_proj": ("rows", "lin", [("ffn_in", "neuron")]),
    "mlp.up_proj": ("rows", "lin", [("ffn_in", "neuron")]),
    "mlp.down_proj": ("cols", "lin", "ffn_out", "neuron"),
    "post_attention_layernorm": ("plain", "ffn_out"),
}
QKV = [("qk", "head"), ("qk", "head"), ("value", "head")]
LAYOUTS = {
    "deberta-v2": {
        "attention.self.query_proj": ("rows", "lin", [("qk", "head")]),
        "attention.self.key_proj": ("rows", "lin", [("qk", "head")]),
        "attention.self.value_proj": ("rows", "lin", [("value", "head")]),
        "attention.self.pos_key_proj": ("plain", "global"),
        "attention.self.pos_query_proj": ("plain", "global"),
        **_BERTISH,
    },
    "modernbert": {
        "attn.Wqkv": ("rows", "lin", QKV),
        "attn.Wo": ("cols", "lin", "attn_out", "head"),
        "attn_norm": ("plain", "attn_out"),
        "mlp.Wi": ("rows", "lin", [("ffn_in", "neuron"), ("ffn_in", "neuron")]),
        "mlp.Wo": ("cols", "lin", "ffn_out", "neuron"),
        "mlp_norm": ("plain", "ffn_out"),
    },
    "gpt2": {
        "ln_1": ("plain", "attn_out"),
        "attn.c_attn": ("rows", "conv", QKV),
        "attn.c_proj": ("cols", "conv", "attn_out", "head"),
        "ln_2": ("plain", "ffn_out"),
        "mlp.c_fc": ("rows", "conv", [("ffn_in", "neuron")]),
        "mlp.c_proj": ("cols", "conv", "ffn_out", "neuron"),
    },
    "llama": _LLAMA, "qwen2": _LLAMA, "mistral": _LLAMA,
}
LAYER_LIST = {"deberta-v2": "encoder.layer.", "modernbert": "layers.", "gpt2": "h.",
              "llama": "layers.", "qwen2": "layers.", "mistral": "layers."}


def expected_weights(model_type, table, name, shape, H, N, d):
    """The weight of every element of one body parameter under ``table``, by index loops."""
    head_mean, neuron_mean = H.mean(1), N.mean(1)
    prefix = LAYER_LIST[model_type]
    if not name.startswith(prefix):
        layout, l, suffix = ("plain", "global"), None, None
    else:
        l_text, rest = name[len(prefix):].split(".", 1)
        l = int(l_text)
        module, suffix = rest.rsplit(".", 1)
        layout = LAYOUTS[model_type][module]

    def unit_value(unit, u):
        if unit == "head":
            return float(H[l, u])
        if unit == "kv":  # key/value head u serves query heads u*group .. u*group + group - 1
            return float(sum(H[l, h] for h in range(u * d.group, (u + 1) * d.group)))
        return float(N[l, u])

    def units(unit):
        return {"head": d.heads, "kv": d.kv_heads, "neuron": d.intermediate}[unit]

    def scalar(rule):
        if rule in ("one", "head_columns", "neuron_columns"):
            return 1.0
        return {"layer_head_mean": lambda: float(head_mean[l]),
                "layer_neuron_mean": lambda: float(neuron_mean[l]),
                "global_mean": lambda: float((head_mean + neuron_mean).mean())}[rule]()

    out = torch.full(shape, float("nan"), dtype=torch.float64)
    if layout[0] == "rows":
        _, kind, blocks = layout
        axis = 1 if kind == "conv" and suffix == "weight" else 0
        n = shape[axis] // len(blocks)
        for b, (role, unit) in enumerate(blocks):
            rule = table[role]
            for i in range(n):
                index = [slice(None)] * len(shape)
                index[axis] = b * n + i
                if rule in ("head_rows", "neuron_rows"):
                    assert (unit == "neuron") == (rule == "neuron_rows")
                    out[tuple(index)] = unit_value(unit, i // (n // units(unit)))
                else:
                    out[tuple(index)] = scalar(rule)
    elif layout[0] == "cols":
        _, kind, role, unit = layout
        rule = table[role]
        wants = {"head_columns": "head", "neuron_columns": "neuron"}.get(rule)
        if wants == unit and suffix == "weight":
            axis = 0 if kind == "conv" else 1
            for i in range(shape[axis]):
                index = [slice(None)] * len(shape)
                index[axis] = i
                out[tuple(index)] = unit_value(unit, i // (shape[axis] // units(unit)))
        else:
            out[:] = scalar(rule)
    else:
        out[:] = scalar(table[layout[1]])
    return out


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("model_type", ARCHS)
def test_scheme_weights_exactly_what_its_table_says(ckpt, model_type, scheme):
    model, _, _ = load(ckpt(model_type), dtype=torch.float32)
    spec, d = arch.spec_for(model), arch.dims(model)
    g = torch.Generator().manual_seed(3)
    fisher_ = {"head": torch.rand(d.layers, d.heads, generator=g, dtype=torch.float64) + 0.1,
               "neuron": torch.rand(d.layers, d.intermediate, generator=g, dtype=torch.float64) + 0.1}
    shapes = {k: v.shape for k, v in arch.body_state(model).items() if v.is_floating_point()}
    got = mask_weights(spec, d, shapes, fisher_, scheme)
    table = SCHEMES[scheme].table
    weighted = set()
    for name, shape in shapes.items():
        want = expected_weights(model_type, table, name, shape, fisher_["head"], fisher_["neuron"], d)
        assert torch.broadcast_shapes(got[name].shape, shape) == shape, name
        have = got[name].expand(shape)
        torch.testing.assert_close(have, want, rtol=1e-12, atol=0, msg=name)
        if not bool((want == 1).all()):
            weighted.add(name)
    assert weighted  # every scheme weights something in every architecture


def test_grouped_query_heads_take_their_groups_sum(ckpt):
    model, _, _ = load(ckpt("llama"), dtype=torch.float32)
    spec, d = arch.spec_for(model), arch.dims(model)
    assert (d.heads, d.kv_heads, d.group) == (4, 2, 2)
    head = torch.zeros(d.layers, d.heads, dtype=torch.float64)
    head[0] = torch.tensor([1.0, 2.0, 4.0, 8.0])
    f = {"head": head, "neuron": torch.ones(d.layers, d.intermediate, dtype=torch.float64)}
    shapes = {k: v.shape for k, v in arch.body_state(model).items()}
    w = mask_weights(spec, d, shapes, f, "qkv")
    assert SCHEMES["qkv"].kv_heads == "group_sum"
    hd = d.head_dim
    k, v, q = (w[f"layers.0.self_attn.{p}_proj.weight"][:, 0] for p in "kvq")
    assert k.tolist() == [3.0] * hd + [12.0] * hd == v.tolist()
    assert q.tolist() == sum(([x] * hd for x in (1.0, 2.0, 4.0, 8.0)), [])


# --------------------------------------------------------------------------- #
# Merges
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("model_type", ARCHS)
def test_merges_return_identical_models_and_keep_heads(ckpt, model_type):
    a, _, _ = load(ckpt(model_type, seed=0), dtype=torch.float32)
    b, _, _ = load(ckpt(model_type, seed=0), dtype=torch.float32)
    c, _, _ = load(ckpt(model_type, seed=1), dtype=torch.float32)
    body = {k: v.clone() for k, v in arch.body_state(a).items()}
    d = arch.dims(a)
    g = torch.Generator().manual_seed(0)

    def mask_fisher():
        return {"head": torch.rand(d.layers, d.heads, generator=g),
                "neuron": torch.rand(d.layers, d.intermediate, generator=g)}

    for scheme in SCHEMES:
        merge_loaded([a, b], "mask", [mask_fisher(), mask_fisher()], scheme=scheme)
        for k, v in arch.body_state(a).items():
            torch.testing.assert_close(v, body[k], rtol=1e-6, atol=1e-7, msg=(scheme, k))
    full = [{k: torch.rand(v.shape, generator=g) for k, v in body.items()} for _ in range(2)]
    merge_loaded([a, b], "fisher", full)
    for k, v in arch.body_state(a).items():
        torch.testing.assert_close(v, body[k], rtol=1e-6, atol=1e-7)
    head_a, head_c = arch.head_state(a), {k: v.clone() for k, v in arch.head_state(c).items()}
    head_a = {k: v.clone() for k, v in head_a.items()}
    merge_loaded([a, c], "mask", [mask_fisher(), mask_fisher()], scheme="touching")
    assert head_a and all(torch.equal(v, head_a[k]) for k, v in arch.head_state(a).items())
    assert all(torch.equal(v, head_c[k]) for k, v in arch.head_state(c).items())
    assert any(not torch.equal(v, body[k]) for k, v in arch.body_state(a).items())


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


def test_a_tokenizer_without_pad_token_pads_with_end_of_text(tmp_path, ckpt, caplog):
    model, _, _ = load(ckpt("gpt2"))
    tok = make_tokenizer(tmp_path / "tok")
    tok.pad_token = None
    tok.eos_token = "[SEP]"
    model.config.pad_token_id = None
    with caplog.at_level(logging.INFO, logger="workflow_scripts.models"):
        ensure_pad_token(model, tok, "gpt2-tiny")
    assert tok.pad_token == "[SEP]" and model.config.pad_token_id == tok.convert_tokens_to_ids("[SEP]")
    assert "end-of-text" in caplog.text and "gpt2-tiny" in caplog.text
    tok.pad_token = tok.eos_token = None
    with pytest.raises(Exception, match="neither a pad token nor an end-of-text token"):
        ensure_pad_token(model, tok, "x")


def test_decoders_get_positions_counting_real_tokens_only(ckpt):
    model, tok, _ = load(ckpt("gpt2"))
    tok.padding_side = "left"
    batch = next(data.batches(tok, toy_samples(6, seed=1), 6))
    inputs = arch.model_inputs(model, batch.inputs)
    mask = batch.inputs["attention_mask"]
    for row, m in zip(inputs["position_ids"], mask):
        real = row[m.bool()]
        assert real.tolist() == list(range(int(m.sum())))
    bert, _, _ = load(ckpt("deberta-v2"))
    assert "position_ids" not in arch.model_inputs(bert, batch.inputs)


def test_unknown_architectures_are_refused_by_name():
    with pytest.raises(UnsupportedArchitectureError, match="'albert'.*" + ".*".join(arch.SUPPORTED)):
        arch.spec_for("albert")
    assert set(ARCHS) <= set(arch.SUPPORTED)
