"""Reading official state dicts and mapping their keys, strictly (shared by the tokenizer and
the Gaussian decoder converters; :mod:`atoken.official.convert` re-exports these names).

A checkpoint is a flat state dict (no wrapper, no prefix), a ``.pt`` file read with
``torch.load(weights_only=True)`` (nothing else is ever unpickled) or a ``.safetensors`` file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from atoken.core.errors import StateDictMismatchError
from atoken.engine.checkpoint import CheckpointError
from atoken.official.keys import to_atoken

__all__ = ["convert_state_dict", "load_official_state_dict", "nonfinite_tensors"]

_WRAPPERS = ("state_dict", "model", "module", "ema")


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of ``state`` holding NaN or +-inf, sorted
    (tensors on the meta device hold no values and are skipped)."""
    return sorted(
        name
        for name, value in state.items()
        if torch.is_tensor(value)
        and value.is_floating_point()
        and value.device.type != "meta"
        and not bool(torch.isfinite(value).all())
    )


def load_official_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The flat state dict in ``path`` (``.safetensors``, else a ``.pt``/``.pth`` file read with
    ``torch.load(weights_only=True)`` on the CPU).

    Raises:
        CheckpointError: a missing or unreadable file, or one that is not a flat mapping of
            names to tensors (a wrapped training checkpoint is named as such).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    wrapped = [k for k in _WRAPPERS if isinstance(state.get(k), Mapping)]
    if wrapped:
        raise CheckpointError(
            f"{path}: a wrapped checkpoint (key {wrapped[0]!r} holds the weights); the "
            f"official files are flat state dicts: save state[{wrapped[0]!r}] alone"
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:5]}")
    return dict(state)


def convert_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    *,
    source: str = "official state dict",
    mapper: Callable[[str, torch.Tensor], tuple[str | None, torch.Tensor]] = to_atoken,
) -> dict[str, torch.Tensor]:
    """Map an official state dict to atoken keys and layouts, strictly.

    Args:
        state: the official keys and tensors.
        expected: atoken key -> shape of every parameter and persistent buffer to fill
            (``{k: v.shape for k, v in model.state_dict().items()}``).
        source: named in the error.
        mapper: ``(official key, value) -> (atoken key or None, value)``: the tokenizer's
            table (:func:`atoken.official.keys.to_atoken`) unless another model is filled.

    Raises:
        StateDictMismatchError: listing official keys with no atoken parameter
            (``unexpected``), atoken parameters no key fills (``missing``), and keys whose
            shape differs (``wrong_shape``, official key with the expected and found shapes).
    """
    out: dict[str, torch.Tensor] = {}
    unexpected, wrong, wrong_targets = [], [], set()
    for key, value in state.items():
        ours, mapped = mapper(key, value)
        if ours is None or ours not in expected:
            unexpected.append(key)
            continue
        want = tuple(expected[ours])
        if tuple(mapped.shape) != want:
            wrong.append((key, want, tuple(mapped.shape)))
            wrong_targets.add(ours)
            continue
        out[ours] = mapped
    missing = [k for k in expected if k not in out and k not in wrong_targets]
    if unexpected or missing or wrong:
        raise StateDictMismatchError(
            source, missing=missing, unexpected=unexpected, wrong_shape=wrong
        )
    return out
