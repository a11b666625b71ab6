"""Start a tokenizer as the PCA tokenizer: training then only has to add what is non-linear.

:func:`init_from_pca` sets the weights of a freshly built ``kl`` tokenizer so that, before any
training step, ``reconstruct`` equals :meth:`PCATokenizer.reconstruct` (up to float rounding):

- encoder: the patch embedding's first ``k`` output channels (k = latent_dim) compute the PCA
  codes of the normalised slot-0 values ``v'`` (``v = s * v' + m``, so ``W = C * s`` and
  ``b = (m - mean) @ C^T``); the other channels keep their random initialisation (features the
  blocks may use later); the position table is zeroed on the first ``k`` channels;
- every residual branch (attention output projection and MLP ``fc2``, encoder and decoder) is
  zero, so each block starts as the identity (ReZero / adaLN-zero style);
- bottleneck: the posterior mean reads channels ``0..k-1`` (identity); the log-variance keeps
  its bias (``init_logvar``) and a zero weight;
- decoder: ``in_proj`` writes the latent into channels ``0..k-1``; the pixel head maps them
  back through ``C^T`` to normalised slot-0 values (``(codes @ C + mean - m) / s``).

It needs no norm between the stack and the linear maps (``final_norm=False``,
``decoder_final_norm=False``) and biases on the patch embedding and the pixel head
(``decoder_bias=True``): the run file's ``[model] overrides``, or ``[model] pca_init = true``
which fits the PCA on the training crops and calls this before the first step.

Shapes: C pca components [k, d] with d = p * p * c (one temporal slot, (ph, pw, c) order),
mean [d]; patch embedding weight [width, pt * d]; head weight [pt * d, width].
"""

from __future__ import annotations

import torch
from torch import nn

from atoken.baselines import PCATokenizer
from atoken.core.errors import ConfigError
from atoken.factory import default_modality

__all__ = ["PCA_CROP_BATCHES", "PCA_MAPS", "fit_pca", "init_from_pca", "zero_residual_branches"]

#: Training batches the PCA of ``pca_init`` is fitted on.
PCA_CROP_BATCHES = 40

#: Name prefixes of the parameters :func:`init_from_pca` sets from the PCA (training gives
#: them ``encoder_lr_mult``, as a pretrained encoder's).
PCA_MAPS: tuple[str, ...] = (
    "encoder.patch_embed.",
    "encoder.pos_table.",
    "bottleneck.",
    "decoder.in_proj.",
    "head.",
)


@torch.no_grad()
def zero_residual_branches(stack: nn.Module) -> int:
    """Zero the output projection of every attention and MLP in a transformer stack.

    Returns:
        The number of blocks changed (each block becomes the identity map).
    """
    blocks = getattr(stack, "blocks", ())
    for block in blocks:
        for layer in (block.attn.proj, block.mlp.fc2):
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
    return len(blocks)


def _check(tokenizer: nn.Module, pca: PCATokenizer) -> None:
    cfg = tokenizer.config
    problems = []
    if pca.components is None or pca.mean is None:
        problems.append("the PCA is not fitted (call PCATokenizer.fit first)")
    if tokenizer.decoder is None:
        problems.append("the tokenizer has no decoder")
    if cfg.bottleneck != "kl":
        problems.append(f"the bottleneck is {cfg.bottleneck!r}, not 'kl'")
    if cfg.head != "pixels":
        problems.append(f"the head is {cfg.head!r}, not 'pixels'")
    if cfg.encoder.final_norm or cfg.decoder_final_norm:
        problems.append("set overrides final_norm=false and decoder_final_norm=false")
    if pca.latent_dim != cfg.latent_dim:
        problems.append(f"PCA keeps {pca.latent_dim} components, latent_dim is {cfg.latent_dim}")
    if pca.patch_size != cfg.encoder.patch_size:
        problems.append(f"PCA patch {pca.patch_size} != tokenizer patch {cfg.encoder.patch_size}")
    if not cfg.encoder.backbone.bias or (cfg.decoder is not None and not cfg.decoder.bias):
        problems.append("the patch embedding and the pixel head need biases (decoder_bias=true)")
    widths = [cfg.encoder.backbone.width] + ([cfg.decoder.width] if cfg.decoder else [])
    if cfg.latent_dim > min(widths):
        problems.append(f"latent_dim {cfg.latent_dim} exceeds a width {min(widths)}")
    if problems:
        raise ConfigError("init_from_pca: " + "; ".join(problems))


