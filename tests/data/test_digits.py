"""Captioned scikit-learn digits: shapes, captions, a stratified deterministic split."""

from __future__ import annotations

import pytest
import torch

from atoken.core.errors import ConfigError
from atoken.data.digits import DigitSampler, digit_caption, load_digit_captions


def test_split_is_stratified_disjoint_and_deterministic():
    train, held = load_digit_captions(size=16, classes=(3, 7), heldout_fraction=0.25, seed=1)
    assert train.images.shape[1:] == (3, 16, 16) and held.images.shape[1:] == (3, 16, 16)
    assert train.captions == ("a photo of the digit three", "a photo of the digit seven")
    assert set(train.labels.tolist()) == {0, 1} == set(held.labels.tolist())
    for k in (0, 1):  # about a quarter of each class is held out
        n_held, n_train = int((held.labels == k).sum()), int((train.labels == k).sum())
        assert abs(n_held / (n_held + n_train) - 0.25) < 0.02
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    again, _ = load_digit_captions(size=16, classes=(3, 7), heldout_fraction=0.25, seed=1)
    assert torch.equal(again.images, train.images)
    assert held.image_captions == [held.captions[int(k)] for k in held.labels]


def test_all_ten_by_default():
    train, held = load_digit_captions(size=8)
    assert len(train) + len(held) == 1797 and len(train.captions) == 10
    assert digit_caption(3) == "a photo of the digit three"


@pytest.mark.parametrize(
    "kwargs",
    [{"size": 4}, {"classes": (1, 1)}, {"classes": (10,)}, {"heldout_fraction": 1.0}],
)
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        load_digit_captions(**kwargs)


def test_sampler_batches_depend_only_on_step_and_micro():
    train, _ = load_digit_captions(size=8, classes=(0, 1))
    a = DigitSampler(train, batch_size=5, seed=0)
    b = DigitSampler(train, batch_size=5, seed=0)
    assert torch.equal(a.batch(3, 0)[0], b.batch(3, 0)[0])
    assert not torch.equal(a.batch(3, 0)[0], a.batch(4, 0)[0])
    images, labels = a.batch(0, 1)
    assert images.shape == (5, 3, 8, 8) and labels.shape == (5,)
