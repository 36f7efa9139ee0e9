"""One settings object per command: the CLI, the library, the config schema and the job
flags read it, and agree with it key by key."""

from __future__ import annotations

import copy
import random
import shlex

import pytest
import yaml

from workflow_scripts import cli
from workflow_scripts.config import check_config, load_schema
from workflow_scripts.errors import ConfigError
from workflow_scripts.plan import Plan
from workflow_scripts.settings import (
    CONFIG_SECTIONS, EvaluateSettings, FinetuneSettings, FisherSettings, GramSettings,
    MergeSettings, PrepareSettings, SettingError,
)
from workflow_scripts.settings.core import value_schema

# command -> (its settings, the arguments it needs besides them)
COMMANDS = {
    "fisher": (FisherSettings, ["--model", "m", "--data", "d", "--out", "o"]),
    "gram": (GramSettings, ["--model", "m", "--data", "d", "--out", "o"]),
    "merge": (MergeSettings, ["--models", "a", "b", "--out", "o"]),
    "evaluate": (EvaluateSettings, ["--model", "m", "--data", "d", "--task", "t", "--out", "o"]),
    "finetune": (FinetuneSettings, ["--base", "b", "--train", "t", "--info", "i", "--out", "o"]),
    "prepare-task": (PrepareSettings, ["--out-train", "a", "--out-validation", "b",
                                       "--out-info", "c"]),
}
REQUIRED = {"method": "mask", "source": "builtin"}  # values for the required settings
RANGE_KEYS = {"minimum": "minimum", "maximum": "maximum",
              "exclusive_minimum": "exclusiveMinimum", "exclusive_maximum": "exclusiveMaximum"}


def section_properties(schema: dict, section: str) -> dict:
    if section == "task":
        return schema["properties"]["tasks"]["additionalProperties"]["properties"]
    return schema["properties"][section]["properties"]


@pytest.mark.parametrize("section", sorted(CONFIG_SECTIONS))
def test_the_schema_section_agrees_with_the_settings_key_by_key(section):
    props = section_properties(load_schema(), section)
    checked = 0
    for cls in CONFIG_SECTIONS[section]:
        for entry in cls.entries():
            if not entry.spec.config or entry.section != section:
                continue
            prop = props[entry.key]
            assert prop.get("default") == entry.default, (section, entry.key)
            for key, json_key in RANGE_KEYS.items():
                assert prop.get(json_key) == getattr(entry.spec, key), (section, entry.key, key)
            if entry.spec.choices is not None and not entry.spec.mapping:
                assert prop["enum"] == list(entry.spec.choices), (section, entry.key)
            checked += 1
    assert checked >= 1


def test_the_schema_file_states_no_setting_itself(tmp_path):
    """A setting is in the schema because its settings object has it: a copy in the file
    (two owners) is refused when the schema loads."""
    from workflow_scripts import config as config_module

    text = config_module.SCHEMA.read_text()
    in_file = yaml.safe_load(text)
    for section, classes in CONFIG_SECTIONS.items():
        stated = set(section_properties(in_file, section) or {})
        keys = {e.key for cls in classes for e in cls.entries() if e.spec.config}
        assert not stated & keys, (section, stated & keys)
    doubled = yaml.safe_load(text)
    doubled["properties"]["fisher"]["properties"]["batch_size"] = {"type": "integer"}
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(doubled))
    with pytest.raises(RuntimeError, match="batch_size stated in"):
        config_module._schema(str(path))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_of_a_command_is_its_setting_with_its_default(command):
    cls, argv = COMMANDS[command]
    required = [w for e in cls.entries() if e.spec.required
                for w in (e.spec.flag_name(e.name), REQUIRED[e.name])]
    args = vars(cli.build_parser(command).parse_args([command, *argv, *required]))
    for entry in cls.entries():
        if not entry.spec.required:
            assert args[entry.name] == entry.default, (command, entry.name)
    built = cls.from_args(cli.build_parser(command).parse_args([command, *argv, *required]))
    assert built == cls(**{k: v for k, v in REQUIRED.items() if k in cls.__dataclass_fields__})


def _outside(entry):
    """A value just outside the setting's range, or None."""
    spec = entry.spec
    if spec.minimum is not None:
        return spec.minimum - (1 if spec.type is int else 0.5)
    if spec.exclusive_minimum is not None:
        return spec.exclusive_minimum
    if spec.maximum is not None:
        return spec.maximum + 1
    return None


RANGED = [(cls, e) for classes in CONFIG_SECTIONS.values() for cls in classes
          for e in cls.entries() if _outside(e) is not None]


@pytest.mark.parametrize("cls, entry", RANGED, ids=[f"{c.__name__}.{e.name}" for c, e in RANGED])
def test_a_value_out_of_range_is_refused_by_the_library_the_cli_and_the_config(cls, entry):
    bad = _outside(entry)
    required = {k: v for k, v in REQUIRED.items() if k in cls.__dataclass_fields__}
    with pytest.raises(SettingError, match=entry.name):
        cls(**required, **{entry.name: bad})
    command = next(name for name, (c, _) in COMMANDS.items() if c is cls)
    if entry.spec.config and entry.section is not None:
        prop = value_schema(entry)
        import jsonschema

        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, prop)
    argv = [*COMMANDS[command][1]] + [w for k, v in required.items()
                                      for w in (cls.entry(k).spec.flag_name(k), v)]
    with pytest.raises(SystemExit):  # argparse's usage error
        cli.build_parser(command).parse_args([command, *argv, entry.spec.flag_name(entry.name),
                                              str(bad)])


