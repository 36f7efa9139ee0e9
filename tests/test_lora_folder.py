"""Adapter configs and folders: the allow list, refusals by name, shapes against the base;
low-rank factoring and the adapter writer's output rules."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from workflow_scripts import architectures as arch
from workflow_scripts import testing
from workflow_scripts.errors import MergeError, ModelLoadError, OutputError
from workflow_scripts.lora import config as lora_config
from workflow_scripts.lora import folder, lowrank, merge, writer
from workflow_scripts.lora import testing as lt


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(testing.tiny_config("llama")).eval()
    adapter = lt.random_adapter(model, tmp / "a", targets=["q_proj", "v_proj"], r=2, seed=1)
    return model, adapter


def _copy(adapter, tmp_path, **changes):
    out = tmp_path / "copy"
    shutil.copytree(adapter, out)
    data = json.loads((out / lora_config.CONFIG).read_text())
    data.update(changes)
    (out / lora_config.CONFIG).write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("field, value, named", [
    ("use_dora", True, "DoRA"),
    ("alora_invocation_tokens", [5, 6], "aLoRA"),
    ("layer_replication", [[0, 2], [1, 2]], "layer replication"),
    ("target_parameters", ["mlp.experts.down_proj"], "target_parameters"),
    ("trainable_token_indices", [3, 4], "trainable token indices"),
    ("init_lora_weights", "pissa", "PiSSA"),
    ("init_lora_weights", "olora", "OLoRA"),
    ("init_lora_weights", "loftq", "LoftQ"),
    ("loftq_config", {"loftq_bits": 4}, "LoftQ"),
    ("peft_type", "IA3", "peft_type"),
    ("lora_bias", True, "lora_bias"),
    ("some_future_option", 3, "some_future_option"),
])
def test_config_refuses_by_name(llama, tmp_path, field, value, named):
    _, adapter = llama
    with pytest.raises(ModelLoadError, match=named):
        lora_config.read_config(_copy(adapter, tmp_path, **{field: value}))


def test_config_reads_patterns_and_rslora(llama, tmp_path):
    _, adapter = llama
    config = lora_config.read_config(_copy(
        adapter, tmp_path, r=4, lora_alpha=8, use_rslora=True, rank_pattern={"v_proj": 2},
        alpha_pattern={"layers.1.self_attn.v_proj": 3}, some_future_option=None))
    assert config.rank("model.layers.0.self_attn.q_proj") == 4
    assert config.rank("model.layers.0.self_attn.v_proj") == 2
    assert config.scaling("model.layers.0.self_attn.q_proj") == 8 / 2  # alpha / sqrt(4)
    assert config.scaling("model.layers.1.self_attn.v_proj") == pytest.approx(3 / 2 ** 0.5)
    assert config.scaling("model.layers.0.self_attn.v_proj") == pytest.approx(8 / 2 ** 0.5)


def test_folder_refuses_other_base(llama, tmp_path):
    model, adapter = llama
    wider = AutoModelForCausalLM.from_config(testing.tiny_config("llama", hidden=48))
    with pytest.raises(ModelLoadError, match=r"q_proj.weight.*shape"):
        folder.read_adapter(adapter, folder.Base.of_model(wider, causal=True))
    bert = testing.tiny_config("bert")
    from transformers import AutoModelForSequenceClassification

    other = AutoModelForSequenceClassification.from_config(bert)
    with pytest.raises(ModelLoadError, match="base does not have"):
        folder.read_adapter(adapter, folder.Base.of_model(other, causal=False))


def test_folder_read_only_inside_itself(llama, tmp_path):
    model, adapter = llama
    base = folder.Base.of_model(model, causal=True)
    out = tmp_path / "linked"
    out.mkdir()
    shutil.copy(adapter / lora_config.CONFIG, out / lora_config.CONFIG)
    os.symlink(adapter / folder.WEIGHTS, out / folder.WEIGHTS)
    with pytest.raises(ModelLoadError, match="leading out of"):
        folder.read_adapter(out, base)
    os.remove(out / folder.WEIGHTS)
    with pytest.raises(ModelLoadError, match="has no adapter_model.safetensors"):
        folder.read_adapter(out, base)
    (out / folder.WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ModelLoadError):
        folder.read_adapter(out, base)


def test_exact_and_truncated_factors():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(7, 3, generator=g, dtype=torch.float64) @ torch.randn(
        3, 5, generator=g, dtype=torch.float64)
    for kind in (arch.LINEAR, arch.CONV1D):
        d = delta if kind == arch.LINEAR else delta.T
        f = lowrank.exact(d, kind)
        assert f.rank == 3 and torch.allclose(f.delta(), d, atol=1e-12)
        f2, err = lowrank.truncated(d, 2, kind)
        s = torch.linalg.svdvals(delta)
        assert f2.rank == 2 and err == pytest.approx(float(s[2] / s.norm()))
        assert float((f2.delta() - d).norm() / d.norm()) == pytest.approx(err)


def test_fold_refuses_weights_on_rows_and_columns():
    f = lowrank.Factor(torch.ones(2, 5, dtype=torch.float64), torch.ones(4, 2, dtype=torch.float64))
    assert torch.allclose(lowrank.fold(f, torch.arange(4.0).reshape(4, 1)).delta(),
                          torch.arange(4.0).reshape(4, 1).double() * f.delta())
    assert torch.allclose(lowrank.fold(f, torch.arange(5.0).reshape(1, 5)).delta(),
                          torch.arange(5.0).reshape(1, 5).double() * f.delta())
    with pytest.raises(MergeError, match="rows and its columns"):
        lowrank.fold(f, torch.rand(4, 5))


def test_truncated_adapter_and_writer_rules(llama, tmp_path):
    model, adapter = llama
    base = folder.Base.of_model(model, causal=True)
    a = folder.read_adapter(adapter, base)
    deltas = [(n, f.delta() * 0.5) for n, f in a.factors.items()]
    merged = merge.from_dense(deltas, base, rank=1, method="ties")
    out = writer.write_adapter(tmp_path / "ties", merged, base, inputs=["a"],
                               base_path="org/base: v2")
    card = (out / writer.CARD).read_text()
    assert card.startswith("---") and "relative error" in card
    assert 'base_model: "org/base: v2"' in card
    assert all(0 < e < 1 for e in merged.errors.values())
    loaded = folder.Base.of_model(lt.merged_copy(model, out), causal=True)
    for name, f in merged.factors.items():
        got = loaded.read(name).double() - base.read(name).double()
        assert torch.allclose(got, f.delta(), atol=1e-6)
    writer.write_adapter(out, merged, base, inputs=["a"])  # its own output: replaced
    with pytest.raises(OutputError):  # a PEFT folder it did not write: left alone
        writer.write_adapter(adapter, merged, base, inputs=["a"])
    bad = merge.Merged("average", factors={n: lowrank.Factor(f.a * float("nan"), f.b)
                                           for n, f in a.factors.items()})
    with pytest.raises(MergeError, match="NaN"):
        writer.write_adapter(tmp_path / "nan", bad, base, inputs=["a"])
    assert not (tmp_path / "nan").exists()


def test_union_of_targets_logged_once_per_adapter(llama, tmp_path, caplog):
    model, adapter = llama
    base = folder.Base.of_model(model, causal=True)
    other = lt.random_adapter(model, tmp_path / "b", targets=["v_proj", "down_proj"], r=3, seed=2)
    a, b = folder.read_adapter(adapter, base), folder.read_adapter(other, base)
    caplog.set_level("INFO")
    merged = merge.average([a, b], base)
    down = "layers.0.mlp.down_proj.weight"
    assert merged.factors[down].rank == 3  # only b adapts it: a's delta is zero
    assert torch.allclose(merged.delta(down, base), b.factors[down].delta() / 2)
    lines = [r.getMessage() for r in caplog.records if "leaves" in r.getMessage()]
    assert len(lines) == 2 and "adapter a leaves 2" in lines[0] and "q_proj" in lines[1]


def test_delta_formed_in_float64_on_a_bfloat16_base(llama):
    from workflow_scripts.lora import dense

    model, adapter = llama
    bf16 = folder.Base.of_model(copy_to(model, torch.bfloat16), causal=True)
    a = folder.read_adapter(adapter, bf16)
    name = "layers.0.self_attn.q_proj.weight"
    small = lowrank.Factor(a.factors[name].a, a.factors[name].b, 1e-4, a.factors[name].kind)
    a.factors[name] = small
    w0 = bf16.read(name).double()
    assert torch.allclose(dense.dense(a, bf16, name) - w0, small.delta(), rtol=1e-8, atol=0)
    rounded = (bf16.read(name) + small.delta().to(torch.bfloat16)).double() - w0
    assert not torch.allclose(rounded, small.delta(), rtol=1e-3, atol=0)


def copy_to(model, dtype):
    import copy

    return copy.deepcopy(model).to(dtype)


@pytest.mark.parametrize("kind", ["llama-causal", "bert-full", "bert-bare"])
def test_base_from_checkpoint_equals_base_from_model(tmp_path, kind):
    """A streamed base (safetensors folder) reads adapters as the loaded model does."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model_type, how = kind.split("-")
    config = testing.tiny_config(model_type, tie_word_embeddings=False)
    full = (AutoModelForCausalLM if how == "causal" else AutoModelForSequenceClassification
            ).from_config(config).eval()
    (full if how != "bare" else full.base_model).save_pretrained(tmp_path / "base")
    targets = ["q_proj", "v_proj", "lm_head"] if how == "causal" else ["query", "dense"]
    extra = {} if how == "causal" else dict(task_type="SEQ_CLS", bias="all")
    adapter = lt.random_adapter(full, tmp_path / "a", targets=targets, r=2, seed=3, **extra)
    want = folder.Base.of_model(full, causal=how == "causal")
    got = folder.Base.of_checkpoint(tmp_path / "base", config, causal=how == "causal")
    assert got.prefix == want.prefix and got.shapes == want.shapes
    assert got.embeddings == want.embeddings and got.outside == want.outside
    for name in want.shapes:
        assert torch.equal(got.read(name), want.read(name)), name
    a, b = folder.read_adapter(adapter, want), folder.read_adapter(adapter, got)
    assert set(a.factors) == set(b.factors) and set(a.full) == set(b.full)
    assert set(a.head) == set(b.head) == ({"classifier.weight", "classifier.bias"}
                                           if how != "causal" else set())
