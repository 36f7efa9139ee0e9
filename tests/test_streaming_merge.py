"""Streaming merges: the merge command reads every tensor from the files when it needs it
and writes it as soon as it is merged; the result equals the in-memory merge exactly,
from single-file and sharded checkpoints, keeps a half-precision checkpoint's dtype, and
holds a bounded number of tensors whatever the number of models."""

from __future__ import annotations

import json
import logging
import weakref

import pytest
import torch
from safetensors.torch import load_file

from workflow_scripts import architectures as arch
from workflow_scripts import cli
from workflow_scripts.errors import MergeError, ModelLoadError, OutputError
from workflow_scripts.merging import registry, stream
from workflow_scripts.merging.files import merge_models
from workflow_scripts.merging.merge import merge_loaded
from workflow_scripts.models import load_model, save_checkpoint
from workflow_scripts.tensorfiles import INDEX, Checkpoint
from workflow_scripts.testing import make_tiny_checkpoint, write_toy_samples

pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed(root, base, name, labels, seed, dtype=torch.float32, shard=None):
    """A 'fine-tune' of ``base``: its body plus seeded noise, its own head of ``labels``."""
    path = make_tiny_checkpoint(root / name, "bert", labels, seed=seed)
    model, tok, _ = load_model(str(path))
    ref, _, _ = load_model(str(base))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for (k, v), bv in zip(model.base_model.state_dict().items(),
                              ref.base_model.state_dict().values()):
            if v.is_floating_point():
                v.copy_(bv + 0.02 * torch.randn(v.shape, generator=g))
    model.to(dtype)
    if shard:  # save_pretrained's sharded layout
        model.save_pretrained(path, max_shard_size=shard)
        (path / "model.safetensors").unlink(missing_ok=True)
    else:
        save_checkpoint(model, tok, path)
    return path


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    base = make_tiny_checkpoint(root / "base", "bert", 2, seed=0)
    tuned = [perturbed(root, base, f"t{j}", labels, j) for j, labels in ((1, 2), (2, 3), (3, 2))]
    sharded = [perturbed(root, base, f"s{j}", labels, j, shard="20KB")
               for j, labels in ((1, 2), (2, 3), (3, 2))]
    samples = write_toy_samples(root / "samples.parquet", n=10)
    artifacts = {}
    for kind in ("mask", "full", "gram"):
        paths = []
        for j, model in enumerate(tuned):
            out = root / f"{kind}{j}.safetensors"
            command = ["gram"] if kind == "gram" else ["fisher", "--method", kind]
            assert cli.main([*command, "--model", str(model), "--data", str(samples),
                             "--no-progress", "--out", str(out)]
                            + ([] if kind == "gram" else ["--no-count-flops"])) == 0
            paths.append(str(out))
        artifacts[kind] = paths
    return base, tuned, sharded, artifacts


def artifact_args(spec, artifacts) -> dict:
    if spec.artifact == registry.GRAM:
        return {"grams": artifacts["gram"]}
    if spec.artifact is not None:
        return {"fishers": artifacts[spec.artifact]}
    return {}


# 200 bytes of float64: every tensor of more than 25 elements is merged in several blocks
SPLIT = 200 / (1 << 20)


