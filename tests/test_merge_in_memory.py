"""A merge job that keeps no checkpoint evaluates its merged models in memory: no scratch
checkpoint is written, the scores equal those of the checkpoints it would have written
(classifiers with their own heads and label maps, a causal LM's one whole-model merge,
half-precision checkpoints evaluated in their written dtype), and each artifact file is
read at most twice (verified with its checksum in one pass, then merged)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
import torch

from workflow_scripts import artifacts as artifacts_module
from workflow_scripts import cli, tensorfiles
from workflow_scripts.merging import evaluation as evaluation_module
from workflow_scripts.merging import files, registry, stream
from workflow_scripts.merging.evaluation import EvalSplit, MergeEvaluation
from workflow_scripts.merging.files import merge_models
from workflow_scripts.models import load_model, save_checkpoint
from workflow_scripts.settings import EvaluateSettings
from workflow_scripts.testing import make_tiny_checkpoint, write_toy_samples

pytestmark = pytest.mark.usefixtures("one_thread")


def add_noise(state: dict, ref: dict, seed: int) -> None:
    """Each floating tensor of ``state`` set to ``ref``'s plus seeded noise (a fine-tune)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in state.items():
            if v.is_floating_point():
                v.copy_(ref[k] + 0.02 * torch.randn(v.shape, generator=g))


def fine_tune(root: Path, base: Path, name: str, labels: int, seed: int, dtype):
    """``base``'s body plus seeded noise, with its own head of ``labels``."""
    path = make_tiny_checkpoint(root / name, "bert", labels, seed=seed)
    model, tok, _ = load_model(str(path))
    add_noise(model.base_model.state_dict(), load_model(str(base))[0].base_model.state_dict(),
              seed)
    model.to(dtype)
    save_checkpoint(model, tok, path)
    return path


def make_family(root: Path, dtype):
    base = make_tiny_checkpoint(root / "base", "bert", 2, seed=0)
    tuned = [fine_tune(root, base, f"t{j}", labels, j, dtype) for j, labels in ((1, 2), (2, 3))]
    data = [write_toy_samples(root / f"data{j}.parquet", n=12, num_labels=labels, seed=j)
            for j, labels in ((1, 2), (2, 3))]
    arts = {}
    for kind in ("mask", "full", "gram"):
        arts[kind] = []
        for j, model in enumerate(tuned):
            out = root / f"{kind}{j}.safetensors"
            command = ["gram"] if kind == "gram" else ["fisher", "--method", kind,
                                                       "--no-count-flops"]
            assert cli.main([*command, "--model", str(model), "--data", str(data[j]),
                             "--no-progress", "--out", str(out)]) == 0
            arts[kind].append(str(out))
    return base, tuned, data, arts


def make_causal_family(root: Path):
    """A tiny Llama base and two whole-model 'fine-tunes' of it, with text samples each."""
    from workflow_scripts.data import Samples, write_samples

    base = make_tiny_checkpoint(root / "base", "llama", objective="causal-lm", seed=1,
                                hidden=32, heads=4, intermediate=40, padding_side="left")
    tuned, data = [], []
    texts = [["the good movie was great", "a sad story", "hello there"],
             ["why is the market so bad today", "the team win the game", "yes"]]
    for j in (1, 2):
        model, tok, _ = load_model(str(base), objective="causal-lm")
        add_noise(model.state_dict(), {k: v.clone() for k, v in model.state_dict().items()}, j)
        save_checkpoint(model, tok, root / f"t{j}")
        tuned.append(root / f"t{j}")
        rows = texts[j - 1]
        data.append(root / f"texts{j}.parquet")
        write_samples(Samples(list(range(len(rows))), rows, [None] * len(rows), [0] * len(rows)),
                      data[-1])
    return base, tuned, data, {}


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    return {dtype: make_family(tmp_path_factory.mktemp(str(dtype)), dtype)
            for dtype in (torch.float32, torch.bfloat16)}


def artifact_args(method: str, arts: dict) -> dict:
    spec = registry.METHODS[method]
    if spec.artifact is None:
        return {}
    key = "grams" if spec.artifact == registry.GRAM else "fishers"
    return {key: arts["gram" if spec.artifact == registry.GRAM else spec.artifact]}


def run_merge(work: Path, family, method: str, keep: bool, objective="classification",
              label_maps=None):
    base, tuned, data, arts = family
    evaluation = MergeEvaluation([EvalSplit([str(d) for d in data], str(work / "evals"))],
                                 settings=EvaluateSettings(batch_size=4, objective=objective),
                                 progress=False)
    merge_models([str(t) for t in tuned], work / "merged" if keep else None, method=method,
                 names=["a", "b"], base=str(base) if registry.METHODS[method].needs_base else None,
                 label_maps=label_maps, evaluation=evaluation, objective=objective,
                 **artifact_args(method, arts))
    return {n: json.loads((work / "evals" / f"{n}.json").read_text()) for n in ("a", "b")}


