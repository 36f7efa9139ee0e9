"""A LoRA fine-tune with peft: the finetune recipe's training loop on a ``PeftModel``.

``LoraSettings`` are the adapter's shape (``finetune.lora: {r, alpha, dropout,
target_modules}`` once the workflow takes it); the optimiser, schedule, batches and seed are
:class:`~workflow_scripts.settings.FinetuneSettings`' as for a full fine-tune
(:func:`workflow_scripts.finetune._train`).  A classifier's head is trained in full and
saved with the adapter (PEFT's ``SEQ_CLS`` task type puts it in ``modules_to_save``); a
causal LM trains the adapter alone.  :func:`save_adapter` writes the adapter folder with
``save_pretrained``'s layout, atomically, replacing only an adapter folder it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .. import outputs
from ..errors import ConfigError
from ..io import atomic_path
from ..settings import FinetuneSettings
from .config import CONFIG
from .folder import WEIGHTS

TRAINED = "lora_train.json"  # what save_adapter writes beside PEFT's files


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None  # None: peft's default for the model type

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"lora.r must be a positive integer, not {self.r!r}")
        if not self.alpha > 0:
            raise ConfigError(f"lora.alpha must be positive, not {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), not {self.dropout!r}")
        if self.target_modules is not None and (
                isinstance(self.target_modules, str) or not self.target_modules):
            raise ConfigError("lora.target_modules must be a non-empty list of module names")


def lora_model(model: torch.nn.Module, lora: LoraSettings, causal: bool):
    """``model`` wrapped by peft with a fresh LoRA adapter (only the adapter, and a
    classifier's head, trainable)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules) if lora.target_modules else None,
                        task_type="CAUSAL_LM" if causal else "SEQ_CLS")
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # peft: no default targets, or a target that matches nothing
        raise ConfigError(f"LoRA cannot adapt this {model.config.model_type} model: {exc}; set "
                          "lora.target_modules to its projections' names") from None


def train_lora(model: torch.nn.Module, tokenizer, train, lora: LoraSettings,
               settings: FinetuneSettings, progress: bool | None = False):
    """(the trained ``PeftModel``, what the loop did); ``settings.objective`` says the
    objective, and with it the task kind whose batches train the adapter."""
    from .. import objectives, taskkinds
    from ..finetune import _train

    torch.manual_seed(int(settings.seed))
    causal = objectives.objective(settings.objective).whole_model
    peft_model = lora_model(model, lora, causal)
    run = _train(peft_model, tokenizer, train, settings, settings.max_length, progress,
                 taskkinds.of_settings(settings))
    return peft_model, run


def _adapter_folder(path: Path) -> bool:
    return (path / CONFIG).is_file() and (path / WEIGHTS).is_file() and (path / TRAINED).is_file()


ADAPTER = outputs.Kind(f"a LoRA adapter folder that LoRA fine-tuning wrote (with its {TRAINED})",
                       _adapter_folder, folder=True)


def save_adapter(peft_model, folder, info: dict) -> Path:
    """The adapter (safetensors) and ``info`` (JSON) in ``folder``, put in place atomically."""
    import json

    folder = Path(folder)
    with atomic_path(folder, ADAPTER) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / TRAINED).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return folder
