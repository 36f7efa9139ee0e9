"""The workflow config: schema validation, defaults and the checks a schema cannot express.

Validated once, defaults filled once (:func:`check_config`); everything after
reads the filled config directly.  The schema's enums come from the registries
that own them (:func:`load_schema`).  Light on purpose: Snakemake runs this
while it parses the workflow, so nothing here imports torch.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path

import yaml

from . import architectures, objectives, taskkinds
from .config_objectives import check_objectives, task_objectives
from .devices import DEVICES
from .errors import ConfigError, UserError
from .configpaths import resolve_path
from .fetch import classify
from .fisher import kinds as fisher_kinds
from .gguffiles import sources as gguf_sources
from .merging.registry import DARE_COMBINES, METHODS as MERGE_METHODS, TIES_SCOPES
from .merging.schemes import SCHEME_NAMES
from .metrics import METRICS, computed
from .settings import CONFIG_SECTIONS, MergeSettings, schema_properties
from .settings.core import value_schema
from .tasks.files import QUOTINGS
from .tasks.holdout import too_small
from .tasks.local import COLUMN_KEYS
from .tasks.registry import SOURCE_NAMES, SOURCES, TASK_NAMES, task_metric

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=None)
def _schema(path: str) -> dict:
    schema = yaml.safe_load(Path(path).read_text())
    defs = schema.setdefault("$defs", {})
    enums = {
        "task_source": SOURCE_NAMES,
        "task_name": TASK_NAMES,
        "merge_method": tuple(MERGE_METHODS),
        "mask_scheme": SCHEME_NAMES,
        "ties_scope": TIES_SCOPES,
        "dare_combine": DARE_COMBINES,
        "fisher_method": fisher_kinds.METHODS,
        "estimator": fisher_kinds.ESTIMATORS,
        "neuron_mask": fisher_kinds.NEURON_MASKS,
        "label_mode": fisher_kinds.LABEL_MODES,
        "device": DEVICES,
        "objective": objectives.NAMES,
        "quoting": QUOTINGS,
        "metric": METRICS,
    }
    for key, values in enums.items():
        defs.setdefault(key, {})["enum"] = list(values)
    _fill_settings(schema["properties"])
    defs.setdefault("column_map", {}).update(
        type="object",
        additionalProperties=False,
        # a column name, or a 0-based column index for files without a header row; the
        # keys a task needs (text_a and label; a causal-LM task's text, or prompt and
        # response) are checked by the local source
        properties={key: {"type": ["string", "integer"], "minimum": 0} for key in COLUMN_KEYS},
    )
    return schema


def _fill_settings(sections: dict) -> None:
    """Each config section's command settings from their settings objects
    (:mod:`workflow_scripts.settings`), and one lambda list per registry method that takes
    lambda; a key the schema file states itself as well is a bug (two owners)."""
    lam = MergeSettings.entry("lam")
    generated = {
        name: schema_properties(classes, name) for name, classes in CONFIG_SECTIONS.items()
    }
    generated["merge"].update({
        f"{m.name.replace('-', '_')}_lambda": {
            "description": f"lambda values of {m.name} (each its own merge id)"
                           + ("; also DARE's when dare_combine is " + m.name),
            "type": "array", "items": value_schema(lam), "minItems": 1, "uniqueItems": True,
            "default": [m.default_lambda],
        }
        for m in MERGE_METHODS.values() if m.takes_lambda and m.default_lambda is not None
    })
    targets = dict(sections)
    targets["task"] = sections["tasks"]["additionalProperties"]
    for name, props in generated.items():
        own = targets[name].setdefault("properties", {})
        twice = sorted(set(own) & set(props))
        if twice:
            raise RuntimeError(f"schema section {name}: {', '.join(twice)} stated in "
                               f"{SCHEMA.name} and by the settings objects")
        own.update(props)


def load_schema(path: str | Path = SCHEMA) -> dict:
    """The config schema with its ``$defs`` enums filled from the registries."""
    return copy.deepcopy(_schema(str(path)))


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate_schema(config: dict, schema: dict | None = None) -> None:
    """JSON-schema validation with a message naming the offending entry."""
    import jsonschema

    schema = schema or _schema(str(SCHEMA))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            hint = " (unknown key: check its spelling)" if err.validator == "additionalProperties" else ""
            lines.append(f"config entry {_where(err.absolute_path)}: {err.message}{hint}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))


def fill_defaults(config: dict, schema: dict | None = None) -> dict:
    """Set every schema default that the config leaves out (recursively)."""
    if schema is None:
        schema = _schema(str(SCHEMA))
    for key, sub in schema.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if isinstance(config.get(key), dict) and sub.get("type") == "object":
            fill_defaults(config[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("type") == "object":
        for key, value in config.items():
            if key not in schema.get("properties", {}) and isinstance(value, dict):
                fill_defaults(value, extra)
    return config


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


def classify_source(source: str, base_dir: str | Path = ".") -> str:
    """'local', 'package', 'gguf' or 'hub' (:func:`workflow_scripts.fetch.classify`), as a
    ConfigError."""
    try:
        return classify(source, base_dir)
    except ConfigError:
        raise
    except UserError as exc:
        raise ConfigError(str(exc)) from None


def _local_config(path: Path) -> dict | None:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def check_architecture(path: Path, where: str) -> None:
    """A local checkpoint whose config.json names an unsupported ``model_type`` is refused."""
    model_type = (_local_config(path) or {}).get("model_type")
    if model_type is not None and model_type not in architectures.SPECS:
        raise ConfigError(
            f"{where}: {path} is a {model_type!r} model; supported model types are "
            f"{', '.join(architectures.SUPPORTED)}"
        )


def checkpoint_label_count(path: Path) -> int | None:
    """``num_labels`` of a local checkpoint directory, from its config.json."""
    cfg = _local_config(path)
    if cfg is None:
        return None
    if isinstance(cfg.get("id2label"), dict) and cfg["id2label"]:
        return len(cfg["id2label"])
    return cfg.get("num_labels")


def _check_tasks(tasks: dict, base_dir: Path, kinds: dict[str, str]) -> None:
    for name, spec in tasks.items():
        if not NAME.match(name):
            raise ConfigError(f"tasks.{name}: task names may hold letters, digits, '_' and '-' only")
        SOURCES[spec["source"]].check_config(name, spec, base_dir, kinds.get(name))


def _check_families(config: dict, base_dir: Path) -> None:
    tasks = config["tasks"]
    for family, spec in config["families"].items():
        where = f"families.{family}"
        if not NAME.match(family):
            raise ConfigError(f"{where}: family names may hold letters, digits, '_' and '-' only")
        if "base" in spec:
            _check_model_source(spec["base"], base_dir, f"{where}.base")
        else:
            needing = [m for m in config["merge"]["methods"] if MERGE_METHODS[m].needs_base]
            if needing:
                raise ConfigError(
                    f"{where}: merge method(s) {', '.join(needing)} work on task vectors and "
                    f"need family {family!r}'s 'base' (the pre-trained model its checkpoints "
                    "were fine-tuned from); set families." + family + ".base or drop them "
                    "from merge.methods"
                )
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
                kind = _check_model_source(ckpt["source"], base_dir, f"{cwhere}.source")
                if kind == "local":
                    have = checkpoint_label_count(resolve_path(ckpt["source"], base_dir))
                    need = SOURCES[tasks[task]["source"]].label_count(task, tasks[task])
                    if have is not None and need is not None and have != need:
                        raise ConfigError(
                            f"{cwhere}.source: checkpoint {ckpt['source']!r} has {have} labels "
                            f"but task {task!r} has {need}; point it at a checkpoint fine-tuned "
                            "on this task (or fix the task's label_names)"
                        )
            label_map = ckpt.get("label_map")
            if label_map is not None and sorted(label_map) != list(range(len(label_map))):
                raise ConfigError(
                    f"{cwhere}.label_map: {label_map} must be a permutation of 0..{len(label_map) - 1}"
                )
        gguf_sources.warn_mixed_quantisation(family, spec, base_dir)
        for size in config["merge"]["subset_sizes"]:
            if size > len(spec["checkpoints"]):
                raise ConfigError(
                    f"merge.subset_sizes: {size} exceeds the {len(spec['checkpoints'])} "
                    f"checkpoints of family {family!r}"
                )


def _check_metrics(config: dict, kinds: dict[str, str]) -> None:
    """Each classification task's metric (:func:`task_metric`) is one its evaluations record
    (a task kind with a metric of its own, a causal LM's text task's token loss, is scored
    by that)."""
    default = config["report"].get("default_metric")
    for name, spec in config["tasks"].items():
        if taskkinds.of_objective(kinds.get(name, objectives.DEFAULT)).metric is not None:
            continue
        metric = task_metric(name, spec, default)
        labels = SOURCES[spec["source"]].label_count(name, spec)
        if metric not in computed(name, labels):
            where = f"tasks.{name}.metric" if "metric" in spec else (
                "report.default_metric" if default else f"tasks.{name}")
            raise ConfigError(
                f"{where}: task {name!r} is scored by {metric}, which its evaluations do not "
                f"record (they record {', '.join(computed(name, labels))}: matthews for a task "
                "named cola, f1 with two labels, macro_f1 with more); choose one of those")


def _check_selection(config: dict, base_dir: Path) -> None:
    """Held-out selection's keys need ``holdout_fraction``; with it, every task's (capped)
    training split must be large enough for the held-out split (where it can be counted)."""
    selection = config["selection"]
    fraction = selection.get("holdout_fraction")
    if fraction is None:
        given = [k for k in ("max_holdout", "seed") if k in selection]
        if given:
            raise ConfigError(f"selection.{given[0]}: held-out selection is off without "
                              "selection.holdout_fraction; set it or remove this key")
        return
    for name, spec in config["tasks"].items():
        rows = SOURCES[spec["source"]].train_rows(name, spec, base_dir)
        if rows is None:
            continue  # prepare-task checks it on the rows it reads
        if spec.get("max_train") is not None:
            rows = min(rows, spec["max_train"])
        problem = too_small(rows, fraction, selection.get("max_holdout"))
        if problem:
            raise ConfigError(
                f"tasks.{name}: its training split is too small for held-out selection "
                f"(selection.holdout_fraction {fraction:g}): {problem}; raise its max_train or "
                "the holdout_fraction, or leave the task out")


def _one_seed_shorthand(config: dict, section: str) -> None:
    """``SECTION.seed: S`` is ``SECTION.seeds: [S]``; both at once must agree."""
    settings = config.get(section)
    if not isinstance(settings, dict) or "seed" not in settings:
        return
    seed = settings.pop("seed")
    if "seeds" in settings and settings["seeds"] != [seed]:
        raise ConfigError(
            f"{section}.seed ({seed}) and {section}.seeds ({settings['seeds']}) disagree; "
            f"give only {section}.seeds"
        )
    settings["seeds"] = [seed]


def _check_model_source(source: str, base_dir: Path, where: str) -> str:
    """The kind of a model source (:func:`classify_source`); a local one must hold a
    supported architecture.  Errors name ``where``."""
    try:
        kind = classify_source(source, base_dir)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if kind == "local":
        check_architecture(resolve_path(source, base_dir), where)
    elif kind == "gguf":
        gguf_sources.check_source(source, base_dir, where)
    return kind


def check_config(config: dict, base_dir: str | Path = ".", config_files=()) -> dict:
    """Validate ``config`` against the schema, fill its defaults (in place), check the rest.

    Raises :class:`ConfigError` naming the entry; returns the filled config.
    """
    for config_file in config_files:
        dups = find_duplicate_keys(config_file)
        if dups:
            raise ConfigError(
                f"config file {config_file} repeats key(s) {', '.join(dups)}; each task, "
                "family and setting may appear once"
            )
    validate_schema(config)
    for section in ("fisher", "finetune"):
        _one_seed_shorthand(config, section)
    fill_defaults(config)
    base_dir = Path(base_dir)
    for method in config["merge"]["methods"]:
        needs = MERGE_METHODS[method].fisher
        if needs is not None and needs not in config["fisher"]["methods"]:
            raise ConfigError(
                f"merge.methods: {method!r} needs the {needs!r} Fisher; add it to fisher.methods"
            )
    kinds = task_objectives(config)
    _check_tasks(config["tasks"], base_dir, kinds)
    _check_families(config, base_dir)
    check_objectives(config, base_dir)
    _check_metrics(config, kinds)
    _check_selection(config, base_dir)
    return config
