"""An explicit switch for the shared RGB path (#33 item 3): ``Modality.shared_pixel_path``, not
``value_dim == 3072``, decides whether a modality reads through the shared patch embedding and
decodes through the shared head."""

from __future__ import annotations

import pytest
import torch

import atoken
from atoken.core.errors import ConfigError
from atoken.core.projection import ModalityProjections
from atoken.testing import registered_plugin
from tests.core._bands import BANDS, Bands, bands_sample


class SharedBands(Bands):
    """The same 3072 values per token, asking for the shared patch embedding and head."""

    name = "shared_bands"
    shared_pixel_path = True


class BandsPlugin:
    @atoken.hookimpl
    def register_modalities(self, register):
        register("bands", Bands)
        register("shared_bands", SharedBands)


def _tokenizer(*names: str) -> atoken.Tokenizer:
    torch.manual_seed(0)
    return atoken.create_tokenizer("tiny", modalities=["image", *names], depth=1, decoder_depth=1)


def test_a_3072_value_modality_gets_its_own_projection_and_head_unless_it_asks():
    with registered_plugin(BandsPlugin(), name="bands-plugin"):
        tok = _tokenizer("bands", "shared_bands")
        keys = set(tok.state_dict())
        # 3072 values that are not RGB: its own projection, its own head
        assert {"projections.inputs.bands.weight", "heads.bands.proj.weight"} <= keys
        assert tok.projections.has("bands") and tok.head_for("bands") is not tok.head
        # the same width with shared_pixel_path = True: the shared embedding and head
        assert not [k for k in keys if "shared_bands" in k]
        assert not tok.projections.has("shared_bands")
        assert tok.head_for("shared_bands") is tok.head
        with torch.no_grad():
            for name in ("bands", "shared_bands"):
                out = tok.reconstruct([bands_sample()], modality=name)
                assert out[0].shape == (BANDS, 32, 48)


def test_the_built_in_rgb_modalities_share_the_path_by_their_attribute():
    from atoken.modalities.image import ImageModality
    from atoken.modalities.mesh import MeshModality
    from atoken.modalities.video import VideoModality

    assert atoken.Modality.shared_pixel_path is False  # the default: its own parameters
    assert ImageModality.shared_pixel_path and VideoModality.shared_pixel_path
    assert MeshModality.shared_pixel_path  # voxel features are RGB patches
    tok = _tokenizer("video", "mesh")
    own = sorted({k.split(".")[2] for k in tok.state_dict() if k.startswith("projections.")})
    assert own == [] and list(tok.heads) == ["mesh"]  # mesh decodes by its gaussians head


def test_a_shared_projection_of_another_width_is_refused():
    projections = ModalityProjections(patch_dim=3072, width=8)
    assert projections.add("x", 3072, shared=True) is False
    assert projections.add("y", 3072, shared=False) is True
    assert projections.add("w", 3072) is False  # not said: by width, as before the switch
    with pytest.raises(ConfigError, match="reads 3072 values per token, not 768"):
        projections.add("z", 768, shared=True)
