"""Official-shaped AToken state dicts with random values, for tests of the converter.

The keys and shapes are written out from the official release's key table (563 keys at the
So400m size: 27 encoder and 27 decoder blocks), independently of :mod:`atoken.official.keys`,
so a test that converts them checks the table rather than repeating it. Widths are free: a
small width gives the same keys with small tensors.

    state = official_state_dict(width=64, heads=2, depth=2, mlp=96)
    write_official_checkpoint(tmp_path / "tiny.pt", state)          # or .safetensors
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = [
    "official_gaussian_decoder_state_dict",
    "official_gaussian_yaml",
    "official_state_dict",
    "official_yaml",
    "write_official_checkpoint",
]


def official_state_dict(
    *,
    width: int = 64,
    heads: int = 2,
    depth: int = 2,
    mlp: int = 96,
    latent: int = 48,
    decoder_width: int | None = None,
    decoder_heads: int | None = None,
    decoder_depth: int | None = None,
    decoder_mlp: int | None = None,
    patch_values: int = 3072,
    grid: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """A flat state dict with the official AToken keys (encoder with biases and LayerNorm,
    MAP head, ``proj [2 * latent, width]``, decoder without biases, RMSNorm and per-head
    qk-norm gains, both with the learned ``grid x grid`` position table).

    ``device="meta"`` gives shapes without memory (e.g. the full So400m size)."""
    g = torch.Generator().manual_seed(seed)
    dw = decoder_width or width
    dh = decoder_heads or heads
    dd = decoder_depth or depth
    dm = decoder_mlp or mlp

    def rand(*shape: int, scale: float = 0.05, mean: float = 0.0) -> torch.Tensor:
        if torch.device(device).type == "meta":
            return torch.empty(*shape, dtype=dtype, device="meta")
        return (torch.randn(*shape, generator=g) * scale + mean).to(dtype)

    s: dict[str, torch.Tensor] = {}
    s["encoder.pos_embedder.position_embedding.weight"] = rand(grid * grid, width, scale=0.5)
    s["encoder.input_layer.weight"] = rand(width, patch_values, scale=0.02)
    s["encoder.input_layer.bias"] = rand(width)
    for i in range(depth):
        p = f"encoder.blocks.{i}."
        for n in ("norm1", "norm2"):
            s[p + n + ".weight"] = rand(width, scale=0.1, mean=1.0)
            s[p + n + ".bias"] = rand(width)
        s[p + "attn.to_qkv.weight"] = rand(3 * width, width, scale=width**-0.5)
        s[p + "attn.to_qkv.bias"] = rand(3 * width)
        s[p + "attn.to_out.weight"] = rand(width, width, scale=width**-0.5)
        s[p + "attn.to_out.bias"] = rand(width)
        s[p + "mlp.mlp.0.weight"] = rand(mlp, width, scale=width**-0.5)
        s[p + "mlp.mlp.0.bias"] = rand(mlp)
        s[p + "mlp.mlp.2.weight"] = rand(width, mlp, scale=mlp**-0.5)
        s[p + "mlp.mlp.2.bias"] = rand(width)
    s["encoder.post_layernorm.weight"] = rand(width, scale=0.1, mean=1.0)
    s["encoder.post_layernorm.bias"] = rand(width)
    s["encoder.head.probe"] = rand(width, scale=1.0)
    for n, rows in (("to_q", width), ("to_kv", 2 * width), ("to_out", width)):
        s[f"encoder.head.attention.{n}.weight"] = rand(rows, width, scale=width**-0.5)
        s[f"encoder.head.attention.{n}.bias"] = rand(rows)
    s["encoder.head.layernorm.weight"] = rand(width, scale=0.1, mean=1.0)
    s["encoder.head.layernorm.bias"] = rand(width)
    s["encoder.head.mlp.mlp.0.weight"] = rand(mlp, width, scale=width**-0.5)
    s["encoder.head.mlp.mlp.0.bias"] = rand(mlp)
    s["encoder.head.mlp.mlp.2.weight"] = rand(width, mlp, scale=mlp**-0.5)
    s["encoder.head.mlp.mlp.2.bias"] = rand(width)
    s["proj.weight"] = rand(2 * latent, width, scale=width**-0.5)
    s["decoder.pos_embedder.position_embedding.weight"] = rand(grid * grid, dw, scale=0.5)
    s["decoder.input_layer.weight"] = rand(dw, latent, scale=latent**-0.5)
    for i in range(dd):
        p = f"decoder.blocks.{i}."
        s[p + "norm1.weight"] = rand(dw, scale=0.1, mean=1.0)
        s[p + "norm2.weight"] = rand(dw, scale=0.1, mean=1.0)
        s[p + "attn.to_qkv.weight"] = rand(3 * dw, dw, scale=dw**-0.5)
        s[p + "attn.q_rms_norm.gamma"] = rand(dh, dw // dh, scale=0.1, mean=1.0)
        s[p + "attn.k_rms_norm.gamma"] = rand(dh, dw // dh, scale=0.1, mean=1.0)
        s[p + "attn.to_out.weight"] = rand(dw, dw, scale=dw**-0.5)
        s[p + "mlp.mlp.0.weight"] = rand(dm, dw, scale=dw**-0.5)
        s[p + "mlp.mlp.2.weight"] = rand(dw, dm, scale=dm**-0.5)
    s["decoder.out_norm.weight"] = rand(dw, scale=0.1, mean=1.0)
    s["decoder.out_layer.weight"] = rand(patch_values, dw, scale=dw**-0.5)
    return s


def official_yaml(
    *, width: int, heads: int, depth: int, mlp: int, latent: int = 48, fsq: bool = False
) -> str:
    """An official-style YAML config (``model.model_cfg.arch_cfg``) for those shapes."""
    lines = [
        "model:",
        "  model_cfg:",
        "    arch_cfg:",
        "      patch_size: [4, 16, 16]",
        f"      latent_channels: {latent}",
    ]
    for part, bias, rms in (("encoder", "True", "False"), ("decoder", "False", "True")):
        lines += [
            f"      {part}_model_channels: {width}",
            f"      {part}_num_blocks: {depth}",
            f"      {part}_num_heads: {heads}",
            f"      {part}_mlp_channels: {mlp}",
            f'      {part}_attn_mode: "full"',
            f'      {part}_pe_mode: "joint"',
            f"      {part}_qk_rms_norm: {rms}",
            f"      {part}_use_bias: {bias}",
            f"      {part}_use_rms_norm: {rms}",
        ]
    lines.append(f"      use_quantizer: {fsq}")
    if fsq:
        lines += [
            '      quantizer_type: "fsq"',
            "      quantizer_codebook_size: 4096",
            f"      quantizer_feature_dim: {latent}",
            "      quantizer_num_codebooks: 8",
            "      quantizer_chunk_size: 1",
        ]
    return "\n".join(lines) + "\n"


def official_gaussian_decoder_state_dict(
    *,
    width: int = 64,
    depth: int = 2,
    mlp: int = 96,
    in_channels: int = 768,
    gaussians: int = 32,
    heads: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """A flat state dict with the keys of the official ``3d_decode_gs.pt``
    (``SLatGaussianDecoderTrain``: no biases but the output layer's, RMSNorm gains, the
    persistent ``offset_perturbation [K, 3]``; 76 keys at 12 blocks). ``heads`` adds per-head
    qk-norm gains ``[heads, width / heads]`` (``qk_rms_norm: true``; off at release). Values
    are random, the output layer included (the official one starts at zero)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.05, mean: float = 0.0) -> torch.Tensor:
        if torch.device(device).type == "meta":
            return torch.empty(*shape, dtype=dtype, device="meta")
        return (torch.randn(*shape, generator=g) * scale + mean).to(dtype)

    s: dict[str, torch.Tensor] = {"input_layer.weight": rand(width, in_channels, scale=0.05)}
    for i in range(depth):
        p = f"blocks.{i}."
        s[p + "norm1.weight"] = rand(width, scale=0.1, mean=1.0)
        s[p + "norm2.weight"] = rand(width, scale=0.1, mean=1.0)
        s[p + "attn.to_qkv.weight"] = rand(3 * width, width, scale=width**-0.5)
        if heads is not None:
            s[p + "attn.q_rms_norm.gamma"] = rand(heads, width // heads, scale=0.1, mean=1.0)
            s[p + "attn.k_rms_norm.gamma"] = rand(heads, width // heads, scale=0.1, mean=1.0)
        s[p + "attn.to_out.weight"] = rand(width, width, scale=width**-0.5)
        s[p + "mlp.mlp.0.weight"] = rand(mlp, width, scale=width**-0.5)
        s[p + "mlp.mlp.2.weight"] = rand(width, mlp, scale=mlp**-0.5)
    s["out_layer.weight"] = rand(14 * gaussians, width, scale=width**-0.5)
    s["out_layer.bias"] = rand(14 * gaussians, scale=0.1)
    s["offset_perturbation"] = rand(gaussians, 3, scale=0.5)
    return s


def official_gaussian_yaml(
    *, width: int, depth: int, mlp: int, heads: int, in_channels: int = 768, gaussians: int = 32
) -> str:
    """The official ``configs/3d_decode_gs.yaml`` with those shapes (the released one at
    768 / 12 / 3072 / 12 heads)."""
    return (
        "\n".join(
            [
                "model:",
                "    class_name: models.pretrained.decoder_gs.SLatGaussianDecoderTrain",
                "    resolution: 64",
                f"    model_channels: {width}",
                f"    latent_channels: {in_channels}",
                f"    num_blocks: {depth}",
                f"    num_heads: {heads}",
                f"    mlp_channels: {mlp}",
                '    attn_mode: "swin"',
                "    window_size: 8",
                "    representation_config:",
                "        lr:",
                "            _xyz: 1.0",
                "            _features_dc: 1.0",
                "            _opacity: 1.0",
                "            _scaling: 1.0",
                "            _rotation: 0.1",
                "        perturb_offset: True",
                "        voxel_size: 1.5",
                f"        num_gaussians: {gaussians}",
                "        2d_filter_kernel_size: 0.1",
                "        3d_filter_kernel_size: 9.0e-4",
                "        scaling_bias: 4.0e-3",
                "        opacity_bias: 0.1",
                '        scaling_activation: "softplus"',
            ]
        )
        + "\n"
    )


def write_official_checkpoint(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` as the official files are: a flat ``torch.save`` (``.pt``) or a
    ``.safetensors`` file, by the suffix of ``path``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, str(path))
    return path
