"""Tiny LoRA adapters with random, non-zero factors, for tests and benchmarks."""

from __future__ import annotations

import copy
from pathlib import Path

import torch


def random_adapter(model: torch.nn.Module, folder: str | Path, *, targets, r: int = 4,
                   alpha: float = 8, seed: int = 0, scale: float = 0.2, **lora) -> Path:
    """A PEFT LoRA adapter on a copy of ``model`` whose every trainable tensor (``lora_A``,
    ``lora_B`` (non-zero), trained biases, ``modules_to_save`` copies) is perturbed at
    random, saved in ``folder``; ``lora``: further ``LoraConfig`` fields (``use_rslora``,
    ``rank_pattern``, ``bias``, ``modules_to_save``, ``task_type``, ...)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), **lora)
    peft_model = get_peft_model(copy.deepcopy(model), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    peft_model.save_pretrained(str(folder))
    return Path(folder)


def merged_copy(model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """``model`` (copied) with the adapter in ``folder`` loaded by PEFT and merged into it."""
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(model), str(folder)).merge_and_unload()
