"""Checkpoint files: atomic writes, weights-only reads, clear errors, and the RNG state they carry."""

import random

import numpy as np
import pytest
import torch

from nclab import checkpoints


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoints.save_checkpoint({"format": checkpoints.FORMAT, "model": {"w": torch.ones(3)}}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint({"format": checkpoints.FORMAT, "model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoints.load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_a_checkpoint_of_another_format_is_refused_and_kept(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": 1, "model": {}}, path)
    with pytest.raises(checkpoints.CheckpointError, match="format 2.*Delete"):
        checkpoints.load_checkpoint(path)
    with pytest.raises(checkpoints.CheckpointError, match="format"):
        checkpoints.load_checkpoint(path, keys=("model", "missing"))
    assert path.exists()


def test_the_rng_state_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    saved = checkpoints.rng_state()
    checkpoints.save_checkpoint({"format": checkpoints.FORMAT, "model": {}, "rng": saved}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    checkpoints.set_rng_state(checkpoints.load_checkpoint(tmp_path / "r.pt")["rng"])  # weights_only=True
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]