@pytest.mark.parametrize("block_mb", [None, SPLIT], ids=["whole", "blocks"])
@pytest.mark.parametrize("layout", ["single", "sharded"])
@pytest.mark.parametrize("method", list(registry.METHODS))
def test_the_streamed_merge_equals_the_in_memory_merge(tmp_path, family, method, layout,
                                                       block_mb, monkeypatch):
    """Whole tensors or row blocks small enough to split every tensor (even the biases):
    the written checkpoints equal the in-memory merge of whole tensors, bit for bit."""
    base, tuned, sharded, artifacts = family
    inputs = tuned if layout == "single" else sharded
    spec = registry.METHODS[method]
    parts = []
    read_rows = stream.read_rows
    monkeypatch.setattr(stream, "read_rows", lambda info, *rows: parts.append(info.name)
                        or read_rows(info, *rows))
    assert (inputs[0] / INDEX).exists() == (layout == "sharded")
    # the sharded copies hold the same weights in other files: their fingerprints differ
    out = merge_models(inputs, tmp_path / "out", method=method, names=["a", "b", "c"],
                       base=str(base) if spec.needs_base else None,
                       allow_fisher_mismatch=layout == "sharded",
                       **({"block_mb": block_mb} if block_mb else {}),
                       **artifact_args(spec, artifacts))
    # the tensors were read in parts, or whole (RegMean: an FFN's up projection, more
    # outputs than inputs, is solved in blocks of rows whatever the block size)
    assert bool(parts) == bool(block_mb) or method == "regmean"
    models = [load_model(str(p))[0] for p in tuned]
    loaded_artifacts = None
    if spec.artifact is not None:
        from workflow_scripts.artifacts import load_fisher

        key = "gram" if spec.artifact == registry.GRAM else spec.artifact
        loaded_artifacts = [load_fisher(p)[0] for p in artifacts[key]]
    merge_loaded(models, method, loaded_artifacts,
                 base=load_model(str(base))[0] if spec.needs_base else None)
    for model, directory in zip(models, out):
        written = load_model(str(directory))[0]
        expected, got = model.state_dict(), written.state_dict()
        assert expected.keys() == got.keys()
        for name in expected:
            assert torch.equal(expected[name], got[name]), (method, layout, name)
        assert json.loads((directory / "merge.json").read_text())["method"] == method


def test_a_bfloat16_checkpoint_stays_bfloat16(tmp_path, family):
    base, _, _, _ = family
    halves = [perturbed(tmp_path, base, f"h{j}", 2, j, dtype=torch.bfloat16) for j in (1, 2)]
    out = merge_models(halves, tmp_path / "out", method="average", names=["a", "b"])
    tensors = load_file(out[0] / "model.safetensors")
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.bfloat16}
    assert json.loads((out[0] / "config.json").read_text())["dtype"] == "bfloat16"
    inputs = [load_file(p / "model.safetensors") for p in halves]
    name = "bert.encoder.layer.0.attention.self.query.weight"
    want = ((inputs[0][name].double() + inputs[1][name].double()) / 2).to(torch.bfloat16)
    assert torch.equal(tensors[name], want)  # merged in float64, saved in bfloat16


def test_models_of_different_dtypes_merge_with_a_warning(tmp_path, family, caplog):
    base, tuned, _, _ = family
    half = perturbed(tmp_path, base, "h", 2, 5, dtype=torch.bfloat16)
    with caplog.at_level(logging.WARNING):
        out = merge_models([tuned[0], half], tmp_path / "out", method="average", names=["a", "b"])
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "float32" in said and "bfloat16" in said and str(half) in said
    assert load_file(out[1] / "model.safetensors")["bert.pooler.dense.weight"].dtype == torch.float32


def test_a_missing_or_truncated_shard_is_named_and_nothing_is_written(tmp_path, family):
    import shutil

    _, tuned, sharded, _ = family
    broken = tmp_path / "broken"
    shutil.copytree(sharded[1], broken)
    index = json.loads((broken / INDEX).read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    data = (broken / shard).read_bytes()
    (broken / shard).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=f"{shard}.*truncated"):
        merge_models([tuned[0], broken], tmp_path / "out", method="average", names=["a", "b"])
    (broken / shard).unlink()
    with pytest.raises(ModelLoadError, match=f"{shard} is named by .*{INDEX} but missing"):
        merge_models([tuned[0], broken], tmp_path / "out", method="average", names=["a", "b"])
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path, family):
    _, tuned, _, _ = family
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(OutputError, match="already exists and is a file of 12 bytes"):
        merge_models(tuned[:2], tmp_path / "out", method="average", names=["a", "b"])
    assert (tmp_path / "out").read_text() == "not a folder"


def test_shapes_names_and_label_maps_as_in_memory(tmp_path, family):
    """A label map permutes the written head's rows and config, as the in-memory loader does."""
    _, tuned, _, _ = family
    out = merge_models(tuned[:2], tmp_path / "out", method="average", names=["a", "b"],
                       label_maps=[None, [2, 0, 1]])
    mapped = load_model(str(tuned[1]), label_map=[2, 0, 1])[0]
    written = load_model(str(out[1]))[0]
    assert torch.equal(written.classifier.weight, mapped.classifier.weight)
    assert written.config.id2label == mapped.config.id2label


