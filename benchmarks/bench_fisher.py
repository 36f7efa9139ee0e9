"""Fisher cost against a plain forward pass, on random BERT- and Llama-shaped models.

    python benchmarks/bench_fisher.py --size base --n 128
    python benchmarks/bench_fisher.py --arch bert llama --size small --n 32

``--arch llama`` builds a Llama of the same size with grouped-query attention
(half as many key/value heads) and a gated SiLU FFN; several ``--arch`` are
measured one after the other in the same run, each against its own forward.

Prints, in one run, the wall-clock of:

* a plain forward pass over the samples (``inference_mode``, the same sorted,
  dynamically padded batches the per-example mask Fisher uses), with both the
  ``sdpa`` and ``eager`` attention implementations; the faster is the baseline;
* the mask Fisher, per-example estimator (Eq. 4; the default);
* the mask Fisher, per-batch estimator (the released code's definition);
* the full diagonal Fisher (vectorised per-example gradients, ``torch.func``);
* a naive full Fisher: one example per ``loss.backward()``, squaring ``.grad``;

each also as a ratio to the forward time.  Fisher times are the ``seconds``
that :func:`workflow_scripts.fisher.compute_fisher` records (tokenisation
excluded).  Samples are random words over a vocabulary the size of BERT's,
``--min-tokens`` to ``--max-tokens`` tokens long.  Not a test: nothing is
asserted; the targets on the 2-core development CPU are mask <= 2.2x and
full <= 4x the forward, and full faster than the naive loop.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# As the fisher command does (workflow_scripts.cli.fisher.ENVIRONMENT), before torch
# is imported: large CPU tensors (activations, per-example gradients) on transparent
# huge pages.  PyTorch reads this once, at its first allocation; without it every
# fresh multi-megabyte tensor page-faults in 4 KiB pages, which made fresh
# allocations 2-5x slower on the development machine.  Set it to 0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import BertTokenizerFast  # noqa: E402

from workflow_scripts import data, fisher, objectives  # noqa: E402
from workflow_scripts.fisher import batches as _batches  # noqa: E402,F401  (fisher.batches)
from workflow_scripts.devices import device_name  # noqa: E402
from workflow_scripts.testing import SPECIAL, WORDS, tiny_config  # noqa: E402

SIZES = {
    # layers, hidden, heads, intermediate
    "tiny": (2, 128, 2, 512),
    "small": (4, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}


def make_tokenizer(directory: Path, vocab_size: int, input_names=None) -> tuple[BertTokenizerFast, list[str]]:
    """A WordPiece tokenizer over ``vocab_size`` whole words, and those words."""
    words = list(dict.fromkeys(WORDS))
    words += [f"w{i:05d}" for i in range(vocab_size - len(SPECIAL) - len(words))]
    # transformers 5 builds a fast tokenizer from ``vocab`` (it ignores ``vocab_file``)
    vocab = {token: i for i, token in enumerate(SPECIAL + words)}
    kwargs = {} if input_names is None else {"model_input_names": list(input_names)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, **kwargs)
    if tokenizer.convert_tokens_to_ids(words[-1]) == tokenizer.unk_token_id:
        raise RuntimeError("the benchmark tokenizer lost its vocabulary")
    return tokenizer, words


def make_samples(n: int, num_labels: int, vocab_words: list[str], lo: int, hi: int, seed: int):
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(vocab_words) for _ in range(rng.randint(lo - 2, hi - 2))) for _ in range(n)]
    return data.Samples(
        idx=list(range(n)), text_a=texts, text_b=[None] * n,
        label=[rng.randrange(num_labels) for _ in range(n)],
    )


class Clock:
    """Wall-clock and process CPU time of a block (CPU time tells contention apart)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    @property
    def times(self) -> tuple[float, float]:
        return self.wall, self.cpu


def time_forward(model, batches, impl: str) -> tuple[float, float]:
    with fisher.attn_implementation(model, impl), torch.inference_mode():
        model(**batches[0].inputs)  # warm-up
        with Clock() as clock:
            for b in batches:
                model(**b.inputs)
    return clock.times


