"""Data sets as uint8 tensors: :class:`ImageSet`, read through torchvision (real data) or the stand-in.

Real data (CIFAR-100, CIFAR-10, SVHN) is read through torchvision, which verifies every file against its
MD5 checksum. Offline, the offline stand-in (``nclab.data.standin``) takes its place, written in the same
file format and read by the same torchvision code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision

from .. import distributed
from ..config import Profile, data_dir, get_profile
from . import standin as _standin

__all__ = [
    "ImageSet",
    "DATASETS",
    "NORMALIZATION",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "channel_statistics",
    "content_digest",
    "load",
    "download",
    "download_lock",
    "train_test_sets",
    "noise_images",
    "ood_sets",
    "overview",
]

DATASETS = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10", "svhn": "SVHN"}

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)  # per-channel mean of the CIFAR-100 training images, in [0, 1]
CIFAR100_STD = (0.2673, 0.2564, 0.2762)  # per-channel std of the CIFAR-100 training images
NORMALIZATION = {  # (mean, std) per channel of each real training set, in [0, 1]
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}

Normalization = tuple[tuple[float, ...], tuple[float, ...]]


def content_digest(named_tensors) -> str:
    """A 16-hex-digit SHA-1 of (name, tensor) pairs: their names, shapes, dtypes and bytes. Names a cache
    file after what it was computed from (a data set's content, a model's weights)."""
    digest = hashlib.sha1()
    for name, tensor in named_tensors:
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def channel_statistics(images: torch.Tensor) -> Normalization:
    """(mean, std) of every channel of uint8 images (N, C, H, W), in [0, 1], as tuples of floats.

    A constant channel gets std 1 (as scikit-learn's StandardScaler does): nothing to scale there.
    """
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255  # (C, N·H·W)
    std = pixels.std(1, correction=0)
    return tuple(pixels.mean(1).tolist()), tuple(torch.where(std > 0, std, 1.0).tolist())


@dataclass
class ImageSet:
    """A labelled image data set held in memory.

    images: (N, C, H, W) uint8; labels: (N,) int64; ``standin`` tells whether these are the offline
    stand-in's images rather than the real data set's. ``normalization`` is the data set's own per-channel
    (mean, std) in [0, 1] (of its training split; computed from ``images`` when not given): a model trained
    on this set normalises its inputs with it (``nclab.models``). ``extras`` holds per-sample tensors that
    travel with the images through ``subset`` and the loader (an environment id, a colour, …); the name
    ``index`` is reserved for the loader.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    standin: bool = False
    normalization: Normalization | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 of shape (N, C, H, W), got {tuple(self.images.shape)} {self.images.dtype}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        for key, values in self.extras.items():
            if key == "index":
                raise ValueError("the extra 'index' is reserved: the loader adds each sample's index itself")
            if len(values) != len(self.labels):
                raise ValueError(f"extra {key!r} has {len(values)} entries for {len(self.labels)} images")
        if self.normalization is None:
            self.normalization = channel_statistics(self.images)
        mean, std = self.normalization
        if len(mean) != self.images.shape[1] or len(std) != self.images.shape[1] or min(std) <= 0:
            raise ValueError(
                f"normalization must be (mean, std) with {self.images.shape[1]} values each and "
                f"std > 0, got {self.normalization}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        source = "OFFLINE STAND-IN" if self.standin else "real data"
        extras = f", extras {sorted(self.extras)}" if self.extras else ""
        return (
            f"ImageSet({self.name}: {len(self)} images {tuple(self.images.shape[1:])}, "
            f"{self.num_classes} classes, {source}{extras})"
        )

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the content (images, labels, extras): two sets with equal content share it."""
        extras = ((f"extra:{key}", self.extras[key]) for key in sorted(self.extras))
        return content_digest([("images", self.images), ("labels", self.labels), *extras])

    def subset(self, size: int | None, seed: int = 0) -> ImageSet:
        """A class-stratified random subset of ``size`` images (all of them when size is None or ≥ N)."""
        if size is None or size >= len(self):
            return self
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        labels = self.labels[perm]
        order = torch.argsort(labels, stable=True)  # grouped by class, random within
        starts = torch.cumsum(torch.bincount(labels), 0) - torch.bincount(labels)
        rank = torch.empty_like(labels)
        rank[order] = torch.arange(len(labels)) - starts[labels[order]]  # position within its class
        keep = perm[torch.argsort(rank * len(self.classes) + labels, stable=True)[:size]].sort().values
        return self.select(keep)

    def select(self, indices: torch.Tensor) -> ImageSet:
        """The samples at ``indices`` (N',) int64 or bool mask, extras included."""
        return replace(
            self,
            images=self.images[indices],
            labels=self.labels[indices],
            extras={key: values[indices] for key, values in self.extras.items()},
        )

    def to(self, device: str | torch.device) -> ImageSet:
        return replace(
            self,
            images=self.images.to(device),
            labels=self.labels.to(device),
            extras={key: values.to(device) for key, values in self.extras.items()},
        )


# ----------------------------------------------------------------------------------------------------
# Reading data sets through torchvision


def _torchvision_dataset(name: str, split: str, root: Path, download: bool):
    train = split == "train"
    if name == "cifar100":
        return torchvision.datasets.CIFAR100(root, train=train, download=download)
    if name == "cifar10":
        return torchvision.datasets.CIFAR10(root, train=train, download=download)
    return torchvision.datasets.SVHN(root / "svhn", split=split, download=download)


def _to_imageset(dataset, name: str, split: str, standin: bool, normalization: Normalization) -> ImageSet:
    if isinstance(dataset, torchvision.datasets.SVHN):  # SVHN keeps (N, 3, H, W) and .labels
        images, labels = torch.from_numpy(dataset.data), dataset.labels
        classes = getattr(dataset, "classes", None) or [str(d) for d in range(10)]
    else:  # CIFAR keeps (N, H, W, 3) and .targets
        images, labels, classes = torch.from_numpy(dataset.data).permute(0, 3, 1, 2), dataset.targets, dataset.classes
    return ImageSet(
        images.contiguous(),
        torch.as_tensor(np.asarray(labels), dtype=torch.int64),
        list(classes),
        f"{name}/{split}",
        standin,
        normalization,
    )


def _check_name(name: str, split: str) -> str:
    name = name.lower().replace("-", "")
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; nclab knows {sorted(DATASETS)}.")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    return name


_ANNOUNCED: set[str] = set()  # stand-ins already announced in this process: the note is printed once


def load(
    name: str,
    split: str = "train",
    *,
    size: int | None = None,
    download: bool = False,
    standin: bool = False,
    root: str | Path | None = None,
    seed: int = 0,
) -> ImageSet:
    """Load ``name`` (``cifar100``, ``cifar10`` or ``svhn``), split ``train`` or ``test``, as an ImageSet.

    The real data set is used whenever it is on disk under ``root`` (default ``$NCLAB_DATA``);
    ``download=True`` fetches it first (torchvision verifies its checksums). When it is absent and
    ``standin=True``, the offline stand-in is used instead, and a note says so (once per data set and
    process). ``size`` keeps a class-stratified subset.
    """
    name = _check_name(name, split)
    root = Path(root) if root is not None else data_dir()
    try:
        with download_lock(root) if download else contextlib.nullcontext():
            dataset = _torchvision_dataset(name, split, root, download)
        data = _to_imageset(dataset, name, split, False, NORMALIZATION[name])
    except RuntimeError as error:
        if not standin:
            raise FileNotFoundError(_missing_message(name, root, download, error)) from None
        dataset, normalization = _standin.read(name, split, root)
        data = _to_imageset(dataset, name, split, True, normalization)
        if name not in _ANNOUNCED and distributed.is_main():  # once, not once per process of a DDP run
            _ANNOUNCED.add(name)
            print(
                f"Note: {DATASETS[name]} is not under {root}, so this run uses the OFFLINE STAND-IN "
                f"({_standin.SOURCES[name]}). Accuracies and scores will not match the papers."
            )
    except OSError as error:  # a download that could not reach the internet
        raise FileNotFoundError(_missing_message(name, root, download, error)) from None
    return data.subset(size, seed)


@contextlib.contextmanager
def download_lock(root: Path):
    """Hold ``root/.nclab-download.lock`` (an exclusive ``flock``) while downloading into ``root``: processes
    that download there at once (the ranks of a DDP run, two notebooks) take turns, and the later ones find
    the verified files. Best effort: where no lock can be had (Windows, a read-only folder, a file system
    without locks) nobody waits."""
    lock = _lock(root)
    try:
        yield
    finally:
        if lock is not None:
            os.close(lock)  # releases the lock


def _lock(root: Path) -> int | None:
    """A file descriptor holding the exclusive lock of ``download_lock``, or None where none can be had."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        root.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(root / ".nclab-download.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def _missing_message(name: str, root: Path, download: bool, error: Exception) -> str:
    what = DATASETS[name]
    if download:
        return (
            f"{what} could not be downloaded into {root} ({error}). Check the internet connection, or "
            f"copy the data set there by hand and set NCLAB_DATA, or run NCLAB_PROFILE=smoke to use "
            f"the offline stand-in."
        )
    return (
        f"{what} not found (or corrupted) under {root}. Run nclab.data.download({name!r}) with internet "
        f"access, set NCLAB_DATA to where it is, or run NCLAB_PROFILE=smoke to use the offline stand-in."
    )


def download(name: str, root: str | Path | None = None) -> None:
    """Download both splits of ``name`` into ``root`` (default ``$NCLAB_DATA``), checking checksums."""
    for split in ("train", "test"):
        load(name, split, download=True, root=root)


def train_test_sets(name: str, profile: Profile | str | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) of ``name`` at the scale of ``profile``: its sizes, download and stand-in policy."""
    profile = get_profile(profile)
    options = dict(download=profile.download, standin=profile.standin)
    return (
        load(name, "train", size=profile.train_size, **options),
        load(name, "test", size=profile.test_size, **options),
    )


def noise_images(kind: str, count: int, seed: int = 0) -> ImageSet:
    """``count`` images of pure noise, a far-OOD sanity check: ``gaussian`` (pixels ~ N(0.5, 0.25²),
    clipped to [0, 1]) or ``uniform`` (pixels ~ U[0, 1]), each channel independent."""
    generator = torch.Generator().manual_seed(seed)
    shape = (count, 3, 32, 32)
    if kind == "gaussian":
        pixels = (0.5 + 0.25 * torch.randn(shape, generator=generator)).clamp(0, 1)
    elif kind == "uniform":
        pixels = torch.rand(shape, generator=generator)
    else:
        raise ValueError(f"kind must be 'gaussian' or 'uniform', not {kind!r}.")
    return ImageSet(
        (pixels * 255).round().to(torch.uint8), torch.zeros(count, dtype=torch.int64), ["noise"], f"{kind}-noise/test"
    )


def ood_sets(profile: Profile | str | None = None) -> dict[str, ImageSet]:
    """The OOD test sets of the course at the scale of ``profile``: CIFAR-10 (near OOD), SVHN (far OOD),
    Gaussian and uniform noise. Offline, the smoke profile uses the stand-ins (held-out digits, photos)."""
    profile = get_profile(profile)
    options = dict(size=profile.test_size, download=profile.download, standin=profile.standin)
    count = profile.test_size or 10_000
    return {
        "cifar10": load("cifar10", "test", **options),
        "svhn": load("svhn", "test", **options),
        "gaussian": noise_images("gaussian", count, seed=1),
        "uniform": noise_images("uniform", count, seed=2),
    }


def overview(sets: dict[str, ImageSet]) -> pd.DataFrame:
    """One row per named set: images, classes, image shape, and whether it is real data or the stand-in."""
    return pd.DataFrame(
        {
            name: {
                "images": len(s),
                "classes": s.num_classes,
                "shape": tuple(s.images.shape[1:]),
                "source": "OFFLINE STAND-IN" if s.standin else "real data",
            }
            for name, s in sets.items()
        }
    ).T
