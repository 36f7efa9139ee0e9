"""A PEFT LoRA adapter folder read against its base: factors, trained full tensors, head.

``adapter_model.safetensors`` is read only inside its folder and only once it passes the
project's safetensors checks (:func:`workflow_scripts.tensorfiles.read_header`,
:func:`workflow_scripts.tensorlayout.inside`).  PEFT names its tensors
``base_model.model.<module>.lora_A.weight`` / ``lora_B.weight`` (embeddings:
``lora_embedding_A`` / ``lora_embedding_B``) and saves every other trained tensor under its
parameter's name (``<module>.base_layer.bias`` for the bias of an adapted module): trained
biases (``bias: all | lora_only``) and ``modules_to_save``.  Each name is mapped to the
merge's names (:class:`Base`: the body's names, and ``lm_head.weight`` for a causal LM) or,
for a classifier, to the task head; a tensor the base lacks, or whose shape does not fit
the base's, is refused by name.  Factors are small (``r (in + out)`` values each) and held;
full tensors are read when asked for (:meth:`Adapter.full_tensor`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import architectures as arch
from ..errors import ModelLoadError
from ..tensorfiles import TensorInfo, read_header, read_tensor
from ..tensorlayout import checkpoint_root, inside
from .config import AdapterConfig, read_config
from .lowrank import EMBEDDING, Factor, f64

WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."
_LORA = re.compile(r"(?P<module>.+)\.(?:(?P<ab>lora_[AB])\.weight|(?P<emb>lora_embedding_[AB]))")


@dataclass(frozen=True)
class Base:
    """What an adapter is read against: the base's architecture, the prefix of its body in
    the full model (``model.``, ``bert.``), the shapes of the tensors a merge covers (merge
    names) and of the task head (full-model names), and a reader of the base's tensors."""

    spec: arch.ArchSpec
    prefix: str
    shapes: dict[str, tuple[int, ...]]
    head_shapes: dict[str, tuple[int, ...]] | None  # None: a bare body, any head is new
    read: Callable[[str], torch.Tensor]
    outside: frozenset = frozenset()  # merge names that are full-model names (lm_head.weight)
    embeddings: frozenset = frozenset()  # merge names of embedding weights

    @classmethod
    def of_model(cls, model: torch.nn.Module, causal: bool) -> Base:
        """From a loaded model (full model with its head); ``causal``: its output projection
        is merged (unless tied to the embeddings), else it is the task head."""
        state = arch.body_state(model)
        head = arch.head_state(model)
        outside = set()
        if causal:
            shared = {t.data_ptr() for t in state.values()}
            for name, value in list(head.items()):
                if value.data_ptr() not in shared:
                    state[name] = value
                    outside.add(name)
                del head[name]
        embeddings = {f"{n}.weight" for n, m in arch.body(model).named_modules()
                      if isinstance(m, torch.nn.Embedding)}
        return cls(arch.spec_for(model), arch.body_prefix(model),
                   {k: tuple(v.shape) for k, v in state.items()},
                   {k: tuple(v.shape) for k, v in head.items()}, state.__getitem__,
                   frozenset(outside), frozenset(embeddings & set(state)))

    @classmethod
    def of_checkpoint(cls, directory, config, causal: bool) -> Base:
        """From a checkpoint folder (a full model, or a bare body as pre-trained bases are
        saved), streamed: its tensors are read when asked for, each checked as
        :class:`~workflow_scripts.tensorfiles.Checkpoint` checks them.  The body's layout
        (names, embeddings, the prefix) comes from the architecture built on the meta device.
        A bare body has no task head: a classifier adapter's head is then its own."""
        from transformers import AutoModel

        from ..tensorfiles import Checkpoint

        checkpoint = Checkpoint(directory)
        with torch.device("meta"):
            bare = AutoModel.from_config(config)
        prefix = bare.base_model_prefix + "."
        stored = {n.removeprefix(prefix): n for n in checkpoint.tensors}
        full = any(n.startswith(prefix) for n in checkpoint.tensors)
        names, shapes = {}, {}
        for name, value in bare.state_dict().items():
            if name in stored:
                names[name] = stored[name]
                shapes[name] = tuple(checkpoint.tensors[stored[name]].shape)
            elif value.is_floating_point():
                raise ModelLoadError(f"{directory} lacks the body weight {name!r} of its "
                                     f"{config.model_type} architecture; it is not a checkpoint "
                                     "of this model")
        rest = [n for n in checkpoint.tensors if full and not n.startswith(prefix)]
        head = {n: tuple(checkpoint.tensors[n].shape) for n in rest}
        outside = {n for n in rest if causal}
        for n in outside:
            names[n], shapes[n] = n, head.pop(n)
        embeddings = {f"{n}.weight" for n, m in bare.named_modules()
                      if isinstance(m, torch.nn.Embedding)} & set(shapes)
        return cls(arch.spec_for(config), prefix, shapes, head if full else None,
                   lambda name: checkpoint.read(names[name]), frozenset(outside),
                   frozenset(embeddings))

    def merge_name(self, full: str) -> str | None:
        """The merge name of full-model parameter ``full`` (None: a task-head parameter)."""
        if full in self.outside:
            return full
        if full.startswith(self.prefix) and full[len(self.prefix):] in self.shapes:
            return full[len(self.prefix):]
        if self.head_shapes is None and not full.startswith(self.prefix):
            return None  # a bare body: the adapter brings its own head
        if full in self.head_shapes:
            return None
        raise KeyError(full)

    def full_name(self, merge: str) -> str:
        return merge if merge in self.outside else self.prefix + merge

    def kind(self, merge: str) -> str:
        """How the weight ``merge`` is stored: LINEAR, CONV1D or EMBEDDING."""
        if merge in self.embeddings:
            return EMBEDDING
        return arch.LINEAR if merge in self.outside else arch.weight_kind(self.spec, merge)


