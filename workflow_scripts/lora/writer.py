"""A merge written as a PEFT LoRA adapter folder, loadable with ``PeftModel.from_pretrained``.

The folder holds ``adapter_config.json``, ``adapter_model.safetensors`` (PEFT's names:
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight``, ``lora_embedding_A`` /
``lora_embedding_B``, biases and ``modules_to_save`` tensors under their parameter's name)
and a model card ``README.md``.  Every merged weight keeps its own rank (``sum_j r_j``) via
``rank_pattern``; its alpha equals its rank, so PEFT's scaling is exactly 1 (the models'
scalings are folded into ``B``).  Targets and patterns are full module paths (patterns
regex-escaped: PEFT matches them as regular expressions).  The folder is put in place
atomically (:func:`workflow_scripts.io.atomic_path`) and replaces only an adapter folder this
writer wrote; every tensor is checked finite before anything is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .. import architectures as arch
from .. import io, outputs
from ..errors import MergeError
from ..tensorfiles import write_file
from .config import CONFIG
from .folder import PREFIX, WEIGHTS, Base
from .lowrank import EMBEDDING
from .merge import Merged

CARD = "README.md"
WRITER = "fisher-merging"


def _ours(path: Path) -> bool:
    return (path / WEIGHTS).is_file() and (path / CONFIG).is_file() and \
        outputs.first_line(path / CARD) == "---" and WRITER in _card_head(path / CARD)


def _card_head(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")[:2000]
    except (OSError, UnicodeDecodeError):
        return ""


ADAPTER = outputs.Kind("a LoRA adapter folder that merge wrote (adapter_config.json, "
                       f"{WEIGHTS} and a model card naming {WRITER})", _ours, folder=True)


def _module(name: str, suffix: str) -> str:
    if not name.endswith(suffix):
        raise MergeError(f"{name!r} is not a {suffix[1:]} parameter")
    return name[: -len(suffix)]


def adapter_tensors(merged: Merged, base: Base, head: dict[str, torch.Tensor] | None = None,
                    dtype: torch.dtype = torch.float32) -> tuple[dict, dict]:
    """(tensors by PEFT key, {module path: rank} of the adapted modules)."""
    tensors, ranks = {}, {}
    targets = set()
    for name, f in merged.factors.items():
        module = _module(base.full_name(name), ".weight")
        targets.add(module)
        ranks[module] = f.rank
        key = PREFIX + module
        names = (("lora_embedding_A", "lora_embedding_B") if f.kind == EMBEDDING
                 else ("lora_A.weight", "lora_B.weight"))
        tensors[f"{key}.{names[0]}"], tensors[f"{key}.{names[1]}"] = f.a, f.b * f.scale
    for name, t in merged.full.items():
        full = base.full_name(name)
        module, leaf = full.rsplit(".", 1)
        inner = f"{module}.base_layer.{leaf}" if module in targets else full
        tensors[PREFIX + inner] = t
    for name, t in (head or {}).items():
        tensors[PREFIX + name] = t
    out = {}
    for key, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise MergeError(f"the merged adapter's tensor {key!r} holds NaN or infinite values; "
                             "nothing was written")
        out[key] = t.detach().to(dtype).contiguous()
    return out, ranks


def adapter_config(merged: Merged, base: Base, ranks: dict[str, int], *, task_type=None,
                   base_path: str | None = None, head_modules=()) -> dict:
    """The ``adapter_config.json`` of the merged adapter."""
    r = max(ranks.values(), default=1)
    pattern = {re.escape(m): k for m, k in sorted(ranks.items()) if k != r}
    body_modules = {base.full_name(n).rsplit(".", 1)[0] for n in merged.full
                    if n in merged.modules or not n.endswith(".bias")}
    biases = any(n.endswith(".bias") and n not in merged.modules for n in merged.full)
    conv1d = any(f.kind == arch.CONV1D for f in merged.factors.values())
    return {
        "peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_path,
        "r": r, "lora_alpha": r, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
        "use_rslora": False, "target_modules": sorted(ranks), "fan_in_fan_out": conv1d,
        "bias": "all" if biases else "none",
        "modules_to_save": sorted(body_modules | set(head_modules)) or None,
        "lora_dropout": 0.0, "init_lora_weights": True, "inference_mode": True,
        "use_dora": False,
    }


def model_card(merged: Merged, base: Base, base_path: str | None, inputs: list[str],
               note: str = "") -> str:
    """The README.md: front matter for the Hub, the recipe, each module's rank (and the
    relative error of a truncated adapter; the modules that fell back to a dense solve)."""
    lines = ["---", "library_name: peft",
             *([f"base_model: {json.dumps(base_path)}"] if base_path else []),
             "tags:", "- lora", "- merge", f"- {WRITER}", "---", "",
             f"# LoRA adapter merged by {WRITER} ({merged.method})", "",
             f"Merged from {len(inputs)} adapters: {', '.join(inputs)}.", ""]
    if note:
        lines += [note, ""]
    lines += ["| module | rank | relative error |", "| --- | --- | --- |"]
    for name, f in merged.factors.items():
        err = f"{merged.errors[name]:.3g}" if name in merged.errors else "0 (exact)"
        lines.append(f"| {_module(base.full_name(name), '.weight')} | {f.rank} | {err} |")
    if merged.dense:
        lines += ["", "RegMean's Gram sum was singular for " + ", ".join(merged.dense)
                  + ": their deltas are the dense least-norm solution, factored exactly."]
    return "\n".join(lines) + "\n"


def write_adapter(folder, merged: Merged, base: Base, *, inputs: list[str],
                  head: dict[str, torch.Tensor] | None = None, head_modules=(),
                  task_type=None, base_path: str | None = None,
                  dtype: torch.dtype = torch.float32, note: str = "") -> Path:
    """Write ``merged`` (with a classifier's own ``head`` tensors, full-model names, and its
    ``head_modules`` entries) as a PEFT adapter folder at ``folder``."""
    folder = Path(folder)
    tensors, ranks = adapter_tensors(merged, base, head, dtype)
    config = adapter_config(merged, base, ranks, task_type=task_type, base_path=base_path,
                            head_modules=head_modules)
    card = model_card(merged, base, base_path, inputs, note)
    with io.atomic_path(folder, ADAPTER) as tmp:
        tmp.mkdir()
        write_file(tmp / WEIGHTS, tensors, {"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD).write_text(card, encoding="utf-8")
    return folder
