"""Run files: a TOML file structured into frozen attrs configs.

Every section is an attrs class; a key that no field has is an error naming the key and the
section, and values are validated at this boundary (``ConfigError`` names the offending key).
Components are named by registry name (``bottleneck = "kl"``, ``[[loss.terms]] name = "l1"``);
the names are resolved later, by whoever builds the run, so a typo surfaces as an
``UnknownComponentError`` listing close matches.

A minimal run file::

    [run]
    name = "demo"

    [model]
    preset = "tiny"

    [[loss.terms]]
    name = "l1"
    weight = 1.0
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from atoken.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "LossTerm",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "VideoConfig",
    "load_run_file",
    "structure",
]

T = TypeVar("T")


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not value >= 0:
        raise ConfigError(f"{attribute.name} must be >= 0, got {value!r}")


def _one_of(*choices: str):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{attribute.name} must be one of {choices}, got {value!r}")

    return check


def _tuple(value: Any) -> tuple:
    return tuple(value)


@attrs.frozen(kw_only=True)
class RunSection:
    """``[run]``: name, output folder and seed."""

    name: str = "run"
    out_dir: str = ""  # default: runs/<name>
    seed: int = 0

    @property
    def output(self) -> Path:
        return Path(self.out_dir or f"runs/{self.name}")


@attrs.frozen(kw_only=True)
class ModelConfig:
    """``[model]``: a preset plus overrides, and component names."""

    preset: str = "tiny"
    bottleneck: str = "kl"
    latent_dim: int = attrs.field(default=32, validator=_positive)
    head: str = "pixels"
    attention: str = ""  # empty: the default backend for the device
    overrides: Mapping[str, Any] = attrs.field(factory=dict)
    bottleneck_params: Mapping[str, Any] = attrs.field(factory=dict)
    init_from: str = ""  # a checkpoint folder (save_pretrained) to start from
    text_encoder: str = ""  # a registered text encoder to align to (empty: none)
    text_encoder_params: Mapping[str, Any] = attrs.field(factory=dict)  # trainable = true: train it
    # per modality, the parameters of its factory (TokenizerConfig.modality_params), e.g.
    # modality_params = { depth = { depth_mean = 2.5 } }
    modality_params: Mapping[str, Any] = attrs.field(factory=dict)
    # start as the PCA tokenizer of the training crops (atoken.pca_init); needs the overrides
    # final_norm = false, decoder_final_norm = false, decoder_bias = true
    pca_init: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if self.pca_init and self.init_from:
            raise ConfigError("[model] pca_init and init_from exclude each other: pick one start")


@attrs.frozen(kw_only=True)
class DataConfig:
    """``[data]``: the training source and crops, and the held-out set."""

    source: str = "photos"  # "photos" (embedded real photos), "digits", a folder, or a zarr URL
    batch_size: int = attrs.field(default=8, validator=_positive)
    crop_min: int = attrs.field(default=64, validator=_positive)
    crop_max: int = attrs.field(default=256, validator=_positive)
    heldout: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    eval_max_side: int = attrs.field(default=256, validator=_positive)
    storage_options: Mapping[str, Any] = attrs.field(factory=dict)
    digit_size: int = attrs.field(default=64, validator=_positive)  # source = "digits" only
    digit_classes: tuple[int, ...] = attrs.field(default=(), converter=_tuple)  # empty: all
    heldout_fraction: float = attrs.field(default=0.2, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.crop_min > self.crop_max:
            raise ConfigError(f"crop_min ({self.crop_min}) > crop_max ({self.crop_max})")


@attrs.frozen(kw_only=True)
class OptimConfig:
    """``[optim]``: AdamW, warmup then cosine, clipping and accumulation."""

    lr: float = attrs.field(default=3e-4, validator=_positive)
    min_lr: float = attrs.field(default=3e-5, validator=_non_negative)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.95), converter=_tuple)
    weight_decay: float = attrs.field(default=0.1, validator=_non_negative)
    warmup_steps: int = attrs.field(default=100, validator=_non_negative)
    encoder_lr_mult: float = attrs.field(default=0.1, validator=_positive)
    grad_clip: float = attrs.field(default=1.0, validator=_non_negative)  # 0: off
    grad_accum: int = attrs.field(default=1, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")


@attrs.frozen(kw_only=True)
class TrainConfig:
    """``[train]``: length, precision, EMA, evaluation, checkpoints and guards."""

    steps: int = attrs.field(default=1000, validator=_positive)
    max_minutes: float = attrs.field(default=0.0, validator=_non_negative)  # 0: no limit
    precision: str = attrs.field(default="auto", validator=_one_of("auto", "bf16", "fp32"))
    ema_decay: float = attrs.field(default=0.999, validator=_non_negative)  # 0: off
    eval_every: int = attrs.field(default=0, validator=_non_negative)  # 0: only at the end
    checkpoint_every: int = attrs.field(default=0, validator=_non_negative)
    keep_checkpoints: int = attrs.field(default=2, validator=_positive)
    log_every: int = attrs.field(default=10, validator=_positive)
    max_nonfinite: int = attrs.field(default=5, validator=_positive)
    progress: bool = True
    # "auto" (CUDA when available, else the CPU), "cpu", "cuda" or "cuda:N"; --device overrides
    device: str = attrs.field(default="auto", validator=attrs.validators.instance_of(str))


@attrs.frozen(kw_only=True)
class LossTerm:
    """One ``[[loss.terms]]`` entry: a registered loss, its weight and parameters."""

    name: str
    weight: float = 1.0
    params: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class LossConfig:
    """``[loss]``: L = rec_weight * sum(w_i L_i) + sem_weight * sum(v_j S_j) + kl_weight * L_KL.

    ``terms`` are reconstruction losses; ``semantic`` are semantic losses (``siglip``,
    ``distill``) of the image embedding against the batch's caption embeddings.
    """

    rec_weight: float = attrs.field(default=0.2, validator=_non_negative)
    kl_weight: float = attrs.field(default=1e-8, validator=_non_negative)
    terms: tuple[LossTerm, ...] = attrs.field(
        factory=lambda: (LossTerm(name="l1", weight=1.0),), converter=_tuple
    )
    sem_weight: float = attrs.field(default=1.0, validator=_non_negative)
    semantic: tuple[LossTerm, ...] = attrs.field(default=(), converter=_tuple)


@attrs.frozen(kw_only=True)
class EvalConfig:
    """``[eval]``: metrics by registry name and how many reconstructions to draw."""

    metrics: tuple[str, ...] = attrs.field(default=("psnr", "ssim"), converter=_tuple)
    grid_images: int = attrs.field(default=4, validator=_positive)


def _positive_ints(instance: Any, attribute: attrs.Attribute, value: tuple) -> None:
    if not value or not all(isinstance(v, int) and v > 0 for v in value):
        raise ConfigError(f"{attribute.name} must be a non-empty list of positive ints")


@attrs.frozen(kw_only=True)
class VideoConfig:
    """``[video]``: stage 2 (image + video). When ``enabled``, image and video batches alternate
    over micro-steps (round-robin with ``[optim] grad_accum``), the latent is expanded to
    ``latent_dim`` and video batches are trained with L1 only."""

    enabled: bool = False
    sources: tuple[str, ...] = attrs.field(default=("bikes", "bigbuckbunny"), converter=_tuple)
    heldout: tuple[str, ...] = attrs.field(default=("carphone",), converter=_tuple)
    max_frames: int = attrs.field(default=128, validator=_positive)  # decoded per video
    max_side: int = attrs.field(default=256, validator=_positive)  # downscaled longer side
    batch_size: int = attrs.field(default=2, validator=_positive)
    frames: int = attrs.field(default=16, validator=_positive)
    strides: tuple[int, ...] = attrs.field(
        default=(1, 2, 3), converter=_tuple, validator=_positive_ints
    )
    crop_min: int = attrs.field(default=64, validator=_positive)
    crop_max: int = attrs.field(default=128, validator=_positive)
    latent_dim: int = attrs.field(default=48, validator=_positive)
    eval_frames: int = attrs.field(default=32, validator=_positive)
    tile_frames: int = attrs.field(default=16, validator=_positive)
    kv_cache_steps: int = attrs.field(default=4, validator=_non_negative)
    metrics: tuple[str, ...] = attrs.field(
        default=("video_psnr", "video_ssim", "flicker"), converter=_tuple
    )
    fps: float = attrs.field(default=8.0, validator=_positive)  # of the written GIF/MP4

    def __attrs_post_init__(self) -> None:
        if self.crop_min > self.crop_max:
            raise ConfigError(f"crop_min ({self.crop_min}) > crop_max ({self.crop_max})")
        if self.enabled and not self.sources:
            raise ConfigError("sources must name at least one video")


@attrs.frozen(kw_only=True)
class RunConfig:
    """A whole run file."""

    run: RunSection = attrs.field(factory=RunSection)
    model: ModelConfig = attrs.field(factory=ModelConfig)
    data: DataConfig = attrs.field(factory=DataConfig)
    optim: OptimConfig = attrs.field(factory=OptimConfig)
    train: TrainConfig = attrs.field(factory=TrainConfig)
    loss: LossConfig = attrs.field(factory=LossConfig)
    eval: EvalConfig = attrs.field(factory=EvalConfig)
    video: VideoConfig = attrs.field(factory=VideoConfig)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


_NESTED: dict[tuple[type, str], type] = {
    (LossConfig, "terms"): LossTerm,
    (LossConfig, "semantic"): LossTerm,
}


def structure(cls: type[T], data: Mapping[str, Any], section: str) -> T:
    """Build attrs class ``cls`` from a mapping; unknown keys raise ``ConfigError``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"section [{section}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key {key!r} in section [{section}]; known keys: {', '.join(fields)}"
            )
        sub = fields[key].type
        nested = _NESTED.get((cls, key))
        if nested is not None:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"[{section}] {key} must be an array of tables")
            value = [structure(nested, item, f"{section}.{key}") for item in value]
        elif isinstance(sub, str) and sub in _SECTIONS and isinstance(value, Mapping):
            value = structure(_SECTIONS[sub], value, key)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"[{section}] {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}] {exc}") from exc


_SECTIONS: dict[str, type] = {
    "RunSection": RunSection,
    "ModelConfig": ModelConfig,
    "DataConfig": DataConfig,
    "OptimConfig": OptimConfig,
    "TrainConfig": TrainConfig,
    "LossConfig": LossConfig,
    "EvalConfig": EvalConfig,
    "VideoConfig": VideoConfig,
}


def load_run_file(path: str | Path, **section_overrides: Mapping[str, Any]) -> RunConfig:
    """Parse a TOML run file into a :class:`RunConfig`.

    ``section_overrides`` (e.g. ``train={"steps": 10}``) are merged over the file's sections.

    Raises:
        ConfigError: for unreadable TOML, an unknown section or key, or an invalid value.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"run file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"run file {str(path)!r} is not valid TOML: {exc}") from exc
    for section, values in section_overrides.items():
        data[section] = {**data.get(section, {}), **values}
    return structure(RunConfig, data, "top level")
