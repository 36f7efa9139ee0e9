"""Llama-shaped causal LMs at real widths for :mod:`bench_merge` (``--llama-1b``,
``--llama-8b-wide``), written straight to safetensors (no model in memory: a 8 B-wide
checkpoint is 16 GB), with the artifacts each method reads, and the plain-I/O baseline.

The weights are slices of a seeded random pool (bfloat16, std 0.02) at offsets hashed from
(seed, tensor, block): every model and tensor differs, and a merge's cost does not depend
on the values.  Full Fishers (float32, positive) and Grams (float32, diagonally dominant:
invertible) are written block by block with their checksum, as ``save_fisher`` writes
them.  Not a test: nothing is asserted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from workflow_scripts.artifacts import META_KEY, SUM_KEY, save_fisher
from workflow_scripts.tensorfiles import CheckpointWriter, Entry, header_bytes, row_blocks, write_bytes
from workflow_scripts.testing import make_tiny_checkpoint

# layers, hidden, heads, key/value heads, intermediate, vocabulary, tied embeddings
SHAPES = {
    "llama-1b": (16, 2048, 32, 8, 8192, 128_256, True),  # Llama-3.2-1B
    "llama-8b-wide": (4, 4096, 32, 8, 14_336, 128_256, False),  # Llama-3.1-8B's widths
}
MB = 1 << 20
BLOCK = 64 * MB
POOL = 1 << 26  # elements of each random pool


def _offset(key: str, span: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % span


class Pool:
    """Seeded random values, served in slices at hashed offsets."""

    def __init__(self, seed: int, uniform: bool):
        g = torch.Generator().manual_seed(seed)
        self.values = (torch.rand(POOL, generator=g) if uniform
                       else (torch.randn(POOL, generator=g) * 0.02).to(torch.bfloat16))

    def take(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= d
        start = _offset(key, POOL - n)
        return self.values[start:start + n].reshape(shape)


def config_of(shape: str, layers: int | None) -> dict:
    n, hidden, heads, kv, inter, vocab, tied = SHAPES[shape]
    return dict(num_hidden_layers=layers or n, hidden_size=hidden, num_attention_heads=heads,
                num_key_value_heads=kv, intermediate_size=inter, vocab_size=vocab,
                tie_word_embeddings=tied, head_dim=hidden // heads, dtype="bfloat16",
                max_position_embeddings=8192, architectures=["LlamaForCausalLM"])


def state_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """The checkpoint's tensors (names and shapes) as save_pretrained writes them."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def build(root: Path, shape: str, layers: int | None, seeds: list[int]) -> list[Path]:
    """One checkpoint per seed (bfloat16), written block by block from the pool."""
    template = make_tiny_checkpoint(root / "template", "llama", objective="causal-lm",
                                    hidden=32, heads=4, intermediate=40)
    config = json.loads((template / "config.json").read_text()) | config_of(shape, layers)
    (template / "config.json").write_text(json.dumps(config, indent=2))
    (template / "model.safetensors").unlink()
    shapes = state_shapes(template)
    pool = Pool(0, uniform=False)
    paths = []
    for seed in seeds:
        out = root / f"m{seed}"
        shutil.copytree(template, out)
        entries = [Entry(k, "bfloat16", s) for k, s in shapes.items()]
        writer = CheckpointWriter(out, entries, max_shard_bytes=5000 * MB)
        for e in writer.order:
            for start, stop in row_blocks(e.shape, 2, BLOCK):
                part = (stop - start, *e.shape[1:]) if e.shape else ()
                writer.write_rows(e.name, start, pool.take(f"{seed}:{e.name}:{start}", part)
                                  .clone() if e.shape else torch.tensor(0.0, dtype=torch.bfloat16))
        writer.close()
        paths.append(out)
        print(f"  built {out.name}", flush=True)
    shutil.rmtree(template)
    return paths


def body_name(name: str) -> str:
    return name[len("model."):] if name.startswith("model.") else name