def test_memory_holds_a_bounded_number_of_tensors_whatever_the_number_of_models(
        tmp_path, family, monkeypatch):
    """The streamed merge of 3 and of 6 models keeps at most a few model tensors alive at
    once (counted with weak references to every tensor read from a checkpoint)."""
    base, tuned, _, artifacts = family
    many = tuned + [perturbed(tmp_path, base, f"x{j}", 2, 10 + j) for j in range(3)]
    read = stream.BodyFiles.read

    for method in ("average", "ties", "fisher"):
        peaks = []
        for models in (many[:3], many):
            alive = set()
            peak = [0]

            def tracked(self, name, rows=None, alive=alive, peak=peak):
                tensor = read(self, name, rows)
                key = id(tensor)
                alive.add(key)
                weakref.finalize(tensor, alive.discard, key)
                peak[0] = max(peak[0], len(alive))
                return tensor

            monkeypatch.setattr(stream.BodyFiles, "read", tracked)
            extra = {"base": str(base)} if method == "ties" else {}
            if method == "fisher":  # one Fisher file per model: computed for the extra ones too
                extra["fishers"] = fisher_files(tmp_path, models, artifacts)
            merge_models(models, tmp_path / f"out-{method}-{len(models)}", method=method,
                         **extra)
            monkeypatch.setattr(stream.BodyFiles, "read", read)
            peaks.append(peak[0])
        assert peaks[1] <= peaks[0] <= 4, (method, peaks)


def fisher_files(tmp_path, models, artifacts):
    samples = write_toy_samples(tmp_path / "s.parquet", n=6)
    paths = []
    for j, model in enumerate(models):
        if j < len(artifacts["full"]):
            paths.append(artifacts["full"][j])
            continue
        out = tmp_path / f"f{j}.safetensors"
        if not out.exists():
            assert cli.main(["fisher", "--method", "full", "--model", str(model), "--data",
                             str(samples), "--no-progress", "--no-count-flops",
                             "--out", str(out)]) == 0
        paths.append(str(out))
    return paths


def test_a_sharded_merged_checkpoint_loads(tmp_path, family):
    """--max-shard-mb splits the merged checkpoints in save_pretrained's layout."""
    from workflow_scripts.tensorfiles import CheckpointWriter, Entry

    _, tuned, _, _ = family
    state = load_file(tuned[0] / "model.safetensors")
    entries = [Entry(k, str(v.dtype)[6:], tuple(v.shape)) for k, v in state.items()]
    out = tmp_path / "sharded"
    out.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((tuned[0] / name).read_bytes())
    writer = CheckpointWriter(out, entries, max_shard_bytes=30_000)
    for e in writer.order:
        writer.write(e.name, state[e.name])
    writer.close()
    assert len(json.loads((out / INDEX).read_text())["weight_map"]) == len(state)
    assert len(set(json.loads((out / INDEX).read_text())["weight_map"].values())) > 1
    model = load_model(str(out))[0]
    for k, v in model.state_dict().items():
        if k in state:
            assert torch.equal(v, state[k]), k
    assert Checkpoint(out).parameter_count() == sum(v.numel() for v in state.values())
    assert arch.body_prefix(model) == "bert."


@pytest.mark.parametrize("shard", [None, 1], ids=["one-file", "sharded"])
def test_a_whole_model_merge_writes_the_merged_weights_once(tmp_path, shard):
    """A causal LM's merged checkpoints all hold the same weights: written once, the other
    checkpoints' weight files are hard links to them; each folder is its own checkpoint
    (its config, card and merge.json) and loads."""
    import os

    root = tmp_path / "in"
    paths = [make_tiny_checkpoint(root / f"lm{j}", "llama", objective="causal-lm", seed=j,
                                  hidden=32, heads=4, intermediate=40, vocab_size=5000,
                                  tie_word_embeddings=False) for j in (1, 2, 3)]
    out = merge_models(paths, tmp_path / "out", method="average", objective="causal-lm",
                       names=["a", "b", "c"], block_mb=SPLIT,
                       **({"max_shard_mb": shard} if shard else {}))
    weights = sorted(p.name for p in out[0].iterdir() if p.name.endswith(".safetensors")
                     or p.name == INDEX)
    assert (len(weights) > 2) == bool(shard)
    for directory in out[1:]:
        for name in weights:
            assert os.path.samefile(directory / name, out[0] / name), (directory, name)
        assert json.loads((directory / "merge.json").read_text())["name"] == directory.name
    inputs = [load_file(p / "model.safetensors") for p in paths]
    for directory in out:
        got = load_model(str(directory), objective="causal-lm")[0].state_dict()
        for name, value in inputs[0].items():
            if value.is_floating_point():
                want = sum(t[name].double() for t in inputs) / 3
                assert torch.equal(got[name], want.to(value.dtype)), name


