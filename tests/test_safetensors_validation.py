"""A checkpoint is read only inside itself, and only if valid (issue #23): our safetensors
reader (kept, as it bounds memory) refuses every file the safetensors library refuses, and
a checkpoint folder whose index leads out of it, whose shards disagree with the index or
with each other, or that holds both layouts."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workflow_scripts.errors import ModelLoadError
from workflow_scripts.merging.files import merge_models
from workflow_scripts.tensorfiles import INDEX, WEIGHTS, Checkpoint, read_header


def st_file(header, data: bytes, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def f32(name, shape, begin, end):
    return {name: {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}}


DAMAGED = {
    "overlapping offsets": st_file({**f32("a", [2], 0, 8), **f32("b", [2], 4, 12)}, bytes(12)),
    "a gap between tensors": st_file({**f32("a", [1], 0, 4), **f32("b", [1], 8, 12)}, bytes(12)),
    "data not starting at 0": st_file(f32("a", [1], 4, 8), bytes(8)),
    "trailing bytes": st_file(f32("a", [1], 0, 4), bytes(8)),
    "offsets past the end": st_file(f32("a", [2], 0, 8), bytes(4)),
    "a size that does not fit the dtype": st_file(f32("a", [3], 0, 8), bytes(8)),
    "reversed offsets": st_file(f32("a", [1], 4, 0), bytes(4)),
    "a negative dimension": st_file(f32("a", [-1], 0, 4), bytes(4)),
    "float offsets": st_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}},
                             bytes(4)),
    "a duplicate key": st_file(None, bytes(8), raw=b'{"a": {"dtype": "F32", "shape": [1], '
                               b'"data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], '
                               b'"data_offsets": [4, 8]}}'),
    "an unknown dtype": st_file({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}},
                                bytes(4)),
    "metadata that is not strings": st_file({"__metadata__": {"k": 1}, **f32("a", [1], 0, 4)},
                                            bytes(4)),
    "a header that is not JSON": st_file(None, bytes(4), raw=b'{"a": '),
    "a header that is not an object": st_file(None, b"", raw=b"[1, 2]"),
    "a header that is not UTF-8": st_file(None, bytes(4), raw=b'{"\xe9": {"dtype": "F32", '
                                          b'"shape": [1], "data_offsets": [0, 4]}}'),
    "a header longer than the file": struct.pack("<Q", 1 << 40) + b"{}",
    "no header": b"abc",
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_every_damaged_file_is_refused_by_the_library_and_by_ours(tmp_path, case):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(DAMAGED[case])
    with pytest.raises(Exception):  # the library's own error type
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                handle.get_tensor(key)
    with pytest.raises(ModelLoadError, match=r"bad\.safetensors is damaged \(.*\); download or "
                       "save it again"):
        read_header(path)


def test_a_dtype_the_library_reads_but_we_do_not_is_unsupported_not_damaged(tmp_path):
    path = tmp_path / "f8.safetensors"
    path.write_bytes(st_file({"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}},
                             bytes(4)))
    with safe_open(str(path), framework="pt") as handle:
        assert handle.get_tensor("a").shape == (4,)
    with pytest.raises(ModelLoadError, match="dtype F8_E4M3, an unsupported dtype") as caught:
        read_header(path)
    assert "damaged" not in str(caught.value)


def test_valid_files_read_as_the_library_reads_them(tmp_path):
    """Empty files, empty tensors and our own writer's files are valid to both readers."""
    from workflow_scripts.tensorfiles import write_file

    write_file(tmp_path / "a.safetensors", {"w": torch.arange(6.0).reshape(2, 3),
                                            "e": torch.zeros(0), "i": torch.tensor([1, 2])},
               {"k": "v"})
    infos, meta = read_header(tmp_path / "a.safetensors")
    assert meta == {"k": "v"} and set(infos) == {"w", "e", "i"}
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as handle:
        assert torch.equal(handle.get_tensor("w"), torch.arange(6.0).reshape(2, 3))
    (tmp_path / "b.safetensors").write_bytes(st_file({}, b""))
    assert read_header(tmp_path / "b.safetensors") == ({}, {})


# ---------------------------------------------------------------- checkpoint folders


