"""Training throughput: nclab's GPU-resident loader + trainer vs a torchvision DataLoader + PIL baseline.

Both train the same ResNet-18 (CIFAR stem) with the same optimiser, precision and memory format on the
same CIFAR-shaped data (random uint8 images, 100 classes), side by side in one run. The baseline is the
textbook recipe: a Dataset that turns each image into a PIL image, RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize, and a DataLoader with worker processes.

    python benchmarks/train_throughput.py                 # GPU: width 64, 50,000 images (the real scale)
    python benchmarks/train_throughput.py --width 16 --images 2048  # CPU: tiny, just to keep it working

Prints images/s and seconds per epoch of both and their ratio; writes a JSON record to
benchmarks/results/ (named after the device). Targets on a GPU: ratio ≥ 3, and ≤ 1.5 s per ResNet-18
epoch on an H100-class GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

from nclab import config, data, models, train
from nclab.train import amp_dtype


class PILDataset(torch.utils.data.Dataset):
    """CIFAR-style dataset: uint8 HWC images turned into PIL images and transformed one at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.transform = T.Compose(
            [
                T.RandomCrop(32, padding=4),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(data.CIFAR100_MEAN, data.CIFAR100_STD),
            ]
        )

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def baseline_epochs(model, images, labels, cfg, device, workers, epochs):
    """The textbook loop over a torchvision DataLoader; returns seconds per epoch."""
    loader = torch.utils.data.DataLoader(
        PILDataset(images, labels),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    autocast_dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    times = []
    for _ in range(epochs):
        began = time.perf_counter()
        for x, y in loader:
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    parser.add_argument("--width", type=int, default=64 if gpu else 16)
    parser.add_argument("--images", type=int, default=50_000 if gpu else 2_048)
    parser.add_argument("--batch-size", type=int, default=512 if gpu else 128)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (GPU)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    device = config.get_device()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 100, (args.images,), generator=generator)
    cfg = train.TrainConfig(
        regime="bench", width=args.width, epochs=args.epochs + 1, batch_size=args.batch_size, compile=args.compile
    )

    torch.manual_seed(0)
    ours_model = models.resnet18(100, args.width, normalization=data.NORMALIZATION["cifar100"])
    loader = data.GpuLoader(
        data.ImageSet(images, labels, [str(c) for c in range(100)], "bench/train"),
        args.batch_size,
        shuffle=True,
        augment=True,
        drop_last=True,
        device=device,
        channels_last=device.type == "cuda",
    )
    history = train.fit(ours_model, cfg, loader, progress=False)
    ours = [record["seconds"] for record in history[1:]]

    torch.manual_seed(0)
    base_model = models.resnet18(100, args.width)
    base = baseline_epochs(
        base_model, images.permute(0, 2, 3, 1).numpy(), labels.numpy(), cfg, device, args.workers, args.epochs + 1
    )[1:]

    used = len(loader) * args.batch_size
    ours_s, base_s = float(np.median(ours)), float(np.median(base))
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    result = {
        "device": name,
        "torch": torch.__version__,
        "width": args.width,
        "images_per_epoch": used,
        "batch_size": args.batch_size,
        "amp": str(amp_dtype(cfg.amp, device)),
        "compile": args.compile,
        "baseline_workers": args.workers,
        "ours": {"seconds_per_epoch": ours_s, "images_per_s": used / ours_s, "epochs": ours},
        "baseline": {"seconds_per_epoch": base_s, "images_per_s": used / base_s, "epochs": base},
        "speedup": base_s / ours_s,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(
        f"device: {name} | torch {torch.__version__} | ResNet-18 width {args.width} | {used:,} images/epoch, "
        f"batch {args.batch_size}, amp {result['amp']}"
    )
    print(f"{'':>34}{'s/epoch':>10}{'images/s':>12}")
    print(f"{'nclab GpuLoader + train.fit':>34}{ours_s:>10.2f}{used / ours_s:>12,.0f}")
    print(f"{f'DataLoader + PIL ({args.workers} workers)':>34}{base_s:>10.2f}{used / base_s:>12,.0f}")
    print(f"speed-up: {result['speedup']:.2f}x (target on a GPU: >= 3x; H100 ResNet-18 epoch <= 1.5 s)")
    args.out.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
    path = args.out / f"train_throughput-{slug[:40]}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