def test_rows_read_from_the_file_offsets_equal_the_safetensors_library(tmp_path):
    from safetensors.torch import save_file

    from workflow_scripts.tensorfiles import read_blocks, read_header, read_rows, row_blocks

    g = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(7, 3, 2, generator=g), "b": torch.randn(5, generator=g).half(),
               "c": torch.tensor(2.5), "d": torch.zeros(0, 4)}
    save_file(tensors, tmp_path / "t.safetensors")
    infos, _ = read_header(tmp_path / "t.safetensors")
    assert torch.equal(read_rows(infos["a"], 2, 5), tensors["a"][2:5])
    assert torch.equal(read_rows(infos["b"], 4, 5), tensors["b"][4:5])
    assert read_rows(infos["a"], 3, 3).shape == (0, 3, 2)
    with pytest.raises(ValueError):
        read_rows(infos["a"], 5, 8)
    assert row_blocks((7, 3, 2), 4, 50) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert row_blocks((7, 3, 2), 4, 1) == [(r, r + 1) for r in range(7)]  # a row at least
    for name, value in tensors.items():
        assert torch.equal(torch.cat(list(read_blocks(infos[name], 30)))
                           if value.dim() else next(read_blocks(infos[name], 30)), value), name


def test_the_writer_takes_row_blocks_in_order_and_refuses_others(tmp_path):
    from workflow_scripts.tensorfiles import CheckpointWriter, Entry

    value = torch.arange(12.0).reshape(6, 2)
    writer = CheckpointWriter(tmp_path, [Entry("w", "float32", (6, 2)),
                                         Entry("s", "float32", ())], max_shard_bytes=1 << 20)
    writer.write_rows("w", 0, value[:4])
    with pytest.raises(ValueError, match="from row 4"):
        writer.write_rows("w", 3, value[3:])
    with pytest.raises(ValueError, match="written in part"):
        writer.close()
    writer.write_rows("w", 4, value[4:])
    writer.write("s", torch.tensor(1.5))
    writer.close()
    got = load_file(tmp_path / "model.safetensors")
    assert torch.equal(got["w"], value) and got["s"].item() == 1.5


def test_dare_drops_the_same_entries_whatever_the_block():
    """The drop mask is a function of (seed, model, parameter, element index): a block's
    mask is the whole tensor's mask over that block's elements, and the drop rate is p."""
    from workflow_scripts.merging.dare import drop_and_rescale

    tau = torch.ones(40, 25, dtype=torch.float64)
    whole = drop_and_rescale(tau, 0.7, 3, 1, "layer.0.weight")
    for start, stop in ((0, 1), (3, 17), (17, 40)):
        part = drop_and_rescale(tau[start:stop], 0.7, 3, 1, "layer.0.weight", first=start * 25)
        assert torch.equal(part, whole[start:stop]), (start, stop)
    assert 0.25 < float((whole != 0).double().mean()) < 0.35
    assert not torch.equal(whole, drop_and_rescale(tau, 0.7, 3, 2, "layer.0.weight"))
    assert not torch.equal(whole, drop_and_rescale(tau, 0.7, 4, 1, "layer.0.weight"))


