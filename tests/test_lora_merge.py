"""LoRA adapters merged as adapters (workflow_scripts.lora): the written adapter, loaded and
merged by PEFT, equals the project's dense merge of the adapted models' merged copies."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from workflow_scripts import architectures as arch
from workflow_scripts import testing
from workflow_scripts.gram import body_linears
from workflow_scripts.merging import mask as mask_merge
from workflow_scripts.merging import regmean
from workflow_scripts.merging.core import weighted_mean
from workflow_scripts.merging.schemes import SCHEME_NAMES
from workflow_scripts.lora import folder, merge, writer
from workflow_scripts.lora import testing as lt

TOL = 1e-5
LAM = 0.7
METHODS = ("average", "task-arithmetic", "regmean", *(f"mask-{s}" for s in SCHEME_NAMES))


def _llama(tmp):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        testing.tiny_config("llama", tie_word_embeddings=False, intermediate=24)).eval()
    return model, True, [
        lt.random_adapter(model, tmp / "a1", targets=["q_proj", "v_proj"], r=4, seed=1),
        lt.random_adapter(model, tmp / "a2", targets=["q_proj", "k_proj", "o_proj", "gate_proj",
                                                      "embed_tokens", "lm_head"],
                          r=2, alpha=5, use_rslora=True, rank_pattern={"k_proj": 3}, seed=2),
        lt.random_adapter(model, tmp / "a3", targets=["down_proj", "up_proj"], r=3,
                          alpha_pattern={"up_proj": 2}, modules_to_save=["norm"], seed=3),
    ]


def _gpt2(tmp):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(testing.tiny_config("gpt2")).eval()
    return model, True, [
        lt.random_adapter(model, tmp / "a1", targets=["c_attn", "c_proj"], r=4,
                          fan_in_fan_out=True, seed=1),
        lt.random_adapter(model, tmp / "a2", targets=["c_attn", "c_fc"], r=2, use_rslora=True,
                          fan_in_fan_out=True, seed=2),
    ]


def _bert(tmp):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        testing.tiny_config("bert", num_labels=3)).eval()
    return model, False, [
        lt.random_adapter(model, tmp / "a1", targets=["query", "value"], r=2, bias="lora_only",
                          task_type="SEQ_CLS", seed=1),
        lt.random_adapter(model, tmp / "a2", targets=["query", "key", "dense"], r=3, bias="all",
                          use_rslora=True, task_type="SEQ_CLS", seed=2),
    ]


FAMILIES = {"llama": _llama, "gpt2": _gpt2, "bert": _bert}


def _states(model, causal, folders):
    """Each adapted model merged by PEFT, as (merge-name tensors, head tensors) in float64."""
    out = []
    for f in folders:
        b = folder.Base.of_model(lt.merged_copy(model, f), causal)
        out.append(({k: b.read(k).double() for k in b.shapes},
                    dict(arch.head_state(lt.merged_copy(model, f)))))
    return out


def _fishers(model, count):
    d = arch.dims(model)
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(count):
        head = torch.rand(d.layers, d.heads, generator=g) ** 3
        neuron = torch.rand(d.layers, d.intermediate, generator=g) ** 3
        head[0, 0] = 0.0  # zero in every model: the all-zero rule
        out.append({"head": head, "neuron": neuron})
    return out


def _grams(model, count, names):
    """Random positive definite Grams [in, in] of every linear weight in ``names``."""
    g = torch.Generator().manual_seed(6)
    spec, out = arch.spec_for(model), []
    for _ in range(count):
        grams = {}
        for name, module in body_linears(model).items():
            if name in names:
                d = module.weight.shape[0 if arch.weight_kind(spec, name) == arch.CONV1D else 1]
                x = torch.randn(3 * d, d, generator=g)
                grams[name] = x.T @ x / (3 * d)
        out.append(grams)
    return out


def _reference(method, base, states, fishers, grams, model):
    """The project's dense merge of the merged copies (merge names, float64)."""
    tensors = {k: [s[k] for s in states] for k in states[0]}
    if method == "average":
        return {k: weighted_mean(lambda v=v: iter(v)) for k, v in tensors.items()}
    if method == "task-arithmetic":
        return {k: base.read(k).double() + LAM * sum(t - base.read(k).double() for t in v)
                for k, v in tensors.items()}
    if method == "regmean":
        return {k: regmean.solve(v, [g[k] for g in grams], 0.9, k,
                                 regmean.weight_kind(base.spec, k)) if k in grams[0]
                else weighted_mean(lambda v=v: iter(v)) for k, v in tensors.items()}
    scheme = method.removeprefix("mask-")
    shapes = {k: torch.Size(s) for k, s in base.shapes.items()}
    ws = [mask_merge.mask_weights(base.spec, arch.dims(model), shapes, f, scheme)
          for f in mask_merge.ones_where_all_zero(fishers)]
    return {k: weighted_mean(lambda v=v: iter(v), lambda j, k=k: ws[j][k])
            for k, v in tensors.items()}


def _merged(method, adapters, base, fishers, grams, model):
    if method == "average":
        return merge.average(adapters, base)
    if method == "task-arithmetic":
        return merge.task_arithmetic(adapters, base, LAM)
    if method == "regmean":
        return merge.regmean_merge(adapters, base, grams, 0.9)
    weights = merge.mask_weights(adapters, base, arch.dims(model), fishers,
                                 method.removeprefix("mask-"))
    return merge.weighted(adapters, base, weights)


