"""The rules that use a GPU: one list (``jobmemory.GPU_RULES``) that the rules call
``gpu_resources`` with and the SLURM profile gives a GPU to.  Static (no cluster, no
Snakemake run), so it runs everywhere, unlike tests/test_slurm.py."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from workflow_scripts.jobmemory import GPU_RULES

REPO = Path(__file__).resolve().parent.parent
RULE = re.compile(r"^(?:rule|checkpoint) (\w+):", re.M)
CALL = re.compile(r"gpu_resources\(\s*\"(\w+)\"")


def rule_blocks() -> dict[str, str]:
    """Each rule's text in rules/*.smk, by name."""
    blocks = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text()
        starts = list(RULE.finditer(text))
        for k, match in enumerate(starts):
            end = starts[k + 1].start() if k + 1 < len(starts) else len(text)
            blocks[match.group(1)] = text[match.start():end]
    return blocks


def test_every_rule_that_asks_for_a_gpu_is_listed_under_its_own_name():
    blocks = rule_blocks()
    calling = {name: CALL.findall(text) for name, text in blocks.items() if CALL.search(text)}
    for name, called in calling.items():
        assert called == [name], f"rule {name} calls gpu_resources({called}): give its own name"
    assert set(calling) == set(GPU_RULES), (sorted(calling), sorted(GPU_RULES))
    for name in blocks:  # a rule running a model outside the list would get no GPU anywhere
        if name not in GPU_RULES:
            assert "resources:" not in blocks[name] or "gpu" not in blocks[name], name


def test_the_slurm_profile_gives_every_gpu_rule_a_gpu():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    given = profile.get("set-resources") or {}
    missing = [rule for rule in GPU_RULES if int((given.get(rule) or {}).get("gpu", 0)) < 1]
    assert not missing, f"profiles/slurm/config.yaml gives no GPU to {missing}"
    for rule in GPU_RULES:
        assert int(given[rule].get("cpus_per_gpu", 0)) >= 1, rule
    extra = sorted(set(given) - set(GPU_RULES))
    assert not extra, f"the profile sets resources of rules that use no GPU: {extra}"
