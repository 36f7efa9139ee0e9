"""Seconds to score choice prompts on a Llama-shaped model: one forward per choice (each
request's full sequence, logits at every position: how the causal-LM path scored before)
against one forward per shared prompt (:func:`workflow_scripts.choice.score.loglikelihoods`:
the context once, logits at its last position, multi-token choices continued from its
key-value cache).

    python benchmarks/bench_choice.py                       # SmolLM2-135M's shape, 100 prompts
    python benchmarks/bench_choice.py --choice-tokens 3 --choices 4
    python benchmarks/bench_choice.py --layers 4            # a quick look

The model has SmolLM2-135M-Instruct's shape (30 layers, hidden 576, FFN 1,536, 9 query /
3 key-value heads, vocabulary 49,152, tied embeddings) and random weights; prompts are
random token ids, ``--prompt-tokens`` long on average (uniform in +-50 %), each with
``--choices`` choices of ``--choice-tokens`` tokens (the QNLI-like default: two one-token
answers).  Both scorers get the same requests and batch size, in one run; their
log-likelihoods are checked to agree.  Prints each time (wall clock and this process's CPU
seconds, the steadier on a shared machine) and the ratios.  Not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from workflow_scripts.choice.encode import EncodedRow  # noqa: E402
from workflow_scripts.choice.rows import ChoiceRow  # noqa: E402
from workflow_scripts.choice.score import loglikelihoods  # noqa: E402


def model(layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def requests(n: int, prompt_tokens: int, choices: int, choice_tokens: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(max(2, prompt_tokens // 2), prompt_tokens * 3 // 2)
        context = tuple([1] + [rng.randrange(3, 49152) for _ in range(length - 1)])
        conts = tuple(tuple(rng.randrange(3, 49152) for _ in range(choice_tokens))
                      for _ in range(choices))
        row = ChoiceRow("p", tuple(f"c{k}" for k in range(choices)), 0, i)
        out.append(EncodedRow(row, context, conts))
    return out


def per_choice(lm, encoded, max_length: int, batch_size: int) -> list[list[float]]:
    """One forward per (prompt, choice): right-padded full sequences, every position's
    logits."""
    flat = [(r, k, *e.request(k, max_length)) for r, e in enumerate(encoded)
            for k in range(len(e.continuations))]
    flat.sort(key=lambda t: len(t[2]) + len(t[3]))
    out = [[0.0] * len(e.continuations) for e in encoded]
    with torch.inference_mode():
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            seqs = [list(c) + list(x)[:-1] for _, _, c, x in chunk]
            width = max(map(len, seqs))
            ids = torch.zeros((len(seqs), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, s in enumerate(seqs):
                ids[j, :len(s)] = torch.tensor(s)
                mask[j, :len(s)] = 1
            logprobs = torch.log_softmax(lm(input_ids=ids, attention_mask=mask).logits.float(), -1)
            for j, (r, k, ctx, cont) in enumerate(chunk):
                pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont))
                out[r][k] = float(logprobs[j, pos, torch.tensor(cont)].sum())
    return out


def timed(fn):
    """``((wall seconds, CPU seconds of this process), result)``: on a shared machine the
    CPU seconds are the steadier figure."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--choices", type=int, default=2)
    p.add_argument("--choice-tokens", type=int, default=1)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8, help="prompts (shared) or requests "
                   "(per choice) per forward")
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = model(args.layers)
    encoded = requests(args.prompts, args.prompt_tokens, args.choices, args.choice_tokens)
    per_choice(lm, encoded[:2], args.max_length, args.batch_size)  # warm-up
    t_each, each = timed(lambda: per_choice(lm, encoded, args.max_length, args.batch_size))
    t_shared, shared = timed(lambda: loglikelihoods(lm, encoded, args.max_length,
                                                    args.batch_size))
    worst = max(abs(a - b) for ra, rb in zip(each, shared) for a, b in zip(ra, rb))
    print(f"Llama-shaped model ({args.layers} layers, hidden 576, vocabulary 49,152), "
          f"{args.prompts} prompts of ~{args.prompt_tokens} tokens, {args.choices} choices of "
          f"{args.choice_tokens} token(s), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"  one forward per choice : {t_each[0]:8.2f} s wall, {t_each[1]:8.2f} s CPU  "
          f"({args.prompts * args.choices} prompt forwards)")
    print(f"  one forward per prompt : {t_shared[0]:8.2f} s wall, {t_shared[1]:8.2f} s CPU  "
          f"({args.prompts} prompt forwards)")
    print(f"  ratio                  : {t_each[0] / t_shared[0]:8.2f} x wall, "
          f"{t_each[1] / t_shared[1]:8.2f} x CPU")
    print(f"  largest log-likelihood difference: {worst:.2e}")


if __name__ == "__main__":
    main()
