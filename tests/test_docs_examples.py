"""The extension examples of docs/development.md run as written: the merge method's module
and its registry entry are taken from the page, registered, and merged with."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

from workflow_scripts import architectures as arch
from workflow_scripts.merging import registry
from workflow_scripts.merging.files import merge_models
from workflow_scripts.merging.merge import merge_loaded
from workflow_scripts.models import load_model
from workflow_scripts.testing import make_tiny_checkpoint

PAGE = Path(__file__).resolve().parent.parent / "docs" / "development.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def python_blocks() -> list[str]:
    return BLOCK.findall(PAGE.read_text())


def method_example() -> tuple[str, str, str]:
    """(module name, module source, registry entry source) of the page's merge method."""
    module = [b for b in python_blocks() if b.startswith("# workflow_scripts/merging/")]
    entry = [b for b in python_blocks() if b.lstrip().startswith("MergeMethod(")]
    assert len(module) == 1 and len(entry) == 1, "the page shows one method module and entry"
    name = re.match(r"# workflow_scripts/merging/(\w+)\.py", module[0]).group(1)
    return name, module[0], entry[0]


@pytest.fixture
def documented_method(monkeypatch):
    """The page's method, registered as its module and its ``METHODS`` entry."""
    name, source, entry = method_example()
    qualified = f"workflow_scripts.merging.{name}"
    module = types.ModuleType(qualified)
    module.__package__ = "workflow_scripts.merging"
    exec(compile(source, f"docs/development.md ({name}.py)", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, qualified, module)
    spec = eval(entry.strip().rstrip(","), {"MergeMethod": registry.MergeMethod})
    assert spec.module == name
    monkeypatch.setitem(registry.METHODS, spec.name, spec)
    return spec


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs-family")
    base = make_tiny_checkpoint(root / "base", "bert", 2, seed=0)
    tuned = [make_tiny_checkpoint(root / f"task{j}", "bert", 2 + j % 2, seed=j) for j in (1, 2, 3)]
    return base, tuned


def expected_body(base, tuned):
    """The documented rule by hand: base + the task vector of largest magnitude."""
    states = [arch.body_state(load_model(str(p))[0]) for p in tuned]
    ref = arch.body_state(load_model(str(base))[0])
    out = {}
    for name, value in ref.items():
        if not value.is_floating_point():
            continue
        taus = torch.stack([s[name].double() - value.double() for s in states])
        pick = taus.abs().argmax(dim=0, keepdim=True)
        out[name] = (value.double() + taus.gather(0, pick)[0]).to(value.dtype)
    return out


def test_the_documented_merge_method_registers_and_merges(documented_method, family):
    base, tuned = family
    models = [load_model(str(p))[0] for p in tuned]
    merge_loaded(models, documented_method.name, base=load_model(str(base))[0])
    expected = expected_body(base, tuned)
    merged = arch.body_state(models[0])
    for name, value in expected.items():
        torch.testing.assert_close(merged[name], value, rtol=0, atol=1e-6)


def test_the_documented_merge_method_streams_from_files(documented_method, family, tmp_path):
    base, tuned = family
    out = merge_models([str(p) for p in tuned], tmp_path / "merged", documented_method.name,
                       base=str(base))
    expected = expected_body(base, tuned)
    merged = arch.body_state(load_model(str(out[1]))[0])
    for name, value in expected.items():
        torch.testing.assert_close(merged[name], value, rtol=0, atol=1e-6)
