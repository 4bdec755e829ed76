"""How training scales with DistributedDataParallel under ``torchrun``: 1, 2, 4, … processes, one global batch.

    python benchmarks/ddp_scaling.py                                   # CPU: 1 process × 2 threads vs 2 × 1
    python benchmarks/ddp_scaling.py --device cuda --batch-size 128 --batch-size 512    # 1, 2, 4, … GPUs

The instructor trains on several GPUs with ``torchrun --nproc-per-node N -m nclab train`` (``nclab.distributed``);
this times the same path. In a temporary folder:

1. Data: ``images`` random CIFAR-shaped training images (and 100 test images, which the format needs),
   written once by this process in the CIFAR-100 python format (``dry_run.random_cifar100`` and
   ``dry_run.write_cifar100``); every worker reads them through torchvision with its checksum lists
   patched to the written files' (``dry_run.cifar100_at``; ``NCLAB_DATA`` points at the folder).
2. One launch per process count N: ``torchrun --nproc-per-node N --master-port <free port>
   benchmarks/ddp_scaling.py --worker SPEC``, for N = 1 too (torchrun then sets ``WORLD_SIZE=1``, which
   nclab runs as one plain process: no process group, no DDP wrapper, so N = 1 is the single-process
   baseline, launched the same way). On the CPU each process gets ``threads // N`` threads
   (``OMP_NUM_THREADS``; ``threads`` defaults to this process's torch threads, the count in the results'
   file name): the same cores, shared out. On GPUs process ``r`` trains on ``cuda:r``.
3. Each worker calls ``load_or_train(regime("A", "full", width=…, batch_size=…, epochs=epochs), train_set,
   until=epochs, max_steps=max_steps)``: each rank reads its ``batch_size / N`` rows of every global batch,
   gradients are averaged by DDP (gloo on the CPU, NCCL on GPUs). Rank 0 writes the history, its world
   size and threads, and every rank's peak memory (``common.PeakMemory`` around the call) to a JSON file.

Reports per N: seconds per step of the global batch (the history's per-epoch ``seconds``, the training
loop only, mean over the epochs after the first, which warms up), images/s, the speed-up over 1 process,
the efficiency (speed-up / N), and the wall time of the whole launch (torchrun, imports, reading the data,
training, checkpoints). ``run(...)`` returns the figures as a dict, for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # a checkout
from common import PeakMemory, figure  # noqa: E402
from dry_run import cifar100_at, random_cifar100, write_cifar100  # noqa: E402

from nclab import distributed  # noqa: E402
from nclab.config import get_device  # noqa: E402
from nclab.data import load  # noqa: E402
from nclab.train import load_or_train, regime  # noqa: E402

SCRIPT = Path(__file__).resolve()
PROFILE = "full"  # regime A at the papers' scale (augmentation on), its width and batch replaced by run()'s
TEST_IMAGES = 100  # the CIFAR-100 format has a test file; the workers never read it


# ----------------------------------------------------------------------------------------------------
# The worker: one process of a launch


def worker(spec_path: str) -> None:
    """Train as ``SPEC`` (a JSON file written by ``launch``) says, in this process of a torchrun launch;
    rank 0 writes the results to ``spec["out"]``."""
    spec = json.loads(Path(spec_path).read_text())
    with cifar100_at(os.environ["NCLAB_DATA"], spec["checksums"]):
        train_set = load("cifar100", "train")  # through torchvision, MD5-checked
    config = regime("A", PROFILE, width=spec["width"], batch_size=spec["batch_size"], epochs=spec["epochs"])
    # join the group now (load_or_train's call then finds it joined): this rank's GPU is the current one
    # before PeakMemory synchronises, so no rank opens a context on cuda:0
    device = distributed.setup(get_device(spec["device"]))
    with PeakMemory(device) as memory, contextlib.redirect_stdout(io.StringIO()) as said:
        run = load_or_train(
            config,
            train_set,
            device=device,
            root=spec["runs"],
            until=spec["epochs"],
            max_steps=spec["max_steps"],
            progress=False,
        )
    peaks = distributed.gather(torch.tensor([math.nan if memory.mib is None else memory.mib], device=device))
    if distributed.is_main():
        result = {
            "world_size": distributed.world_size(),
            "threads": torch.get_num_threads(),
            "device": str(device),
            "history": run.history,
            "peak_mib_by_rank": [None if math.isnan(p) else p for p in peaks.tolist()],
            "said": said.getvalue().strip(),
        }
        Path(spec["out"]).write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------------------------------
# One launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun() -> list[str]:
    """The ``torchrun`` beside this interpreter (its module where the script is missing: the same program)."""
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def launch(processes: int, threads: int, spec: dict, folder: Path, timeout: float) -> tuple[dict, float]:
    """Run the worker in ``processes`` processes of ``threads`` threads each under torchrun; returns
    (what rank 0 wrote, wall seconds of the launch)."""
    name = f"{processes}x{spec['batch_size']}"
    spec = {**spec, "runs": str(folder / f"runs-{name}"), "out": str(folder / f"result-{name}.json")}
    spec_path = folder / f"spec-{name}.json"
    spec_path.write_text(json.dumps(spec))
    command = [
        *_torchrun(),
        "--nproc-per-node",
        str(processes),
        "--master-port",
        str(_free_port()),
        str(SCRIPT),
        "--worker",
        str(spec_path),
    ]
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "NCLAB_DATA": str(folder / "data"),
        "NCLAB_CACHE": str(folder / "cache"),
    }
    began = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
    wall_s = time.perf_counter() - began
    if done.returncode != 0 or not Path(spec["out"]).exists():
        raise RuntimeError(
            f"the launch of {processes} process(es) failed (exit {done.returncode}): {' '.join(command)}\n"
            f"{done.stdout[-2000:]}\n{_shortened(done.stderr)}"
        )
    return json.loads(Path(spec["out"]).read_text()), wall_s


def _shortened(text: str, keep: int = 3000) -> str:
    """``text``, its middle cut when long: a worker's traceback comes first, torchrun's summary last."""
    return text if len(text) <= 2 * keep else f"{text[:keep]}\n[…]\n{text[-keep:]}"


def _measure(result: dict, processes: int, threads: int, batch_size: int, expected_steps: int, wall_s: float) -> dict:
    """The figures of one launch from what its rank 0 wrote: s/step of the global batch and the checks."""
    history = result["history"]
    steps = [round(r["images_per_s"] * r["seconds"] / batch_size) for r in history]  # global batches per epoch
    per_epoch = [r["seconds"] / n for r, n in zip(history, steps)]  # s/step
    timed = per_epoch[1:] or per_epoch  # the first epoch warms up
    s_per_step = sum(timed) / len(timed)
    peaks = [p for p in result["peak_mib_by_rank"] if p is not None]
    checks = {
        f"world size {processes}: the global batch split over {processes} process(es)": result["world_size"]
        == processes,
        f"every epoch took {expected_steps} steps of {batch_size} images": steps == [expected_steps] * len(steps),
        f"each process ran {threads} thread(s)": result["threads"] == threads,
        "losses finite": all(math.isfinite(r["train_loss"]) for r in history),
    }
    return {
        "processes": processes,
        "batch_size": batch_size,
        "threads_per_process": threads,
        "device": result["device"],
        "steps_per_epoch": steps,
        "s_per_step_by_epoch": per_epoch,
        "s_per_step": s_per_step,
        "images_per_s": batch_size / s_per_step,
        "train_loss_by_epoch": [r["train_loss"] for r in history],
        "wall_s": wall_s,
        "peak_mib_by_rank": result["peak_mib_by_rank"],
        "peak_mib": max(peaks) if peaks else None,
        "said": result["said"],
        "checks": checks,
    }


# ----------------------------------------------------------------------------------------------------
# The benchmark


def default_processes(device: torch.device) -> tuple[int, ...]:
    """CPU: (1, 2). GPUs: 1, 2, 4, … up to ``torch.cuda.device_count()``, and the count itself."""
    if device.type != "cuda":
        return (1, 2)
    count = torch.cuda.device_count()
    return tuple(sorted({2**k for k in range(count.bit_length()) if 2**k <= count} | {count}))


def _threads(count: int) -> str:
    return f"{count} thread{'s' if count > 1 else ''}"


def _figures(measured: dict, baseline: dict, width: int, images: int, epochs: int, backend: str) -> list[dict]:
    """The step and launch figures of one launch (``_measure``) against the 1-process launch."""
    n, batch, threads = measured["processes"], measured["batch_size"], measured["threads_per_process"]
    steps = measured["steps_per_epoch"][-1]
    processes = f"{n} process{'es' if n > 1 else ''}"
    layout = f"{processes} × {_threads(threads)}"
    one = f"1 process × {_threads(baseline['threads_per_process'])}, same global batch"
    checks = measured["checks"]
    return [
        figure(
            f"ddp step: {processes}, batch {batch}",
            f"s per step of the global batch of {batch} ({batch // n} per process), {layout} under torchrun"
            + (f" ({backend})" if n > 1 else " (no process group)")
            + f": load_or_train(regime('A', {PROFILE!r}, width={width}), max_steps={steps}) on {images:,} images, "
            f"mean over epochs 2..{epochs}; ratio = speed-up over 1 process, efficiency = speed-up / {n}",
            "s/step",
            measured["s_per_step"],
            baseline["s_per_step"],
            peak_mib=(measured["peak_mib"], baseline["peak_mib"]),
            baseline_what=f"{one} (peak MiB: the largest process's)",
            target="the global batch split over the processes as launched, every step taken, losses finite",
            passed=all(checks.values()),
            images_per_s=measured["images_per_s"],
            speedup=measured["speedup"],
            efficiency=measured["efficiency"],
            processes=n,
            threads_per_process=threads,
            checks=checks,
        ),
        figure(
            f"ddp launch: {processes}, batch {batch}",
            f"wall seconds of the whole launch of {layout}: torchrun, imports, reading the files, {epochs} epochs "
            "of training, checkpoints",
            "s",
            measured["wall_s"],
            baseline["wall_s"],
            peak_mib=(measured["peak_mib"], baseline["peak_mib"]),
            baseline_what=one,
        ),
    ]


def run(
    processes: tuple[int, ...] | None = (1, 2),
    width: int = 16,
    images: int = 4_096,
    batch_size: int | tuple[int, ...] = 128,
    max_steps: int | None = 8,
    epochs: int = 2,
    device: str | torch.device | None = "cpu",
    threads: int | None = None,
    timeout: float = 1_800,
    folder: str | Path | None = None,
) -> dict:
    """Launch training in each of ``processes`` (None: ``default_processes``) at each ``batch_size`` (the
    global batch; one or several), ``epochs`` epochs of at most ``max_steps`` steps on ``images`` random
    images, ResNet-18 of ``width``; ``threads`` (default: this process's torch threads) shared out over the
    processes on the CPU. Works in a temporary folder under ``folder`` (default: the system's)."""
    device = get_device(device)
    processes = tuple(sorted(set(processes or default_processes(device))))
    batch_sizes = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
    threads = threads or torch.get_num_threads()
    if processes[0] != 1:
        raise ValueError(f"processes must include 1, the baseline of the speed-ups; got {processes}.")
    if device.type == "cuda" and processes[-1] > torch.cuda.device_count():
        raise ValueError(f"{processes[-1]} processes need as many GPUs; this machine has {torch.cuda.device_count()}.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    skipped = []
    if device.type == "cuda" and len(processes) == 1:
        skipped.append({"name": "2+ processes", "why": f"{torch.cuda.device_count()} GPU here: nothing to scale to"})
    launches, figures = [], []
    with tempfile.TemporaryDirectory(prefix="nclab-ddp-", dir=folder) as tmp:
        tmp = Path(tmp)
        checksums = write_cifar100(tmp / "data", random_cifar100(images, TEST_IMAGES))
        spec = dict(checksums=checksums, width=width, epochs=epochs, max_steps=max_steps, device=device.type)
        for batch in batch_sizes:
            expected_steps = min(images // batch, max_steps or math.inf)
            skip = [n for n in processes if batch % n]
            if skip:
                skipped.append({"name": f"batch {batch} on {skip} processes", "why": "the batch does not split evenly"})
            baseline = None
            for n in (n for n in processes if n not in skip):
                per_process = max(1, threads // n)  # the same cores, shared out (at least one each)
                result, wall_s = launch(n, per_process, {**spec, "batch_size": batch}, tmp, timeout)
                measured = _measure(result, n, per_process, batch, expected_steps, wall_s)
                baseline = baseline or measured
                measured["speedup"] = baseline["s_per_step"] / measured["s_per_step"]
                measured["efficiency"] = measured["speedup"] / n
                launches.append(measured)
                figures += _figures(measured, baseline, width, images, epochs, backend)
    checks = {f"{m['processes']} × batch {m['batch_size']}: {c}": ok for m in launches for c, ok in m["checks"].items()}
    settings = {
        "processes": list(processes),
        "width": width,
        "images": images,
        "batch_sizes": list(batch_sizes),
        "max_steps": max_steps,
        "epochs": epochs,
        "device": str(device),
        "backend": backend,
        "threads": threads,
        "threads_per_process": {n: max(1, threads // n) for n in processes},
        "launcher": "torchrun --nproc-per-node N --master-port <free port> benchmarks/ddp_scaling.py --worker "
        "SPEC, for N = 1 too (WORLD_SIZE=1: nclab runs one plain process, no group, no DDP)",
        "config": f"regime('A', {PROFILE!r}) with width, batch_size and epochs replaced; augmentation on",
        "data": "random uint8 images in the CIFAR-100 python format, read by torchvision in every worker with "
        "its checksum lists patched to the written files'",
        "statistic": "rank 0's history 'seconds' (the training loop only) / steps, mean over the epochs after "
        "the first; speed-up = 1 process's s/step / N processes'; efficiency = speed-up / N",
    }
    return {
        "settings": settings,
        "figures": figures,
        "launches": launches,
        "skipped": skipped,
        "checks": checks,
        "all_checks_pass": all(checks.values()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="SPEC", help="(internal) run as one process of a launch")
    parser.add_argument("--processes", type=int, action="append", help="repeatable; default: 1, 2 (CPU), 1, 2, 4, …")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--images", type=int, default=4_096)
    parser.add_argument("--batch-size", type=int, action="append", help="global batch, repeatable (default 128)")
    parser.add_argument("--max-steps", type=int, default=8, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads shared by the processes")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    result = run(
        tuple(args.processes) if args.processes else None,
        args.width,
        args.images,
        tuple(args.batch_size or (128,)),
        args.max_steps,
        args.epochs,
        args.device,
        args.threads,
    )
    settings = result["settings"]
    print(f"device {settings['device']} ({settings['backend']}), {settings['threads']} thread(s) shared out")
    print("processes threads batch   s/step images/s speed-up  eff.   wall")
    for m in result["launches"]:
        print(
            f"{m['processes']:9d} {m['threads_per_process']:7d} {m['batch_size']:5d} {m['s_per_step']:8.3f} "
            f"{m['images_per_s']:8.0f} {m['speedup']:8.2f} {m['efficiency']:5.2f} {m['wall_s']:5.0f}s"
        )
    for skip in result["skipped"]:
        print(f"skipped {skip['name']}: {skip['why']}")
    for check, ok in result["checks"].items():
        print(f"{'ok    ' if ok else 'FAILED'} {check}")


if __name__ == "__main__":
    main()