@dataclass
class Adapter:
    folder: Path
    label: str
    config: AdapterConfig
    factors: dict[str, Factor]  # merge name of the adapted weight -> its factor
    full: dict[str, TensorInfo]  # merge name -> a trained tensor that replaces the base's
    head: dict[str, TensorInfo]  # full-model name -> the task head's tensor (classifiers)
    modules: dict[str, str] = field(default_factory=dict)  # merge name -> modules_to_save entry

    def full_tensor(self, name: str) -> torch.Tensor:
        return read_tensor(self.full[name])

    def head_tensor(self, name: str) -> torch.Tensor:
        return read_tensor(self.head[name])


def _weights(folder: Path) -> dict[str, TensorInfo]:
    root = checkpoint_root(folder)
    if not (folder / WEIGHTS).is_file():
        extra = " (adapter_model.bin is not read: resave with safetensors)" if (
            folder / "adapter_model.bin").exists() else ""
        raise ModelLoadError(f"{folder} has no {WEIGHTS}{extra}; save the adapter with "
                             "PeftModel.save_pretrained")
    path = inside(folder, root, WEIGHTS, folder)
    tensors, _ = read_header(path)
    return tensors


def _unknown(folder: Path, key: str, why: str) -> ModelLoadError:
    return ModelLoadError(f"{folder}: tensor {key!r} {why}; the adapter was not trained on this "
                          "base (set the family's base to the model the adapter was trained on)")


def _pairs(folder: Path, tensors: dict[str, TensorInfo]):
    """(module, {A, B}) of every LoRA pair, and the other tensors by parameter name."""
    pairs: dict[str, dict[str, TensorInfo]] = {}
    rest: dict[str, TensorInfo] = {}
    for key, info in tensors.items():
        if not key.startswith(PREFIX):
            raise _unknown(folder, key, f"does not start with {PREFIX!r} (not a PEFT save)")
        name = key[len(PREFIX):]
        match = _LORA.fullmatch(name)
        if match:
            which = (match.group("ab") or match.group("emb"))
            emb = bool(match.group("emb"))
            slot = pairs.setdefault(match.group("module"), {})
            slot["emb" if emb else "lin"] = True
            slot[which[-1]] = info
        elif ".lora_" in name:
            raise _unknown(folder, key, "is a LoRA tensor of a kind this reader does not know")
        elif ".original_module." not in name:  # bias: all also saves the untrained copy
            param = name.replace(".base_layer.", ".").replace(".modules_to_save.", ".")
            if param in rest and not torch.equal(read_tensor(rest[param]), read_tensor(info)):
                raise ModelLoadError(f"{folder}: {param!r} is saved twice with different "
                                     "values; the adapter file is damaged: save it again")
            rest[param] = info
    return pairs, rest