def _assert_close(got: dict, want: dict, what: str):
    for k, w in want.items():
        err = float((got[k].double() - w).abs().max() / w.abs().max().clamp_min(1e-30))
        assert err <= TOL, f"{what}: {k} differs by {err:.2e} (relative)"


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    model, causal, folders = FAMILIES[request.param](tmp)
    base = folder.Base.of_model(model, causal)
    adapters = [folder.read_adapter(f, base) for f in folders]
    states = _states(model, causal, folders)
    grams = _grams(model, len(folders), set(base.shapes))
    return dict(name=request.param, tmp=tmp, model=model, causal=causal, folders=folders,
                base=base, adapters=adapters, states=states, fishers=_fishers(model, len(folders)),
                grams=grams)


@pytest.mark.parametrize("method", METHODS)
def test_adapter_merge_equals_dense_merge(family, method):
    """PEFT loads the written adapter; its merged weights equal the dense merge (1e-5)."""
    f = family
    base, adapters = f["base"], f["adapters"]
    merged = _merged(method, adapters, base, f["fishers"], f["grams"], f["model"])
    want = _reference(method, base, [s for s, _ in f["states"]], f["fishers"], f["grams"],
                      f["model"])
    ranks = {}
    for name, factor in merged.factors.items():
        ranks[name] = factor.rank
        if not merged.dense:
            assert factor.rank == sum(a.factors[name].rank for a in adapters
                                      if name in a.factors), name
    for j, adapter in enumerate(adapters):  # classifiers: one adapter per task, its own head
        head = {k: adapter.head_tensor(k) for k in adapter.head}
        out = writer.write_adapter(f["tmp"] / f"{method}-{j}", merged, base,
                                   inputs=[a.label for a in adapters], head=head,
                                   head_modules=adapter.config.modules_to_save,
                                   task_type=adapter.config.task_type)
        loaded = lt.merged_copy(f["model"], out)
        got = folder.Base.of_model(loaded, f["causal"])
        _assert_close({k: got.read(k) for k in got.shapes}, want, f"{f['name']} {method}")
        if f["causal"]:
            break  # one adapter for a causal family (lm_head is merged)
        own_head = {k: v.double() for k, v in f["states"][j][1].items()}
        _assert_close(arch.head_state(loaded), own_head, f"{f['name']} {method} head of task {j}")


@pytest.mark.parametrize("scheme", SCHEME_NAMES)
def test_mask_merge_differs_from_average(family, scheme):
    f = family
    weights = merge.mask_weights(f["adapters"], f["base"], arch.dims(f["model"]), f["fishers"],
                                 scheme)
    masked = merge.weighted(f["adapters"], f["base"], weights)
    averaged = merge.average(f["adapters"], f["base"])
    differs = [n for n in masked.factors
               if not torch.allclose(masked.delta(n, f["base"]), averaged.delta(n, f["base"]),
                                     rtol=1e-6, atol=1e-9)]
    assert differs, f"the {scheme} mask merge equals the average on every adapted weight"


def test_regmean_singular_gram_falls_back_to_dense(family, caplog):
    f = family
    base, adapters = f["base"], f["adapters"]
    name = next(n for a in adapters for n, fc in a.factors.items()
                if n in f["grams"][0] and fc.kind != "embedding")
    grams = [dict(g) for g in f["grams"]]
    for g in grams:  # one input dimension no model ever sees
        g[name] = g[name].clone()
        g[name][0, :] = 0
        g[name][:, 0] = 0
    merged = merge.regmean_merge(adapters, base, grams, 1.0)
    assert merged.dense == [name] and "singular" in caplog.text
    want = {name: regmean.solve([s[name] for s, _ in f["states"]], [g[name] for g in grams],
                                1.0, name, regmean.weight_kind(base.spec, name))}
    got = {name: merged.delta(name, base) + base.read(name).double()}
    _assert_close(got, want, "singular RegMean")


def test_average_equals_peft_cat(tmp_path):
    """Averaging equals PEFT's own add_weighted_adapter(..., "cat") with weights 1/M."""
    from peft import PeftModel

    model, causal, folders = _llama(tmp_path)
    base = folder.Base.of_model(model, causal)
    adapters = [folder.read_adapter(f, base) for f in folders]
    ours = writer.write_adapter(tmp_path / "ours", merge.average(adapters, base), base,
                                inputs=["a1", "a2", "a3"])
    import copy

    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(folders[0]), adapter_name="a0")
    for j, f in enumerate(folders[1:], 1):
        peft_model.load_adapter(str(f), adapter_name=f"a{j}")
    names = [f"a{j}" for j in range(len(folders))]
    peft_model.add_weighted_adapter(names, [1 / len(names)] * len(names), "cat",
                                    combination_type="cat")
    peft_model.set_adapter("cat")
    theirs = folder.Base.of_model(peft_model.merge_and_unload(adapter_names=["cat"]), causal)
    got = folder.Base.of_model(lt.merged_copy(model, ours), causal)
    # PEFT's cat does not merge modules_to_save (norm): compare the LoRA-adapted weights
    lora = {n for a in adapters for n in a.factors}
    _assert_close({k: got.read(k) for k in lora}, {k: theirs.read(k).double() for k in lora},
                  "average vs PEFT cat")
