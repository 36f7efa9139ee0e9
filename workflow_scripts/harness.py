"""lm-evaluation-harness itself, run on a causal LM held in memory (``evaluation.harness``):
``lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer), tasks=...)``.

Settings: ``tasks`` (the harness's task names, or those of local YAML files), an
``include_path`` (a folder of task YAMLs; then only its tasks are known:
``TaskManager(include_path=..., include_defaults=False)``), ``num_fewshot`` and ``limit``
(rows per task; a fraction below 1 is a share).  The metrics come back named as the harness
names them (``acc,none``, ``acc_norm,none``), per task, numbers only (standard errors
dropped: bootstrap is off).  Needs the ``harness`` extra (``lm_eval[hf]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, UserError

INSTALL = "pip install 'fisher-mask-merging[harness]' (lm_eval[hf])"


@dataclass(frozen=True)
class HarnessSettings:
    tasks: tuple[str, ...]
    include_path: str | None = None
    num_fewshot: int | None = None
    limit: float | None = None


def settings(spec: dict, where: str = "evaluation.harness") -> HarnessSettings:
    """The checked settings of a config entry ``{tasks, include_path, num_fewshot, limit}``."""
    unknown = sorted(set(spec) - {"tasks", "include_path", "num_fewshot", "limit"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; use tasks, include_path, "
                          "num_fewshot, limit")
    tasks = spec.get("tasks")
    if isinstance(tasks, str):
        tasks = [tasks]
    if not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
        raise ConfigError(f"{where}.tasks: name at least one harness task (e.g. [arc_easy])")
    include = spec.get("include_path")
    if include is not None and not Path(include).is_dir():
        raise ConfigError(f"{where}.include_path: {include!r} is not a folder of task YAMLs")
    shots = spec.get("num_fewshot")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
        raise ConfigError(f"{where}.num_fewshot: {shots!r} must be a whole number >= 0")
    limit = spec.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                              or not limit > 0 or (limit >= 1 and limit != int(limit))):
        raise ConfigError(f"{where}.limit: {limit!r} must be a row count >= 1 or a share in "
                          "(0, 1)")
    return HarnessSettings(tuple(tasks), None if include is None else str(include), shots,
                           None if limit is None else (int(limit) if limit >= 1 else limit))


def _modules():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise UserError(f"evaluation.harness needs lm-evaluation-harness with its Hugging "
                        f"Face backend ({exc}); install it: {INSTALL}") from None
    return lm_eval, HFLM, TaskManager


def run(model, tokenizer, config: HarnessSettings, batch_size: int = 8,
        max_length: int | None = None) -> dict[str, dict[str, float]]:
    """``{task: {metric as the harness names it: value}}`` of ``model`` on the tasks."""
    lm_eval, HFLM, TaskManager = _modules()
    manager = (TaskManager(include_path=config.include_path, include_defaults=False)
               if config.include_path else TaskManager())
    unknown = [t for t in config.tasks if t not in manager.all_tasks]
    if unknown:
        where = (f"the task YAMLs in {config.include_path}" if config.include_path
                 else "lm-evaluation-harness")
        raise UserError(f"evaluation.harness.tasks: {unknown} are not tasks of {where}; "
                        "check the names (a YAML's `task:` key)")
    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
              max_length=max_length, device=device)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(config.tasks),
                                  num_fewshot=config.num_fewshot, limit=config.limit,
                                  task_manager=manager, log_samples=False, bootstrap_iters=0)
    results = {}
    for task, metrics in out["results"].items():
        results[task] = {name: float(value) for name, value in metrics.items()
                         if isinstance(value, (int, float)) and not isinstance(value, bool)
                         and "_stderr" not in name and math.isfinite(float(value))}
    return results