def same_scores(memory: dict, kept: dict) -> None:
    for name in memory:
        a, b = dict(memory[name]), dict(kept[name])
        for key in ("seconds", "model", "fingerprint"):  # the kept one names its checkpoint
            a.pop(key), b.pop(key)
        assert a == b, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ["mask", "ties"])
def test_in_memory_scores_equal_the_written_checkpoints(tmp_path, classifiers, method, dtype):
    family = classifiers[dtype]
    maps = [[1, 0], None]  # model a's head permuted, as its written checkpoint's would be
    memory = run_merge(tmp_path / "memory", family, method, False, label_maps=maps)
    kept = run_merge(tmp_path / "kept", family, method, True, label_maps=maps)
    same_scores(memory, kept)
    assert memory["a"]["model"] == "merge of a" and memory["a"]["fingerprint"] is None


def test_no_scratch_checkpoint_is_written(tmp_path, classifiers, monkeypatch):
    """Nothing is written but the evaluations: no checkpoint writer, no scratch folder."""
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was written")

    for owner, name in ((stream, "write_merged"), (files, "write_merged"),
                        (tensorfiles.CheckpointWriter, "__init__"), (stream, "copy_model_files"),
                        (files, "write_card")):
        monkeypatch.setattr(owner, name, refuse)
    work = tmp_path / "work"
    scores = run_merge(work, classifiers[torch.float32], "mask", False)
    assert set(scores) == {"a", "b"}
    written = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    assert written == ["evals", "evals/a.json", "evals/b.json"], written


class ReadCounter:
    """Bytes read from each watched file through Python's open and safetensors' safe_open."""

    def __init__(self, monkeypatch, paths: list[str]):
        self.watched = {str(Path(p).resolve()): 0 for p in paths}
        real_open, real_safe_open = builtins.open, artifacts_module.safe_open
        counter = self

        class Counted:
            def __init__(self, handle, key):
                self.handle, self.key = handle, key

            def read(self, *args):
                data = self.handle.read(*args)
                counter.watched[self.key] += len(data)
                return data

            def readinto(self, buffer):
                count = self.handle.readinto(buffer)
                counter.watched[self.key] += count or 0
                return count

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.handle.__exit__(*exc)

        def counted_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            key = str(Path(file).resolve()) if isinstance(file, (str, Path)) else None
            if key in counter.watched and "r" in mode:
                return Counted(handle, key)
            return handle

        class CountedSafeOpen:
            def __init__(self, file, *args, **kwargs):
                self.inner = real_safe_open(file, *args, **kwargs)
                self.key = str(Path(file).resolve())

            def __enter__(self):
                self.handle = self.inner.__enter__()
                return self

            def __exit__(self, *exc):
                return self.inner.__exit__(*exc)

            def get_tensor(self, name):
                tensor = self.handle.get_tensor(name)
                if self.key in counter.watched:
                    counter.watched[self.key] += tensor.numel() * tensor.element_size()
                return tensor

            def __getattr__(self, name):
                return getattr(self.handle, name)

        monkeypatch.setattr(builtins, "open", counted_open)
        monkeypatch.setattr(artifacts_module, "safe_open", CountedSafeOpen)


@pytest.mark.parametrize("method", ["fisher", "regmean"])
def test_each_artifact_is_read_at_most_twice(tmp_path, classifiers, monkeypatch, method):
    family = classifiers[torch.float32]
    paths = next(iter(artifact_args(method, family[3]).values()))
    sizes = {p: sum(i.nbytes for i in tensorfiles.read_header(p)[0].values()) for p in paths}
    counter = ReadCounter(monkeypatch, paths)
    run_merge(tmp_path / "work", family, method, False)
    for path, data in sizes.items():
        header = Path(path).stat().st_size - data  # read by each reader of the file's layout
        read = counter.watched[str(Path(path).resolve())]
        assert data <= read <= 2 * data + 3 * header, (path, read, data, header)


def test_a_causal_merge_is_one_model_evaluated_on_each_task(tmp_path, monkeypatch):
    family = make_causal_family(tmp_path / "family")
    built = []
    real_build = evaluation_module.MergedModels.build
    monkeypatch.setattr(evaluation_module.MergedModels, "build",
                        lambda self, j: built.append(j) or real_build(self, j))
    memory = run_merge(tmp_path / "memory", family, "average", False, objective="causal-lm")
    assert built == [0]
    kept = run_merge(tmp_path / "kept", family, "average", True, objective="causal-lm")
    same_scores(memory, kept)
