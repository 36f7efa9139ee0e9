"""Training examples of a choice task: the prompt followed by one choice (the gold one for
fine-tuning and the empirical Fisher, one drawn from the model for the true Fisher), in the
window scoring uses (:mod:`.encode`), with only the choice's tokens counting.

An example's ``input_ids`` are the window's context and the choice's tokens but the last;
its ``targets`` hold, at each position, the token predicted there (the choice's tokens at
the last context position onwards) and -100 elsewhere, so that :func:`choice_nll` of an
example is minus the very log-likelihood :func:`.score.loglikelihoods` gives its choice.
Batches are right-padded (positions from 0 in every row).

For a training loop that minimises ``model(**inputs, labels=labels).loss`` (transformers
shifts the labels itself), :func:`labelled_example` gives the same example in that
convention: ``input_ids`` the context and the whole choice, ``labels`` the choice's tokens
where they stand and -100 elsewhere, in the window of ``max_length - 1`` so that at most
``max_length`` tokens are fed (the same window as scoring's unless the prompt is cut; a
choice of ``max_length`` tokens keeps one context token, one more).

The per-example loss is ``-log p(choice | prompt)``, the sum over the choice's tokens: its
gradient is the score whose square the Fisher averages.  The true Fisher's choice is drawn
from ``softmax`` of the row's summed log-likelihoods (its distribution over the choices).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .encode import EncodedRow, window

IGNORE = -100


@dataclass
class ChoiceBatch:
    rows: list[int]  # positions in the encoded rows
    choices: list[int]  # the choice of each row trained on
    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask
    targets: torch.Tensor  # [B, T]: the token predicted at each position, -100: not counted


def pad_id(tokenizer) -> int:
    """The id padded positions hold (never attended to, never counted)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def example(enc: EncodedRow, k: int, max_length: int) -> tuple[list[int], list[int]]:
    """``(input_ids, targets)`` of the row's prompt followed by choice ``k``."""
    context, cont = enc.request(k, max_length)
    sequence = list(context) + list(cont)
    return sequence[:-1], [IGNORE] * (len(context) - 1) + list(cont)


def labelled_example(enc: EncodedRow, k: int, max_length: int) -> dict[str, list[int]]:
    """Choice ``k`` after the row's prompt as ``{"input_ids", "attention_mask", "labels"}``
    (labels aligned with the inputs; the model shifts them)."""
    cont = enc.continuations[k]
    # at least one context token predicts the choice's first (a choice of max_length tokens)
    context = window(enc.context, cont, max_length - 1) or enc.context[-1:]
    ids = list(context) + list(cont)
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": [IGNORE] * len(context) + list(cont)}


def pad_labelled(items: list[dict], pad: int, device="cpu") -> tuple[dict, torch.Tensor]:
    """Right-padded ``({"input_ids", "attention_mask"}, labels)`` of labelled examples."""
    width = max(len(e["input_ids"]) for e in items)
    out = {key: torch.full((len(items), width), fill, dtype=torch.long)
           for key, fill in (("input_ids", pad), ("attention_mask", 0), ("labels", IGNORE))}
    for j, e in enumerate(items):
        for key in out:
            out[key][j, :len(e[key])] = torch.tensor(e[key])
    labels = out.pop("labels")
    return {k: v.to(device) for k, v in out.items()}, labels.to(device)


def batches(encoded: list[EncodedRow], max_length: int, batch_size: int, pad: int, *,
            choices: list[int] | None = None, sort_by_length: bool = True,
            device="cpu") -> list[ChoiceBatch]:
    """Right-padded batches of the rows' examples (``choices``: the choice per row; default
    each row's answer)."""
    choices = [e.row.answer for e in encoded] if choices is None else list(choices)
    items = [example(e, k, max_length) for e, k in zip(encoded, choices, strict=True)]
    order = list(range(len(items)))
    if sort_by_length:
        order.sort(key=lambda i: len(items[i][0]))
    out = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(items[i][0]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        targets = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        for j, i in enumerate(chunk):
            inp, tgt = items[i]
            ids[j, :len(inp)] = torch.tensor(inp)
            mask[j, :len(inp)] = 1
            targets[j, :len(tgt)] = torch.tensor(tgt)
        out.append(ChoiceBatch(chunk, [choices[i] for i in chunk],
                               {"input_ids": ids.to(device), "attention_mask": mask.to(device)},
                               targets.to(device)))
    return out


def choice_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per-example -log p(choice | prompt) [B], counted tokens [B])`` of logits [B, T, V]
    against targets [B, T] (already aligned: no shift), in at least float32."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                         ignore_index=IGNORE, reduction="none").view(targets.shape)
    return ce.sum(dim=1), (targets != IGNORE).sum(dim=1)


def drawn_choices(model, encoded: list[EncodedRow], max_length: int, generator: torch.Generator,
                  batch_size: int = 8) -> list[int]:
    """Per row, a choice drawn from softmax of its choices' summed log-likelihoods under
    ``model`` (the true Fisher's label)."""
    from .score import loglikelihoods

    out = []
    for lls in loglikelihoods(model, encoded, max_length, batch_size):
        probs = torch.softmax(torch.tensor(lls, dtype=torch.float64), dim=0)
        out.append(int(torch.multinomial(probs, 1, generator=generator)))
    return out
