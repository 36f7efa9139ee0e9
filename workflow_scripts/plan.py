"""The experiment plan: config validation and the set of jobs it implies.

The Snakemake rules stay thin by asking this module which families, tasks,
task subsets, sample counts and merges the config asks for, and where each
artifact lives.  Everything here is plain Python and tested without
Snakemake.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .localfiles import file_columns

GLUE_TASKS = ("mnli", "qqp", "qnli", "sst2", "mrpc", "rte", "cola")
BUILTIN_TASKS = ("sentiment", "topic", "reply")
FISHER_METHODS = ("mask", "full")
MERGE_METHODS = ("average", "fisher", "mask", "mask-released")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
PACKAGE_SOURCE = re.compile(r"^python-package:[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z0-9_.-]+)*$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config entry is wrong; the message names the entry and the fix."""


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate_schema(config: dict, schema_path: Path = SCHEMA) -> None:
    """JSON-schema validation with a message naming the offending entry."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            if err.validator == "additionalProperties":
                lines.append(f"config entry {_where(err.absolute_path)}: {err.message} (unknown key: check its spelling)")
            else:
                lines.append(f"config entry {_where(err.absolute_path)}: {err.message}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))


def fill_defaults(config: dict, schema: dict | None = None) -> dict:
    """Set every schema default that the config leaves out (recursively)."""
    if schema is None:
        schema = yaml.safe_load(SCHEMA.read_text())
    for key, sub in schema.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = yaml.safe_load(yaml.safe_dump(sub["default"]))
        if isinstance(config.get(key), dict) and sub.get("type") == "object":
            fill_defaults(config[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("type") == "object":
        for key, value in config.items():
            if key not in schema.get("properties", {}) and isinstance(value, dict):
                fill_defaults(value, extra)
    return config


def resolve_path(path: str | Path, base_dir: str | Path = ".") -> Path:
    """A config path (``~`` expanded) relative to ``base_dir`` unless absolute."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def classify_source(source: str, base_dir: str | Path = ".") -> str:
    """'local', 'package' or 'hub'; anything else is a ConfigError."""
    if source.startswith("python-package:"):
        if not PACKAGE_SOURCE.match(source) or ".." in source:
            raise ConfigError(f"model source {source!r} is not a valid python-package:PKG/DIR reference")
        return "package"
    path = resolve_path(source, base_dir)
    if path.is_dir():
        return "local"
    if HUB_ID.match(source) and ".." not in source:
        return "hub"
    raise ConfigError(
        f"model source {source!r} is neither an existing directory nor a hub id of the "
        "form 'org/name'; fix the path or the id"
    )


