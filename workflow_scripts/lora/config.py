"""An adapter's ``adapter_config.json``: what changes ``W0 + s B A``, read against an allow list.

PEFT writes every field of its ``LoraConfig`` (0.22 has some 60); this reader names the ones
it understands (:data:`READ`: r, lora_alpha, rsLoRA, rank and alpha patterns, fan_in_fan_out,
the targets, trained biases, modules_to_save), the ones that only select targets or train
settings and do not change the weights (:data:`IGNORED`), and the ones that change the
adapted weight in a way the merges here do not model (:data:`REFUSED`: accepted only at their
neutral value, refused by name otherwise: DoRA, aLoRA, layer replication, target_parameters,
trainable token indices, PiSSA / OLoRA / LoftQ and other initialisations that rewrite the
base, LoRA biases, QA-LoRA, ...).  Any other field is accepted only when empty (a newer
PEFT's default); a set unknown field is refused: this reader does not know what it does.

The scaling of a module is ``alpha / r`` (``alpha / sqrt(r)`` with ``use_rslora``), with ``r``
and ``alpha`` from ``rank_pattern`` / ``alpha_pattern`` where a pattern names the module
(PEFT's own matching, :func:`peft.utils.other.get_pattern_key`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelLoadError

CONFIG = "adapter_config.json"
BIASES = ("none", "all", "lora_only")
INITS = (True, False, "gaussian")  # initialisations that leave the base weights as they are
INIT_NAMES = {"pissa": "PiSSA", "olora": "OLoRA", "loftq": "LoftQ", "corda": "CorDA",
              "eva": "EVA", "orthogonal": "orthogonal factors", "mica": "MiCA", "nora": "NoRA",
              "astra": "ASTRA", "lora_ga": "LoRA-GA"}

READ = ("peft_type", "r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern",
        "fan_in_fan_out", "target_modules", "bias", "modules_to_save", "init_lora_weights",
        "task_type", "base_model_name_or_path")
IGNORED = ("auto_mapping", "revision", "inference_mode", "lora_dropout", "exclude_modules",
           "layers_to_transform", "layers_pattern", "peft_version", "megatron_core",
           "qalora_group_size", "ensure_weight_tying")
# field -> (neutral values, what it is): set to anything else, the adapter is refused by name
REFUSED = {
    "use_dora": ((False, None), "DoRA (weight-decomposed LoRA: W0 + s B A is rescaled per column)"),
    "alora_invocation_tokens": ((None,), "aLoRA (activated LoRA: the delta applies only after "
                                         "its invocation tokens)"),
    "layer_replication": ((None, []), "layer replication (the adapted model has more layers "
                                      "than its base)"),
    "target_parameters": ((None, []), "target_parameters (LoRA on bare parameters, e.g. MoE "
                                      "experts)"),
    "trainable_token_indices": ((None, {}, []), "trainable token indices (embedding rows "
                                                "trained outside LoRA)"),
    "lora_bias": ((False, None), "lora_bias (a trained bias on lora_B)"),
    "use_qalora": ((False, None), "QA-LoRA (quantisation-aware pooling of the input)"),
    "use_bdlora": ((None, False), "BD-LoRA (block-diagonal factors)"),
    "loftq_config": ((None, {}), "LoftQ (the base is quantised and rewritten)"),
    "megatron_config": ((None, {}), "Megatron parallel layers"),
    "runtime_config": ((None, {}), "a runtime config"),
}
EMPTY = (None, False, {}, [], "", ())


@dataclass(frozen=True)
class AdapterConfig:
    path: Path
    r: int
    alpha: float
    rslora: bool = False
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    fan_in_fan_out: bool = False
    target_modules: tuple[str, ...] | str = ()
    bias: str = "none"
    modules_to_save: tuple[str, ...] = ()
    task_type: str | None = None
    base: str | None = None  # base_model_name_or_path as written

    def rank(self, module: str) -> int:
        """``r`` of module ``module`` (its name in the base model, as PEFT matches it)."""
        return int(self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r))

    def module_alpha(self, module: str) -> float:
        return float(self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.alpha))

    def scaling(self, module: str, rank: int | None = None) -> float:
        """``alpha / r`` (rsLoRA: ``alpha / sqrt(r)``) of module ``module``."""
        r = self.rank(module) if rank is None else rank
        return self.module_alpha(module) / (math.sqrt(r) if self.rslora else r)


def _pattern_key(patterns: dict, module: str) -> str:
    from peft.utils.other import get_pattern_key

    return get_pattern_key(list(patterns), module) if patterns else module


def _refuse(path: Path, what: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: {what}; this tool merges plain LoRA adapters (W0 + s B A) "
                          "only: train the adapter without it, or merge the models it gives "
                          "as full checkpoints (merge_and_unload, then save_pretrained)")


def _check_fields(path: Path, data: dict) -> None:
    if data.get("peft_type") != "LORA":
        raise _refuse(path, f"peft_type is {data.get('peft_type')!r}, not 'LORA'")
    for key, (neutral, what) in REFUSED.items():
        if key in data and data[key] not in neutral:
            raise _refuse(path, f"it uses {what} ({key} = {data[key]!r})")
    init = data.get("init_lora_weights", True)
    if not any(init == v and type(init) is type(v) for v in INITS):
        named = next((n for k, n in INIT_NAMES.items() if str(init).lower().startswith(k)),
                     "an initialisation this reader does not know")
        raise _refuse(path, f"it was initialised with {named} (init_lora_weights = {init!r}), "
                            "which rewrites the base weights or depends on them")
    unknown = [k for k in data if k not in (*READ, *IGNORED, *REFUSED) and data[k] not in EMPTY]
    if unknown:
        raise _refuse(path, f"it sets field(s) {', '.join(sorted(unknown))}, which this reader "
                            "does not know (a newer PEFT?)")
    if data.get("bias", "none") not in BIASES:
        raise _refuse(path, f"bias = {data.get('bias')!r} is not one of {BIASES}")


def _positive(path: Path, name: str, value, integer: bool) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise ModelLoadError(f"{path}: {name} = {value!r} is not a positive "
                             f"{'integer' if integer else 'number'}; the adapter config is damaged")
    return value


def parse(path: Path, data: dict) -> AdapterConfig:
    """The config ``data`` read from ``path``, checked."""
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object; it is not a PEFT adapter config")
    _check_fields(path, data)
    r = _positive(path, "r", data.get("r", 8), True)
    alpha = _positive(path, "lora_alpha", data.get("lora_alpha", 8), False)
    patterns = {}
    for key, integer in (("rank_pattern", True), ("alpha_pattern", False)):
        value = data.get(key) or {}
        if not isinstance(value, dict):
            raise ModelLoadError(f"{path}: {key} is not an object of module patterns")
        patterns[key] = {str(k): _positive(path, f"{key}[{k!r}]", v, integer)
                         for k, v in value.items()}
    targets = data.get("target_modules") or ()
    modules = data.get("modules_to_save") or ()
    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
        raise ModelLoadError(f"{path}: modules_to_save is not a list of module names")
    return AdapterConfig(
        path=path, r=int(r), alpha=float(alpha), rslora=bool(data.get("use_rslora", False)),
        rank_pattern=patterns["rank_pattern"], alpha_pattern=patterns["alpha_pattern"],
        fan_in_fan_out=bool(data.get("fan_in_fan_out", False)),
        target_modules=targets if isinstance(targets, str) else tuple(targets),
        bias=data.get("bias", "none"), modules_to_save=tuple(modules),
        task_type=data.get("task_type"), base=data.get("base_model_name_or_path"))


def read_config(folder: str | Path) -> AdapterConfig:
    """``folder/adapter_config.json``, checked (:func:`parse`)."""
    path = Path(folder) / CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelLoadError(f"{folder} has no {CONFIG}: it is not a PEFT adapter folder "
                             "(save the adapter with PeftModel.save_pretrained)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}); save the adapter again") from None
    return parse(path, data)
