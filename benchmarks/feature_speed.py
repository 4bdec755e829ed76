"""Feature-extraction throughput: nclab.features.extract_features over a GpuLoader vs a plain DataLoader loop.

    python benchmarks/feature_speed.py [--width 16 --images 4096 --batch-size 500 --workers 2]

Both run the same ResNet-18 (CIFAR stem, random weights, eval mode, no gradients, float32) over the same
CIFAR-shaped uint8 images and collect the features h, the logits and the labels on the CPU. nclab: a
``GpuLoader`` (the images moved to the device once, batches by indexing) and ``extract_features``, as
``cached_features`` does. Baseline: a torchvision ``DataLoader`` with worker processes over a Dataset that
turns each image into a PIL image and then a tensor (``ToTensor``), and the loop
``h = model.features(x); logits = model.head(h)`` with ``.cpu()`` and ``torch.cat``, the way it is usually
written. Prints images/s of both (best of the repeats, after a warm-up) and the largest difference of the
features. ``run(...)`` returns the figures as a dict, for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # a checkout
from common import figure, measure  # noqa: E402

from nclab import data, models  # noqa: E402
from nclab.config import get_device  # noqa: E402
from nclab.features import extract_features  # noqa: E402


class PILImages(torch.utils.data.Dataset):
    """uint8 HWC images → PIL image → ToTensor (the model normalises its inputs itself, as nclab's do)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels, self.to_tensor = images, labels, T.ToTensor()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.to_tensor(Image.fromarray(self.images[i])), int(self.labels[i])


@torch.no_grad()
def dataloader_features(model, images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int, device):
    """The plain loop: (features (N, p), logits (N, C), labels (N,)) on the CPU."""
    loader = torch.utils.data.DataLoader(
        PILImages(images, labels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    model.eval()
    features, logits, ys = [], [], []
    for x, y in loader:
        h = model.features(x.to(device, non_blocking=True))
        features.append(h.cpu())
        logits.append(model.head(h).cpu())
        ys.append(y)
    return torch.cat(features), torch.cat(logits), torch.cat(ys)


def run(
    width: int = 16,
    images: int = 4_096,
    batch_size: int = 500,
    workers: int | None = None,
    device: str | torch.device | None = None,
    repeats: int = 2,
) -> dict:
    device = get_device(device)
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    y = torch.randint(0, 100, (images,), generator=generator)
    image_set = data.ImageSet(x, y, [str(c) for c in range(100)], "bench/test")
    torch.manual_seed(0)
    model = models.resnet18(100, width, normalization=data.NORMALIZATION["cifar100"]).to(device).eval()

    def ours():
        loader = data.GpuLoader(image_set, batch_size, shuffle=False, augment=False, drop_last=False, device=device)
        return extract_features(model, loader)

    x_hwc, y_np = x.permute(0, 2, 3, 1).numpy(), y.numpy()
    ours_t = measure(ours, device, repeats)
    base_t = measure(lambda: dataloader_features(model, x_hwc, y_np, batch_size, workers, device), device, repeats)
    gap = (ours_t.result.features - base_t.result[0]).abs().max().item()
    return {
        "settings": {
            "width": width,
            "images": images,
            "batch_size": batch_size,
            "baseline_workers": workers,
            "repeats": repeats,
            "statistic": "best of the repeats, after one warm-up call",
        },
        "figures": [
            figure(
                "feature extraction",
                f"features.extract_features(model, GpuLoader) of ResNet-18 width {width} (eval, float32) on "
                f"{images:,} CIFAR-shaped images, batch {batch_size}, the loader built inside the timing",
                "images/s",
                images / ours_t.seconds,
                images / base_t.seconds,
                higher_is_better=True,
                baseline_what=f"DataLoader ({workers} workers) + PIL + ToTensor, a loop of model.features/head",
                peak_mib=(ours_t.peak_mib, base_t.peak_mib),
                max_abs_feature_difference=gap,
            )
        ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu = torch.cuda.is_available()
    parser.add_argument("--width", type=int, default=64 if gpu else 16)
    parser.add_argument("--images", type=int, default=10_000 if gpu else 4_096)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args()
    (fig,) = run(args.width, args.images, args.batch_size, args.workers)["figures"]
    print(fig["what"])
    print(f"nclab:             {fig['ours']:10,.0f} images/s")
    print(f"DataLoader + PIL:  {fig['baseline']:10,.0f} images/s   -> ratio {fig['ratio']:.2f}x")
    print(f"largest difference of the features: {fig['max_abs_feature_difference']:.1e}")


if __name__ == "__main__":
    main()
