"""Where training runs: the device a run file names, and whether bf16 is fast there."""

from __future__ import annotations

from typing import Any

import torch

from atoken.core.errors import ConfigError

__all__ = ["fast_bf16", "resolve_device", "to_device"]


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix multiplication is native on ``device``.

    CUDA: when the GPU supports bf16. CPU: when it has AVX-512 BF16 or AMX instructions; on
    other CPUs (AVX2 only) torch emulates bf16 GEMMs, which is far slower than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ConfigError: an unknown device, or CUDA asked for where there is none.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"[train] device: {name!r} is not a device ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"[train] device: {name!r} asked for, but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"[train] device must be auto, cpu or cuda[:N], got {name!r}")
    return device


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in a batch (nested lists, tuples and dicts) moved to ``device``; the rest as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch
