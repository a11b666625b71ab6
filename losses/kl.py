"""The ``kl`` loss: the KL term a bottleneck exports, passed through to the weighted sum.

Shapes: ``context["kl"]`` is a scalar tensor (the ``kl`` bottleneck's KL(q || N(0, I)),
summed over channels and averaged over tokens); prediction and target are not used.
The paper weights it by 1e-8 in the total loss (AToken §3.4); the weight lives in the run
config, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.plugins.hookspecs import hookimpl

__all__ = ["KLLoss"]


class KLLoss(nn.Module):
    """Returns ``context[key]``, the bottleneck's KL term.

    Args:
        key: the context entry to read, ``"kl"``.

    Raises (when called):
        ConfigError: the context has no such entry (e.g. an FSQ bottleneck exports none) or
            it is not a scalar tensor.
    """

    name = "kl"
    inputs = "terms"  # what it consumes (docs/losses.md#inputs)

    def __init__(self, *, key: str = "kl") -> None:
        super().__init__()
        if not isinstance(key, str) or not key:
            raise ConfigError(f"kl: key must be a non-empty str, got {key!r}")
        self.key = key

    @property
    def reads(self) -> tuple[str, ...]:
        """The bottleneck term it reads (checked against the bottleneck's ``exports``)."""
        return (self.key,)

    def forward(self, prediction: Any, target: Any, context: Mapping[str, Any]) -> torch.Tensor:
        if self.key not in context:
            raise ConfigError(
                f"kl loss: the context has no {self.key!r} entry (it has "
                f"{sorted(map(str, context)) or 'nothing'}); the kl loss needs a bottleneck "
                f"that exports {self.key!r} (the 'kl' bottleneck does, 'fsq' does not)"
            )
        term = context[self.key]
        if not isinstance(term, torch.Tensor) or term.numel() != 1:
            shape = tuple(term.shape) if isinstance(term, torch.Tensor) else type(term).__name__
            raise ConfigError(
                f"kl loss: context[{self.key!r}] must be a scalar tensor, got {shape}"
            )
        return term.reshape(())

    def example_inputs(self) -> tuple[None, None, dict[str, torch.Tensor]]:
        """(prediction, target, context) for the loss contract: a KL term that needs grad."""
        return None, None, {self.key: torch.tensor(0.25, requires_grad=True)}


@hookimpl
def register_losses(register) -> None:
    register("kl", KLLoss)
