"""Artifact kinds (Fisher, Gram): one registry that the merge's sources, checks, files, flags,
plan and rules read; messages name the kind; a file is verified and checksummed in one
pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workflow_scripts import artifactkinds, cli
from workflow_scripts.artifacts import save_fisher, verify_artifact
from workflow_scripts.errors import CorruptArtifactError, FisherValueError, MergeError
from workflow_scripts.io import sha256_file
from workflow_scripts.merging import registry
from workflow_scripts.merging.checks import check_request
from workflow_scripts.merging.sources import MergeSources
from workflow_scripts.paths import PATHS
from workflow_scripts.settings import MergeSettings


def test_every_method_artifact_has_one_kind_that_every_reader_knows():
    fields = {f.name for f in dataclasses.fields(MergeSources)}
    parser = cli.build_parser("merge")
    merge = parser._subparsers._group_actions[0].choices["merge"]
    flags = {opt for action in merge._actions for opt in action.option_strings}
    for method in registry.METHODS.values():
        if method.artifact is not None:
            assert artifactkinds.of_method(method.artifact) is not None, method.name
    for kind in artifactkinds.KINDS.values():
        assert kind.option in fields and kind.flag in flags
        assert kind.path_key in PATHS and kind.command in cli.COMMANDS
        assert all(artifactkinds.of_method(m) is kind for m in kind.methods)


@pytest.mark.parametrize("method", [m for m, s in registry.METHODS.items() if s.artifact])
def test_the_request_names_the_kind_and_its_flag(method):
    kind = artifactkinds.of_method(registry.METHODS[method].artifact)
    settings = MergeSettings(method=method)
    with pytest.raises(MergeError, match=f"needs one {kind.file} per model.*{kind.flag} "
                                         f"\\(the {kind.command} command\\)"):
        check_request(settings, 2, 1, True, kind.flag)
    other = next(k for k in artifactkinds.KINDS.values() if k is not kind)
    with pytest.raises(MergeError, match=f"takes {kind.flag}, not {other.flag}"):
        check_request(settings, 2, 2, True, other.flag)


def test_two_kinds_given_together_are_refused():
    with pytest.raises(MergeError, match="--fishers and --grams given together"):
        MergeSources(["a", "b"], fishers=["f1", "f2"], grams=["g1", "g2"])
    with pytest.raises(MergeError, match="takes no --fishers or --grams"):
        check_request(MergeSettings(method="average"), 2, 2, False)


@pytest.mark.parametrize("name", list(artifactkinds.KINDS))
def test_verify_reads_once_and_gives_the_files_sha256(tmp_path, name):
    kind = artifactkinds.KINDS[name]
    tensors = {"b": torch.rand(3, 4) + 0.1, "a": torch.rand(5) + 0.1}
    path = tmp_path / f"{name}.safetensors"
    save_fisher(tensors, {"method": kind.methods[0]}, path)
    metadata, sha256 = verify_artifact(path, kind)
    assert metadata == {"method": kind.methods[0]} and sha256 == sha256_file(path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # a value edited after writing
    path.write_bytes(bytes(raw))
    message = f"{kind.noun} artifact .* corrupt \\(checksum mismatch"
    with pytest.raises(CorruptArtifactError, match=message):
        verify_artifact(path, kind)


def test_values_are_checked_as_the_kind_says(tmp_path):
    negative = {"w": -torch.ones(2, 2)}
    path = tmp_path / "negative.safetensors"
    save_fisher(negative, {"method": "gram"}, path, check=lambda t: None)
    verify_artifact(path, "gram")  # a Gram may be negative
    with pytest.raises(FisherValueError, match="Fisher file .* negative values"):
        verify_artifact(path, "fisher")
