"""``pip install .`` gives ``fisher-merge``: the same entry point as ``python -m workflow_scripts``."""

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

from workflow_scripts import cli

ROOT = Path(__file__).resolve().parent.parent


def test_console_script_is_the_cli_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts[cli.SCRIPT].partition(":")
    assert getattr(importlib.import_module(module), attr) is cli.main
    main_module = (ROOT / "workflow_scripts" / "__main__.py").read_text()
    assert "from .cli import main" in main_module and "main()" in main_module


def help_text(argv0: str | None, *args: str) -> str:
    """``--help`` as printed by ``python -m workflow_scripts`` (argv0 None) or by the
    console script (its wrapper calls cli.main with sys.argv[0] = the script's path)."""
    if argv0 is None:
        cmd = [sys.executable, "-m", "workflow_scripts", *args, "--help"]
    else:
        cmd = [sys.executable, "-c", "import sys; sys.argv[0] = sys.argv.pop(1); "
               "from workflow_scripts.cli import main; raise SystemExit(main())", argv0, *args,
               "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def body(help_text: str) -> str:
    """The help after its usage lines (which wrap by the program name's length)."""
    return help_text.split("\n\n", 1)[1]


def test_fisher_merge_help_equals_python_m():
    module_help = help_text(None)
    script_help = help_text("/venv/bin/fisher-merge")
    assert module_help.startswith("usage: python -m workflow_scripts")
    assert script_help.startswith("usage: fisher-merge")
    assert body(script_help) == body(module_help)
    for command in cli.COMMANDS:
        assert command in script_help
    merge_help = help_text("/venv/bin/fisher-merge", "merge")
    assert merge_help.startswith("usage: fisher-merge merge")
    assert body(merge_help) == body(help_text(None, "merge"))
