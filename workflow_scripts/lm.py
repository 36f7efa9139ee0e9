"""Causal-LM examples: a task's text tokenised with the tokens that count, batched, and
the loss of each example.

A causal-LM task's samples use the engine's Parquet schema (:mod:`.data`) with
``text_a`` the text, or the prompt when ``text_b`` holds a response; the label column is
unused (0).  An example's ``input_ids`` are its tokenizer's encoding of the text (or of the
prompt, followed by the response's tokens without special tokens); its ``labels`` are the
same ids with the prompt's set to -100, so that, as in ``model(**enc,
labels=ids).loss`` of transformers, the loss of one example is the mean next-token
cross-entropy over the tokens that count (every token after the first of a text; every
response token).  Examples with no counted token left after truncation to
``max_length`` are dropped, and counted; a task left with none is an error.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .data import Batch, Samples
from .errors import SampleError

log = logging.getLogger(__name__)
IGNORE = -100  # the label of a token that does not count (prompt, padding)


def encode(tokenizer, samples: Samples, max_length: int, where: str = "samples"):
    """``(encoded, kept rows)``: per kept example ``{"input_ids", "attention_mask",
    "labels"}`` (lists), truncated to ``max_length`` tokens; examples without a counted
    token are dropped (logged with their count; none left: a :class:`SampleError`)."""
    encoded, kept, dropped = [], [], 0
    for i, (text, response) in enumerate(zip(samples.text_a, samples.text_b)):
        ids = tokenizer(text)["input_ids"]
        labels = list(ids)
        if response is not None:
            answer = tokenizer(response, add_special_tokens=False)["input_ids"]
            labels = [IGNORE] * len(ids) + list(answer)
            ids = list(ids) + list(answer)
        ids, labels = ids[:max_length], labels[:max_length]
        # the first token is never predicted (nothing precedes it); marked, so that left
        # padding before it does not make it a target
        labels[:1] = [IGNORE] * min(1, len(labels))
        if not any(label != IGNORE for label in labels):
            dropped += 1
            continue
        encoded.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
        kept.append(i)
    if dropped:
        log.warning("%s: %d of %d examples have no token left to predict after truncation to "
                    "%d tokens (a prompt that fills the window, or a one-token text): dropped",
                    where, dropped, len(samples), max_length)
    if not encoded:
        raise SampleError(f"{where}: no example has a token to predict within {max_length} "
                          "tokens; raise max_length or shorten the prompts")
    return encoded, kept


def pad(tokenizer, items: list[dict], device) -> tuple[dict, torch.Tensor]:
    """The batch's inputs padded on the tokenizer's side, and its labels padded with -100."""
    width = max(len(e["input_ids"]) for e in items)
    inputs = tokenizer.pad([{k: e[k] for k in ("input_ids", "attention_mask")} for e in items],
                           return_tensors="pt")
    left = tokenizer.padding_side == "left"
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(items):
        values = torch.tensor(e["labels"], dtype=torch.long)
        if left:
            labels[row, width - len(values):] = values
        else:
            labels[row, :len(values)] = values
    return {k: v.to(device) for k, v in inputs.items()}, labels.to(device)


def batches(tokenizer, samples: Samples, batch_size: int, max_length: int, *,
            sort_by_length: bool = True, device="cpu", where: str = "samples") -> list[Batch]:
    """Padded batches of the kept examples (rows: their positions in ``samples``)."""
    encoded, kept = encode(tokenizer, samples, max_length, where)
    order = list(range(len(encoded)))
    if sort_by_length:
        order.sort(key=lambda i: len(encoded[i]["input_ids"]))
    out = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        inputs, labels = pad(tokenizer, [encoded[i] for i in chunk], device)
        out.append(Batch([kept[i] for i in chunk], inputs, labels))
    return out


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per-example mean next-token loss [B], counted tokens [B])`` of logits [B, T, V]
    against labels [B, T] (-100: not counted), computed in at least float32."""
    logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                         ignore_index=IGNORE, reduction="none").view(targets.shape)
    counted = (targets != IGNORE).sum(dim=1)
    return ce.sum(dim=1) / counted.clamp_min(1), counted


def sampled_labels(logits: torch.Tensor, labels: torch.Tensor, generator) -> torch.Tensor:
    """Labels with each counted next token drawn from the model's own prediction (the true
    Fisher's sampling): position t+1's token ~ softmax(logits[t])."""
    probs = torch.softmax(logits[:, :-1].detach().float(), dim=-1)
    drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    out = labels.clone()
    counted = labels[:, 1:] != IGNORE
    out[:, 1:] = torch.where(counted, drawn.view(counted.shape), labels[:, 1:])
    return out