def _factor(folder: Path, base: Base, module: str, slot: dict, config: AdapterConfig):
    if "A" not in slot or "B" not in slot or ("emb" in slot and "lin" in slot):
        raise ModelLoadError(f"{folder}: module {module!r} lacks its lora_A or lora_B tensor; "
                             "the adapter file is incomplete: save it again")
    full = f"{module}.weight"
    try:
        merge = base.merge_name(full)
    except KeyError:
        raise _unknown(folder, full, "adapts a weight the base does not have") from None
    if merge is None:
        raise _unknown(folder, full, "adapts the task head, which is not merged (put it in "
                                     "modules_to_save)")
    a, b = read_tensor(slot["A"]), read_tensor(slot["B"])
    kind = base.kind(merge)
    if (kind == EMBEDDING) != ("emb" in slot):
        how = "an embedding" if "emb" in slot else "a linear layer"
        raise _unknown(folder, full, f"is adapted as {how} but the base's is "
                                     f"{'an embedding' if kind == EMBEDDING else 'not'}")
    rank = int(a.shape[0]) if a.dim() == 2 else -1
    expected = config.rank(module)
    if a.dim() != 2 or b.dim() != 2 or b.shape[1] != rank or rank != expected:
        raise ModelLoadError(f"{folder}: module {module!r} has LoRA factors of shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)}, not of rank {expected} as "
                             "its config says; the adapter is damaged: save it again")
    factor = Factor(f64(a), f64(b), config.scaling(module, rank), kind)
    if factor.shape != tuple(base.shapes[merge]):
        raise _unknown(folder, full, f"gives a delta of shape {factor.shape} but the base's "
                                     f"weight has shape {tuple(base.shapes[merge])}")
    if not (torch.isfinite(factor.a).all() and torch.isfinite(factor.b).all()):
        raise ModelLoadError(f"{folder}: the LoRA factors of {module!r} hold NaN or infinite "
                             "values; the training diverged")
    return merge, factor


def _module_entry(config: AdapterConfig, full: str) -> str | None:
    module = full.rsplit(".", 1)[0]
    for entry in config.modules_to_save:
        if module == entry or module.endswith("." + entry):
            return entry
    return None


def read_adapter(folder: str | Path, base: Base, label: str | None = None) -> Adapter:
    """The adapter in ``folder``, checked against ``base`` (every tensor named and shaped as
    the base's)."""
    folder = Path(folder)
    config = read_config(folder)
    pairs, rest = _pairs(folder, _weights(folder))
    factors = dict(_factor(folder, base, module, slot, config) for module, slot in pairs.items())
    full, head, modules = {}, {}, {}
    for name, info in rest.items():
        try:
            merge = base.merge_name(name)
        except KeyError:
            raise _unknown(folder, name, "names a parameter the base does not have") from None
        shape = (base.shapes[merge] if merge is not None
                 else (base.head_shapes or {}).get(name, info.shape))
        if tuple(info.shape) != tuple(shape):
            raise _unknown(folder, name, f"has shape {tuple(info.shape)} but the base's has "
                                         f"shape {tuple(shape)}")
        if merge is None:
            head[name] = info
        elif merge in factors:  # PEFT saves an adapted embedding's base layer with it
            if not torch.equal(read_tensor(info), base.read(merge).to(getattr(torch, info.dtype))):
                raise ModelLoadError(f"{folder}: the saved base layer of {name!r} differs from "
                                     "the base's; a resized or retrained embedding is not merged")
        else:
            full[merge] = info
            entry = _module_entry(config, name)
            if entry is not None:
                modules[merge] = entry
    return Adapter(folder, label or folder.name, config, factors, full, head, modules)