@pytest.mark.parametrize("method,options", [
    ("ties", {"ties_scope": "tensor"}),
    ("dare", {"dare_combine": "ties", "ties_scope": "global", "dare_p": 0.5}),
    ("dare", {"dare_combine": "ties", "ties_scope": "tensor", "dare_p": 0.5}),
    ("mask", {"scheme": "touching"}),
])
def test_row_blocks_change_no_bit_of_a_merge(family, method, options):
    """In memory too: TIES's per-tensor thresholds (found over the blocks in two passes),
    DARE combined by TIES, the mask Fisher's row and column weights."""
    base, tuned, _, artifacts = family
    spec = registry.METHODS[method]
    fishers = None
    if spec.artifact is not None:
        from workflow_scripts.artifacts import load_fisher

        fishers = [load_fisher(p)[0] for p in artifacts[spec.artifact]]
    results = []
    for block_mb in (64.0, SPLIT):
        models = [load_model(str(p))[0] for p in tuned]
        merge_loaded(models, method, fishers, block_mb=block_mb, **options,
                     base=load_model(str(base))[0] if spec.needs_base else None)
        results.append(models[0].base_model.state_dict())
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name


def test_an_artifact_is_verified_block_by_block(tmp_path, family, monkeypatch):
    """Blocks of 64 bytes: the checksum and the values are those of the whole tensors (a
    valid file passes, a negative value in a tensor's last block is found)."""
    from workflow_scripts import artifacts as artifact_files

    _, _, _, made = family
    whole = artifact_files.verify_artifact(made["full"][0])
    monkeypatch.setattr(artifact_files, "VERIFY_BLOCK_BYTES", 64)
    assert artifact_files.verify_artifact(made["full"][0]) == whole
    assert artifact_files.verify_artifact(made["gram"][0], "gram")
    bad = dict(artifact_files.load_fisher(made["full"][0])[0])
    name = max(bad, key=lambda k: bad[k].numel())
    bad[name] = bad[name].clone()
    bad[name].view(-1)[-1] = -1.0
    artifact_files.save_fisher(bad, whole, tmp_path / "bad.safetensors", check=lambda t: None)
    with pytest.raises(artifact_files.FisherValueError, match=f"{name}.*negative"):
        artifact_files.verify_artifact(tmp_path / "bad.safetensors")


def test_the_memory_estimate_knows_the_block_size_and_regmeans_formula():
    from workflow_scripts import memory
    from workflow_scripts.architectures import Dims
    from workflow_scripts.settings import MergeSettings

    assert MergeSettings(method="average").block_mb == memory.MERGE_BLOCK_MB
    wide = memory.ModelSize(8_000_000_000, 128_256 * 4_096, Dims(32, 32, 14_336, 4_096, 8))
    n, m = 14_336, 4_096
    assert memory.regmean_bytes(n, m) == 16 * n * n + 26 * n * m  # the solve's peak here
    assert memory.merge_bytes(wide) == memory.regmean_bytes(n, m)
    narrow = memory.ModelSize(wide.params, wide.largest, None)  # blocks, not the tensor
    assert memory.merge_bytes(narrow) == memory.MERGE_BLOCK_COPIES * 64 * memory.MB


def test_regmean_solves_a_wide_output_weight_in_blocks_of_rows():
    """A Linear weight with more outputs than inputs (an untied lm_head) is solved in blocks
    of ``in`` rows against the factored Gram sum: the solution of the whole system."""
    from workflow_scripts import memory
    from workflow_scripts.merging.engine import MemorySources, MergeContext, merge_all
    from workflow_scripts.merging.regmean import regularise
    from workflow_scripts.settings import MergeSettings

    g = torch.Generator().manual_seed(0)
    n, m = 6, 20
    bodies = [{"w": torch.randn(m, n, generator=g, dtype=torch.float64)} for _ in range(3)]
    grams = []
    for _ in bodies:
        x = torch.randn(30, n, generator=g, dtype=torch.float64)
        grams.append({"w": x.T @ x})
    ctx = MergeContext(None, None, MergeSettings(method="regmean"),
                       MemorySources(bodies, None, grams), ["a", "b", "c"], ["ga", "gb", "gc"])
    parts = []
    read = ctx.sources.model
    ctx.sources.model = lambda j, name, rows=None: parts.append(rows) or read(j, name, rows)
    got = merge_all(ctx)["w"]
    assert {rows for rows in parts} == {(0, 6), (6, 12), (12, 18), (18, 20)}
    regs = [regularise(gr["w"], 0.9) for gr in grams]
    want = torch.linalg.solve(sum(regs), sum(r @ b["w"].T for r, b in zip(regs, bodies))).T
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert memory.regmean_bytes(n, m, 4, 2, models=2) == 50 * n * n  # not growing with m
