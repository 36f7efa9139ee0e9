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
    got = fisher.mask_fisher(model, tokenizer, text_samples(TEXTS[:1]))
    head, neuron = mask_gradient_squared(model, tokenizer, TEXTS[0])
    assert close(got["head"], head, HF) and close(got["neuron"], neuron, HF)
    assert float(got["head"].sum()) > 0


def test_batched_mask_fisher_is_the_mean_of_one_example_squares(decoder):
    """Padding (on the tokenizer's side) and the batch never change an example's gradient;
    a prompt's tokens do not count."""
    model, tokenizer, _ = decoder
    responses = [None, "it was good", None, "yes", None]
    got = fisher.mask_fisher(model, tokenizer, text_samples(TEXTS, responses), batch_size=3)
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
                             chunk_size=2)
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
    empirical = fisher.mask_fisher(model, tokenizer, samples)
    batches, _ = fisher.batches.model_batches(model, tokenizer, samples, batch_size=8,
                                              max_length=32, sort_by_length=True, device=None)
    true = fisher.mask.mask_fisher_batches(model, batches, estimator="per-example",
                                           neuron_mask="post-activation", labels="true")
    again = fisher.mask.mask_fisher_batches(model, batches, estimator="per-example",
                                            neuron_mask="post-activation", labels="true")
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
