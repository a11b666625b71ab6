"""The ``kl`` bottleneck: a diagonal Gaussian posterior over a continuous latent.

Shapes: x [N, in_dim] -> (mean, logvar) [N, latent_dim] each -> latent [N, latent_dim].

In training the latent is a sample ``mean + exp(logvar / 2) * eps``; at inference it is the
mean, unless ``sample_at_inference`` is set (the official release samples). The exported term
``kl`` is KL(q || N(0, I)) summed over channels and averaged over tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from atoken.core.components import BottleneckOutput
from atoken.core.errors import ConfigError
from atoken.plugins.hookspecs import hookimpl

__all__ = ["KLBottleneck"]


class KLBottleneck(nn.Module):
    """Linear map to mean and log-variance, with reparameterised sampling.

    Args:
        in_dim: encoder width.
        latent_dim: latent channels (32 in stage 1 of the paper, 48 later).
        sample_at_inference: sample instead of taking the mean when not training.
        logvar_range: clamp of the log-variance, for numerical safety.
        init_logvar: initial log-variance (the bias of its projection). 0 is the textbook
            start; a negative value (e.g. -8) starts with little sampling noise, which makes
            short trainings with the paper's tiny KL weight converge much faster.
        bias: a bias on the projection (the official release's ``proj`` has none; then
            ``init_logvar`` is not applied).
    """

    is_discrete = False
    exports = ("kl",)  # the terms its output carries (atoken.core.components.Bottleneck)

    def __init__(
        self,
        *,
        in_dim: int,
        latent_dim: int = 32,
        sample_at_inference: bool = False,
        logvar_range: tuple[float, float] = (-30.0, 20.0),
        init_logvar: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_dim < 1 or latent_dim < 1:
            raise ConfigError(f"kl: in_dim and latent_dim must be >= 1, got {in_dim}, {latent_dim}")
        self.in_dim, self.latent_dim = in_dim, latent_dim
        self.sample_at_inference = sample_at_inference
        self.logvar_range = logvar_range
        self.proj = nn.Linear(in_dim, 2 * latent_dim, bias=bool(bias))
        if self.proj.bias is not None:
            with torch.no_grad():
                self.proj.bias[latent_dim:].fill_(float(init_logvar))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar), each ``[N, latent_dim]``."""
        mean, logvar = self.proj(x).chunk(2, dim=-1)  # [N, C] each
        return mean, logvar.clamp(*self.logvar_range)

    def forward(self, x: torch.Tensor, *, sample: bool | None = None) -> BottleneckOutput:
        mean, logvar = self.posterior(x)
        if sample is None:
            sample = self.training or self.sample_at_inference
        latent = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).sum(-1)
        kl = kl.mean() if kl.numel() else kl.sum()  # zero tokens: 0, not NaN
        return BottleneckOutput(latent=latent, terms={"kl": kl})


@hookimpl
def register_bottlenecks(register) -> None:
    register("kl", KLBottleneck)
