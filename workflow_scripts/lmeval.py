"""Evaluation of causal language models: the mean next-token loss over a task's counted
tokens (every token of a text after its first; every response token), and its
perplexity.

The loss is token-weighted: the sum of every counted token's cross-entropy over the
number of counted tokens, so long texts weigh by their length, as a language model's
validation loss usually is.  The normalised score of a merge is the share of the
fine-tuning gain it keeps, ``(L_base - L_merged) / (L_base - L_ft) x 100``
(:mod:`workflow_scripts.reporting`).
"""

from __future__ import annotations

import math
import sys

import torch
from tqdm import tqdm

from . import architectures as arch
from . import lm
from .data import Samples

LOSS, PERPLEXITY = "loss", "perplexity"


def lm_metrics(model, tokenizer, samples: Samples, batch_size: int, max_length: int,
               progress: bool = True, where: str = "samples") -> tuple[dict, dict]:
    """``({"loss", "perplexity"}, {"tokens", "examples", "dropped"})`` of the model on the
    samples' texts, batched with length-sorted padding under ``inference_mode``."""
    device = next(model.parameters()).device
    batches = lm.batches(tokenizer, samples, batch_size, max_length, device=device, where=where)
    total, tokens, examples = 0.0, 0, 0
    bar = tqdm(total=sum(len(b.rows) for b in batches), unit="ex", desc="evaluate",
               file=sys.stderr, disable=not progress,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    model.eval()
    with torch.inference_mode(), bar:
        for batch in batches:
            logits = model(**arch.model_inputs(model, batch.inputs)).logits
            means, counted = lm.token_losses(logits, batch.labels)
            total += float((means.double() * counted).sum())
            tokens += int(counted.sum())
            examples += len(batch.rows)
            bar.update(len(batch.rows))
    loss = total / tokens
    metrics = {LOSS: loss, PERPLEXITY: math.exp(loss) if loss < 700 else None}
    return metrics, {"tokens": tokens, "examples": examples, "dropped": len(samples) - examples}
