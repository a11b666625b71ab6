"""Official AToken checkpoints (apple/ml-atoken) in atoken: key table, config inference,
strict conversion, the licence notice and the official constants.

    from atoken import Tokenizer
    tok = Tokenizer.from_official("atoken-sod.pt", "configs/atoken-sod.yaml")

or, from the shell, ``atoken convert official atoken-sod.pt converted/sod --config
configs/atoken-sod.yaml`` (a ``save_pretrained`` folder). The separate 3D Gaussian decoder:
``load_gaussian_decoder("3d_decode_gs.pt", "configs/3d_decode_gs.yaml")``, or inside a tokenizer:
``Tokenizer.from_official(..., gaussian_decoder="3d_decode_gs.pt")``; the official renderer's
settings on the CPU: :func:`official_render`. See ``docs/official-weights.md``.
"""

from __future__ import annotations

from atoken.modalities.mesh.official_layout import OfficialViews, load_views
from atoken.modalities.mesh.official_packing import OfficialVoxels, voxel_features
from atoken.official.config import (
    FSQ_LEVELS,
    OFFICIAL_AXIS_ORDER,
    infer_config,
    read_official_yaml,
    with_official_inputs,
)
from atoken.official.convert import convert_state_dict, from_official, load_official_state_dict
from atoken.official.folder import convert_official
from atoken.official.gaussian_decoder import (
    OFFICIAL_SOFTCAP,
    gaussian_decoder_config,
    gaussian_decoder_options,
    load_gaussian_decoder,
    read_gaussian_yaml,
)
from atoken.official.gaussian_head import GAUSSIAN_MODALITY, with_gaussian_head
from atoken.official.gaussian_render import official_cameras, official_render
from atoken.official.keys import atoken_key, official_key, to_atoken, to_official
from atoken.official.notice import ATTRIBUTION, NOTICE_NAME, write_notice
from atoken.official.zeroshot import (
    OFFICIAL_LOGIT_BIAS,
    OFFICIAL_LOGIT_SCALE,
    OFFICIAL_TEXT_MODEL,
    official_logits,
    official_semantic_state,
    official_text_encoder,
)

__all__ = [
    "ATTRIBUTION",
    "FSQ_LEVELS",
    "GAUSSIAN_MODALITY",
    "NOTICE_NAME",
    "OFFICIAL_AXIS_ORDER",
    "OFFICIAL_LOGIT_BIAS",
    "OFFICIAL_LOGIT_SCALE",
    "OFFICIAL_SOFTCAP",
    "OFFICIAL_TEXT_MODEL",
    "OfficialViews",
    "OfficialVoxels",
    "atoken_key",
    "convert_official",
    "convert_state_dict",
    "from_official",
    "gaussian_decoder_config",
    "gaussian_decoder_options",
    "infer_config",
    "load_gaussian_decoder",
    "load_official_state_dict",
    "load_views",
    "official_cameras",
    "official_key",
    "official_logits",
    "official_render",
    "official_semantic_state",
    "official_text_encoder",
    "read_gaussian_yaml",
    "read_official_yaml",
    "to_atoken",
    "to_official",
    "voxel_features",
    "with_gaussian_head",
    "with_official_inputs",
    "write_notice",
]
