"""A Fisher computation as the ``fisher`` command runs it: the tensors, their
timing and FLOP count, and the metadata of the artifact; and the CPU allocator
setting for a process that computes one Fisher and ends.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch
from torch import nn

from .. import architectures as arch
from .. import data as data_mod
from .. import taskkinds
from ..artifacts import ArtifactContext, environment_metadata, source_metadata
from ..devices import synchronize
from ..settings import FisherSettings
from .batches import model_batches
from .full import full_fisher_batches
from .kinds import default_chunk_size
from .mask import mask_fisher_batches


def compute_fisher(
    model: nn.Module,
    tokenizer,
    samples: data_mod.Samples,
    settings: FisherSettings | None = None,
    *,
    info=None,
    context: ArtifactContext | None = None,
    progress: bool = False,
    **overrides,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Compute a Fisher and the metadata of its artifact: ``(tensors, metadata)``.

    ``settings`` (:class:`FisherSettings`, with ``overrides`` by name: ``method="mask"``)
    chooses the Fisher; the model stays on its own device.  ``seconds`` times the Fisher
    computation alone (tokenisation and padding happen before, model loading is the
    caller's); ``flops`` are counted with ``FlopCounterMode`` in a second, untimed pass
    (``None`` if not counted).  ``info`` is the ``ModelInfo`` of :func:`models.load_model`
    (source, fingerprint, revision); ``context`` what the header records of the job.
    """
    settings = FisherSettings.of(settings, **overrides)
    method, kind = settings.method, taskkinds.of_settings(settings)
    batches, device = model_batches(
        model, tokenizer, samples, batch_size=settings.batch_size,
        max_length=settings.max_length,
        sort_by_length=not (method == "mask" and settings.estimator == "per-batch"), device=None,
        kind=kind,
    )
    chunk_size = settings.chunk_size
    if method == "full" and chunk_size is None:
        chunk_size = fitting_chunk_size(model, device, settings.max_memory_mb, info)

    def compute(show: bool):
        if method == "mask":
            return mask_fisher_batches(model, batches, estimator=settings.estimator,
                                       neuron_mask=settings.neuron_mask, progress=show,
                                       labels=settings.effective_labels(method, settings.labels),
                                       kind=kind)
        return full_fisher_batches(model, batches, labels=settings.labels,
                                   chunk_size=chunk_size, progress=show, kind=kind)

    tensors, seconds = timed(compute, device, progress)
    flops = count_flops(compute) if settings.count_flops else None
    metadata = {
        **source_metadata(model, info, samples, context, batches, settings.objective),
        **fisher_settings_metadata(model, settings, chunk_size),
        "seconds": seconds,
        "flops": flops,
        **environment_metadata(device),
    }
    return tensors, metadata


def fitting_chunk_size(model: nn.Module, device, max_memory_mb: int | None = None,
                       info=None) -> int:
    """The full Fisher's chunk size: the device's default (:func:`.kinds.default_chunk_size`),
    or fewer per-example gradients when the memory that is left holds fewer (each is one
    copy of the body's parameters in the model's dtype).  No room for even one is a
    :class:`FisherMemoryError` naming the model, its parameters and the bytes needed."""
    from ..errors import FisherMemoryError
    from ..memory import MB, available_bytes

    body = [p for p in arch.body(model).parameters()]
    params = sum(p.numel() for p in body)
    per_example = sum(p.numel() * p.element_size() for p in body)
    device = torch.device(device)
    if max_memory_mb is not None:
        left = max_memory_mb * MB
    elif device.type == "cuda":
        left = torch.cuda.mem_get_info(device)[0]
    else:
        left = available_bytes()
    room = int(0.8 * left) // max(per_example, 1)
    if room < 1:
        name = getattr(info, "source", None) or model.config.model_type
        raise FisherMemoryError(
            f"the full Fisher of {name} needs one gradient of its {params:,} body parameters "
            f"per example ({per_example / MB:,.0f} MB) beyond the model and its accumulators, "
            f"but {left / MB:,.0f} MB are left; use the mask Fisher (fisher.methods: [mask], "
            "a few numbers per layer), give the job more memory (compute.mem_mb), or set "
            "fisher.chunk_size to force it")
    return min(default_chunk_size(device), room)


def timed(compute, device, progress: bool):
    """``(compute(progress), seconds)``, the device synchronised around the timing."""
    synchronize(device)
    start = time.perf_counter()
    result = compute(progress)
    synchronize(device)
    return result, time.perf_counter() - start


def count_flops(compute) -> int:
    """The FLOPs of one untimed ``compute(False)`` pass (``FlopCounterMode``)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        compute(False)
    return int(counter.get_total_flops())


def fisher_settings_metadata(model: nn.Module, settings: FisherSettings,
                             chunk_size: int | None) -> dict:
    """The header fields of the Fisher's settings (those of the other method as their
    neutral values) and the model's dimensions."""
    method, d = settings.method, arch.dims(model)
    return {
        "method": method,
        "estimator": settings.estimator if method == "mask" else "per-example",
        "labels": settings.effective_labels(method, settings.labels),
        "task_kind": taskkinds.of_settings(settings).name,
        "neuron_mask": settings.neuron_mask if method == "mask" else None,
        "max_length": settings.max_length,
        "batch_size": settings.batch_size,
        "chunk_size": chunk_size if method == "full" else None,
        "attn_implementation": "eager" if method == "full" else model.config._attn_implementation,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        # kv_heads only where grouped-query attention makes it differ from heads
        "dims": {k: v for k, v in asdict(d).items() if k != "kv_heads" or v != d.heads},
    }