@torch.no_grad()
def init_from_pca(tokenizer: nn.Module, pca: PCATokenizer) -> nn.Module:
    """Make ``tokenizer`` reconstruct exactly as the fitted ``pca`` (see the module docstring).

    Args:
        tokenizer: a :class:`atoken.Tokenizer` with a ``kl`` bottleneck, the ``pixels`` head and
            no final norms (``final_norm=False``, ``decoder_final_norm=False``).
        pca: a fitted :class:`PCATokenizer` with ``latent_dim`` components and the same patch.

    Returns:
        The tokenizer, changed in place.

    Raises:
        ConfigError: when the tokenizer or the PCA does not fit these requirements.
    """
    _check(tokenizer, pca)
    k = pca.latent_dim
    embed = tokenizer.encoder.patch_embed.proj
    weight = embed.weight
    dtype, device = weight.dtype, weight.device
    comps = pca.components.to(device, torch.float64)  # [k, d]
    mean = pca.mean.to(device, torch.float64)  # [d]
    d = comps.shape[1]
    c = tokenizer.config.encoder.in_channels
    # the normalisation the image modality applies (the config's input_mean/std by default)
    images = tokenizer.modality(default_modality(tokenizer.config))
    stats = torch.tensor([images.value_std, images.value_mean], dtype=torch.float64)  # [2, c]
    std = stats[0].to(device).repeat(d // c)  # [d] in (ph, pw, c)
    shift = stats[1].to(device).repeat(d // c)  # [d]

    # encoder: codes = (s * v' + m - mean) @ C^T on channels 0..k-1, temporal slot 0 only
    weight[:k] = 0
    weight[:k, :d] = (comps * std).to(dtype)  # [k, d]
    embed.bias[:k] = ((shift - mean) @ comps.T).to(dtype)  # [k]
    if tokenizer.encoder.pos_table is not None:
        tokenizer.encoder.pos_table.weight[..., :k] = 0
    zero_residual_branches(tokenizer.encoder.transformer)

    # bottleneck: mean = channels 0..k-1, log-variance = its bias
    proj = tokenizer.bottleneck.proj  # [2k, width]
    proj.weight.zero_()
    proj.weight[:k, :k] = torch.eye(k, dtype=dtype, device=device)
    proj.bias[:k] = 0

    # decoder: latent into channels 0..k-1, identity blocks, head back through C^T
    in_proj = tokenizer.decoder.in_proj  # [width, k]
    in_proj.weight[:k] = torch.eye(k, dtype=dtype, device=device)
    if in_proj.bias is not None:
        in_proj.bias[:k] = 0
    zero_residual_branches(tokenizer.decoder.transformer)
    head = tokenizer.head.proj  # [pt * d, width]
    head.weight.zero_()
    head.weight[:d, :k] = (comps.T / std[:, None]).to(dtype)  # [d, k]
    head.bias.zero_()
    head.bias[:d] = ((mean - shift) / std).to(dtype)  # [d]
    return tokenizer


def fit_pca(task, *, latent_dim: int, batches: int = PCA_CROP_BATCHES) -> PCATokenizer:
    """The best linear tokenizer with ``latent_dim`` channels per patch, fitted on the patches
    of the first ``batches`` training batches of ``task`` (held-out samples excluded).

    Raises:
        ConfigError: the task's samples are not ``[3, H, W]`` images.
    """
    crops = [x for step in range(batches) for x in task.batch(step, 0)]
    if not crops or any(x.ndim != 3 or x.shape[0] != 3 for x in crops):
        shape = tuple(crops[0].shape) if crops else ()
        raise ConfigError(
            f"[model] pca_init fits the PCA on the first task's [3, H, W] crops; task "
            f"{task.label!r} gives samples of shape {shape}"
        )
    return PCATokenizer(latent_dim=latent_dim, patch_size=16).fit(crops)
