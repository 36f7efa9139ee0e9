"""LoRA fine-tuning with peft: the adapter trains, saves, and reads back as a merge input."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from workflow_scripts import testing
from workflow_scripts.errors import ConfigError, OutputError
from workflow_scripts.lora import folder as lora_folder
from workflow_scripts.lora import train
from workflow_scripts.settings import FinetuneSettings


def test_lora_finetune_trains_and_saves(tmp_path):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        testing.tiny_config("bert", num_labels=2))
    base = lora_folder.Base.of_model(model, causal=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tok = testing.make_tokenizer(tmp_path / "tok")
    samples = testing.toy_samples(24, num_labels=2, seed=3)
    lora = train.LoraSettings(r=2, alpha=4, target_modules=("query", "value"))
    settings = FinetuneSettings(max_steps=6, batch_size=8, lr=5e-3, warmup_ratio=0.0)
    peft_model, run = train.train_lora(model, tok, samples, lora, settings)
    assert run.steps == 6 and all(torch.isfinite(torch.tensor(run.losses)))
    out = train.save_adapter(peft_model, tmp_path / "adapter", {"steps": run.steps})
    adapter = lora_folder.read_adapter(out, base)
    assert len(adapter.factors) == 4  # query and value of 2 layers
    assert all(f.rank == 2 and f.scale == 2.0 for f in adapter.factors.values())
    assert any(float(f.b.abs().max()) > 0 for f in adapter.factors.values())  # B trained
    assert set(adapter.head) == {"classifier.weight", "classifier.bias"}
    base_after = peft_model.get_base_model()
    for name in ("bert.encoder.layer.0.attention.self.query.base_layer.weight",):
        assert torch.equal(base_after.state_dict()[name], before[name.replace("base_layer.", "")])
    train.save_adapter(peft_model, out, {"steps": run.steps})  # its own output: replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        train.save_adapter(peft_model, tmp_path / "other", {})


def test_lora_settings_checked():
    for bad in (dict(r=0), dict(alpha=0), dict(dropout=1.0), dict(target_modules="query")):
        with pytest.raises(ConfigError):
            train.LoraSettings(**bad)
