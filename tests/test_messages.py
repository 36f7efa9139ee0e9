"""Messages that the command line and the workflow share name both the flag and the config
key (one helper, errors.set_by); help texts say what a command serves."""

from __future__ import annotations

import pytest

from workflow_scripts import cli, objectives
from workflow_scripts.errors import ModelLoadError, set_by
from workflow_scripts.models import load_model
from workflow_scripts.testing import make_tiny_checkpoint


def test_set_by_names_the_flag_and_the_config_key():
    assert set_by("--objective", "families.NAME.objective", "causal-lm") == (
        "--objective causal-lm (config: families.NAME.objective: causal-lm)")
    assert set_by("--allow-pickle", "families.NAME.allow_pickle", True) == (
        "--allow-pickle (config: families.NAME.allow_pickle: true)")
    assert set_by("--base", "families.NAME.base") == "--base (config: families.NAME.base)"


def test_a_checkpoint_of_another_objective_names_the_flag_and_the_key(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "clf", "bert", 2)
    with pytest.raises(ModelLoadError, match=r"give --objective classification \(config: "
                                             r"families\.NAME\.objective: classification\)"):
        load_model(str(path), objective=objectives.CAUSAL_LM)


def test_pickle_weights_refusal_names_the_flag_and_the_key(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "clf", "bert", 2)
    for weights in path.glob("*.safetensors"):
        weights.unlink()
    (path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"--allow-pickle \(config: "
                                             r"families\.NAME\.allow_pickle: true\)"):
        load_model(str(path))


@pytest.mark.parametrize("command", ["evaluate", "fisher", "gram", "finetune", "merge"])
def test_a_commands_description_names_every_objective_it_serves(command):
    """The description (not only --objective's help) comes from the objectives' registry."""
    parser = cli.build_parser(command)
    sub = parser._subparsers._group_actions[0]
    description = " ".join(sub.choices[command].description.split())
    summary = next(a.help for a in sub._choices_actions if a.dest == command)
    for entry in objectives.OBJECTIVES.values():
        assert entry.description in description, (command, entry.name)
    assert "{" not in description and "sequence-classification checkpoint" not in description
    if command in ("evaluate", "finetune"):
        assert all(name in summary for name in objectives.OBJECTIVES), summary
