"""Log-likelihoods of every choice of every row, with one forward of each shared prompt.

A row's choices share its context; the context is run once (left-padded in a batch of
contexts, explicit positions, ``logits_to_keep=1``: the output projection at its last
position only), which gives every choice's first token.  Choices of more than one token
continue from the context's key-value cache (their tokens but the last fed, right-padded,
each choice's rows of the cache selected), so a row of K choices costs one prompt forward,
not K; single-token choices need nothing more.  Where the harness's left truncation gives
choices of different lengths different contexts (a context longer than the window), each
distinct context is one forward.

The log-likelihood of a choice is the sum of its continuation tokens' log-probabilities
(:mod:`.encode`); log-softmax in at least float32.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from .encode import EncodedRow


def _cache_keyword(model) -> str:
    """The forward's name of the key-value cache (``cache`` since transformers 5.25, before
    ``past_key_values``)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass(frozen=True)
class Prompt:
    """One distinct context and the (row, choice) requests that continue it."""
    context: tuple[int, ...]
    requests: tuple[tuple[int, int], ...]  # (row position, choice index)


def prompts(encoded: list[EncodedRow], max_length: int) -> list[Prompt]:
    """The distinct contexts of the rows' requests, each with its requests (row order)."""
    out = []
    for r, enc in enumerate(encoded):
        groups: dict[tuple[int, ...], list] = {}
        for k in range(len(enc.continuations)):
            groups.setdefault(enc.request(k, max_length)[0], []).append((r, k))
        out.extend(Prompt(ctx, tuple(reqs)) for ctx, reqs in groups.items())
    return out


def _context_pass(model, batch: list[Prompt], pad_id: int, device, cache: bool):
    width = max(len(p.context) for p in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, p in enumerate(batch):
        ids[i, width - len(p.context):] = torch.tensor(p.context)
        mask[i, width - len(p.context):] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                position_ids=positions.to(device), use_cache=cache, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    kept = out["cache"] if "cache" in out else out.get("past_key_values")
    return first, (kept if cache else None), mask


def _continuation_pass(model, cache, ctx_mask, items, pad_id: int, device) -> torch.Tensor:
    """Summed log-probabilities of tokens 2.. of each ``(prompt position, continuation)``
    in ``items``, continued from the contexts' cache."""
    select = torch.tensor([i for i, _ in items], device=device)
    cache.batch_select_indices(select)
    width = max(len(c) for _, c in items) - 1
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    targets = torch.full((len(items), width), -100, dtype=torch.long)
    for j, (_, cont) in enumerate(items):
        n = len(cont) - 1
        ids[j, :n] = torch.tensor(cont[:-1])
        mask[j, :n] = 1
        targets[j, :n] = torch.tensor(cont[1:])
    past = ctx_mask[select.cpu()]
    start = past.sum(-1, keepdim=True)
    positions = start + torch.arange(width).unsqueeze(0)
    full_mask = torch.cat([past, mask], dim=1)
    logits = model(input_ids=ids.to(device), attention_mask=full_mask.to(device),
                   position_ids=positions.to(device), use_cache=True,
                   **{_cache_keyword(model): cache}).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    targets = targets.to(device)
    picked = logprobs.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != -100)).sum(-1)


def _score_batch(model, encoded, batch: list[Prompt], pad_id: int, device, out) -> None:
    multi = any(len(encoded[r].continuations[k]) > 1 for p in batch for r, k in p.requests)
    first, cache, ctx_mask = _context_pass(model, batch, pad_id, device, multi)
    items, where = [], []
    for i, p in enumerate(batch):
        for r, k in p.requests:
            cont = encoded[r].continuations[k]
            out[r][k] = float(first[i, cont[0]])
            if len(cont) > 1:
                items.append((i, cont))
                where.append((r, k))
    if items:
        rest = _continuation_pass(model, cache, ctx_mask, items, pad_id, device)
        for (r, k), value in zip(where, rest.tolist()):
            out[r][k] += value


def loglikelihoods(model, encoded: list[EncodedRow], max_length: int, batch_size: int = 8,
                   pad_id: int = 0, progress: bool = False) -> list[list[float]]:
    """Per encoded row, each choice's summed log-likelihood (see the module's description);
    ``batch_size``: prompts per forward (their choices' continuations share it)."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    todo = sorted(prompts(encoded, max_length), key=lambda p: len(p.context))
    out = [[0.0] * len(enc.continuations) for enc in encoded]
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(todo), unit="prompt", desc="score", file=sys.stderr,
               disable=not progress, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    with torch.inference_mode(), bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            _score_batch(model, encoded, chunk, pad_id, device, out)
            bar.update(len(chunk))
    model.train(was_training)
    return out