@pytest.fixture
def config(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    return {
        "tasks": {
            "a": {"source": "builtin", "name": "sentiment", "max_train": 100},
            "b": {"source": "glue", "name": "mrpc", "max_validation": 50},
        },
        "families": {"fam": {"base": str(base),
                             "checkpoints": {"a": {"finetune": True}, "b": {"finetune": True}}}},
        "fisher": {"n": [8], "batch_size": 4, "labels": "expected", "max_length": 32},
        "merge": {"methods": ["average", "fisher", "mask", "task-arithmetic", "ties", "dare",
                              "regmean"], "ties_k": 30, "dare_p": 0.5, "floor": 1e-6},
        "finetune": {"epochs": 2, "lr": 1e-3, "max_steps": 10},
        "evaluation": {"batch_size": 16},
        "compute": {"device": "cpu"},
    }


def every_command_line(config) -> list[str]:
    plan = Plan(config)
    lines = [plan.prepare_task_flags(t) for t in plan.tasks]
    lines += [plan.fisher_flags(8, m) for m in ("mask", "full")] + [plan.gram_flags()]
    lines += [plan.finetune_flags("fam", "ft0"), plan.evaluate_flags(), plan.report_flags(True)]
    lines += [plan.merge_flags(m) + " " + plan.merged_eval_flags(m) for m in plan.merges()]
    return lines


def shuffled(value, rng):
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: shuffled(value[k], rng) for k in keys}
    return value


def test_the_same_config_in_any_key_order_gives_the_same_command_lines(config, tmp_path):
    reference = every_command_line(check_config(copy.deepcopy(config), base_dir=tmp_path))
    assert len(reference) > 10
    for seed in range(3):
        other = shuffled(copy.deepcopy(config), random.Random(seed))
        assert every_command_line(check_config(other, base_dir=tmp_path)) == reference
    dumped = yaml.safe_load(yaml.safe_dump(config, sort_keys=True))  # a YAML dumper's copy
    assert every_command_line(check_config(dumped, base_dir=tmp_path)) == reference
    # a number written as an integer or a float is the same setting
    as_floats = copy.deepcopy(config)
    as_floats["finetune"]["epochs"] = 2.0
    as_floats["merge"]["ties_k"] = 30.0
    assert every_command_line(check_config(as_floats, base_dir=tmp_path)) == reference


def test_a_job_gets_only_the_settings_its_result_depends_on(config, tmp_path):
    check_config(config, base_dir=tmp_path)
    plan = Plan(config)
    mask, full = plan.fisher_flags(8, "mask"), plan.fisher_flags(8, "full")
    assert "--labels expected" in full and "--labels empirical" in mask  # no expected form
    assert "--estimator per-example" in mask and "--estimator" not in full
    merges = {m.merge_id: plan.merge_flags(m) for m in plan.merges()}
    assert "--ties-k 30.0" in merges["ties-lam1"]
    assert "--ties-k" not in merges["average"] and "--floor" not in merges["average"]
    assert "--floor 1e-06" in merges["mask-n8-seed0"] and "--dare-p" not in merges["mask-n8-seed0"]
    assert "--dare-p 0.5" in merges["dare-lam0.3"]
    # changing a setting a job does not read leaves its command line alone
    before = every_command_line(config)
    config["merge"]["regmean_alpha"] = 0.5
    after = every_command_line(config)
    changed = [b for b, a in zip(before, after) if a != b]
    assert changed and all("--method regmean" in line for line in changed)


def test_job_flags_parse_back_to_the_same_settings(config, tmp_path):
    """What the plan writes on a command line is what the command reads."""
    check_config(config, base_dir=tmp_path)
    plan = Plan(config)
    args = cli.build_parser("finetune").parse_args(
        ["finetune", *COMMANDS["finetune"][1], *shlex.split(plan.finetune_flags("fam", "ft0"))])
    assert FinetuneSettings.from_args(args) == FinetuneSettings.from_config(config, seed=0)
    args = cli.build_parser("prepare-task").parse_args(
        ["prepare-task", *COMMANDS["prepare-task"][1], *shlex.split(plan.prepare_task_flags("a"))])
    assert PrepareSettings.from_args(args) == PrepareSettings(
        source="builtin", task="sentiment", max_train=100)


def test_a_config_value_out_of_range_names_the_entry(config, tmp_path):
    config["finetune"]["warmup_ratio"] = 1.0
    with pytest.raises(ConfigError, match=r"finetune\.warmup_ratio"):
        check_config(config, base_dir=tmp_path)


def test_settings_errors_name_the_setting_and_its_flag():
    with pytest.raises(SettingError, match=r"setting ties_k \(--ties-k\) must be > 0 and <= 100"):
        MergeSettings(method="ties", ties_k=0)
    with pytest.raises(SettingError, match=r"--estimator applies to --method mask only"):
        FisherSettings(method="full", estimator="per-batch")
    with pytest.raises(SettingError, match=r"method \(--method\) is required"):
        MergeSettings()
    with pytest.raises(SettingError, match="must be an integer"):
        EvaluateSettings(batch_size=2.5)
    assert MergeSettings(method="dare").option("lam") == 0.3
    assert MergeSettings(method="dare", dare_combine="ties").option("lam") == 1.0


def test_the_settings_reference_is_rendered_from_the_settings():
    from workflow_scripts.settings import reference

    assert reference.DOC.read_text() == reference.render(), (
        "docs/settings.md is stale: python -m workflow_scripts.settings.reference --write")
    for _, cls in reference.COMMANDS:
        for entry in cls.entries():
            assert f"`{entry.spec.flag_name(entry.name)}`" in reference.render()
