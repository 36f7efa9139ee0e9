"""Fisher information of a fine-tuned model: mask nodes or the full diagonal.

For every objective (``--objective``); the loss is the task's (a classifier's
cross-entropy over labels, a causal LM's next-token loss):

{objectives}

Two methods, one command (``python -m workflow_scripts fisher``):

``--method mask`` (the paper's method)
    Multiplicative masks of ones sit on every attention head's output (before
    the attention output projection, Eq. 1) and on every FFN neuron; the Fisher
    of a mask is the mean squared gradient of the loss with respect to it.
    The masks are installed with hooks (``workflow_scripts.fisher.hooks``);
    transformers 5 has no ``head_mask`` argument.  The neuron mask acts after
    the activation (the released code, ``post-activation``, default) or inside
    it as Eq. 2 is typeset (``pre-activation``: ``GELU(m * W1 x + b1)``).

    Estimators: ``per-example`` (Eq. 4, default) is the mean over samples of each
    example's squared gradient, exact and batched: the masks get a batch
    dimension, the per-example losses are summed, and one backward pass yields
    every example's own gradient (examples do not interact); the model's weights
    are frozen so no weight gradient is computed.  ``per-batch`` is the released
    code's definition: the sum over consecutive batches (file order) of the
    squared gradient of the batch-mean loss.

``--method full`` (Matena & Raffel's baseline)
    The diagonal Fisher of every parameter of the shared body (a classifier's
    task head excluded; a causal LM's whole model): the mean over samples of the
    squared per-example gradient, with the dataset labels (``empirical``) or the exact expectation over the
    model's predicted classes (``expected``: sum_c p(c|x) (d log p(c|x)/dθ)^2).
    Per-example gradients are vectorised with ``torch.func`` (``functional_call``
    + ``vmap(grad)``), ``chunk_size`` examples at a time, each example carrying
    its own attention mask so that padding never changes its gradient.

Output: a safetensors file with the Fisher and its metadata (settings, the
model's fingerprint, the seconds and FLOPs of the computation, the device and
library versions, the ``--meta`` context).  On CPU the process lets glibc keep
freed memory for reuse (faster; the process keeps its peak memory until it
ends).
"""

from __future__ import annotations

import logging

from . import options

log = logging.getLogger(__name__)

# Large CPU tensors (activations, per-example gradients) on transparent huge
# pages.  PyTorch reads this once, at its first allocation; without it every
# fresh multi-megabyte tensor page-faults in 4 KiB pages, which made fresh
# allocations 2-5x slower on the development machine.  Set it to 0 to opt out.
ENVIRONMENT = {"THP_MEM_ALLOC_ENABLE": "1"}


def register(subparsers) -> None:
    from ..settings import FisherSettings

    options.add_artifact_command(subparsers, "fisher", "compute a mask-node or full diagonal "
                                 "Fisher artifact", __doc__, FisherSettings, run)


def run(args) -> None:
    from ..artifacts import save_fisher
    from ..fisher import compute_fisher, tune_cpu_allocator
    from ..settings import FisherSettings

    settings, context, device = options.start_artifact_job(args, FisherSettings)
    if device == "cpu":
        tune_cpu_allocator()
    samples, model, tokenizer, info = options.load_samples_and_model(args, device, settings)
    log.info("%s Fisher of %s on %d samples (%s)", settings.method, args.model, len(samples),
             device)
    tensors, metadata = compute_fisher(model, tokenizer, samples, settings, info=info,
                                       context=context, progress=args.progress)
    save_fisher(tensors, metadata, args.out)
    log.info("wrote %s (%.2f s, %s FLOPs)", args.out, metadata["seconds"], metadata["flops"])
