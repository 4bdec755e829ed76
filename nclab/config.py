"""Profiles, device, seeds and paths: everything a run is configured by.

A *profile* fixes the scale of every notebook, so that one notebook runs unchanged from a CPU smoke test
to the paper-scale experiment:

- ``smoke``: CPU and CI. Width 16, at most 2,000 training images, offline data (the stand-in when
  CIFAR-100 is not on disk). Regimes A and B (notebooks 01–04) train 20 epochs on 1,000 of them without
  augmentation, so that they reach the terminal phase (100 % training accuracy for the last epochs). Seconds
  to a minute or two per notebook.
- ``quick``: a free Colab T4. Full CIFAR-100, 20 epochs of ResNet-18, about 10 minutes of training per
  regime.
- ``full``: paper scale on a GPU (Papyan et al. train 350 epochs); resumable after a disconnect.

The profile is chosen by the environment variable ``NCLAB_PROFILE``; without it, ``quick`` on a GPU and
``smoke`` without one. Paths come from ``NCLAB_DATA`` (data sets) and ``NCLAB_CACHE`` (checkpoints and
features).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Profile",
    "PROFILES",
    "get_profile",
    "get_device",
    "seed_everything",
    "log_spaced_epochs",
    "data_dir",
    "cache_dir",
    "in_cache",
    "runs_url",
    "describe",
    "setup",
]


@dataclass(frozen=True)
class Profile:
    """The scale of a run. One frozen instance per profile; printed at the top of every notebook.

    Why these values: ``smoke`` must finish each notebook in seconds on two CPU cores, so the network is
    a quarter as wide (8·16 = 128 feature dimensions, still ≥ C − 1 for the stand-in's classes). Regimes A
    and B see 1,000 images 20 times without augmentation (as Papyan et al.'s published code trains): what it
    takes both to reach 100 % training accuracy on the stand-in and keep it for the last epochs, the
    terminal phase where collapse is measured (at 2,000 images × 12 epochs both stay at 99.9 %; with
    augmentation, ≈ 95 % after 30 epochs). This departs from SPEC §8's 1–2 smoke epochs on purpose (issue
    14: the site must show collapse beginning on a real network). The other notebooks' methods keep their
    own recipes on up to ``train_size`` images. ``quick`` fits a Colab T4 session (≈ 30 s per ResNet-18
    epoch with AMP).
    ``full`` is the scale of the papers.
    """

    name: str
    width: int  # channels of the first residual stage (64 = standard ResNet-18)
    train_size: int | None  # training images used (None = the whole training set), stratified subset
    regime_train_size: int | None  # training images of regimes A and B (notebooks 01–04); None = train_size
    test_size: int | None  # test images used (None = the whole test set)
    epochs: int  # training epochs of regimes A and B
    batch_size: int  # images per SGD step
    eval_batch_size: int  # images per forward pass when evaluating / extracting features
    snapshots: int  # number of log-spaced epochs whose weights are kept for later notebooks
    augment: bool  # random crop and flip in regimes A and B (SPEC §3); off in smoke, to reach the terminal phase
    download: bool  # let torchvision download missing data sets (needs internet)
    standin: bool  # use the offline stand-in when the real data set is not on disk
    seeds: int = 1  # runs per network where a notebook judges a paper's claim (nclab.tables.verdicts)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        width=16,
        train_size=2_000,
        regime_train_size=1_000,
        test_size=1_000,
        epochs=20,
        batch_size=64,
        eval_batch_size=500,
        snapshots=6,
        augment=False,
        download=False,
        standin=True,
    ),
    "quick": Profile(
        "quick",
        width=64,
        train_size=None,
        regime_train_size=None,
        test_size=None,
        epochs=20,
        batch_size=128,
        eval_batch_size=1_000,
        snapshots=6,
        augment=True,
        download=True,
        standin=False,
    ),
    "full": Profile(
        "full",
        width=64,
        train_size=None,
        regime_train_size=None,
        test_size=None,
        epochs=350,
        batch_size=128,
        eval_batch_size=1_000,
        snapshots=10,
        augment=True,
        download=True,
        standin=False,
        seeds=3,  # a 90 % interval of about ±0.6 points expected on 10,000 test images: resolves 1–2 points
    ),
}


def get_profile(name: str | Profile | None = None) -> Profile:
    """The profile called ``name``; by default ``$NCLAB_PROFILE``, else ``quick`` on a GPU, ``smoke`` on a CPU."""
    if isinstance(name, Profile):
        return name
    name = name or os.environ.get("NCLAB_PROFILE") or ("quick" if torch.cuda.is_available() else "smoke")
    try:
        return PROFILES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"Unknown profile {name!r}: set NCLAB_PROFILE to one of {sorted(PROFILES)}.") from None


def get_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else ``$NCLAB_DEVICE``, else CUDA when available, else the CPU. In a process that
    ``torchrun`` started, a plain ``cuda`` is that process's own GPU, ``cuda:$LOCAL_RANK``."""
    device = device or os.environ.get("NCLAB_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def log_spaced_epochs(epochs: int, count: int) -> tuple[int, ...]:
    """About ``count`` distinct epochs from 1 to ``epochs``, log-spaced (NC happens late: keep early and late)."""
    return tuple(sorted({int(round(e)) for e in np.geomspace(1, epochs, max(count, 1))} | {epochs}))


def _env_path(variable: str, default: Path) -> Path:
    path = Path(os.environ.get(variable) or default).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where checkpoints and features live: ``$NCLAB_CACHE``, else ``~/.cache/nclab``.

    On Colab, point it at Google Drive (``/content/drive/MyDrive/nclab``) to survive a disconnect.
    """
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return _env_path("NCLAB_CACHE", xdg / "nclab")


def in_cache(path: str | Path) -> str:
    """``path`` as a message shows it: ``cache/…`` when it lies in :func:`cache_dir` (printed once, by the
    setup cell), so that a page built on one machine shows no folder of that machine; else as it is."""
    try:
        return "cache/" + Path(path).resolve().relative_to(cache_dir().resolve()).as_posix()
    except ValueError:
        return str(path)


def runs_url(profile: Profile | str | None = None) -> str:
    """The address of the instructor's run pack (``nclab runs pack``, nclab.train.fetch), or '' for none.

    ``$NCLAB_RUNS_URL`` when it is set (set and empty: no pack); else ``nclab: runs: url`` of the course's
    ``_config.yml`` (in the working folder or a folder above it, as in a clone of the course) when its
    ``profile`` (default ``full``) is ``profile``'s, the active one by default: a pack holds the runs of one
    profile, so the runs of another (the smoke runs of a book build) never ask the network. The nearest
    ``_config.yml`` may be another project's (a Jekyll site around the working folder): one that cannot be
    read as YAML, or whose top level or ``nclab`` is not a mapping, is not ours and names no pack; a malformed
    ``nclab: runs:`` is an error that says how to write it.
    """
    if "NCLAB_RUNS_URL" in os.environ:
        return os.environ["NCLAB_RUNS_URL"].strip()
    config = next((f / "_config.yml" for f in (Path.cwd(), *Path.cwd().parents) if (f / "_config.yml").is_file()), None)
    if config is None:
        return ""
    try:
        import yaml  # installed with the course tools and on Colab; without it, no pack from _config.yml
    except ImportError:
        return ""
    try:
        course = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""  # not our _config.yml
    ours = course.get("nclab") if isinstance(course, dict) else None
    if not isinstance(ours, dict):
        return ""
    entry = ours.get("runs") or {}
    if not isinstance(entry, dict):
        raise ValueError(f"{config}: nclab.runs must hold url and profile, e.g. {{url: https://…, profile: full}}.")
    url = str(entry.get("url") or "").strip()
    return url if url and str(entry.get("profile", "full")) == get_profile(profile).name else ""


def data_dir() -> Path:
    """Where data sets live: ``$NCLAB_DATA``, else ``<cache_dir>/data``."""
    return _env_path("NCLAB_DATA", cache_dir() / "data")


def describe(profile: Profile | str | None = None, device: str | torch.device | None = None) -> str:
    """A short report of profile, device and versions, printed by every notebook's setup cell."""
    profile, device = get_profile(profile), get_device(device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    fields = ", ".join(f"{k}={v}" for k, v in asdict(profile).items() if k != "name")
    return (
        f"nclab profile: {profile.name} [{fields}]\n"
        f"device: {device}{gpu} | torch {torch.__version__} | data: {data_dir()} | cache: {cache_dir()}"
    )


def setup(seed: int = 0, profile: Profile | str | None = None, device: str | torch.device | None = None):
    """What every notebook's setup cell does, in one call: the profile and the device (``$NCLAB_PROFILE``,
    ``$NCLAB_DEVICE`` or the defaults), every random generator seeded with ``seed``, and the :func:`describe`
    report printed. Returns (profile, device)."""
    profile, device = get_profile(profile), get_device(device)
    seed_everything(seed)
    print(describe(profile, device))
    return profile, device
