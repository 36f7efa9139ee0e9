import json
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BertTokenizerFast

from workflow_scripts import cli
from workflow_scripts.data import Samples, write_samples
from workflow_scripts.errors import ModelLoadError
from workflow_scripts.evaluate import evaluate_checkpoint
from workflow_scripts.finetune import INFO_FILE, epoch_batches, finetune
from workflow_scripts.models import load_model
from workflow_scripts.testing import SPECIAL, WORDS, tiny_config

POS = "good great love happy fine win".split()
NEG = "bad terrible hate sad sorry lose".split()
FILL = "the a and it is was this that of to in on for with".split()
INFO = {"task": "polarity", "num_labels": 2, "label_names": ["neg", "pos"]}


def toy(n, seed):
    rng = random.Random(seed)
    text, label = [], []
    for _ in range(n):
        y = rng.randrange(2)
        words = rng.sample(POS if y else NEG, 2) + [rng.choice(FILL) for _ in range(rng.randint(1, 4))]
        rng.shuffle(words)
        text.append(" ".join(words))
        label.append(y)
    return Samples(list(range(n)), text, [None] * n, label)


@pytest.fixture
def task_files(tmp_path):
    write_samples(toy(96, 0), tmp_path / "train.parquet")
    write_samples(toy(40, 1), tmp_path / "valid.parquet")
    (tmp_path / "info.json").write_text(json.dumps(INFO))
    return tmp_path / "train.parquet", tmp_path / "valid.parquet", tmp_path / "info.json"


