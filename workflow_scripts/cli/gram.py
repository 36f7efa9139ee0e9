"""Gram matrices of every linear layer's inputs of a checkpoint: RegMean's artifact.

For every objective (``--objective``):

{objectives}

For each ``nn.Linear`` of the shared body (attention query, key, value and
output projections, FFN input and output projections, the pooler), the Gram
G = X^T X / T of its inputs over the samples: forward passes only (no
gradients), padding tokens excluded, T the number of rows (non-padding tokens;
examples for the pooler), summed over batches in float64.  Keys: the layer's weight
name as in ``model.base_model.state_dict()``.

Output: a safetensors file like the ``fisher`` command's (the Grams, the run's
metadata with ``method: gram``, the model's fingerprint, the seconds of the
forward passes, the device and versions, the ``--meta`` context, and a checksum).
"""

from __future__ import annotations

import logging

from . import options

log = logging.getLogger(__name__)


def run(args) -> None:
    from ..artifacts import check_finite, save_fisher
    from ..gram import compute_gram
    from ..settings import GramSettings

    settings, context, device = options.start_artifact_job(args, GramSettings)
    samples, model, tokenizer, info = options.load_samples_and_model(args, device, settings)
    log.info("Grams of %s on %d samples (%s)", args.model, len(samples), device)
    grams, metadata = compute_gram(model, tokenizer, samples, settings, info=info,
                                   context=context, progress=args.progress)
    save_fisher(grams, metadata, args.out, check=check_finite)
    log.info("wrote %s (%d Grams, %.2f s)", args.out, len(grams), metadata["seconds"])


def register(subparsers) -> None:
    from ..settings import GramSettings

    options.add_artifact_command(subparsers, "gram", "compute the Gram matrices of every body "
                                 "linear layer's inputs", __doc__, GramSettings, run)
