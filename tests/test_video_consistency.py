"""Image/video consistency: a clip of 4 identical frames encodes like the image itself.

Temporal slots 1..pt-1 of the patch embedding are zero in a fresh tokenizer, in a SigLIP2
import and in any checkpoint trained only on images, so the tubelet of 4 equal frames and the
image (slot 0 only) give the same encoder features, to 1e-5.
"""

from __future__ import annotations

import torch

import atoken
from atoken.tokenizer import Tokenizer
from tests.core.test_siglip_import import _TINY, _tiny_open_clip


def _temporal_slots(tok: Tokenizer) -> torch.Tensor:
    pe = tok.encoder.patch_embed
    slot = pe.patch_dim // pe.temporal_patch
    return pe.proj.weight[:, slot:]  # [C, (pt-1)*p*p*c]


def _check_consistent(tok: Tokenizer, images: list[torch.Tensor]) -> None:
    assert not bool(_temporal_slots(tok).any())
    clips = [img[:, None].expand(-1, 4, -1, -1) for img in images]  # [3, 4, H, W] each
    with torch.no_grad():
        from_images = tok.encode_features(images, "image")
        from_clips = tok.encode_features(clips, "video")
    assert torch.equal(from_images.coords, from_clips.coords)
    assert from_clips.modality == ("video",) * len(images)
    diff = (from_images.feats - from_clips.feats).abs().max()
    assert diff <= 1e-5, diff


def _images(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 48, 32, generator=g), torch.rand(3, 20, 37, generator=g)]


def test_fresh_tokenizer_encodes_a_static_clip_like_its_image():
    torch.manual_seed(0)
    tok = Tokenizer.from_preset("tiny").eval()
    _check_consistent(tok, _images(0))


def test_siglip2_import_encodes_a_static_clip_like_its_image():
    tok = Tokenizer.from_open_clip(_tiny_open_clip(_TINY)).eval()
    _check_consistent(tok, _images(1))


def test_image_only_training_keeps_temporal_slots_zero_and_the_clip_consistent():
    torch.manual_seed(0)
    tok = Tokenizer.from_preset("tiny", latent_dim=8)
    with torch.no_grad():  # a non-zero head, so the decoder output depends on the weights
        torch.nn.init.normal_(tok.head.proj.weight, std=0.02)
    before = tok.encoder.patch_embed.proj.weight.detach().clone()
    opt = torch.optim.AdamW(tok.parameters(), lr=1e-2, weight_decay=0.1)
    images = _images(2)
    for _ in range(3):
        recon, _, _ = tok.autoencode(images, "image")
        loss = sum((r - x).abs().mean() for r, x in zip(recon, images, strict=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(tok.encoder.patch_embed.proj.weight, before)  # it did train
    _check_consistent(tok.eval(), _images(3))


def test_video_latents_decode_to_clips_of_the_input_size():
    torch.manual_seed(0)
    tok = atoken.Tokenizer.from_preset("tiny").eval()
    clip = torch.rand(3, 6, 20, 33)
    out = tok.reconstruct([clip], "video")
    assert len(out) == 1 and out[0].shape == clip.shape