def write_artifact(path: Path, shapes: dict, fill, metadata: dict) -> None:
    """A float32 artifact of ``shapes`` (body names), row blocks from ``fill(name, start,
    shape)``, with the checksum ``save_fisher`` records (a placeholder first, rewritten)."""
    entries = [Entry(k, "float32", shapes[k]) for k in sorted(shapes)]
    header = {META_KEY: json.dumps(metadata, sort_keys=True), SUM_KEY: "0" * 64}
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        handle.write(header_bytes(entries, header))
        for e in entries:
            digest.update(f"{e.name}|torch.float32|{tuple(e.shape)}|".encode())
            for start, stop in row_blocks(e.shape, 4, BLOCK):
                block = fill(e.name, start, (stop - start, *e.shape[1:]))
                digest.update(memoryview(block.reshape(-1).view(torch.uint8).numpy()))
                write_bytes(handle, block)
        handle.seek(0)
        handle.write(header_bytes(entries, dict(header, **{SUM_KEY: digest.hexdigest()})))


def artifacts(model: Path, root: Path, task: str,
              kinds: tuple[str, ...] = ("mask", "full", "gram")) -> dict[str, str]:
    """Of ``kinds``: a mask Fisher, a full Fisher and Grams (every linear weight's, lm_head's
    when untied, as the gram command computes them) of ``model``."""
    from workflow_scripts import architectures as arch
    from workflow_scripts.models import fingerprint

    config = json.loads((model / "config.json").read_text())
    dims = arch.Dims(config["num_hidden_layers"], config["num_attention_heads"],
                     config["intermediate_size"], config["hidden_size"],
                     config["num_key_value_heads"])
    meta = {"model": str(model), "fingerprint": fingerprint(str(model)), "task": task, "n": 16,
            "seed": 0, "context": {}, "objective": "causal-lm"}
    shapes = {body_name(k): s for k, s in state_shapes(model).items()}
    pool = Pool(1, uniform=True)
    made = {}
    g = torch.Generator().manual_seed(len(task))
    mask = {"head": torch.rand(dims.layers, dims.heads, generator=g) + 0.01,
            "neuron": torch.rand(dims.layers, dims.intermediate, generator=g) + 0.01}
    if "mask" in kinds:
        made["mask"] = str(root / f"{model.name}-mask.safetensors")
        save_fisher(mask, dict(meta, method="mask"), made["mask"])
    if "full" in kinds:
        made["full"] = str(root / f"{model.name}-full.safetensors")
        write_artifact(Path(made["full"]), shapes,
                       lambda name, start, s: pool.take(f"{task}:{name}:{start}", s) + 1e-3,
                       dict(meta, method="full"))
    if "gram" in kinds:
        linear = {k: (s[1], s[1]) for k, s in shapes.items()
                  if len(s) == 2 and "embed" not in k}

        def gram(name, start, s):
            d = s[1]
            block = pool.take(f"{task}:{name}:{start}", s) * (0.5 / d)
            rows = torch.arange(s[0])
            block[rows, rows + start] = 1.0 + pool.take(f"{task}:{name}:d{start}", (s[0],))
            return block

        made["gram"] = str(root / f"{model.name}-gram.safetensors")
        write_artifact(Path(made["gram"]), linear, gram, dict(meta, method="gram"))
    return made


def plain_io(inputs: list[str], out_bytes: int, folder: Path) -> tuple[float, int]:
    """Seconds to read ``inputs`` (files and checkpoint folders) once with plain reads and
    write ``out_bytes`` to a file in ``folder`` (then removed), and the bytes read."""
    files = []
    for item in inputs:
        p = Path(item)
        files += sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    buffer = bytearray(BLOCK)
    start, read = time.perf_counter(), 0
    for f in files:
        with open(f, "rb", buffering=0) as handle:
            while n := handle.readinto(buffer):
                read += n
    target = folder / "plain-io.bin"
    with open(target, "wb") as handle:
        left = out_bytes
        while left > 0:
            n = min(left, BLOCK)
            handle.write(memoryview(buffer)[:n])
            left -= n
    seconds = time.perf_counter() - start
    target.unlink()
    return seconds, read
