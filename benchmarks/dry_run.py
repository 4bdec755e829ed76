"""A dry run of the ``quick`` and ``full`` profiles: their whole code path at full size, a few steps per epoch.

    python benchmarks/dry_run.py [--profile quick --profile full --images 50000 --max-steps 2 --device cpu]

Nothing here has CIFAR-100 or a GPU; this shows that only the GPU differs. In a temporary folder:

1. Data: ``images`` random CIFAR-shaped uint8 training images and ``test_images`` test ones, labels 0..99
   (every run of 100 consecutive images holds each class once), written in the CIFAR-100 python format
   (``cifar-100-python/train``, ``test`` and ``meta`` pickles). torchvision's ``CIFAR100`` verifies the
   real files' MD5 checksums, so, within the dry run only, its checksum lists are patched to the written
   files' and ``NCLAB_DATA`` points at the folder: ``nclab.train.regime_data(profile)`` then reads them
   through torchvision (``load(..., download=True, standin=False)``) exactly as it reads CIFAR-100.
2. Training: ``regime("A", profile)`` (width 64, batch 128, the profile's snapshot schedule) through
   ``load_or_train(..., until=epochs, max_steps=max_steps)``: ``max_steps`` SGD steps per epoch (and test
   batches per evaluation), checkpoints and snapshots written as in the real run; then the same call with
   ``until=epochs + 1``, which must resume from ``last.pt``.
3. Measurements: ``extract_features`` over ``extract_batches`` batches of the profile's ``eval_batch_size``,
   then ``nc_metrics`` and every detector of ``nclab.ood`` at full size: the extracted features and their
   labels tiled (repeated) to ``images`` training rows, the test rows tiled from the same features.

Reports seconds per training step and images/s (the epochs after the first, whose first steps warm up),
peak memory (see ``common.py``), the checkpoint files, the estimated cost on this machine of a full epoch
(every step, then the test pass at the extraction's speed) and of all of regime A's epochs, and checks: the files
read back are the ones written, the snapshots are the schedule's, the run resumed, every number is finite.
``run(...)`` returns the figures as a dict, for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import math
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torchvision

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # a checkout
from common import MIB, PeakMemory, figure, measure  # noqa: E402

from nclab.collapse import nc_metrics  # noqa: E402
from nclab.config import get_device, get_profile  # noqa: E402
from nclab.data import GpuLoader  # noqa: E402
from nclab.features import extract_features  # noqa: E402
from nclab.heads import weight_and_bias  # noqa: E402
from nclab.ood import DETECTORS  # noqa: E402
from nclab.train import load_or_train, regime, regime_data  # noqa: E402

CLASSES, COARSE = 100, 20  # CIFAR-100's fine and coarse labels
EPOCHS = {"quick": 3, "full": 4}  # epochs of the first call; the second trains one more


# ----------------------------------------------------------------------------------------------------
# CIFAR-100 files of random images


def random_cifar100(images: int, test_images: int, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """{"train": (data, labels), "test": …}: data (N, 3072) uint8 in CIFAR's row layout (1,024 red, then
    green, then blue values of a 32×32 image), labels N ints in 0..99, every run of 100 consecutive images
    holding each class once (so the first 100 rows that a feature extraction reads cover every class)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", images), ("test", test_images)):
        blocks = math.ceil(count / CLASSES)
        labels = np.concatenate([rng.permutation(CLASSES) for _ in range(blocks)])[:count]
        splits[split] = (rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8), labels.tolist())
    return splits


