"""The config checks of the families' objectives (:mod:`.objectives`): which objective each
task serves, and what a causal-LM family needs (decoders, text tasks, checkpoints saved
as causal LMs).  Errors name the entry and the fix.  No torch: Snakemake runs this while it
parses the workflow."""

from __future__ import annotations

import json
from pathlib import Path

from . import architectures, objectives, taskkinds
from .configpaths import resolve_path
from .errors import ConfigError
from .fetch import classify
from .gguffiles.sources import check_source as check_gguf_source


def family_objective(spec: dict) -> str:
    return spec.get("objective") or objectives.DEFAULT


def task_objectives(config: dict) -> dict[str, str]:
    """The objective each task serves (its families'); a task cannot serve both, since a
    causal-LM task's files hold text and a classifier's labels."""
    out: dict[str, tuple[str, str]] = {}
    for family, spec in config["families"].items():
        objective = family_objective(spec)
        for task in spec["checkpoints"]:
            if task in out and out[task][0] != objective:
                raise ConfigError(
                    f"tasks.{task}: family {out[task][1]!r} uses it as a {out[task][0]} task and "
                    f"family {family!r} as a {objective} one; define it twice under two names "
                    "(a causal-LM task's files hold text, a classifier's labels)")
            out.setdefault(task, (objective, family))
    return {task: objective for task, (objective, _) in out.items()}


def _saved_objective(path: Path) -> tuple[str | None, str | None, list]:
    """(objective, model_type, architectures) of a local checkpoint's config.json."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None, None, []
    names = config.get("architectures") or []
    return objectives.of_config(config), config.get("model_type"), names


def _check_local(source: str, base_dir: Path, objective: str, where: str) -> None:
    kind = classify(source, base_dir)
    if kind == "gguf":
        check_gguf_source(source, base_dir, where, objective)
    if kind != "local":
        return
    saved, model_type, names = _saved_objective(resolve_path(source, base_dir))
    if saved is not None and saved != objective:
        raise ConfigError(
            f"{where}: {source!r} is a {saved} checkpoint ({', '.join(names)}) but the family's "
            f"objective is {objective}; set the family's objective: {saved}, or point it at a "
            f"checkpoint saved for {objective}")
    if objectives.objective(objective).decoders_only and model_type in architectures.SPECS:
        if not architectures.SPECS[model_type].lm_head:
            raise ConfigError(
                f"{where}: {source!r} is a {model_type!r} model, which is merged and evaluated "
                f"as a classifier only; {objective} families are decoders ("
                + ", ".join(t for t, s in architectures.SPECS.items() if s.lm_head) + ")")


def check_objectives(config: dict, base_dir: Path) -> None:
    """Each family's local base and checkpoints are saved for its objective (read from their
    config.json, before any job runs); a causal-LM family is a decoder and its tasks have a
    text form."""
    from .tasks.registry import SOURCES

    for family, spec in config["families"].items():
        objective, where = family_objective(spec), f"families.{family}"
        kind = taskkinds.of_objective(objective)
        if "base" in spec:
            _check_local(spec["base"], base_dir, objective, f"{where}.base")
        for task, ckpt in spec["checkpoints"].items():
            if "source" in ckpt:
                _check_local(ckpt["source"], base_dir, objective,
                             f"{where}.checkpoints.{task}.source")
            source = config["tasks"][task]["source"]
            if kind.name not in SOURCES[source].kinds:
                raise ConfigError(
                    f"tasks.{task}: a {source} task has no {kind.name} form (it gives "
                    f"{', '.join(SOURCES[source].kinds)} tasks); {objective} family {family!r} "
                    f"needs {kind.name} tasks ({kind.description}: builtin, or local files with "
                    "a text column, or prompt and response columns)")
            if not kind.labels and ckpt.get("label_map") is not None:
                raise ConfigError(f"{where}.checkpoints.{task}.label_map: a causal LM has no "
                                  "labels to map; remove it")
