"""Each job's memory request: the plan's side of :mod:`.memory`.

The rules declare ``mem_mb`` (and, for a job on a GPU, ``vram_mb``) as functions of the
job's wildcards and input (:func:`resources`), evaluated when Snakemake plans the job and
again before it runs, once its input model exists.  The model is the job's checkpoint
(the fine-tuned model of a Fisher, Gram or evaluation job, the merge's first model), or
before it exists the family's base model; a model of unknown size asks for
:data:`UNKNOWN_MB`.  ``compute.mem_mb`` overrides every estimate.  No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import memory
from .configpaths import resolve_path
from .fisher.kinds import DEFAULT_CHUNK_SIZE
from .settings import EvaluateSettings, FinetuneSettings, FisherSettings

UNKNOWN_MB = 16000  # a model not on disk yet, without a local base to size it by



@dataclass(frozen=True)
class GpuRule:
    """A rule whose jobs run a model, on a GPU where there is one."""

    model_input: str  # the input holding its model (sizes its memory estimate)
    runtime_key: str  # compute.<key>: its runtime in minutes


# The one list of the rules that use a GPU: each calls ``gpu_resources("NAME")``
# (rules/common.smk), and profiles/slurm/config.yaml gives each a GPU
# (tests/test_gpu_rules.py checks both, without a cluster).
GPU_RULES: dict[str, GpuRule] = {
    "finetune": GpuRule("base", "finetune_runtime"),
    "fisher": GpuRule("model", "fisher_runtime"),
    "gram": GpuRule("model", "fisher_runtime"),
    "evaluate_finetuned": GpuRule("model", "evaluate_runtime"),
    "evaluate_finetuned_holdout": GpuRule("model", "evaluate_runtime"),
    "evaluate_base": GpuRule("base", "evaluate_runtime"),
    "evaluate_base_holdout": GpuRule("base", "evaluate_runtime"),
    "merge": GpuRule("models", "evaluate_runtime"),
}


def estimate_kind(rule: str, wildcards) -> str:
    if rule == "fisher":
        return f"fisher-{wildcards.method}"
    return "evaluate" if rule.startswith("evaluate") else rule


def settings_for(kind: str, config: dict, gpus: int) -> dict:
    """The batch, length, chunk and dtype settings an estimate reads."""
    dtype = config["compute"].get("dtype", "float32")
    if kind.startswith("fisher") or kind == "gram":
        fisher = FisherSettings.from_config(config, method="mask")
        chunk = fisher.chunk_size or DEFAULT_CHUNK_SIZE["cuda" if gpus else "cpu"]
        return dict(dtype=dtype, batch=fisher.batch_size, tokens=fisher.max_length, chunk=chunk)
    if kind == "finetune":
        tune = FinetuneSettings.from_config(config)
        return dict(batch=tune.batch_size, tokens=tune.max_length)
    evaluation = EvaluateSettings.from_config(config)
    return dict(dtype=dtype, batch=evaluation.batch_size, tokens=evaluation.max_length)


def model_size(plan, rule: str, wildcards, input) -> memory.ModelSize | None:
    """The size of the job's model: its input checkpoint, else the family's base."""
    paths = getattr(input, GPU_RULES[rule].model_input, None) if input is not None else None
    if isinstance(paths, (list, tuple)) and not isinstance(paths, str):
        paths = paths[0] if paths else None
    candidates = [paths] if paths else []
    family = getattr(wildcards, "family", None)
    if family is not None:
        candidates.append(plan.base_dir(family))
        base = plan.families[family].get("base")
        if base:
            candidates.append(str(resolve_path(base)))
    for path in candidates:
        if path and Path(str(path)).is_dir():
            size = memory.model_size(path)
            if size is not None:
                return size
    return None


def mem_mb(plan, rule: str, wildcards, input=None, gpus: int = 0) -> int:
    override = plan.config["compute"].get("mem_mb")
    if override:
        return int(override)
    kind = estimate_kind(rule, wildcards)
    size = model_size(plan, rule, wildcards, input)
    settings = settings_for(kind, plan.config, gpus)
    if gpus:  # on a GPU the host holds the interpreter and the model while it loads
        return memory.host_mb(size, UNKNOWN_MB, settings.get("dtype", "float32"))
    return memory.job_mb(kind, size, UNKNOWN_MB, **settings)


def vram_mb(plan, rule: str, wildcards, input=None, gpus: int = 0) -> int:
    if not gpus:
        return 0
    kind = estimate_kind(rule, wildcards)
    size = model_size(plan, rule, wildcards, input)
    return memory.device_mb(kind, size, **settings_for(kind, plan.config, gpus))


def resources(plan, rule: str, runtime: int, gpus: int) -> dict:
    """A rule's ``resources:``: its GPUs, runtime, and memory functions of the job; ``rule``
    must be one of :data:`GPU_RULES`."""
    if rule not in GPU_RULES:
        raise KeyError(f"rule {rule!r} is not in jobmemory.GPU_RULES: add it there (and give it "
                       "a GPU in profiles/slurm/config.yaml)")
    out = {
        "gpu": gpus,
        "runtime": runtime,
        "mem_mb": lambda wildcards, input: mem_mb(plan, rule, wildcards, input, gpus),
    }
    if gpus:
        out["vram_mb"] = lambda wildcards, input: vram_mb(plan, rule, wildcards, input, gpus)
    return out