def sharded(folder: Path, shards: dict[str, dict[str, torch.Tensor]], index=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, tensors in shards.items():
        save_file(tensors, folder / name, metadata={"format": "pt"})
    if index:
        weight_map = {t: name for name, tensors in shards.items() for t in tensors}
        (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


SHARDS = {"model-00001-of-00002.safetensors": {"a": torch.ones(2)},
          "model-00002-of-00002.safetensors": {"b": torch.zeros(3)}}


def set_index(folder: Path, **weight_map) -> None:
    (folder / INDEX).write_text(json.dumps({"weight_map": weight_map}))


def test_a_valid_sharded_checkpoint(tmp_path):
    ckpt = Checkpoint(sharded(tmp_path / "ck", SHARDS))
    assert sorted(ckpt.tensors) == ["a", "b"] and torch.equal(ckpt.read("b"), torch.zeros(3))


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_an_index_naming_a_file_outside_the_folder_is_refused_before_it_is_read(tmp_path, where):
    """The streaming reader followed ``../../other_model/...`` (merging another model's
    weights) and read an absolute path (/etc/passwd) before calling it damaged; transformers
    refuses the same index."""
    folder = sharded(tmp_path / "models" / "ck", SHARDS)
    sharded(tmp_path / "other_model",
            {"model-00001-of-00002.safetensors": {"a": torch.full((2,), 7.0)}}, index=False)
    target = ("../../other_model/model-00001-of-00002.safetensors" if where == "relative"
              else "/etc/passwd")
    set_index(folder, a=target, b="model-00002-of-00002.safetensors")
    how = "a path" if where == "relative" else "an absolute path"
    with pytest.raises(ModelLoadError, match=f"names the weights file .*, {how} leading out of the "
                       "checkpoint folder .* read only inside its folder"):
        Checkpoint(folder)
    if where == "relative":
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
        from transformers import AutoModel

        with pytest.raises((ValueError, OSError), match="outside"):
            AutoModel.from_pretrained(str(folder))


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    save_file({"a": torch.ones(2)}, outside)
    single = tmp_path / "single"
    single.mkdir()
    (single / WEIGHTS).symlink_to(outside)
    shard = sharded(tmp_path / "shard", SHARDS)
    (shard / "model-00001-of-00002.safetensors").unlink()
    (shard / "model-00001-of-00002.safetensors").symlink_to(outside)
    for folder in (single, shard):
        with pytest.raises(ModelLoadError, match="a symbolic link leading out of the checkpoint"):
            Checkpoint(folder)


def test_a_hub_cache_snapshot_links_into_its_blobs(tmp_path):
    """The hub cache's snapshot files are links to ../../blobs: inside the repository's
    cache folder, so they are read."""
    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    save_file({"a": torch.ones(2)}, repo / "blobs" / "abc123")
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / WEIGHTS).symlink_to(Path("../../blobs/abc123"))
    assert sorted(Checkpoint(snap).tensors) == ["a"]


def with_extra(folder: Path, extra: str) -> Path:
    """SHARDS with tensor ``extra`` in the first shard too, the index as SHARDS'."""
    shards = {k: dict(v) for k, v in SHARDS.items()}
    shards["model-00001-of-00002.safetensors"][extra] = torch.ones(3)
    folder = sharded(folder, shards)
    set_index(folder, a="model-00001-of-00002.safetensors", b="model-00002-of-00002.safetensors")
    return folder


def test_a_tensor_in_two_shards_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="tensor 'b' is in two shards"):
        Checkpoint(with_extra(tmp_path / "ck", "b"))


def test_index_and_shards_must_agree(tmp_path):
    with pytest.raises(ModelLoadError, match="holds tensor\\(s\\) c that .* does not place there"):
        Checkpoint(with_extra(tmp_path / "ck", "c"))
    folder = sharded(tmp_path / "ck2", SHARDS)
    set_index(folder, a="model-00001-of-00002.safetensors", b="model-00002-of-00002.safetensors",
              c="model-00002-of-00002.safetensors")
    with pytest.raises(ModelLoadError, match="lacks tensor\\(s\\) c that"):
        Checkpoint(folder)


def test_a_folder_with_both_layouts_is_refused(tmp_path):
    folder = sharded(tmp_path / "ck", SHARDS)
    save_file({"a": torch.full((2,), 5.0), "b": torch.zeros(3)}, folder / WEIGHTS)
    with pytest.raises(ModelLoadError, match=f"holds both {WEIGHTS} and {INDEX}"):
        Checkpoint(folder)


def test_a_merge_refuses_a_checkpoint_whose_index_leads_out(tmp_path, tiny_checkpoint):
    """End to end: the merge stops before reading another model's weights."""
    a, b, c = (tiny_checkpoint(seed=s) for s in range(3))
    bad = tmp_path / "b"
    shutil.copytree(b, bad)
    (bad / WEIGHTS).rename(bad / "model-00001-of-00001.safetensors")
    shutil.copy(c / WEIGHTS, tmp_path / "other.safetensors")
    names, _ = read_header(bad / "model-00001-of-00001.safetensors")
    set_index(bad, **{n: "../other.safetensors" for n in names})
    with pytest.raises(ModelLoadError, match="leading out of the checkpoint folder"):
        merge_models([str(a), str(bad)], tmp_path / "out", method="average")
    assert not (tmp_path / "out").exists()
    assert os.path.exists(tmp_path / "other.safetensors")
