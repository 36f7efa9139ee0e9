"""Causal language models: the next-token loss of one example, its mask-node and full
diagonal Fisher against transformers' own loss, finite differences and one-example loops,
with left and right padding, for Llama-style (grouped-query attention, untied lm_head)
and GPT-2 (tied lm_head) decoders."""

from __future__ import annotations

import pytest
import torch

from workflow_scripts import architectures as arch
from workflow_scripts import fisher, lm
from workflow_scripts.data import Samples
from workflow_scripts.errors import ModelLoadError, SampleError
from workflow_scripts.models import load_model
from workflow_scripts.testing import make_tiny_checkpoint

from test_fisher import _reference_hooks, central_difference, close, ones_gradients

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["the good movie was great", "a sad story", "why is the market so bad today",
         "hello", "the team win the game and the fans are happy"]


@pytest.fixture(scope="module", params=[("llama", "left"), ("llama", "right"),
                                        ("gpt2", "right"), ("gpt2", "left")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def decoder(request, tmp_path_factory):
    model_type, side = request.param
    path = make_tiny_checkpoint(tmp_path_factory.mktemp(model_type), model_type,
                                objective="causal-lm", padding_side=side, seed=3,
                                hidden=32, heads=4, intermediate=40)
    model, tokenizer, _ = load_model(str(path), objective="causal-lm", dtype=torch.float64)
    return model, tokenizer, path


def text_samples(texts, responses=None) -> Samples:
    n = len(texts)
    return Samples(list(range(n)), list(texts), list(responses or [None] * n), [0] * n)


# transformers computes its causal-LM loss from logits cast to float32 (loss_utils'
# ForCausalLMLoss), so a float64 model's reference agrees to float32's precision
HF = 1e-6


def hf_loss(model, tokenizer, text, response=None):
    """transformers' own loss of one example, alone (no padding)."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    labels = ids.clone()
    if response is not None:
        answer = tokenizer(response, add_special_tokens=False, return_tensors="pt")["input_ids"]
        labels = torch.cat([torch.full_like(ids, lm.IGNORE), answer], dim=1)
        ids = torch.cat([ids, answer], dim=1)
    inputs = arch.model_inputs(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return model(**inputs, labels=labels).loss


def mask_gradient_squared(model, tokenizer, text, response=None):
    d = arch.dims(model)
    head = torch.ones(d.layers, d.heads, dtype=torch.float64, requires_grad=True)
    neuron = torch.ones(d.layers, d.intermediate, dtype=torch.float64, requires_grad=True)
    handles = _reference_hooks(model, head, neuron, "post-activation")
    try:
        gh, gn = torch.autograd.grad(hf_loss(model, tokenizer, text, response), (head, neuron))
    finally:
        for h in handles:
            h.remove()
    return gh ** 2, gn ** 2


def test_one_text_mask_fisher_is_the_squared_gradient_of_the_models_own_loss(decoder):
    model, tokenizer, _ = decoder
    got = fisher.mask_fisher(model, tokenizer, text_samples(TEXTS[:1]), kind="text")
    head, neuron = mask_gradient_squared(model, tokenizer, TEXTS[0])
    assert close(got["head"], head, HF) and close(got["neuron"], neuron, HF)
    assert float(got["head"].sum()) > 0


def test_batched_mask_fisher_is_the_mean_of_one_example_squares(decoder):
    """Padding (on the tokenizer's side) and the batch never change an example's gradient;
    a prompt's tokens do not count."""
    model, tokenizer, _ = decoder
    responses = [None, "it was good", None, "yes", None]
    got = fisher.mask_fisher(model, tokenizer, text_samples(TEXTS, responses), batch_size=3,
                             kind="text")
    pairs = [mask_gradient_squared(model, tokenizer, t, r) for t, r in zip(TEXTS, responses)]
    head = sum(p[0] for p in pairs) / len(pairs)
    neuron = sum(p[1] for p in pairs) / len(pairs)
    assert close(got["head"], head, HF) and close(got["neuron"], neuron, HF)


def test_the_mask_gradient_matches_finite_differences(decoder):
    model, tokenizer, _ = decoder
    batch = lm.batches(tokenizer, text_samples(TEXTS[:3]), 3, 32)[0]
    batch.inputs = arch.model_inputs(model, batch.inputs)
    d = arch.dims(model)
    shapes = {"head": (3, d.layers, d.heads), "neuron": (3, d.layers, d.intermediate)}

    def loss(masks):
        with fisher.mask_hooks(model, masks["head"], masks["neuron"]):
            return lm.token_losses(model(**batch.inputs).logits, batch.labels)[0].sum()

    grads = ones_gradients(loss, shapes)
    # Llama's RMSNorm normalises in float32 whatever the model's dtype: differences of
    # 1e-2 (their own error O(eps^2)) at each mask's largest entries per example keep that
    # rounding (~1e-8 of the loss) out of the quotient
    for which in ("head", "neuron"):
        for example in range(3):
            flat = grads[which][example].abs().flatten().argmax()
            index = (example, *divmod(int(flat), grads[which].shape[2]))
            numeric = central_difference(loss, shapes, which, index, eps=1e-2)
            value = float(grads[which][index])
            assert abs(value - numeric) <= 1e-3 * abs(value), (which, index, value, numeric)


def test_full_fisher_is_the_mean_squared_gradient_of_every_parameter(decoder):
    """The whole model's parameters: the body by its base-model names, an untied lm_head by
    its own; a tied one is the embeddings (merged once)."""
    model, tokenizer, _ = decoder
    texts, responses = TEXTS[:4], [None, "it was good", None, None]
    got = fisher.full_fisher(model, tokenizer, text_samples(texts, responses), batch_size=3,
                             chunk_size=2, kind="text")
    prefix = arch.body_prefix(model)
    named = dict(model.named_parameters())
    expected_keys = [k[len(prefix):] if k.startswith(prefix) else k for k in named]
    assert sorted(got) == sorted(expected_keys)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert ("lm_head.weight" in got) == (not tied)
    total = {k: torch.zeros_like(p) for k, p in named.items()}
    for text, response in zip(texts, responses):
        model.zero_grad(set_to_none=True)
        hf_loss(model, tokenizer, text, response).backward()
        for k, p in named.items():
            total[k] += p.grad ** 2
    model.zero_grad(set_to_none=True)
    for k, p in named.items():
        key = k[len(prefix):] if k.startswith(prefix) else k
        assert close(got[key], total[k] / len(texts), HF), key


def test_the_true_fisher_draws_the_next_tokens_from_the_model(decoder):
    model, tokenizer, _ = decoder
    samples = text_samples(TEXTS)
    empirical = fisher.mask_fisher(model, tokenizer, samples, kind="text")
    batches, _ = fisher.batches.model_batches(model, tokenizer, samples, batch_size=8,
                                              max_length=32, sort_by_length=True, device=None,
                                              kind="text")
    true = fisher.mask.mask_fisher_batches(model, batches, estimator="per-example",
                                           neuron_mask="post-activation", labels="true",
                                           kind="text")
    again = fisher.mask.mask_fisher_batches(model, batches, estimator="per-example",
                                            neuron_mask="post-activation", labels="true",
                                            kind="text")
    assert torch.equal(true["head"], again["head"])  # seeded draws
    assert not close(true["head"], empirical["head"], rtol=1e-3)
    drawn = lm.sampled_labels(torch.randn(2, 5, 7), torch.tensor(
        [[lm.IGNORE, lm.IGNORE, 3, 4, 5], [1, 2, 3, lm.IGNORE, lm.IGNORE]]),
        torch.Generator().manual_seed(0))
    assert drawn[0, :2].tolist() == [lm.IGNORE, lm.IGNORE] and drawn[1, 3:].tolist() == [lm.IGNORE] * 2


def test_examples_without_a_counted_token_are_dropped_and_none_is_an_error(decoder, caplog):
    model, tokenizer, _ = decoder
    long_prompt = " ".join(["the"] * 40)
    encoded, kept = lm.encode(tokenizer, text_samples([long_prompt, "a good day"], ["yes", None]),
                              max_length=16)
    assert kept == [1] and "1 of 2 examples" in caplog.text
    with pytest.raises(SampleError, match="no example has a token to predict"):
        lm.encode(tokenizer, text_samples([long_prompt], ["yes"]), max_length=16)


def test_a_classifier_checkpoint_is_refused_as_a_causal_lm_and_the_reverse(tmp_path, decoder):
    _, _, causal = decoder
    classifier = make_tiny_checkpoint(tmp_path / "cls", "llama", hidden=32, heads=4,
                                      intermediate=40)
    with pytest.raises(ModelLoadError, match="is a classification checkpoint .* causal-lm"):
        load_model(str(classifier), objective="causal-lm")
    with pytest.raises(ModelLoadError, match="is a causal-lm checkpoint"):
        load_model(str(causal))


# --- whole-model merges, evaluation and fine-tuning of causal LMs -----------------


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm_family(request, tmp_path_factory):
    """A base causal LM, two 'fine-tunes' of it (base + seeded noise on every tensor) and
    their text samples, mask and full Fishers and Grams, computed by the commands."""
    from workflow_scripts import cli
    from workflow_scripts.data import write_samples
    from workflow_scripts.models import save_checkpoint

    root = tmp_path_factory.mktemp(f"lm-{request.param}")
    base = make_tiny_checkpoint(root / "base", request.param, objective="causal-lm", seed=1,
                                hidden=32, heads=4, intermediate=40, padding_side="left")
    tuned = []
    for j in (1, 2):
        model, tok, _ = load_model(str(base), objective="causal-lm")
        g = torch.Generator().manual_seed(j)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        save_checkpoint(model, tok, root / f"t{j}")
        tuned.append(root / f"t{j}")
    data = root / "texts.parquet"
    write_samples(text_samples(TEXTS, [None, "it was good", None, "yes", None]), data)
    artifacts = {"mask": [], "full": [], "gram": []}
    for j, model in enumerate(tuned):
        for kind in artifacts:
            out = root / f"{kind}{j}.safetensors"
            command = ["gram"] if kind == "gram" else ["fisher", "--method", kind,
                                                       "--no-count-flops"]
            assert cli.main([*command, "--model", str(model), "--data", str(data),
                             "--objective", "causal-lm", "--no-progress", "--out", str(out)]) == 0
            artifacts[kind].append(str(out))
    return base, tuned, data, artifacts


@pytest.mark.parametrize("method", ["average", "fisher", "mask", "task-arithmetic", "ties",
                                    "dare", "regmean"])
def test_every_method_merges_the_whole_causal_lm(tmp_path, lm_family, method):
    """Streamed from the files, equal to the in-memory merge; embeddings and (untied)
    lm_head merged, a tied lm_head stays tied; the checkpoint loads as a causal LM."""
    import json

    from transformers import AutoModelForCausalLM

    from workflow_scripts.artifacts import load_fisher
    from workflow_scripts.merging import registry
    from workflow_scripts.merging.files import merge_models
    from workflow_scripts.merging.merge import merge_loaded

    base, tuned, _, artifacts = lm_family
    spec = registry.METHODS[method]
    extra = {}
    if spec.artifact is not None:
        key = "gram" if spec.artifact == registry.GRAM else spec.artifact
        extra["grams" if key == "gram" else "fishers"] = artifacts[key]
    out = merge_models(tuned, tmp_path / "out", method=method, objective="causal-lm",
                       names=["a", "b"], base=str(base) if spec.needs_base else None, **extra)
    models = [load_model(str(p), objective="causal-lm")[0] for p in tuned]
    loaded = None
    if spec.artifact is not None:
        loaded = [load_fisher(p)[0] for p in extra.get("fishers") or extra["grams"]]
    merge_loaded(models, method, loaded, objective="causal-lm",
                 base=load_model(str(base), objective="causal-lm")[0] if spec.needs_base else None)
    written = AutoModelForCausalLM.from_pretrained(out[0])
    expected = models[0].state_dict()
    for name, value in written.state_dict().items():
        assert torch.equal(value, expected[name]), name
    inputs = [load_model(str(p), objective="causal-lm")[0] for p in tuned]
    tied = written.get_output_embeddings().weight is written.get_input_embeddings().weight
    assert tied == (inputs[0].get_output_embeddings().weight
                    is inputs[0].get_input_embeddings().weight)
    head = written.get_output_embeddings().weight
    assert not torch.equal(head, inputs[0].get_output_embeddings().weight)  # merged too
    assert (out[0] / "generation_config.json").is_file()
    card = (out[0] / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card
    assert json.loads((out[0] / "merge.json").read_text())["objective"] == "causal-lm"


def test_evaluate_writes_the_mean_token_loss_and_perplexity(tmp_path, lm_family):
    import json
    import math

    from workflow_scripts import cli

    _, tuned, data, _ = lm_family
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--objective", "causal-lm", "--model", str(tuned[0]),
                     "--data", str(data), "--task", "texts", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    model, tok, _ = load_model(str(tuned[0]), objective="causal-lm")
    total = tokens = 0
    for text, response in zip(TEXTS, [None, "it was good", None, "yes", None]):
        loss = float(hf_loss(model, tok, text, response).detach())
        ids = tok(text)["input_ids"] + (tok(response, add_special_tokens=False)["input_ids"]
                                        if response else [])
        counted = (len(ids) - 1) if response is None else len(
            tok(response, add_special_tokens=False)["input_ids"])
        total, tokens = total + loss * counted, tokens + counted
    assert result["n_tokens"] == tokens and result["objective"] == "causal-lm"
    assert result["metrics"]["loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert result["metrics"]["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-5)


def test_finetune_a_causal_lm_on_texts(tmp_path, lm_family):
    import json

    from workflow_scripts import cli
    from workflow_scripts.data import write_samples

    base, _, _, _ = lm_family
    train = tmp_path / "train.parquet"
    write_samples(text_samples(["the good movie was great"] * 16), train)
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"task": "texts", "num_labels": 0, "label_names": []}))
    assert cli.main(["finetune", "--objective", "causal-lm", "--base", str(base), "--train",
                     str(train), "--validation", str(train), "--info", str(info), "--max-steps",
                     "60", "--batch-size", "8", "--lr", "3e-3", "--out", str(tmp_path / "ft")]) == 0
    result = json.loads((tmp_path / "ft" / "finetune_info.json").read_text())
    assert result["final_train_loss"] < 0.5 * result["initial_train_loss"]
    assert result["validation"]["loss"] < result["initial_train_loss"]
    load_model(str(tmp_path / "ft"), objective="causal-lm")  # a causal LM again
