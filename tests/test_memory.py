"""Memory-aware jobs: estimates from safetensors headers (no weights loaded), per-job
requests in the plan, the full Fisher's chunk chosen from the memory left."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from workflow_scripts import memory
from workflow_scripts.config import check_config
from workflow_scripts.errors import FisherMemoryError
from workflow_scripts.fisher.runner import fitting_chunk_size
from workflow_scripts.jobmemory import UNKNOWN_MB, mem_mb, model_size, resources, vram_mb
from workflow_scripts.models import load_model
from workflow_scripts.plan import Plan
from workflow_scripts.tensorfiles import weights_summary
from workflow_scripts.testing import make_tiny_checkpoint


@pytest.fixture(scope="module")
def sizes(tmp_path_factory):
    root = tmp_path_factory.mktemp("sizes")
    small = make_tiny_checkpoint(root / "small", "llama", 2, hidden=32, heads=4, intermediate=48)
    big = make_tiny_checkpoint(root / "big", "llama", 2, hidden=128, heads=4, intermediate=256,
                               layers=4)  # 2.6 MB of body gradients per example
    return small, big


def test_the_size_comes_from_the_headers(sizes):
    small, _ = sizes
    size = memory.model_size(small)
    model = load_model(str(small))[0]
    assert size.params == sum(t.numel() for t in model.state_dict().values())
    assert size.largest == max(t.numel() for t in model.state_dict().values())
    assert (size.dims.layers, size.dims.hidden, size.dims.heads) == (2, 32, 4)
    params, nbytes, dtype = weights_summary(small)
    assert params == size.params and nbytes == 4 * params and dtype == "float32"
    assert memory.model_size(small.parent / "absent") is None


def test_estimates_grow_with_the_model_and_the_settings(sizes):
    small, big = (memory.model_size(p) for p in sizes)
    for rule in memory.RULES:
        assert memory.estimate_bytes(rule, big) > memory.estimate_bytes(rule, small), rule
    assert (memory.estimate_bytes("fisher-full", big, chunk=8)
            > memory.estimate_bytes("fisher-full", big, chunk=1))
    assert (memory.estimate_bytes("fisher-mask", big, dtype="bfloat16")
            < memory.estimate_bytes("fisher-mask", big))
    # as many examples in flight: the full Fisher adds their gradients, the mask Fisher none
    assert (memory.estimate_bytes("fisher-full", big, chunk=32)
            > memory.estimate_bytes("fisher-mask", big, batch=32))
    mb = memory.job_mb("finetune", big, 123)
    assert mb % 100 == 0 and mb > memory.OVERHEAD_MB
    assert memory.job_mb("finetune", None, 123) == 123
    with pytest.raises(ValueError, match="unknown rule"):
        memory.estimate_bytes("nope", big)


@pytest.fixture
def config(tmp_path, sizes):
    _, big = sizes
    return check_config({
        "tasks": {"a": {"source": "builtin", "name": "sentiment"},
                  "b": {"source": "builtin", "name": "topic"}},
        "families": {"fam": {"base": str(big), "checkpoints": {"a": {"finetune": True},
                                                                 "b": {"finetune": True}}}},
        "fisher": {"n": [8]},
    }, base_dir=tmp_path)


def test_each_job_asks_for_its_estimate_and_compute_mem_mb_overrides(config, sizes, tmp_path):
    small, big = sizes
    plan = Plan(config)
    wc = SimpleNamespace(family="fam", method="full", task="a", rep="ft0")
    # the fine-tuned model is not there yet: the family's base sizes the job
    planned = mem_mb(plan, "fisher", wc, SimpleNamespace(model=str(tmp_path / "absent")))
    assert planned == memory.job_mb("fisher-full", memory.model_size(big), 0, batch=32,
                                    tokens=128, chunk=2)
    assert model_size(plan, "fisher", wc, SimpleNamespace(model=str(tmp_path / "absent"))) == (
        memory.model_size(big))
    # once it exists, its own size
    assert model_size(plan, "fisher", wc, SimpleNamespace(model=str(small))) == (
        memory.model_size(small))
    own = mem_mb(plan, "fisher", wc, SimpleNamespace(model=str(small)))
    assert own == memory.job_mb("fisher-full", memory.model_size(small), 0, batch=32,
                                tokens=128, chunk=2) <= planned
    merge = mem_mb(plan, "merge", wc, SimpleNamespace(models=[str(big), str(big)]))
    assert merge == memory.job_mb("merge", memory.model_size(big), 0, dtype="float32",
                                  batch=64, tokens=128)
    unknown = Plan({**config, "families": {"fam": {**config["families"]["fam"], "base": "org/x"}}})
    assert mem_mb(unknown, "fisher", wc, SimpleNamespace(model="absent")) == UNKNOWN_MB
    config["compute"]["mem_mb"] = 777
    assert mem_mb(Plan(config), "fisher", wc, SimpleNamespace(model=str(big))) == 777


def test_gpu_jobs_declare_their_gpu_memory(config, sizes):
    _, big = sizes
    plan = Plan(config)
    wc = SimpleNamespace(family="fam", method="mask")
    cpu, gpu = resources(plan, "fisher", 10, 0), resources(plan, "fisher", 10, 1)
    assert "vram_mb" not in cpu and cpu["gpu"] == 0
    inputs = SimpleNamespace(model=str(big))
    assert gpu["vram_mb"](wc, inputs) == vram_mb(plan, "fisher", wc, inputs, 1) > 0
    assert gpu["mem_mb"](wc, inputs) <= cpu["mem_mb"](wc, inputs)


def test_the_full_fisher_chunk_fits_the_memory_left(sizes):
    _, big = sizes
    model = load_model(str(big))[0]
    per_example = sum(p.numel() * p.element_size() for p in model.base_model.parameters())
    assert fitting_chunk_size(model, "cpu") == 2  # plenty: the CPU default
    room_for_one = int(1.5 * per_example / 0.8) // (1 << 20) + 1
    assert fitting_chunk_size(model, "cpu", max_memory_mb=room_for_one) == 1
    with pytest.raises(FisherMemoryError) as err:
        fitting_chunk_size(model, "cpu", max_memory_mb=1, info=SimpleNamespace(source="big-model"))
    message = str(err.value)
    assert "big-model" in message and f"{sum(p.numel() for p in model.base_model.parameters()):,}" in message
    assert "mask Fisher" in message and "fisher.chunk_size" in message


def test_the_fisher_command_refuses_a_full_fisher_that_cannot_fit(sizes, samples_file, capsys):
    from workflow_scripts import cli

    _, small = sizes
    data = samples_file(n=4)
    rc = cli.main(["fisher", "--model", str(small), "--data", str(data), "--method", "full",
                   "--max-memory-mb", "1", "--no-progress", "--out", str(data.parent / "x")])
    assert rc == 2 and "use the mask Fisher" in capsys.readouterr().err
    meta_path = data.parent / "f.safetensors"
    assert cli.main(["fisher", "--model", str(small), "--data", str(data), "--method", "full",
                     "--max-memory-mb", "4000", "--no-progress", "--no-count-flops",
                     "--out", str(meta_path)]) == 0
    from workflow_scripts.artifacts import read_metadata

    assert read_metadata(meta_path)["chunk_size"] == 2


def test_the_slurm_profile_lets_each_job_ask_for_its_estimate():
    """A profile's set-resources mem_mb would replace every estimate with one number."""
    import yaml

    from workflow_scripts.config import SCHEMA

    profile = yaml.safe_load((SCHEMA.parent.parent / "profiles/slurm/config.yaml").read_text())
    assert all("mem_mb" not in rule for rule in profile["set-resources"].values())
    assert "default" not in yaml.safe_load(SCHEMA.read_text())["properties"]["compute"][
        "properties"]["mem_mb"]
