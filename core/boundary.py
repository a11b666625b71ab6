"""Checks at the tokenizer boundary: what a modality's plugin hands the model is checked where
it enters, and a fault names the modality, its plugin and the hook that gave it.

Shapes:
    B samples, n_b tokens of sample b, N = sum n_b, d the modality's ``value_dim``
    patchify(sample)  -> values [n_b, d] float (finite), coords int32 [n_b, 4] (>= 0, unique
                         within the sample), meta a mapping
    pack(samples)     -> a SparseLatent: feats [N, d], coords int32 [N, 4], seqlens [B]
    head(tokens [N, C'], latent) -> values [N, d] (or [N, content_dim]), unless the head
                         turns its output into samples itself (``to_samples``)

A modality that keeps :meth:`Modality.pack <atoken.core.modality.Modality.pack>` is packed here,
sample by sample through its ``patchify``, so a fault is blamed on ``patchify`` and names the
sample; one that overrides ``pack`` is blamed on ``pack``. The per-token checks run once per
pack, vectorised: one ``isfinite`` over the values and one sort of a (sample, t, x, y, z) grid
index for uniqueness (no Python loop over tokens).

The model knows no registry, so the composition root records who provides what when it builds
the model (:class:`BoundaryChecks`: modality -> plugin, modality -> head and its plugin).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from atoken.core.errors import ConfigError, LatentValidationError, ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality

__all__ = ["BoundaryChecks", "HeadOutputError"]

_INT64_LIMIT = 2**63


class HeadOutputError(ModalityInputError, ConfigError):
    """A head gave values of the wrong width for its modality. Also a ``ConfigError`` (a
    head that does not fit its modality is a configuration fault: what it was before)."""


def _dict(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


@attrs.frozen(kw_only=True, eq=False)
class BoundaryChecks:
    """Who provides each modality of a model and what decodes it, and the checks on what
    they return.

    Attributes:
        plugins: modality name -> the plugin that registered it.
        heads: modality name -> ``(head name, its plugin)`` of the head that decodes it.
        enabled: run the checks on packed samples (the default). False skips them and
            :class:`SparseLatent`'s own validation: for measuring their cost only
            (``benchmarks/boundary_checks.py``); a head's output width is always checked.
    """

    plugins: Mapping[str, str] = attrs.field(factory=dict, converter=_dict)
    heads: Mapping[str, tuple[str, str]] = attrs.field(factory=dict, converter=_dict)
    enabled: bool = True

    # ------------------------------------------------------------------------ names
    def owner(self, name: str) -> str:
        """``modality 'x' (plugin 'p')``, how every message starts."""
        return f"modality {name!r} (plugin {self.plugins.get(name, 'unknown')!r})"

    def head_name(self, name: str) -> str:
        """``head 'pixels' (plugin 'p')`` of modality ``name`` (``head`` when not recorded)."""
        if name not in self.heads:
            return "head"
        head, plugin = self.heads[name]
        return f"head {head!r} (plugin {plugin!r})"

    def _fault(self, name: str, hook: str, message: str) -> ModalityInputError:
        return ModalityInputError(f"{self.owner(name)}, {hook}: {message}")

    # ------------------------------------------------------------------------ inputs
    def pack(self, mod: Modality, samples: Sequence[Any]) -> SparseLatent:
        """Samples of modality ``mod`` -> its raw values, packed: feats ``[N, d]``.

        Raises:
            ModalityInputError: what ``patchify`` (or an overriding ``pack``) returned breaks
                the contract; the message names the modality, its plugin, the hook and, for
                ``patchify``, the sample.
        """
        if type(mod).pack is not Modality.pack:  # the plugin packs itself
            try:
                latent = mod.pack(samples)
            except LatentValidationError as exc:
                raise self._fault(mod.name, "pack", str(exc)) from exc
            if self.enabled:
                self._check_latent(mod, latent, len(samples))
            return latent
        parts = mod.patchify_all(samples)
        if self.enabled:
            for b, part in enumerate(parts):
                self._check_part(mod, part, b)
        if not parts:
            return mod.pack_parts(parts)
        latent = mod.pack_parts(parts, validate=False)  # checked here, with names
        if self.enabled:
            self._check_tokens(mod.name, "patchify", latent)
        return latent

    def _check_part(self, mod: Modality, part: Any, b: int) -> None:
        """One ``patchify`` result: its types and shapes (cheap; no pass over the values)."""
        name, where = mod.name, f"patchify (sample {b})"
        if not isinstance(part, tuple) or len(part) != 3:
            got = f"{len(part)}-tuple" if isinstance(part, tuple) else type(part).__name__
            raise self._fault(name, where, f"must return (values, coords, meta), got a {got}")
        values, coords, meta = part
        if not isinstance(values, torch.Tensor) or not isinstance(coords, torch.Tensor):
            got = f"{type(values).__name__}, {type(coords).__name__}"
            raise self._fault(name, where, f"values and coords must be tensors, got {got}")
        if values.ndim != 2 or values.shape[1] != mod.value_dim:
            raise self._fault(
                name,
                where,
                f"values have shape {tuple(values.shape)}, not [n, {mod.value_dim}] "
                "(n tokens of value_dim values each)",
            )
        if not values.is_floating_point():
            raise self._fault(name, where, f"values must be a float tensor, got {values.dtype}")
        if coords.dtype != torch.int32 or coords.shape != (values.shape[0], 4):
            raise self._fault(
                name,
                where,
                f"coords must be int32 [{values.shape[0]}, 4] (one (t, x, y, z) per value "
                f"row), got {coords.dtype} {list(coords.shape)}",
            )
        if not isinstance(meta, Mapping):
            raise self._fault(name, where, f"meta must be a dict, got {type(meta).__name__}")

    def _check_latent(self, mod: Modality, latent: Any, count: int) -> None:
        """An overriding ``pack``'s result: a latent of ``count`` samples of ``mod``."""
        if not isinstance(latent, SparseLatent):
            raise self._fault(
                mod.name, "pack", f"must return a SparseLatent, got {type(latent).__name__}"
            )
        feats, coords = latent.feats, latent.coords
        if feats.ndim != 2 or feats.shape[1] != mod.value_dim or not feats.is_floating_point():
            raise self._fault(
                mod.name,
                "pack",
                f"feats are {feats.dtype} {list(feats.shape)}, not float [N, {mod.value_dim}]",
            )
        if coords.dtype != torch.int32 or coords.shape != (feats.shape[0], 4):
            raise self._fault(
                mod.name,
                "pack",
                f"coords must be int32 [{feats.shape[0]}, 4], got {coords.dtype} "
                f"{list(coords.shape)}",
            )
        if latent.batch_size != count or int(latent.seqlens.sum()) != feats.shape[0]:
            raise self._fault(
                mod.name,
                "pack",
                f"gave {latent.batch_size} samples of {int(latent.seqlens.sum())} tokens for "
                f"{count} samples and {feats.shape[0]} rows",
            )
        self._check_tokens(mod.name, "pack", latent)

    def _check_tokens(self, name: str, hook: str, latent: SparseLatent) -> None:
        """Every token at once: finite values, coords >= 0, unique within each sample."""
        feats, coords = latent.feats, latent.coords  # [N, d], [N, 4]
        N = feats.shape[0]
        if N == 0:
            return
        ids = latent.sample_ids()  # [N]
        # A sum is NaN or infinite when a value is (or, rarely, when finite values overflow
        # it: then the exact test decides): one reduction, no [N, d] mask in the usual case.
        if not bool(torch.isfinite(feats.sum())) and not bool(torch.isfinite(feats).all()):
            bad = int((~torch.isfinite(feats)).any(dim=1).nonzero()[0, 0])
            raise self._fault(name, hook, f"sample {int(ids[bad])} holds NaN or infinite values")
        low, high = torch.aminmax(coords, dim=0)  # [4], [4]
        if int(low.min()) < 0:
            bad = int((coords < 0).any(dim=1).nonzero()[0, 0])
            raise self._fault(name, hook, f"sample {int(ids[bad])} has negative coordinates")
        dup = _first_duplicate(coords, ids, high.tolist(), latent.batch_size)
        if dup is not None:
            b, row = dup
            raise self._fault(
                name,
                hook,
                f"sample {b} holds the coordinate {tuple(coords[row].tolist())} twice; each "
                "token of a sample needs its own (t, x, y, z)",
            )

    # ------------------------------------------------------------------------ outputs
    def head_values(self, mod: Modality, head: Any, values: Any, N: int) -> None:
        """A head's prediction for ``N`` tokens of ``mod``: ``[N, value_dim]`` or
        ``[N, content_dim]`` values.

        Raises:
            HeadOutputError: naming the modality, its plugin, the head and its plugin.
        """
        if isinstance(values, torch.Tensor) and values.shape in (
            (N, mod.content_dim),
            (N, mod.value_dim),
        ):
            return
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise HeadOutputError(
            f"{self.owner(mod.name)}, {self.head_name(mod.name)}: head {type(head).__name__} "
            f"gave {got} for {N} tokens, but a head without to_samples must give "
            f"[N, {mod.value_dim}] values (value_dim) or [N, {mod.content_dim}] content values "
            "(content_dim)"
        )


def _first_duplicate(
    coords: torch.Tensor, sample_ids: torch.Tensor, high: list[int], B: int
) -> tuple[int, int] | None:
    """``(sample, row)`` of a coordinate its sample holds twice, else None: one sort of the
    (sample, t, x, y, z) grid index (rows sorted instead when that index would not fit int64).
    """
    extents = [B] + [h + 1 for h in high]  # sample, t, x, y, z
    keys = torch.cat([sample_ids[:, None].to(coords.device), coords.long()], dim=1)  # [N, 5]
    total = 1
    for e in extents:
        total *= e
    if total < _INT64_LIMIT:
        flat = keys[:, 0]
        for axis in range(1, 5):
            flat = flat * extents[axis] + keys[:, axis]  # [N], exact: total < 2**63
        ordered, order = torch.sort(flat)  # [N]
        same = (ordered[1:] == ordered[:-1]).nonzero()  # [k, 1]
        if same.numel() == 0:
            return None
        row = int(order[int(same[0, 0]) + 1])
    else:
        _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
        repeated = (counts[inverse] > 1).nonzero()  # [k, 1]
        if repeated.numel() == 0:
            return None
        row = int(repeated[0, 0])
    return int(keys[row, 0]), row
