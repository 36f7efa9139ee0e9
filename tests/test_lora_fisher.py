"""Mask Fisher and Grams of an unmerged PeftModel equal those of its merged copy."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from workflow_scripts import data, gram, testing
from workflow_scripts.fisher import mask as mask_fisher_mod
from workflow_scripts.lora import fisher as lora_fisher
from workflow_scripts.lora import testing as lt

TARGETS = {  # the attention output projections and the FFN: the mask hooks' own modules
    "bert": ["query", "value", "dense"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def _close(a, b, tol=1e-4):
    """max |a - b| / max |b| <= tol (float32 activations: merged and unmerged projections
    round differently)."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max()) <= tol * float(b.abs().max())


@pytest.mark.parametrize("model_type", sorted(TARGETS))
def test_adapted_fisher_and_grams_equal_merged(tmp_path, model_type):
    from peft import PeftModel

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        testing.tiny_config(model_type, num_labels=3)).eval()
    names = None if model_type == "bert" else ["input_ids", "attention_mask"]
    tok = testing.make_tokenizer(tmp_path / "tok", model_input_names=names)
    folder = lt.random_adapter(model, tmp_path / "a", targets=TARGETS[model_type], r=3,
                               task_type="SEQ_CLS", use_rslora=model_type == "llama",
                               fan_in_fan_out=model_type == "gpt2", seed=4)
    adapted = PeftModel.from_pretrained(copy.deepcopy(model), str(folder)).eval()
    merged = lt.merged_copy(model, folder).eval()
    samples = testing.toy_samples(9, pair=True, num_labels=3, seed=1)
    for estimator in ("per-example", "per-batch"):
        got = lora_fisher.mask_fisher(adapted, tok, samples, estimator=estimator, batch_size=4)
        want = mask_fisher_mod.mask_fisher(merged, tok, samples, estimator=estimator,
                                           batch_size=4)
        plain = mask_fisher_mod.mask_fisher(model, tok, samples, estimator=estimator,
                                            batch_size=4)
        assert _close(got["head"], want["head"]) and _close(got["neuron"], want["neuron"])
        assert not _close(got["head"], plain["head"])  # the adapter changed the model
    batches = list(data.batches(tok, samples, 4))
    got, rows = lora_fisher.gram_batches(adapted, batches, causal=False)
    want, want_rows = gram.gram_batches(merged, batches)
    assert set(got) == set(want) and rows == want_rows
    for name in want:
        err = float((got[name] - want[name]).abs().max() / want[name].abs().max())
        assert _close(got[name], want[name]), (name, err)