def save_tokenizer(directory):
    """A WordPiece tokenizer over the tiny vocabulary (``vocab=``: transformers 5 ignores
    the ``vocab_file=`` keyword and would map every word to [UNK])."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + list(dict.fromkeys(WORDS))) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    assert tokenizer.unk_token_id not in tokenizer("good bad")["input_ids"]
    tokenizer.save_pretrained(directory)


@pytest.fixture
def bare_base(tmp_path):
    """A bare encoder (no classification head), like a pre-trained base model."""
    directory = tmp_path / "bare"
    torch.manual_seed(0)
    AutoModel.from_config(tiny_config("bert", 2)).save_pretrained(directory)
    save_tokenizer(directory)
    return directory


KW = dict(max_steps=60, batch_size=16, lr=3e-3, max_length=32, seed=0, device="cpu", progress=False)


def test_finetune_learns_and_saves(bare_base, task_files, tmp_path):
    train, valid, info = task_files
    out = tmp_path / "out"
    _, _, result = finetune(str(bare_base), train, info, out, validation=valid, **KW)
    assert result["steps"] == 60 and len(result["train_loss_curve"]) == 60
    assert result["final_train_loss"] < 0.5 * result["initial_train_loss"]
    assert result["validation"]["accuracy"] >= 0.85
    assert "classifier.weight" in result["newly_initialised"]
    saved = json.loads((out / INFO_FILE).read_text())
    assert saved["steps"] == 60 and saved["hyperparameters"]["lr"] == 3e-3
    assert saved["base"] == str(bare_base) and saved["seconds"] > 0
    model, tokenizer, minfo = load_model(str(out))
    assert minfo.num_labels == 2 and model.config.id2label == {0: "neg", 1: "pos"}
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporaries left


def test_same_seed_identical_weights(tiny_checkpoint, task_files, tmp_path):
    base = tiny_checkpoint("bert", num_labels=3, seed=4)  # a head of another size: replaced
    save_tokenizer(base)
    train, _, info = task_files
    kw = dict(KW, max_steps=6)
    finetune(str(base), train, info, tmp_path / "a", **kw)
    finetune(str(base), train, info, tmp_path / "b", **kw)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and a["classifier.weight"].shape[0] == 2
    assert all(torch.equal(a[k], b[k]) for k in a)
    finetune(str(base), train, info, tmp_path / "c", **dict(kw, seed=1))
    c = load_file(tmp_path / "c" / "model.safetensors")
    assert not torch.equal(a["classifier.weight"], c["classifier.weight"])


def test_cli_epochs_subsample_and_length_clamp(bare_base, task_files, tmp_path):
    train, valid, info = task_files
    out = tmp_path / "cli"
    rc = cli.main(["finetune", "--base", str(bare_base), "--train", str(train), "--info", str(info),
                   "--validation", str(valid), "--out", str(out), "--epochs", "2",
                   "--max-train-examples", "40", "--batch-size", "16", "--lr", "1e-3",
                   "--max-length", "512", "--device", "cpu"])
    assert rc == 0
    result = json.loads((out / INFO_FILE).read_text())
    assert result["n_train_examples"] == 40 and result["steps"] == 6  # 2 epochs x ceil(40/16)
    assert result["hyperparameters"]["max_length"] == 64  # the tiny model's positions
    assert 0 <= result["validation"]["accuracy"] <= 1


def test_refuses_pickle_only_base(bare_base, task_files, tmp_path):
    for p in bare_base.glob("*.safetensors"):
        p.unlink()
    train, _, info = task_files
    with pytest.raises(ModelLoadError, match="allow-pickle"):
        finetune(str(bare_base), train, info, tmp_path / "x", **KW)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ModelLoadError, match="does not exist"):
        finetune(str(tmp_path / "missing"), train, info, tmp_path / "x", **KW)


def test_validation_accuracy_is_evaluates(bare_base, task_files, tmp_path):
    """Fine-tuning's validation accuracy is evaluate's accuracy on the saved model."""
    train, valid, info = task_files
    out = tmp_path / "out"
    _, _, result = finetune(str(bare_base), train, info, out, validation=valid,
                            **dict(KW, max_steps=25))
    evaluated = evaluate_checkpoint(str(out), str(valid), "polarity", max_length=32,
                                    device="cpu", progress=False)
    assert result["validation"]["accuracy"] == evaluated["metrics"]["accuracy"]
    assert 0 < result["validation"]["accuracy"] < 1  # not a trivial agreement
    assert result["validation"]["n"] == evaluated["n_examples"] == 40


def test_new_head_reported_by_the_loader(bare_base):
    names = ["x", "y", "z"]
    first, _, a = load_model(str(bare_base), label_names=names, seed=5)
    torch.rand(3)  # the seed, not the RNG's state before the call, decides the head
    model, _, b = load_model(str(bare_base), label_names=names, seed=5)
    assert a.newly_initialised == b.newly_initialised == ["classifier.bias", "classifier.weight"]
    assert a.num_labels == 3 and model.config.id2label == {0: "x", 1: "y", 2: "z"}
    assert model.config.problem_type == "single_label_classification"
    assert torch.equal(first.classifier.weight, model.classifier.weight)
    other, _, c = load_model(str(bare_base), label_names=names, seed=6)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)
    assert a.fingerprint == c.fingerprint
    _, _, plain = load_model(str(bare_base))  # evaluation: no head asked for, reported as new
    assert plain.newly_initialised == ["classifier.bias", "classifier.weight"]


def test_epoch_batches_seeded():
    lengths = [3, 9, 1, 7, 7, 2, 5, 8, 4, 6, 1]
    for group in (True, False):
        a = epoch_batches(lengths, 4, torch.Generator().manual_seed(0), group)
        b = epoch_batches(lengths, 4, torch.Generator().manual_seed(0), group)
        assert a == b and sorted(i for batch in a for i in batch) == list(range(len(lengths)))


def test_bfloat16_fine_tuning_is_mixed_precision_and_saved_in_bfloat16(bare_base, task_files,
                                                                       tmp_path):
    train, valid, info = task_files
    _, _, result = finetune(str(bare_base), train, info, tmp_path / "bf16",
                            validation=valid, **dict(KW, dtype="bfloat16"))
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.bfloat16}
    assert result["hyperparameters"]["dtype"] == "bfloat16"
    assert result["final_train_loss"] < 0.5 * result["initial_train_loss"]
    assert result["validation"]["accuracy"] >= 0.8
