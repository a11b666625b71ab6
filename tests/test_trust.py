"""The trust boundaries of docs/security.md: files are read as data, never executed."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.engine.checkpoint import CheckpointError, load_checkpoint


class Payload:
    """An object whose unpickling would run code (``__reduce__``)."""

    def __reduce__(self):
        return (print, ("this ran",))


def _pickled(path):
    with open(path, "wb") as f:
        pickle.dump({"step": 1, "payload": Payload()}, f)
    return path


def test_a_checkpoint_with_a_pickled_object_is_refused(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(_pickled(tmp_path / "step_00000001.pt"))
    assert "this ran" not in capsys.readouterr().out


def test_loss_and_metric_weights_load_tensors_only(tmp_path, capsys):
    from atoken.losses.weight_files import load_state_dict

    with pytest.raises(CheckpointError, match=r"weights_only=True.*UnpicklingError"):
        load_state_dict(_pickled(tmp_path / "weights.pth"))
    assert "this ran" not in capsys.readouterr().out
    from torch import nn

    from atoken.losses.effnet import _load_by_position

    with pytest.raises(CheckpointError, match=r"weights\.pth"):  # EfficientNet-Lite0's loader
        _load_by_position(nn.Linear(2, 2), tmp_path / "weights.pth")


def test_a_saved_tokenizer_is_json_and_safetensors_only(tmp_path):
    tok = atoken.Tokenizer.from_preset("tiny", depth=1, decoder_depth=1)
    tok.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(atoken.AtokenError):
        atoken.Tokenizer.from_pretrained(tmp_path / "empty")


def test_reconstruct_reads_npy_without_pickle(tmp_path):
    tok = atoken.Tokenizer.from_preset("tiny", depth=1, decoder_depth=1)
    tok.save_pretrained(tmp_path / "tok")
    np.save(tmp_path / "obj.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    args = ["reconstruct", "--checkpoint", str(tmp_path / "tok"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*args, "--modality", "video", str(tmp_path / "obj.npy")])
    assert result.exit_code == 1 and "ModalityInputError" in result.output
    assert "this ran" not in result.output
    assert torch.__version__  # torch is what reads the rest
