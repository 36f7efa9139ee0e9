import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(min(2, torch.get_num_threads()))

from workflow_scripts.testing import make_tiny_checkpoint, write_toy_samples  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: more threads only add synchronisation
    (and stall badly when other processes share the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_checkpoint(tmp_path_factory):
    """Factory: tiny_checkpoint(model_type='bert', num_labels=2, seed=0) -> Path."""

    def make(model_type="bert", num_labels=2, seed=0, **overrides):
        d = tmp_path_factory.mktemp(f"{model_type}-{num_labels}-{seed}")
        return make_tiny_checkpoint(d, model_type, num_labels, seed, **overrides)

    return make


@pytest.fixture
def samples_file(tmp_path_factory):
    """Factory: samples_file(n=16, pair=False, num_labels=2, seed=0) -> Path."""

    def make(**kwargs):
        d = tmp_path_factory.mktemp("samples")
        return write_toy_samples(d / "samples.parquet", **kwargs)

    return make