def write_cifar100(folder: str | Path, splits: dict[str, tuple[np.ndarray, list[int]]]) -> dict[str, str]:
    """Write ``splits`` (``random_cifar100``) as ``folder/cifar-100-python/{train,test,meta}``, the pickles
    torchvision's ``CIFAR100`` reads; return the MD5 checksum of each file."""
    base = Path(folder) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    contents = {
        split: {
            "filenames": [f"random_{split}_{i}.png" for i in range(len(labels))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": labels,
            "coarse_labels": [label // (CLASSES // COARSE) for label in labels],
            "data": data,
        }
        for split, (data, labels) in splits.items()
    }
    contents["meta"] = {
        "fine_label_names": [f"class_{c:02d}" for c in range(CLASSES)],
        "coarse_label_names": [f"superclass_{c:02d}" for c in range(COARSE)],
    }
    checksums = {}
    for name, content in contents.items():
        with open(base / name, "wb") as f:
            pickle.dump(content, f)
        checksums[name] = hashlib.md5((base / name).read_bytes()).hexdigest()
    return checksums


@contextlib.contextmanager
def cifar100_at(folder: str | Path, checksums: dict[str, str]):
    """Within the block, ``NCLAB_DATA`` is ``folder`` and torchvision's ``CIFAR100`` expects ``checksums``
    (``write_cifar100``) instead of the real files' MD5s; both are restored afterwards. torchvision still
    verifies every file: a corrupted one is refused."""
    CIFAR100 = torchvision.datasets.CIFAR100
    before = os.environ.get("NCLAB_DATA")
    patches = (
        mock.patch.object(CIFAR100, "train_list", [["train", checksums["train"]]]),
        mock.patch.object(CIFAR100, "test_list", [["test", checksums["test"]]]),
        mock.patch.object(CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names", "md5": checksums["meta"]}),
    )
    os.environ["NCLAB_DATA"] = str(folder)
    try:
        with patches[0], patches[1], patches[2]:
            yield
    finally:
        if before is None:
            os.environ.pop("NCLAB_DATA", None)
        else:
            os.environ["NCLAB_DATA"] = before


# ----------------------------------------------------------------------------------------------------
# One profile


def _said(function, *args, **kwargs):
    """(function(*args, **kwargs), what it printed)."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        result = function(*args, **kwargs)
    return result, printed.getvalue().strip()


def _tiled(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` (n, …) repeated along its first axis to ``rows`` rows."""
    return x.repeat(math.ceil(rows / len(x)), *[1] * (x.ndim - 1))[:rows].contiguous()


def _sha1(array) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def dry_run_profile(
    name: str,
    root: Path,
    written: dict[str, dict],
    *,
    epochs: int,
    max_steps: int | None,
    extract_batches: int,
    width: int | None,
    eval_batch_size: int | None,
    device: torch.device,
    repeats: int,
) -> dict:
    """The dry run of profile ``name`` on the files of ``cifar100_at``; returns its measurements and checks
    (``written``: the sha1 of each split's data and its labels, to compare with what was read)."""
    profile = get_profile(name)
    began = time.perf_counter()
    with PeakMemory("cpu") as read_memory:
        train_set, test_set = regime_data(profile)
    read_s = time.perf_counter() - began
    read_back = all(
        _sha1(split.images.numpy()) == written[key]["sha1"] and split.labels.tolist() == written[key]["labels"]
        for key, split in (("train", train_set), ("test", test_set))
    )

    config = regime("A", profile, **({} if width is None else {"width": width}))
    eval_batch = eval_batch_size or profile.eval_batch_size
    options = dict(device=device, root=root, eval_batch_size=eval_batch, progress=False, max_steps=max_steps)
    began = time.perf_counter()
    with PeakMemory(device) as train_memory:
        first, first_said = _said(load_or_train, config, train_set, test_set, until=epochs, **options)
    train_wall_s = time.perf_counter() - began
    began = time.perf_counter()
    trained, resume_said = _said(load_or_train, config, train_set, test_set, until=epochs + 1, **options)
    resume_wall_s = time.perf_counter() - began

    steps = min(len(train_set) // config.batch_size, max_steps or math.inf)  # per epoch of the dry run
    per_epoch = [record["seconds"] / steps for record in first.history]  # s/step
    timed = per_epoch[1:] or per_epoch  # the first epoch warms up
    s_per_step = sum(timed) / len(timed)
    files = {path.name: path.stat().st_size / MIB for path in sorted(trained.run_dir.glob("*.pt"))}
    kept = {e for e in config.snapshot_epochs if e <= epochs + 1}  # the snapshots of the epochs trained
    expected_files = {"last.pt", *(f"epoch_{e:04d}.pt" for e in kept)}
    resumed = "resuming" in resume_said and trained.history[:epochs] == first.history

    loader = GpuLoader(
        train_set, eval_batch, shuffle=False, augment=False, drop_last=False, device=device, max_batches=extract_batches
    )
    extraction = measure(lambda: extract_features(trained.model, loader), device, repeats=1, warmup=0)
    extracted = extraction.result
    s_per_image = extraction.seconds / len(extracted)
    H, y = _tiled(extracted.features, len(train_set)), _tiled(extracted.labels, len(train_set))  # (N, p), (N,)
    T = _tiled(extracted.features, len(test_set))  # (M, p)
    W, b = (None if t is None else t.cpu() for t in weight_and_bias(trained.model))  # (C, p), (C,)
    nc = measure(lambda: nc_metrics(H, y, W, b), "cpu", repeats)
    detectors = {
        key: measure(lambda D=Detector: D().fit(H, y, W, b).score(T), "cpu", repeats)
        for key, Detector in DETECTORS.items()
    }

    full_steps = len(train_set) // config.batch_size
    epoch_s = s_per_step * full_steps + len(test_set) * s_per_image  # every step, then the test pass
    finite = [
        all(math.isfinite(record["train_loss"]) for record in trained.history),
        bool(torch.isfinite(extracted.features).all()),
        all(math.isfinite(value) for value in nc.result.values()),
        all(bool(torch.isfinite(t.result).all()) for t in detectors.values()),
    ]
    checks = {
        "real data path: torchvision read back the files written, standin False": read_back
        and not (train_set.standin or test_set.standin),
        "snapshots written as config.snapshot_epochs says": set(files) == expected_files
        and set(trained.snapshots) == kept,
        "second call resumed from last.pt (same history, one more epoch)": resumed
        and len(trained.history) == epochs + 1,
        "losses, features, NC metrics and detector scores finite": all(finite),
    }
    return {
        "config": {
            "width": config.width,
            "batch_size": config.batch_size,
            "epochs": config.epochs,
            "snapshot_epochs": list(config.snapshot_epochs),
            "eval_batch_size": eval_batch,
            "augment": config.augment,
        },
        "data": {"train_images": len(train_set), "test_images": len(test_set), "read_s": read_s},
        "read_peak_mib": read_memory.mib,
        "training": {
            "epochs_trained": len(trained.history),
            "steps_per_epoch": steps,
            "s_per_step_by_epoch": per_epoch,
            "s_per_step": s_per_step,
            "images_per_s": config.batch_size / s_per_step,
            "wall_s": train_wall_s,
            "resume_wall_s": resume_wall_s,
            "peak_mib": train_memory.mib,
            "said": first_said,
            "said_on_resume": resume_said,
            "run_dir": trained.run_dir.name,
            "checkpoint_files_mib": files,
        },
        "features": {
            "batches": len(loader),
            "images": len(extracted),
            "p": extracted.features.shape[1],
            "s_per_batch": extraction.seconds / len(loader),
            "images_per_s": 1 / s_per_image,
            "peak_mib": extraction.peak_mib,
        },
        "nc_metrics": {"s": nc.seconds, "peak_mib": nc.peak_mib, "values": nc.result},
        "detectors": {key: {"s": t.seconds, "peak_mib": t.peak_mib} for key, t in detectors.items()},
        "estimates": {
            "full_epoch_steps": full_steps,
            "full_epoch_train_s": s_per_step * full_steps,
            "full_epoch_test_pass_s": len(test_set) * s_per_image,
            "full_epoch_s": epoch_s,
            "profile_epochs": config.epochs,
            "profile_hours": epoch_s * config.epochs / 3600,
            "feature_pass_s": (len(train_set) + len(test_set)) * s_per_image,
        },
        "checks": checks,
    }


def _figures(name: str, result: dict, device: torch.device, n: int, m: int) -> list[dict]:
    """The figures of one profile's dry run (``dry_run_profile``)."""
    config, training, features = result["config"], result["training"], result["features"]
    estimates, detectors = result["estimates"], result["detectors"]
    p = features["p"]
    where = "this machine's" if device.type == "cpu" else str(device)
    checks = result["checks"]
    return [
        figure(
            f"{name}: read CIFAR-100",
            f"nclab.train.regime_data({name!r}): {n:,} + {m:,} images read and MD5-checked by torchvision's CIFAR100",
            "s",
            result["data"]["read_s"],
            None,
            peak_mib=(result["read_peak_mib"], None),
        ),
        figure(
            f"{name}: train step",
            f"load_or_train(regime('A', {name!r}), until={training['epochs_trained'] - 1}, max_steps="
            f"{training['steps_per_epoch']}): ResNet-18 width {config['width']}, batch {config['batch_size']}, "
            f"mean over the epochs after the first",
            "s/step",
            training["s_per_step"],
            None,
            peak_mib=(training["peak_mib"], None),
            target="the real code path: files read by torchvision, snapshots as scheduled, resumes, all finite",
            passed=all(checks.values()),
            images_per_s=training["images_per_s"],
            checks=checks,
        ),
        figure(
            f"{name}: full epoch (est.)",
            f"{estimates['full_epoch_steps']} steps × s/step + the {m:,} test images at the extraction's speed, "
            f"on {where} device",
            "s",
            estimates["full_epoch_s"],
            None,
            peak_mib=(training["peak_mib"], None),
            train_s=estimates["full_epoch_train_s"],
            test_pass_s=estimates["full_epoch_test_pass_s"],
        ),
        figure(
            f"{name}: regime A, all epochs (est.)",
            f"{estimates['profile_epochs']} full epochs of regime A on {where} device (one run of the profile)",
            "s",
            estimates["full_epoch_s"] * estimates["profile_epochs"],
            None,
            peak_mib=(training["peak_mib"], None),
            hours=estimates["profile_hours"],
        ),
        figure(
            f"{name}: feature extraction",
            f"extract_features of the trained model over {features['batches']} batch(es) of "
            f"{config['eval_batch_size']} training images (eval, float32)",
            "images/s",
            features["images_per_s"],
            None,
            higher_is_better=True,
            peak_mib=(features["peak_mib"], None),
            s_per_batch=features["s_per_batch"],
        ),
        figure(
            f"{name}: feature pass (est.)",
            f"features of the {n:,} training + {m:,} test images at the extraction's speed",
            "s",
            estimates["feature_pass_s"],
            None,
            peak_mib=(features["peak_mib"], None),
        ),
        figure(
            f"{name}: nc_metrics",
            f"collapse.nc_metrics(H, y, W, b) of the extracted features tiled to {n:,} × {p}, C = {CLASSES}",
            "s",
            result["nc_metrics"]["s"],
            None,
            peak_mib=(result["nc_metrics"]["peak_mib"], None),
        ),
        figure(
            f"{name}: ood all detectors",
            f"the {len(detectors)} detectors of nclab.ood, fit on {n:,} × {p} and score {m:,} × {p} "
            "(tiled extracted features; sum of each one's best time)",
            "s",
            sum(d["s"] for d in detectors.values()),
            None,
            peak_mib=(max(d["peak_mib"] or 0 for d in detectors.values()), None),
            detectors_s={key: d["s"] for key, d in detectors.items()},
        ),
    ]


# ----------------------------------------------------------------------------------------------------
# The dry run


def run(
    profiles: tuple[str, ...] = ("quick", "full"),
    images: int = 50_000,
    test_images: int = 10_000,
    max_steps: int | None = 2,
    epochs: dict[str, int] | None = None,
    extract_batches: int = 2,
    width: int | None = None,
    eval_batch_size: int | None = None,
    device: str | torch.device | None = "cpu",
    repeats: int = 3,
    folder: str | Path | None = None,
) -> dict:
    """The dry run of each of ``profiles`` (``epochs``: {profile: epochs of the first call}, default
    ``EPOCHS``; ``width`` and ``eval_batch_size`` replace the profile's, for tiny test sizes), in a
    temporary folder under ``folder`` (default: the system's), deleted afterwards."""
    device = get_device(device)
    epochs = {**EPOCHS, **(epochs or {})}
    details, figures = {}, []
    with tempfile.TemporaryDirectory(prefix="nclab-dry-run-", dir=folder) as tmp:
        splits = random_cifar100(images, test_images)
        began = time.perf_counter()
        with PeakMemory("cpu") as write_memory:
            checksums = write_cifar100(Path(tmp) / "data", splits)
        write_s = time.perf_counter() - began
        written = {split: {"sha1": _sha1(data), "labels": labels} for split, (data, labels) in splits.items()}
        files_mib = {name: (Path(tmp) / "data" / "cifar-100-python" / name).stat().st_size / MIB for name in checksums}
        del splits
        figures.append(
            figure(
                "write CIFAR-100 files",
                f"{images:,} + {test_images:,} random CIFAR-shaped images written as cifar-100-python/train, test "
                "and meta pickles, and their MD5s",
                "s",
                write_s,
                None,
                peak_mib=(write_memory.mib, None),
                files_mib=files_mib,
            )
        )
        with cifar100_at(Path(tmp) / "data", checksums):
            for name in profiles:
                details[name] = dry_run_profile(
                    name,
                    Path(tmp) / "runs",
                    written,
                    epochs=epochs[name],
                    max_steps=max_steps,
                    extract_batches=extract_batches,
                    width=width,
                    eval_batch_size=eval_batch_size,
                    device=device,
                    repeats=repeats,
                )
                figures += _figures(name, details[name], device, images, test_images)
    checks = {f"{name}: {check}": ok for name in profiles for check, ok in details[name]["checks"].items()}
    settings = {
        "profiles": list(profiles),
        "images": images,
        "test_images": test_images,
        "max_steps": max_steps,
        "epochs": {name: epochs[name] for name in profiles},
        "extract_batches": extract_batches,
        "width": width or "the profile's",
        "eval_batch_size": eval_batch_size or "the profile's",
        "device": str(device),
        "repeats": repeats,
        "data": "random uint8 images, labels 0..99, in the CIFAR-100 python format, read by torchvision with "
        "its checksum lists patched to the written files'",
        "tiling": "nc_metrics and the detectors get the extracted features and labels repeated to "
        f"{images:,} training rows; the {test_images:,} scored rows are the same features repeated",
        "statistic": "training: mean s/step over the epochs after the first (history 'seconds', the test "
        "pass and checkpoint writes excluded); extraction: one pass; nc_metrics and detectors: best of the "
        "repeats after a warm-up",
        "estimates": "full epoch = steps of the whole training set × s/step + the test set at the "
        "extraction's images/s; regime A, all epochs = the profile's epochs × that",
    }
    return {
        "settings": settings,
        "figures": figures,
        "profiles": details,
        "checks": checks,
        "all_checks_pass": all(checks.values()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", choices=["smoke", "quick", "full"], help="repeatable")
    parser.add_argument("--images", type=int, default=50_000, help="training images written")
    parser.add_argument("--test-images", type=int, default=10_000, help="test images written")
    parser.add_argument("--max-steps", type=int, default=2, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the first call (default 3 / 4)")
    parser.add_argument("--extract-batches", type=int, default=2)
    parser.add_argument("--width", type=int, default=None, help="default: the profile's (64)")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default: the profile's (1,000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="runs of nc_metrics and detectors; the fastest")
    args = parser.parse_args()
    profiles = tuple(args.profile or ("quick", "full"))
    result = run(
        profiles,
        args.images,
        args.test_images,
        args.max_steps,
        None if args.epochs is None else {name: args.epochs for name in profiles},
        args.extract_batches,
        args.width,
        args.eval_batch_size,
        args.device,
        args.repeat,
    )
    print(f"device {result['settings']['device']}, torch threads {torch.get_num_threads()}")
    for fig in result["figures"]:
        peak = fig["peak_mib"]["ours"]
        hours = f"  ({fig['hours']:.1f} h)" if "hours" in fig else ""
        print(f"{fig['name']:36s} {fig['ours']:12.4g} {fig['unit']:9s} peak {peak or 0:8.0f} MiB{hours}")
    for name, details in result["profiles"].items():
        files = ", ".join(f"{file} {mib:.0f} MB" for file, mib in details["training"]["checkpoint_files_mib"].items())
        print(f"{name}: checkpoints {files}")
    for check, ok in result["checks"].items():
        print(f"{'ok    ' if ok else 'FAILED'} {check}")


if __name__ == "__main__":
    main()
