"""The formulas of a run plan: model FLOPs and activation memory of one micro-batch.

Shapes and symbols: T tokens of a micro-batch, ``n`` the tokens of one sample (attention runs
within a sample), C the width, M the MLP width, D the head dimension of a stack, d the values
of a token (the encoder's patch: 4 x 16 x 16 x 3 = 3072).

Model FLOPs (what MFU counts; forward + backward = 3 x forward):

    6 * P_tok * T  +  12 * sum_stacks(depth * C) * sum_samples(n²)

``P_tok``: the weights every token meets (the patch embedding and the encoder's blocks; a task
that decodes adds the bottleneck, the decoder and the head; one that embeds adds 2 C², the MAP
head's keys and values; the shared patch embedding and head count the modality's share, an
image's one temporal slot of four). Attention is 2 n² C for QK^T and 2 n² C for AV per layer,
forward. Norms, RoPE, the frozen loss networks and the optimizer are not model FLOPs.

Activation memory (bytes per token, counted from the tensors autograd saves in this code with
``torch.autograd.graph.saved_tensors_hooks`` on the tiny, small and so400m shapes; fp32: every
tensor 4 bytes; bf16: autocast, the residual stream and norms stay fp32):

    one block                 fp32: 40 C + 8 M + 4 D        bf16: 20 C + 4 M + 4 D
    its qk-norm (decoder)     fp32: + 16 C                  bf16: + 28 C
    outside the blocks        fp32: 20 C + 40 d             bf16: 14 C + 24 d

With activation checkpointing a block keeps its input (4 C: the residual stream is fp32) and
one block at a time is recomputed in the backward pass (its full set above). "Outside the
blocks" covers the values on their way through patchify, the embedding, the head, unpatchify
and the loss, forward and backward (most of it measured as peak RSS of CPU training steps,
not saved tensors: ``tests/test_plan.py`` checks the total against short runs of ``tiny`` and
``small``). Attention keeps no n x n scores: SDPA and xformers use memory-efficient kernels.
"""

from __future__ import annotations

from torch import nn

from atoken.core.config import BackboneConfig

__all__ = [
    "activation_bytes",
    "block_bytes",
    "numel",
    "token_weights",
    "training_flops",
]


def numel(module: nn.Module | None) -> int:
    """The parameters of ``module`` (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def token_weights(
    tokenizer: nn.Module,
    modality: str | None = None,
    *,
    decode: bool = True,
    embed: bool = False,
) -> float:
    """``P_tok``: the weights every token of a pass over ``modality`` meets (see the module
    docstring). The shared patch embedding and head count their ``content_dim`` share (an
    image fills one of the four temporal slots: a quarter of them); a modality's own input
    projection and head count whole. ``modality`` None: the shared ones, whole."""
    enc = tokenizer.encoder
    own_in = tokenizer.projections.inputs
    own_head = tokenizer.heads
    share = 1.0
    if modality is not None:
        share = tokenizer.modality(modality).content_dim / tokenizer.config.encoder.patch_dim
    if modality is not None and modality in own_in:
        count = float(numel(own_in[modality]))
    else:
        count = share * numel(enc.patch_embed)
    count += numel(enc.transformer)
    if decode:
        count += numel(tokenizer.bottleneck) + numel(tokenizer.decoder)
        if modality is not None and modality in own_head:
            count += numel(own_head[modality])
        else:
            count += share * numel(tokenizer.head)
    if embed:
        count += 2 * tokenizer.config.encoder.backbone.width**2
    return count


def _stacks(tokenizer: nn.Module, decode: bool) -> list[BackboneConfig]:
    config = tokenizer.config
    stacks = [config.encoder.backbone]
    if decode and config.decoder is not None:
        stacks.append(config.decoder)
    return stacks


def training_flops(
    tokenizer: nn.Module,
    tokens: float,
    tokens_sq: float,
    *,
    modality: str | None = None,
    decode: bool = True,
    embed: bool = False,
) -> float:
    """Model FLOPs of one training pass (forward and backward) over a micro-batch of
    ``tokens`` tokens of ``modality`` whose samples' token counts squared sum to
    ``tokens_sq`` (one sample of n tokens: ``tokens = n``, ``tokens_sq = n²``)."""
    attention = sum(b.depth * b.width for b in _stacks(tokenizer, decode))
    weights = token_weights(tokenizer, modality, decode=decode, embed=embed)
    return 6.0 * weights * tokens + 12.0 * attention * tokens_sq


def block_bytes(block: BackboneConfig, *, bf16: bool) -> int:
    """Activation bytes one block saves per token (see the module docstring)."""
    C, M, D = block.width, block.mlp_hidden, block.head_dim
    if bf16:
        return 20 * C + 4 * M + 4 * D + (28 * C if block.qk_norm else 0)
    return 40 * C + 8 * M + 4 * D + (16 * C if block.qk_norm else 0)


def activation_bytes(
    tokenizer: nn.Module,
    tokens: float,
    *,
    decode: bool = True,
    bf16: bool = False,
    checkpointing: bool = False,
) -> float:
    """Activation bytes of a training pass over ``tokens`` tokens at its peak (the start of
    the backward pass). ``checkpointing``: every stack recomputes its blocks (else a stack's
    own ``grad_checkpointing`` decides)."""
    config = tokenizer.config
    per_token = 0.0
    recomputed = 0
    for block in _stacks(tokenizer, decode):
        full = block_bytes(block, bf16=bf16)
        if checkpointing or block.grad_checkpointing:
            per_token += block.depth * 4 * block.width
            recomputed = max(recomputed, full)
        else:
            per_token += block.depth * full
    C, d = config.encoder.backbone.width, config.encoder.patch_dim
    per_token += recomputed + ((14 * C + 24 * d) if bf16 else (20 * C + 40 * d))
    return per_token * tokens
