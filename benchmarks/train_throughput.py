"""Training throughput: nclab's GPU-resident loader + trainer vs a torchvision DataLoader + PIL baseline.

Both train the same ResNet-18 (CIFAR stem) with the same optimiser, precision, memory format (and
``torch.compile`` or not) on the same CIFAR-shaped data (random uint8 images, 100 classes), side by side
in one run. The baseline is the textbook recipe: a Dataset that turns each image into a PIL image,
RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, and a DataLoader with worker
processes.

    python benchmarks/train_throughput.py                 # GPU: width 64, 50,000 images (the real scale)
    python benchmarks/train_throughput.py --width 16 --images 2048  # CPU: tiny, just to keep it working

On a GPU it runs four variants (fp32; AMP; AMP + channels_last; AMP + channels_last + torch.compile), on
a CPU only fp32 (the others are GPU features: see ``CPU_SKIPPED``). Prints images/s and seconds per
epoch of both (median of the timed epochs, after one warm-up epoch) and their ratio; writes a JSON record
to benchmarks/results/ (named after the device). Targets on a GPU: ratio ≥ 3, and ≤ 1.5 s per ResNet-18
epoch on an H100-class GPU (≤ 15 s on a T4 with fp16). ``benchmarks/run.py`` runs it with the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from common import PeakMemory, figure, machine_info  # noqa: E402

from nclab import data, models, train  # noqa: E402
from nclab.config import get_device  # noqa: E402
from nclab.train import amp_dtype  # noqa: E402

RATIO_TARGET = 3.0  # nclab ≥ 3× the DataLoader baseline's images/s, on a GPU
EPOCH_TARGETS = {"H100": 1.5, "H200": 1.5, "T4": 15.0}  # s per ResNet-18 (width 64) epoch of 50,000 images

# (name, TrainConfig.amp, channels_last, compile) of the GPU variants
GPU_VARIANTS = [
    ("fp32", "off", False, False),
    ("amp", "auto", False, False),
    ("amp + channels_last", "auto", True, False),
    ("amp + channels_last + compile", "auto", True, True),
]
CPU_SKIPPED = {
    "amp": "nclab trains in float32 on a CPU (TrainConfig.amp='auto' is off there): AMP is a GPU speed-up",
    "channels_last": "ignored on the CPU by train.fit (TrainConfig.channels_last is a GPU setting)",
    "compile": "TrainConfig.compile is for the GPU; on a 2-core CPU the compilation alone takes minutes",
}


class PILDataset(torch.utils.data.Dataset):
    """CIFAR-style dataset: uint8 HWC images turned into PIL images and transformed one at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool = True):
        steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
        self.images, self.labels = images, labels
        self.transform = T.Compose([*steps, T.ToTensor(), T.Normalize(data.CIFAR100_MEAN, data.CIFAR100_STD)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def baseline_epochs(model, images, labels, cfg, device, workers, epochs):
    """The textbook loop over a torchvision DataLoader, with ``cfg``'s precision, memory format and
    compilation; returns seconds per epoch."""
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
    channels_last = cfg.channels_last and device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    forward = torch.compile(model) if cfg.compile else model
    times = []
    for _ in range(epochs):
        began = time.perf_counter()
        for x, y in loader:
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                loss = F.cross_entropy(forward(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return times


def _epoch_target(device: torch.device, width: int, images: int, variant: str) -> tuple[str, float | None]:
    """The issue's seconds-per-epoch target, and its limit for this GPU (None when it does not apply here)."""
    text = "≤ 1.5 s on an H100-class GPU, ≤ 15 s on a T4 with fp16 (ResNet-18 width 64, 50,000 images)"
    if device.type != "cuda" or width != 64 or images < 50_000:
        return text, None
    name = torch.cuda.get_device_name(device)
    for gpu, seconds in EPOCH_TARGETS.items():
        if gpu in name and (gpu != "T4" or variant.startswith("amp")):
            return text, seconds
    return text, None


def run(
    width: int = 16,
    images: int = 2_048,
    batch_size: int = 128,
    epochs: int = 2,
    workers: int | None = None,
    device: str | torch.device | None = None,
    variants: list[tuple[str, str, bool, bool]] | None = None,
) -> dict:
    """Train both pipelines for ``epochs`` timed epochs (after one warm-up epoch) in each variant.

    Returns {"settings", "figures", "skipped"}: per variant an images/s figure (ratio = ours / baseline,
    target ≥ 3 on a GPU), then the best variant's seconds per epoch (target on an H100 / T4).
    """
    device = get_device(device)
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    if variants is None:
        variants = GPU_VARIANTS if device.type == "cuda" else GPU_VARIANTS[:1]
    skipped = [] if device.type == "cuda" else [{"name": k, "why": v} for k, v in CPU_SKIPPED.items()]
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    y = torch.randint(0, 100, (images,), generator=generator)
    x_hwc, y_np = x.permute(0, 2, 3, 1).numpy(), y.numpy()

    figures, best = [], None
    for name, amp, channels_last, compile_ in variants:
        cfg = train.TrainConfig(
            regime="bench",
            width=width,
            epochs=epochs + 1,
            batch_size=batch_size,
            amp=amp,
            channels_last=channels_last,
            compile=compile_,
        )
        torch.manual_seed(0)
        ours_model = models.resnet18(100, width, normalization=data.NORMALIZATION["cifar100"])
        loader = data.GpuLoader(
            data.ImageSet(x, y, [str(c) for c in range(100)], "bench/train"),
            batch_size,
            shuffle=True,
            augment=True,
            drop_last=True,
            device=device,
            channels_last=channels_last and device.type == "cuda",
        )
        with PeakMemory(device) as ours_memory:
            history = train.fit(ours_model, cfg, loader, progress=False)
        ours = [record["seconds"] for record in history[1:]]
        del ours_model, loader, history

        torch.manual_seed(0)
        base_model = models.resnet18(100, width)
        with PeakMemory(device) as base_memory:
            base = baseline_epochs(base_model, x_hwc, y_np, cfg, device, workers, epochs + 1)[1:]
        del base_model

        used = (images // batch_size) * batch_size
        ours_s, base_s = float(np.median(ours)), float(np.median(base))
        gpu = device.type == "cuda"
        figures.append(
            figure(
                f"trainer {name}",
                f"ResNet-18 width {width}, {used:,} CIFAR-shaped images/epoch, batch {batch_size}, {name} "
                f"(autocast {amp_dtype(amp, device)}): nclab GpuLoader + train.fit",
                "images/s",
                used / ours_s,
                used / base_s,
                higher_is_better=True,
                baseline_what=f"torchvision DataLoader + PIL transforms ({workers} workers), same model and loop",
                peak_mib=(ours_memory.mib, base_memory.mib),
                target=f"ratio ≥ {RATIO_TARGET:g} on a GPU",
                passed=(used / ours_s) / (used / base_s) >= RATIO_TARGET if gpu else None,
                seconds_per_epoch={"ours": ours_s, "baseline": base_s},
                epochs={"ours": ours, "baseline": base},
            )
        )
        if best is None or ours_s < best[1]:
            best = (name, ours_s, base_s, ours_memory.mib, base_memory.mib)

    name, ours_s, base_s, ours_mib, base_mib = best
    target, limit = _epoch_target(device, width, images, name)
    figures.append(
        figure(
            "trainer epoch",
            f"seconds per epoch of ResNet-18 width {width} on {images:,} CIFAR-shaped images, best variant ({name})",
            "s",
            ours_s,
            base_s,
            baseline_what="the DataLoader + PIL baseline in the same variant",
            peak_mib=(ours_mib, base_mib),
            target=target,
            passed=None if limit is None else ours_s <= limit,
        )
    )
    settings = {
        "width": width,
        "images": images,
        "batch_size": batch_size,
        "timed_epochs": epochs,
        "warmup_epochs": 1,
        "statistic": "median of the timed epochs",
        "baseline_workers": workers,
        "variants": [v[0] for v in variants],
    }
    return {"settings": settings, "figures": figures, "skipped": skipped}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    parser.add_argument("--width", type=int, default=64 if gpu else 16)
    parser.add_argument("--images", type=int, default=50_000 if gpu else 2_048)
    parser.add_argument("--batch-size", type=int, default=512 if gpu else 128)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    device = get_device()
    result = run(args.width, args.images, args.batch_size, args.epochs, args.workers, device)
    info = machine_info(device)
    print(f"device: {info['device']} | torch {torch.__version__} | {result['figures'][0]['what']}")
    print(f"{'':>34}{'s/epoch':>10}{'images/s':>12}{'ratio':>8}")
    for fig in result["figures"][:-1]:
        seconds = fig["seconds_per_epoch"]
        print(f"{fig['name'] + ' (nclab)':>34}{seconds['ours']:>10.2f}{fig['ours']:>12,.0f}{fig['ratio']:>7.2f}x")
        print(f"{'DataLoader + PIL':>34}{seconds['baseline']:>10.2f}{fig['baseline']:>12,.0f}")
    for skip in result["skipped"]:
        print(f"skipped {skip['name']}: {skip['why']}")
    print("targets on a GPU: ratio >= 3x; H100 ResNet-18 epoch <= 1.5 s (T4 fp16 <= 15 s)")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"train_throughput-{info['machine']}.json"
    path.write_text(json.dumps({**info, **result}, indent=1) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
