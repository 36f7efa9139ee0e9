"""Merge cost against the number of models and the model size, in one run.

    python benchmarks/bench_merge.py                       # 2, 4, 8 models; small and medium
    python benchmarks/bench_merge.py --sizes medium --models 2 6 --methods average ties
    python benchmarks/bench_merge.py --sizes --llama-1b     # only the 1 B model's figures

Builds random Llama-shaped sequence classifiers (grouped-query attention, gated FFN) of
each ``--sizes`` on disk, one per model, a base, and for each model the artifacts its
method reads: a mask Fisher, a full Fisher and Grams with the right names and shapes
(random positive values: the merge's cost does not depend on them; their headers record
their model, so the merge's provenance checks pass).  Each merge runs as its own
``python -m workflow_scripts merge`` process (the workflow's merge job: merge, write one
checkpoint per model); its peak resident memory (``wait4``'s ``ru_maxrss``) and
wall-clock seconds are printed per method and number of models, with the growth of the
peak from the fewest to the most models in model sizes (the streamed merge's target:
at most +0.3 model sizes from 2 to 6 models).

``--llama-1b`` (Llama-3.2-1B's shape, 1.2 B parameters) and ``--llama-8b-wide``
(Llama-3.1-8B's widths: vocabulary 128,256, hidden 4,096, FFN 14,336, 32 query / 8
key/value heads, untied ``lm_head``; ``--layers`` of them, 4 by default: a layer is 218 M
parameters, so time per layer extrapolates to 32) build bfloat16 causal LMs and their
artifacts straight to disk (:mod:`wide`), then for each method and ``--wide-models`` count
(with a base) print the merge command's peak memory (no evaluation), seconds, bytes read
(``rchar``), and the seconds of plain I/O: reading the same inputs once and writing the
merged model's bytes, with a warm page cache, just before; and the mask Fisher of one model
in bfloat16 on 16 examples.  Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from workflow_scripts import architectures as arch  # noqa: E402
from workflow_scripts.artifacts import check_finite, check_values, save_fisher  # noqa: E402
from workflow_scripts.merging import registry  # noqa: E402
from workflow_scripts.models import fingerprint  # noqa: E402
from workflow_scripts.tensorfiles import Checkpoint  # noqa: E402
from workflow_scripts.testing import make_tiny_checkpoint, write_toy_samples  # noqa: E402

SIZES = {
    # layers, hidden, heads, key/value heads, intermediate, vocabulary
    "tiny": (2, 64, 4, 2, 128, 1000),  # a smoke test
    "small": (4, 512, 8, 4, 1408, 8000),  # 17 M parameters, 67 MB in float32
    "medium": (6, 1024, 16, 4, 2816, 16000),  # 84 M parameters, 336 MB in float32
    "llama-1b": (16, 2048, 32, 8, 8192, 128256),  # Llama-3.2-1B's shape: 1.2 B parameters
}
MB = 1 << 20


def build(directory: Path, size: str, seed: int, dtype=torch.float32) -> Path:
    layers, hidden, heads, kv, inter, vocab = SIZES[size]
    path = make_tiny_checkpoint(directory, "llama", num_labels=2, seed=seed, hidden=hidden,
                                layers=layers, heads=heads, intermediate=inter, vocab_size=vocab,
                                num_key_value_heads=kv, max_position_embeddings=256)
    if dtype != torch.float32:  # re-save in the checkpoint dtype
        from workflow_scripts.models import load_model, save_checkpoint

        model, tokenizer, _ = load_model(str(path))
        save_checkpoint(model.to(dtype), tokenizer, path)
    return path


def body_shapes(path: Path) -> dict[str, tuple]:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path / "model.safetensors"), "pt") as handle:
        for name in handle.keys():
            if name.startswith("model."):
                out[name[len("model."):]] = tuple(handle.get_slice(name).get_shape())
    return out


def artifacts(path: Path, out: Path, task: str) -> dict[str, str]:
    """A mask Fisher, a full Fisher and Grams of the model at ``path`` (random values)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    dims, spec, shapes = arch.dims(config), arch.spec_for(config), body_shapes(path)
    meta = {"model": str(path), "fingerprint": fingerprint(str(path)), "task": task, "n": 128,
            "seed": 0, "context": {}}
    g = torch.Generator().manual_seed(len(task))
    made = {}
    mask = {"head": torch.rand(dims.layers, dims.heads, generator=g) + 0.01,
            "neuron": torch.rand(dims.layers, dims.intermediate, generator=g) + 0.01}
    full = {k: torch.rand(s, generator=g) + 1e-3 for k, s in shapes.items()}
    grams = {}
    for name, shape in shapes.items():
        if len(shape) == 2 and arch.weight_kind(spec, name) == arch.LINEAR and "embed" not in name:
            d = shape[1]
            off = torch.rand(d, d, generator=g) * (0.5 / d)
            grams[name] = torch.diag(1 + torch.rand(d, generator=g)) + (off + off.T) / 2
    for kind, tensors in (("mask", mask), ("full", full), ("gram", grams)):
        file = out / f"{path.name}-{kind}.safetensors"
        save_fisher(tensors, dict(meta, method=kind), file,
                    check=check_finite if kind == "gram" else check_values)
        made[kind] = str(file)
    return made


