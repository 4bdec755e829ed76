"""Checkpoint files: written atomically, read with ``weights_only=True``, and the RNG state they carry.

A crash (or a Colab disconnect) while a checkpoint is written leaves the previous file intact; a damaged
file stops with :class:`CheckpointError` and is never overwritten silently.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

FORMAT = 2  # bump when the layout of a checkpoint changes (2: encoder + head models, hook states)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupted, truncated, or from another run."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: ranks may write the same file
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", keys: tuple[str, ...] = ("model",)
) -> dict:
    """Read a checkpoint with ``weights_only=True``; a damaged file (or one lacking ``keys``, or of another
    format) raises :class:`CheckpointError`, and the file is left as it is."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"Checkpoint {path} is corrupted or truncated (torch.load failed: {type(error).__name__}). It was left "
            f"untouched. Delete it (or its run folder) to train that run again, or restore a good copy."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not all(k in state for k in keys):
        raise CheckpointError(
            f"{path} is not an nclab checkpoint of format {FORMAT} (an older nclab wrote it?). "
            f"Delete it to train that run again."
        )
    return state


def rng_state(device: torch.device | None = None) -> dict:
    """The state of every random number generator a run uses: torch (CPU, and the GPU ``device``, or every
    GPU without one), NumPy, Python."""
    numpy_state = np.random.get_state()
    if device is not None and device.type == "cuda":
        cuda = [torch.cuda.get_rng_state(device)]  # the training GPU's: each process of a DDP run has its own
    else:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and device is None else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
        "python": random.getstate(),
    }


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` saved (GPU states only where a GPU is present): with a GPU ``device``,
    the first saved GPU state goes to it (a run saved by rank 0 of a DDP run, or on one GPU, resumes on any
    GPU and in every process alike)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and device is not None and device.type == "cuda":
        states = state["cuda"]  # one state (the training GPU's), or every GPU's in an older checkpoint
        old_list = len(states) > 1 and device.index is not None and device.index < len(states)
        torch.cuda.set_rng_state(states[device.index] if old_list else states[0], device)
    elif state["cuda"] and torch.cuda.is_available() and device is None:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
