"""Compute devices: the one place that turns ``auto``/``cpu``/``cuda`` into a device."""

from __future__ import annotations

import platform

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")  # what models may be loaded and run in


def resolve_device(name: str | None) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda[:N]`` must be available."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for but no CUDA device is available; "
                            "use --device cpu (compute.device: cpu) or auto")
        return name
    if name != "cpu":
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda")
    return name


def device_name(device) -> str:
    """A human name of the device (GPU model or CPU model name)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def synchronize(device) -> None:
    """Wait for queued GPU work (a no-op on CPU), so timings measure the work itself."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