# Runs a module as python -m does and prints its own peak resident memory (VmHWM) last:
# wait4's ru_maxrss would report at least this process's memory at the fork (Linux records
# the forked copy's high-water mark at exec), which the models built here dwarf.
PEAK = ("import atexit, runpy, sys\n"
        "def peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            print('PEAK_KB', line.split()[1], file=sys.stderr, flush=True)\n"
        "    for line in open('/proc/self/io'):\n"
        "        if line.startswith('rchar:'):\n"
        "            print('READ_BYTES', line.split()[1], file=sys.stderr, flush=True)\n"
        "atexit.register(peak)\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


LAST_READ = [0]  # bytes the last measured process read (its rchar)


def measure(command: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MB) of ``python -m MODULE ARGS`` (``command``: [python, "-m",
    MODULE, ARGS...]) run as its own process, the peak read by the process itself (and its
    bytes read, in :data:`LAST_READ`)."""
    start = time.perf_counter()
    proc = subprocess.run([command[0], "-c", PEAK, *command[2:]], capture_output=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    seconds = time.perf_counter() - start
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err[-2000:]}")
    kb = [int(line.split()[1]) for line in err.splitlines() if line.startswith("PEAK_KB")]
    LAST_READ[0] = next((int(line.split()[1]) for line in err.splitlines()
                         if line.startswith("READ_BYTES")), 0)
    return seconds, kb[-1] / 1024


def merge_command(method: str, models: list[Path], base: Path, made: list[dict], out: Path):
    spec = registry.METHODS[method]
    command = [sys.executable, "-m", "workflow_scripts", "merge", "--method", method,
               "--models", *map(str, models), "--names", *[p.name for p in models],
               "--out", str(out)]
    if spec.needs_base:
        command += ["--base", str(base)]
    if spec.artifact == registry.GRAM:
        command += ["--grams", *[m["gram"] for m in made]]
    elif spec.artifact is not None:
        command += ["--fishers", *[m[spec.artifact] for m in made]]
    return command


def checkpoint_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) / MB


def check_shards(root: Path, models: list[Path], base: Path, shard_mb: int) -> None:
    """Copies of the models saved in ``shard_mb`` MB shards merge to the same tensors as the
    single files (average and TIES)."""
    from safetensors.torch import load_file

    from workflow_scripts.models import load_model

    copies = []
    for path in models:
        model, tokenizer, _ = load_model(str(path))
        copy = root / f"{path.name}-sharded"
        model.save_pretrained(copy, max_shard_size=f"{shard_mb}MB")
        tokenizer.save_pretrained(copy)
        copies.append(copy)
    shards = len(list(copies[0].glob("model-*.safetensors")))
    for method in ("average", "ties"):
        outs = []
        for inputs, tag in ((models, "single"), (copies, "sharded")):
            out = root / f"shards-{method}-{tag}"
            command = merge_command(method, inputs, base, [{}, {}], out)
            command[command.index("--names") + 1:command.index("--names") + 3] = ["a", "b"]
            measure(command + ["--allow-fisher-mismatch"])
            outs.append(out)
        a, b = (load_file(o / "a" / "model.safetensors") for o in outs)
        same = a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
        print(f"  {shards} shards of <= {shard_mb} MB: {method} merges to the same tensors as the "
              f"single files: {'yes' if same else 'NO'}", flush=True)
        for out in outs:
            shutil.rmtree(out)
    for copy in copies:
        shutil.rmtree(copy)


def bench_size(size: str, counts: list[int], methods: list[str], work: Path,
               shard_mb: int | None = None) -> list[dict]:
    root = work / size
    root.mkdir()
    print(f"building {max(counts)} {size} models ...", flush=True)
    base = build(root / "base", size, 0)
    models = [build(root / f"m{j}", size, j + 1) for j in range(max(counts))]
    made = [artifacts(m, root, f"task{j}") for j, m in enumerate(models)]
    model_mb = checkpoint_mb(models[0])
    if shard_mb:
        check_shards(root, models[:2], base, shard_mb)
    rows = []
    for method in methods:
        row = {"size": size, "model_mb": model_mb, "method": method}
        for count in counts:
            out = root / f"out-{method}-{count}"
            seconds, peak = measure(merge_command(method, models[:count], base, made[:count], out))
            shutil.rmtree(out)
            row[count] = (peak, seconds)
            print(f"  {size} {method} x{count}: {peak:,.0f} MB peak, {seconds:.1f} s", flush=True)
        rows.append(row)
    shutil.rmtree(root)
    return rows


def print_table(rows: list[dict], counts: list[int]) -> None:
    first, last = counts[0], counts[-1]
    print("\n| model | method | " + " | ".join(f"{c} models: peak MB / s" for c in counts)
          + f" | peak growth {first} -> {last} models (model sizes) |")
    print("| --- | --- | " + " | ".join("---:" for _ in counts) + " | ---: |")
    for row in rows:
        cells = " | ".join(f"{row[c][0]:,.0f} / {row[c][1]:.1f}" for c in counts)
        growth = (row[last][0] - row[first][0]) / row["model_mb"]
        print(f"| {row['size']} ({row['model_mb']:,.0f} MB) | {row['method']} | {cells} | "
              f"{growth:+.2f} |")


def bench_wide(shape: str, work: Path, counts: list[int], methods: list[str],
               layers: int | None, fisher_examples: int = 16) -> None:
    """The merges of ``counts`` bfloat16 causal LMs of ``shape`` (and a base), and the mask
    Fisher of one (:mod:`wide`)."""
    import wide

    from workflow_scripts.data import Samples, write_samples

    root = work / shape
    root.mkdir()
    config = wide.config_of(shape, layers)
    print(f"building {max(counts)} {shape} models and a base ({config['num_hidden_layers']} "
          "layers, bfloat16) ...", flush=True)
    paths = wide.build(root, shape, layers, list(range(max(counts) + 1)))
    base, models = paths[0], paths[1:]
    kinds = tuple({registry.METHODS[m].artifact for m in methods} - {None})
    made = [wide.artifacts(m, root, f"task{j}", kinds) for j, m in enumerate(models[:2])]
    made += [made[j % 2] for j in range(2, len(models))]  # more models reuse the first two's
    size = checkpoint_mb(models[0])
    params = sum(t.numel for t in Checkpoint(models[0]).tensors.values())
    n = max(fisher_examples, 1)
    texts = [f"example {i}: the quick brown fox jumps over the lazy dog " * 4 for i in range(n)]
    samples = root / "texts.parquet"
    write_samples(Samples(list(range(n)), texts, [None] * n, [0] * n), samples)
    fisher = [sys.executable, "-m", "workflow_scripts", "fisher", "--method", "mask",
              "--objective", "causal-lm", "--model", str(models[0]), "--data", str(samples),
              "--batch-size", "8", "--max-length", "64", "--dtype", "bfloat16",
              "--no-count-flops", "--no-progress", "--out", str(root / "mask-run.safetensors")]
    rows = []
    for count in counts:
        for method in methods:
            rows.append(wide_merge(root, method, models[:count], base, made[:count], size))
    print(f"\n| {shape} | method | models | peak MB | seconds | GB read | plain I/O s | "
          "ratio |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| | {r['method']} | {r['count']} | {r['peak']:,.0f} | {r['seconds']:.0f} | "
              f"{r['read'] / 1e9:.1f} | {r['plain']:.0f} | {r['seconds'] / r['plain']:.1f} |")
    print(f"\n{shape}: {config['num_hidden_layers']} layers, {size:,.0f} MB a model on disk "
          f"(bfloat16), {params / 1e9:.2f} B parameters", flush=True)
    if fisher_examples:  # last: on 2 cores the 8 B-wide model's backward passes take long
        print("mask Fisher of one model ...", flush=True)
        fs, fm = measure(fisher)
        print(f"| mask Fisher, {fisher_examples} examples of <= 64 tokens, bfloat16 | "
              f"{fm:,.0f} MB peak | {fs:.1f} s |", flush=True)
    shutil.rmtree(root)


def wide_merge(root: Path, method: str, models: list[Path], base: Path, made: list[dict],
               size_mb: float) -> dict:
    """One merge of the wide models (causal LM, no evaluation) and its plain-I/O baseline."""
    import wide

    spec = registry.METHODS[method]
    out = root / f"out-{method}-{len(models)}"
    command = merge_command(method, models, base, made, out)
    command += ["--objective", "causal-lm", "--allow-fisher-mismatch"]
    inputs = [str(m) for m in models] + ([str(base)] if spec.needs_base else [])
    if spec.artifact == registry.GRAM:
        inputs += [m["gram"] for m in made]
    elif spec.artifact is not None:
        inputs += [m[spec.artifact] for m in made]
    plain, _ = wide.plain_io(inputs, int(size_mb * MB), root)
    seconds, peak = measure(command)
    read = LAST_READ[0]
    shutil.rmtree(out)
    print(f"  {method} x{len(models)}: {peak:,.0f} MB peak, {seconds:.0f} s, "
          f"{read / 1e9:.1f} GB read; plain read+write {plain:.0f} s", flush=True)
    return dict(method=method, count=len(models), peak=peak, seconds=seconds, read=read,
                plain=plain)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", choices=[s for s in SIZES if s != "llama-1b"],
                    default=["small", "medium"])
    ap.add_argument("--models", nargs="+", type=int, default=[2, 4, 8])
    ap.add_argument("--methods", nargs="+", choices=list(registry.METHODS),
                    default=list(registry.METHODS))
    ap.add_argument("--llama-1b", action="store_true", help="also the 1 B model's figures")
    ap.add_argument("--llama-8b-wide", action="store_true",
                    help="also Llama-3.1-8B-wide models' figures (--layers of them)")
    ap.add_argument("--layers", type=int, default=4, help="--llama-8b-wide: layers (>= 4)")
    ap.add_argument("--fisher-examples", type=int, default=16,
                    help="--llama-1b and --llama-8b-wide: examples of the mask Fisher (0: skip)")
    ap.add_argument("--wide-models", nargs="+", type=int, default=[2, 4],
                    help="--llama-1b and --llama-8b-wide: numbers of models merged")
    ap.add_argument("--shard-mb", type=int, default=40,
                    help="check that copies in shards of this size merge to the same tensors "
                         "(0: skip)")
    ap.add_argument("--work", default=None, help="folder for the checkpoints (default: a temp)")
    args = ap.parse_args(argv)
    counts = sorted(set(args.models))
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, work folder {work}")
        rows = []
        for size in args.sizes:
            rows += bench_size(size, counts, args.methods, Path(work), args.shard_mb)
        if rows:
            print_table(rows, counts)
        if args.llama_1b:
            bench_wide("llama-1b", Path(work), sorted(set(args.wide_models)), args.methods, None,
                       args.fisher_examples)
        if args.llama_8b_wide:
            bench_wide("llama-8b-wide", Path(work), sorted(set(args.wide_models)), args.methods,
                       args.layers, args.fisher_examples)


if __name__ == "__main__":
    main()