def find_duplicate_keys(path: str | Path) -> list[str]:
    """Mapping keys that occur twice in a YAML file (PyYAML silently keeps the last)."""
    duplicates: list[str] = []

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                duplicates.append(f"{key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    yaml.load(Path(path).read_text(), Loader=Loader)
    return duplicates


def task_label_count(name: str, task: dict) -> int | None:
    """A task's label count when the config alone tells it (None: known after prepare-task)."""
    if task["source"] == "local" and task.get("label_names"):
        return len(task["label_names"])
    if task["source"] == "glue":
        from .tasks import GLUE  # the label names' owner; imported only when needed

        spec = GLUE.get(task.get("name", name))
        return None if spec is None else len(spec.label_names)
    return None


def checkpoint_label_count(path: Path) -> int | None:
    """``num_labels`` of a local checkpoint directory, from its config.json."""
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(cfg.get("id2label"), dict) and cfg["id2label"]:
        return len(cfg["id2label"])
    return cfg.get("num_labels")


def check_config(config: dict, base_dir: str | Path = ".", config_files=()) -> None:
    """Schema plus the checks a schema cannot express; raises ConfigError."""
    for config_file in config_files:
        dups = find_duplicate_keys(config_file)
        if dups:
            raise ConfigError(
                f"config file {config_file} repeats key(s) {', '.join(dups)}; each task, "
                "family and setting may appear once"
            )
    validate_schema(config)
    fill_defaults(config)
    base_dir = Path(base_dir)
    needs = {"fisher": "full", "mask": "mask"}
    for method in config["merge"]["methods"]:
        if method in needs and needs[method] not in config["fisher"]["methods"]:
            raise ConfigError(
                f"merge.methods: {method!r} needs the {needs[method]!r} Fisher; add it to fisher.methods"
            )
    tasks = config["tasks"]
    for name, task in tasks.items():
        where = f"tasks.{name}"
        if not NAME.match(name):
            raise ConfigError(f"{where}: task names may hold letters, digits, '_' and '-' only")
        source = task["source"]
        if source in ("glue", "builtin"):
            known = GLUE_TASKS if source == "glue" else BUILTIN_TASKS
            real = task.get("name", name)
            if real not in known:
                raise ConfigError(
                    f"{where}: unknown {source} task {real!r}; known {source} tasks are "
                    f"{', '.join(known)} (set 'name:' if the key differs)"
                )
        else:
            for key in ("train_file", "validation_file", "column_map"):
                if key not in task:
                    raise ConfigError(f"{where}: a local task needs '{key}'")
            for key in ("train_file", "validation_file"):
                path = resolve_path(task[key], base_dir)
                if not path.is_file():
                    raise ConfigError(f"{where}.{key}: file {task[key]!r} does not exist")
                columns = file_columns(path, task.get("format"))
                missing = [c for c in task["column_map"].values() if c not in (columns or [])]
                if columns is not None and missing:
                    raise ConfigError(
                        f"{where}.column_map: column(s) {missing} are not in {key} {task[key]!r}, "
                        f"which has columns {columns}; fix the column_map or the file"
                    )
    for family, spec in config["families"].items():
        where = f"families.{family}"
        if not NAME.match(family):
            raise ConfigError(f"{where}: family names may hold letters, digits, '_' and '-' only")
        if "base" in spec:
            classify_source(spec["base"], base_dir)
        for task, ckpt in spec["checkpoints"].items():
            cwhere = f"{where}.checkpoints.{task}"
            if task not in tasks:
                raise ConfigError(
                    f"{cwhere}: no task {task!r} is defined under 'tasks' "
                    f"(defined: {', '.join(tasks)})"
                )
            has_source, tune = "source" in ckpt, bool(ckpt.get("finetune"))
            if has_source == tune:
                raise ConfigError(f"{cwhere}: give exactly one of 'source' or 'finetune: true'")
            if tune and "base" not in spec:
                raise ConfigError(f"{cwhere}: 'finetune: true' needs the family's 'base' model")
            if has_source:
                try:
                    kind = classify_source(ckpt["source"], base_dir)
                except ConfigError as exc:
                    raise ConfigError(f"{cwhere}.source: {exc}") from None
                if kind == "local":
                    have = checkpoint_label_count(resolve_path(ckpt["source"], base_dir))
                    need = task_label_count(task, tasks[task])
                    if have is not None and need is not None and have != need:
                        raise ConfigError(
                            f"{cwhere}.source: checkpoint {ckpt['source']!r} has {have} labels "
                            f"but task {task!r} has {need}; point it at a checkpoint fine-tuned "
                            "on this task (or fix the task's label_names)"
                        )
            label_map = ckpt.get("label_map")
            if label_map is not None and sorted(label_map) != list(range(len(label_map))):
                raise ConfigError(f"{cwhere}.label_map: {label_map} must be a permutation of 0..{len(label_map) - 1}")
        for size in config.get("merge", {}).get("subset_sizes", [2]):
            if size > len(spec["checkpoints"]):
                raise ConfigError(
                    f"merge.subset_sizes: {size} exceeds the {len(spec['checkpoints'])} "
                    f"checkpoints of family {family!r}"
                )


@dataclass(frozen=True)
class Merge:
    family: str
    subset: tuple[str, ...]
    method: str  # average | fisher | mask | mask-released
    n: int | None  # None for average

    @property
    def subset_id(self) -> str:
        return "+".join(self.subset)

    @property
    def merge_id(self) -> str:
        return self.method if self.n is None else f"{self.method}-n{self.n}"

    @property
    def fisher_method(self) -> str | None:
        return {"fisher": "full", "mask": "mask", "mask-released": "mask"}.get(self.method)


def parse_merge_id(merge_id: str) -> tuple[str, int | None]:
    match = re.fullmatch(r"(average)|(fisher|mask|mask-released)-n(\d+)", merge_id)
    if not match:
        raise ValueError(f"bad merge id {merge_id!r}")
    if match.group(1):
        return "average", None
    return match.group(2), int(match.group(3))


class Plan:
    """Targets and per-job facts derived from a validated config."""

    def __init__(self, config: dict):
        self.config = config
        self.tasks = config["tasks"]
        self.families = config["families"]
        self.fisher = config.get("fisher", {})
        self.merge_cfg = config.get("merge", {})

    # -- per task / checkpoint facts ---------------------------------------
    def task_ns(self, task: str) -> list[int]:
        return list(self.tasks[task].get("n", self.fisher.get("n", [128])))

    def family_tasks(self, family: str) -> list[str]:
        return list(self.families[family]["checkpoints"])

    def checkpoint(self, family: str, task: str) -> dict:
        return self.families[family]["checkpoints"][task]

    def is_finetuned_here(self, family: str, task: str) -> bool:
        return bool(self.checkpoint(family, task).get("finetune"))

    def label_map(self, family: str, task: str) -> str:
        """The label map as the CLI's '2,0,1', or '' for none."""
        mapping = self.checkpoint(family, task).get("label_map")
        return ",".join(str(i) for i in mapping) if mapping else ""

    def checkpoint_dir(self, family: str, task: str) -> str:
        if self.is_finetuned_here(family, task):
            return f"results/finetuned/{family}/{task}"
        return f"resources/models/{family}/{task}"

    # -- merges ------------------------------------------------------------
    def merge_methods(self) -> list[str]:
        methods = list(self.merge_cfg.get("methods", ["average", "fisher", "mask"]))
        if self.merge_cfg.get("released_scheme") and "mask" in methods:
            methods.append("mask-released")
        return methods

    def subsets(self, family: str) -> list[tuple[str, ...]]:
        tasks = self.family_tasks(family)
        out = []
        for size in sorted(self.merge_cfg.get("subset_sizes", [2])):
            out.extend(itertools.combinations(tasks, size))
        return out

    def common_ns(self, subset) -> list[int]:
        common = set(self.task_ns(subset[0]))
        for task in subset[1:]:
            common &= set(self.task_ns(task))
        return sorted(common)

    def merges(self) -> list[Merge]:
        out = []
        for family in self.families:
            for subset in self.subsets(family):
                for method in self.merge_methods():
                    if method == "average":
                        out.append(Merge(family, subset, method, None))
                    else:
                        out.extend(Merge(family, subset, method, n) for n in self.common_ns(subset))
        return out

    def merge_from_wildcards(self, family: str, subset_id: str, merge_id: str) -> Merge:
        method, n = parse_merge_id(merge_id)
        return Merge(family, tuple(subset_id.split("+")), method, n)

    # -- paths ---------------------------------------------------------------
    @staticmethod
    def samples_path(task: str, n: int, seed: int) -> str:
        return f"results/samples/{task}/n{n}-seed{seed}.parquet"

    @staticmethod
    def fisher_path(family: str, task: str, n: int, method: str) -> str:
        return f"results/fisher/{family}/{task}/n{n}/{method}.safetensors"

    @staticmethod
    def merged_dir(merge: Merge) -> str:
        return f"results/merged/{merge.family}/{merge.subset_id}/{merge.merge_id}"

    @staticmethod
    def merged_eval_path(merge: Merge, task: str) -> str:
        return f"results/eval/{merge.family}/merged/{merge.subset_id}/{merge.merge_id}/{task}.json"

    @staticmethod
    def finetuned_eval_path(family: str, task: str) -> str:
        return f"results/eval/{family}/finetuned/{task}.json"

    def fisher_paths(self) -> list[str]:
        methods = self.fisher.get("methods", list(FISHER_METHODS))
        return [
            self.fisher_path(family, task, n, method)
            for family in self.families
            for task in self.family_tasks(family)
            for n in self.task_ns(task)
            for method in methods
        ]

    def eval_paths(self) -> list[str]:
        paths = [
            self.finetuned_eval_path(family, task)
            for family in self.families
            for task in self.family_tasks(family)
        ]
        for merge in self.merges():
            paths.extend(self.merged_eval_path(merge, task) for task in merge.subset)
        return paths

    def task_metrics(self) -> dict[str, str]:
        return {name: task["metric"] for name, task in self.tasks.items() if "metric" in task}


def visible_gpu_count() -> int:
    """GPUs that ``nvidia-smi -L`` lists here (0 without the tool); no torch import."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def write_if_changed(path: str | Path, lines: list[str]) -> bool:
    """Write one line per entry unless the file already holds exactly that.

    Keeps the file's mtime (and so Snakemake's view of it) stable across runs
    of an unchanged config.
    """
    path = Path(path)
    text = "".join(f"{line}\n" for line in lines)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def export_job_environment(package_root: str, python: str) -> None:
    """Let shell jobs find this package and, outside conda envs, this Python."""
    parts = [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(python), os.environ.get("PATH", "")])


def register(subparsers) -> None:
    parser = subparsers.add_parser("check-config", help="validate a workflow config file")
    parser.add_argument("config", help="config YAML file")
    parser.set_defaults(func=run)


def run(args) -> None:
    config = yaml.safe_load(Path(args.config).read_text())
    check_config(config, base_dir=os.getcwd(), config_files=[args.config])
    plan = Plan(config)
    print(
        f"config {args.config} is valid: {len(plan.families)} families, {len(plan.tasks)} tasks, "
        f"{len(plan.fisher_paths())} Fisher artifacts, {len(plan.merges())} merges, "
        f"{len(plan.eval_paths())} evaluations"
    )
