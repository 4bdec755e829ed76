"""A loader that keeps a data set on the GPU and makes every batch with tensor ops.

No PIL, no worker processes: the uint8 images are moved to the device once; shuffling, the random crop
and the horizontal flip are batched tensor functions. Normalisation with the training set's mean and
std is the model's first layer (``nclab.models.Normalize``), not the loader's: so the features of any
data set (OOD sets, another data set for transfer) are computed exactly as the model was trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import get_device
from .sets import ImageSet

__all__ = ["GpuLoader", "random_crop", "random_flip"]


def random_crop(images: torch.Tensor, shifts: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Crop each zero-padded image at its own offset.

    images: (B, C, H, W); shifts: (B, 2) integers in [0, 2·padding], the (row, column) of each crop's
    top-left corner in the padded image. Returns (B, C, H, W): a shift of (padding, padding) is the
    identity. Same result as torchvision's ``RandomCrop(H, padding)`` with those offsets.
    """
    B, C, H, W = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    rows = shifts[:, 0, None] + torch.arange(H, device=images.device)  # (B, H)
    cols = shifts[:, 1, None] + torch.arange(W, device=images.device)  # (B, W)
    batch = torch.arange(B, device=images.device)[:, None, None, None]
    channel = torch.arange(C, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose entry of ``flips`` (B,) bool is True."""
    return torch.where(flips[:, None, None, None], images.flip(-1), images)


class GpuLoader:
    """Batches ``(x, y, extras)`` of an ImageSet that lives on ``device``, made with tensor ops only.

    x: (B, C, H, W) float in [0, 1]; y: (B,) int64; extras: {"index": (B,) position of each sample in
    the data set, plus every per-sample extra of the data set (an environment id, …)}, aligned with y.
    With ``augment`` each image is randomly cropped (zero padding ``padding``, offsets in
    [0, 2·padding]) and flipped; with ``shuffle`` the order changes every epoch. All randomness of an
    epoch is drawn from a generator seeded by (seed, epoch), so a resumed run sees exactly the batches an
    uninterrupted one would. ``drop_last`` drops the final incomplete batch (training) or keeps it
    (evaluation): no default, the choice is always explicit.

    ``max_batches`` stops every pass after that many batches (a dry run that times a few steps of a
    full-size epoch; ``len`` is then at most ``max_batches``). Under DistributedDataParallel, the process of
    rank ``rank`` among ``world_size`` reads its own shard of every batch: ``batch_size`` is the global
    batch, each rank gets its ``batch_size / world_size`` consecutive rows of it, drawn from the same
    permutation and augmentation as a single process would, so that the ranks' shards, put together in
    rank order, are exactly the batch a single process reads (training only: ``drop_last=True``).
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        drop_last: bool,
        device: str | torch.device | None = None,
        seed: int = 0,
        padding: int = 4,
        channels_last: bool = False,
        max_batches: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1 or (drop_last and batch_size > len(data)):
            raise ValueError(
                f"batch_size={batch_size} does not fit a data set of {len(data)} images with drop_last={drop_last}."
            )
        if padding < 0:
            raise ValueError(f"padding must be ≥ 0, got {padding}")
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be ≥ 1 (or None for whole epochs), got {max_batches}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..world_size-1, got rank={rank}, world_size={world_size}")
        if world_size > 1 and (batch_size % world_size or not drop_last):
            raise ValueError(
                f"a sharded loader splits each training batch evenly over the processes: batch_size="
                f"{batch_size} must be a multiple of world_size={world_size}, with drop_last=True "
                f"(evaluate with an unsharded loader)."
            )
        self.device = get_device(device)
        self.data = data  # the ImageSet itself (its names, classes, normalisation), where it was
        on_device = data.to(self.device)  # moved once
        self.images, self.labels, self.extras = on_device.images, on_device.labels, on_device.extras
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.seed, self.epoch, self.padding, self.channels_last = seed, 0, padding, channels_last
        self.max_batches, self.rank, self.world_size = max_batches, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle and augmentation the next iteration draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        batches = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return batches if self.max_batches is None else min(batches, self.max_batches)

    def __iter__(self):
        n = len(self.labels)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        shifts = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        order, shifts, flips = order.to(self.device), shifts.to(self.device), flips.to(self.device)
        share = self.batch_size // self.world_size  # this rank's rows of every batch
        for i in range(len(self)):
            start = i * self.batch_size + self.rank * share
            rows = slice(start, min(start + share, (i + 1) * self.batch_size))
            batch = order[rows]
            x = self.images[batch]
            if self.augment:
                x = random_flip(random_crop(x, shifts[rows], self.padding), flips[rows])
            x = x.float().div_(255)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            extras = {"index": batch, **{key: values[batch] for key, values in self.extras.items()}}
            yield x, self.labels[batch], extras