def naive_full_fisher(model, tokenizer, samples, max_length: int) -> tuple[float, float]:
    """One example per backward pass; (wall, cpu) seconds, tokenisation excluded."""
    encoded = data.tokenize(tokenizer, samples, max_length)
    singles = list(data.batches(tokenizer, samples, 1, max_length, encoded=encoded))
    body = dict(model.base_model.named_parameters())
    head = [p for n, p in model.named_parameters() if not n.startswith(model.base_model_prefix + ".")]
    acc = {k: torch.zeros_like(p) for k, p in body.items()}
    for p in head:
        p.requires_grad_(False)
    with Clock() as clock:
        for b in singles:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(**b.inputs).logits, b.labels).backward()
            for k, p in body.items():
                if p.grad is not None:
                    acc[k].addcmul_(p.grad, p.grad)
    model.zero_grad(set_to_none=True)
    for p in head:
        p.requires_grad_(True)
    return clock.times


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=SIZES, default="base")
    ap.add_argument("--arch", nargs="+", choices=["bert", "llama"], default=["bert"],
                    help="model shapes to measure, in this order, in the same run")
    ap.add_argument("--objective", choices=objectives.NAMES, default=objectives.DEFAULT,
                    help="sequence classifiers, or causal LMs (llama only: the next-token "
                         "loss over every token after the first; no naive loop)")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--min-tokens", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--num-labels", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=fisher.DEFAULT_BATCH_SIZE)
    ap.add_argument("--chunk-size", type=int, default=fisher.default_chunk_size("cpu"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each measurement this many times and keep the fastest")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["mask", "per-batch", "full", "naive"], help="measurements to leave out")
    args = ap.parse_args(argv)
    allocator = fisher.tune_cpu_allocator()  # as the fisher command does on CPU
    if args.threads:
        torch.set_num_threads(args.threads)

    for arch in args.arch:
        run(arch, args, allocator)


def run(arch: str, args, allocator) -> None:
    layers, hidden, heads, intermediate = SIZES[args.size]
    torch.manual_seed(args.seed)
    config = tiny_config(
        arch, args.num_labels, hidden=hidden, layers=layers, heads=heads,
        intermediate=intermediate, vocab_size=args.vocab_size, max_position_embeddings=512,
    )
    objective = objectives.objective(args.objective)
    whole = objective.whole_model  # the Fisher covers the whole model (a causal LM's)
    if objective.decoders_only and arch == "bert":
        raise SystemExit(f"--objective {objective.name} needs a decoder: --arch llama")
    model = objectives.auto_class(args.objective).from_config(config).eval()
    names = None if arch == "bert" else ["input_ids", "attention_mask"]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, words = make_tokenizer(Path(tmp), args.vocab_size, names)
    samples = make_samples(args.n, args.num_labels, words, args.min_tokens, args.max_tokens, args.seed)
    batches, _ = fisher.batches.model_batches(model, tokenizer, samples,
                                              batch_size=args.batch_size, max_length=128,
                                              sort_by_length=True, device="cpu",
                                              kind=objective.task_kind)
    tokens = sum(int(b.inputs["attention_mask"].sum()) for b in batches)
    padded = sum(b.inputs["attention_mask"].numel() for b in batches)
    params = sum(p.numel() for p in model.parameters()) if whole else sum(
        p.numel() for p in model.base_model.parameters())
    kv = f" kv_heads={config.num_key_value_heads}" if arch == "llama" else ""
    what = "parameters (whole model)" if whole else "body params"
    print(f"\nmodel: {arch} {args.size} {args.objective} (layers={layers} hidden={hidden} "
          f"heads={heads}{kv} intermediate={intermediate} vocab={args.vocab_size}; "
          f"{params / 1e6:.1f}M {what})")
    print(f"samples: n={args.n}, {tokens} tokens ({tokens / args.n:.1f}/sample, "
          f"{padded - tokens} padding), batch size {args.batch_size}, chunk size {args.chunk_size}")
    print(f"device: {device_name('cpu')} ({os.cpu_count()} cores), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, default attention {model.config._attn_implementation}, "
          f"glibc heap reuse {'on' if allocator else 'off'}")

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    def best(measure):
        return min((measure() for _ in range(args.repeat)), key=lambda t: t[0])

    forward = {impl: best(lambda: time_forward(model, batches, impl)) for impl in ("sdpa", "eager")}
    rows = [(f"forward ({impl}, inference_mode)", t) for impl, t in forward.items()]

    def fisher_times(**kw) -> tuple[float, float]:
        def once():
            with Clock() as clock:  # its CPU time includes the (small) tokenisation
                _, meta = fisher.compute_fisher(
                    model, tokenizer, samples, batch_size=args.batch_size, max_length=128,
                    device="cpu", count_flops=False, objective=objective.name, **kw,
                )
            return meta["seconds"], clock.cpu

        return best(once)

    if "mask" not in args.skip:
        rows.append(("mask Fisher, per-example (Eq. 4)", fisher_times(method="mask")))
    if "per-batch" not in args.skip:
        rows.append(("mask Fisher, per-batch (released code)",
                     fisher_times(method="mask", estimator="per-batch")))
    if "full" not in args.skip:
        rows.append((f"full Fisher, vmap (chunk {args.chunk_size})",
                     fisher_times(method="full", chunk_size=args.chunk_size)))
    if "naive" not in args.skip and not whole:
        rows.append(("full Fisher, naive loop (1 example/backward)",
                     best(lambda: naive_full_fisher(model, tokenizer, samples, 128))))

    base_wall = min(t[0] for t in forward.values())
    base_cpu = min(t[1] for t in forward.values())
    width = max(len(name) for name, _ in rows)
    print(f"{'measurement'.ljust(width)}  {'wall s':>8}  {'x forward':>9}  {'cpu s':>8}  {'x forward':>9}")
    for name, (wall, cpu) in rows:
        print(f"{name.ljust(width)}  {wall:8.2f}  {wall / base_wall:9.2f}  {cpu:8.2f}  {cpu / base_cpu:9.2f}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
