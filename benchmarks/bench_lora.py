"""LoRA adapters merged as adapters against the dense merge, on a random Llama-shaped base.

    python benchmarks/bench_lora.py --hidden 512 --layers 8 --models 4 --rank 16

Builds a base with grouped-query attention and ``--models`` adapters of rank ``--rank`` on
every attention and FFN projection (random, non-zero factors), then prints, in one run:

* the merged adapter's safetensors size against the dense model's (float32 both), as written
  by :func:`workflow_scripts.lora.writer.write_adapter` and ``save_pretrained``;
* the wall-clock of the exact adapter merges (averaging, mask Fisher with the paper
  scheme) against the dense merges of the same models (every model's dense weights formed
  from its adapter, then :func:`workflow_scripts.merging.core.weighted_mean` per tensor),
  and the largest relative difference between the two.

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from workflow_scripts import architectures as arch
from workflow_scripts import testing
from workflow_scripts.lora import dense, folder, merge, writer
from workflow_scripts.lora import testing as lt
from workflow_scripts.merging import mask as mask_merge
from workflow_scripts.merging.core import weighted_mean

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.safetensors"))


def _fishers(dims, count):
    g = torch.Generator().manual_seed(1)
    return [{"head": torch.rand(dims.layers, dims.heads, generator=g),
             "neuron": torch.rand(dims.layers, dims.intermediate, generator=g)}
            for _ in range(count)]


def _dense_merge(adapters, base, weights=None):
    out = {}
    for name in dense.union(adapters):
        w = None if weights is None else (lambda j, n=name: weights[j][n])
        out[name] = weighted_mean(lambda n=name: (dense.dense(a, base, n) for a in adapters), w)
    return out


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = testing.tiny_config("llama", hidden=args.hidden, layers=args.layers,
                                 heads=max(2, args.hidden // 64), intermediate=args.hidden * 3,
                                 vocab_size=8000, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model.save_pretrained(tmp / "dense")
        base = folder.Base.of_model(model, causal=True)
        folders = [lt.random_adapter(model, tmp / f"a{j}", targets=TARGETS, r=args.rank,
                                     alpha=2 * args.rank, seed=j, scale=0.02)
                   for j in range(args.models)]
        adapters = [folder.read_adapter(f, base) for f in folders]
        dims = arch.dims(model)
        fishers = _fishers(dims, len(adapters))
        rows = []
        merged, t_avg = _timed(lambda: merge.average(adapters, base))
        ref, t_avg_dense = _timed(lambda: _dense_merge(adapters, base))
        rows.append(("average", t_avg, t_avg_dense, _worst(merged, ref, base)))
        weights, t_w = _timed(lambda: merge.mask_weights(adapters, base, dims, fishers, "paper"))
        masked, t_mask = _timed(lambda: merge.weighted(adapters, base, weights))
        shapes = {n: torch.Size(base.shapes[n]) for n in dense.union(adapters)}
        dense_w = [mask_merge.mask_weights(base.spec, dims, shapes, f, "paper")
                   for f in mask_merge.ones_where_all_zero(fishers)]
        ref, t_mask_dense = _timed(lambda: _dense_merge(adapters, base, dense_w))
        rows.append(("mask (paper)", t_w + t_mask, t_mask_dense, _worst(masked, ref, base)))
        out = writer.write_adapter(tmp / "merged", merged, base,
                                   inputs=[a.label for a in adapters])
        size, dense_size = _size(out), _size(tmp / "dense")
    print(f"base: Llama, hidden {args.hidden}, {args.layers} layers; {args.models} adapters of "
          f"rank {args.rank} on {', '.join(TARGETS)}")
    print(f"merged adapter {size / 2**20:.2f} MiB, dense model {dense_size / 2**20:.2f} MiB: "
          f"{size / dense_size:.3f}x")
    print("| merge | adapter s | dense s | dense / adapter | max rel. difference |")
    print("| --- | --- | --- | --- | --- |")
    for name, t, td, err in rows:
        print(f"| {name} | {t:.3f} | {td:.3f} | {td / t:.1f}x | {err:.1e} |")


def _worst(merged, ref, base) -> float:
    worst = 0.0
    for name, want in ref.items():
        got = merged.delta(name, base) + base.read(name).double()
        worst = max(worst, float((got - want).abs().max() / want.abs().max()))
    return worst


if __name__ == "__main__":
    main()
