"""One owner for file names: every log, report and figure name comes from
``workflow_scripts.paths``; help texts list exactly its outputs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workflow_scripts import cli, paths
from workflow_scripts.cli import plots as plots_cli
from workflow_scripts.cli import report as report_cli
from workflow_scripts.reporting import plots as plots_module

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "rules").glob("*.smk")) + [ROOT / "Snakefile"]
PACKAGE = ROOT / "workflow_scripts"


def _rules() -> dict[str, list[str]]:
    """rule name -> the lines of its body, from the rule files' text."""
    rules: dict[str, list[str]] = {}
    name = None
    for file in RULE_FILES:
        for line in file.read_text().splitlines():
            match = re.match(r"(?:rule|checkpoint) (\w+):", line)
            if match:
                name = match.group(1)
                rules[name] = []
            elif name and (line.startswith(" ") or not line.strip()):
                rules[name].append(line)
            else:
                name = None
    return rules


def _directive(body: list[str], key: str) -> list[str]:
    """The entries of one directive (``log:``) of a rule body."""
    out, inside = [], False
    for line in body:
        if re.match(r"    \w+:", line):
            inside = line.strip() == f"{key}:"
        elif inside and line.strip():
            out.append(line.strip())
    return out


def test_every_rule_logs_to_its_logs_entry():
    rules = _rules()
    assert {"fisher", "merge", "report", "plots", "all"} <= set(rules)
    logged = {name for name, body in rules.items() if _directive(body, "log")}
    assert logged == set(paths.LOGS) == set(rules) - {"all"}
    for name in logged:
        assert _directive(rules[name], "log") == [f'LOGS["{name}"],'], name
    for file in RULE_FILES:  # no literal log path anywhere in the rules
        text = file.read_text()
        assert '"logs/' not in text and "'logs/" not in text, file.name


def test_log_templates_are_distinct_and_under_logs():
    assert len(set(paths.LOGS.values())) == len(paths.LOGS)
    for template in paths.LOGS.values():
        assert template.startswith("logs/") and template.endswith(".log")
        assert template.split("/")[0] in paths.OUTPUT_ROOTS


def _name_pattern(template: str) -> re.Pattern:
    """A file name template as a regex: ``{family}`` matches whatever spells the family
    (``{family}``, ``{family_slug(family)}``, ``*``)."""
    parts = [re.escape(p) for p in template.split("{family}")]
    return re.compile(r"[^\s\"'`]*".join(parts))


def _names() -> list[str]:
    tables = [paths.table_file(t, fmt) for t in paths.REPORT_TABLES for fmt in paths.TABLE_FORMATS]
    return tables + list(paths.REPORT_FILES.values()) + list(paths.PLOT_FILES.values())


def test_no_report_or_plot_file_name_outside_paths():
    """The rules, the reporting package and the CLI read the names; none spells one."""
    files = RULE_FILES + [f for f in PACKAGE.rglob("*.py") if f != PACKAGE / "paths.py"]
    patterns = [_name_pattern(name) for name in _names()]
    found = []
    for file in files:
        text = file.read_text()
        found += [f"{file.relative_to(ROOT)}: {p.pattern}" for p in patterns if p.search(text)]
    assert not found
    assert "REPORT_TABLES =" not in (ROOT / "rules" / "common.smk").read_text()


def test_file_names_are_distinct_and_families_are_slugged():
    names = _names()
    assert len(set(names)) == len(names)
    assert paths.plot_file("paired", "fam-a") == "paired_fam-a.png"
    assert paths.plot_file("layers", "a b/c") == "mask_fisher_layers_a_b_c.png"
    assert paths.family_slug("bert-base_1.0") == "bert-base_1.0"
    with pytest.raises(ValueError, match="takes a family"):
        paths.plot_file("paired")
    with pytest.raises(ValueError, match="takes no family"):
        paths.plot_file("scores", "fam-a")
    with pytest.raises(KeyError):
        paths.table_file("summary", "md")


def _help(command: str) -> str:
    return cli.build_parser(command)._subparsers._group_actions[0].choices[command].format_help()


def test_report_help_lists_exactly_the_reports_files():
    text = _help("report")
    outputs = text.split("Outputs (under ``--out-dir``)")[1].split("options:")[0]
    listed = re.findall(r"^- ``([^`]+)``$", outputs, flags=re.M)
    assert listed == paths.report_listing()
    assert "paired_comparisons.{csv,md}" in listed and "seed_spread.md" in listed
    assert "table1.html" in listed
    assert report_cli.__doc__.count("``summary.md``") == 1


def test_plots_help_and_docstring_list_exactly_the_figures():
    assert set(plots_cli.FIGURES) == set(paths.PLOT_FILES)
    text = _help("plots")
    listed = re.findall(r"^- ``([^`]+)``:", text, flags=re.M)
    assert listed == list(paths.PLOT_FILES.values())
    module = re.findall(r"^- ``([^`]+)``$", plots_module.__doc__, flags=re.M)
    assert module == list(paths.PLOT_FILES.values())
    assert paths.plot_file("heatmap") in text
