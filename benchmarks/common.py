"""What every benchmark shares: timing (best of a few runs), peak memory, the machine's name, a figure.

Timing: a warm-up call (thread pools, kernels, lazy imports), then ``repeats`` timed calls, the fastest
reported (as ``timeit`` does: a shared machine only ever makes a run slower); on a GPU every call ends
with ``torch.cuda.synchronize()``.

Peak memory of a call, in MiB, measured over its timed calls (the warm-up excluded):

- CUDA: ``torch.cuda.max_memory_allocated()`` minus what was allocated before (peak statistics reset
  first): the tensors the call allocates on the GPU at its worst moment;
- CPU: the peak resident set size of this process above its resident size just before the calls. The
  kernel's high-water mark ``VmHWM`` is reset through ``/proc/self/clear_refs`` ("5") and memory freed
  earlier is handed back to the system first (glibc ``malloc_trim``), so memory that an earlier call
  left in the allocator's free lists neither hides nor inflates the figure. It counts everything the
  process touches (tensors, NumPy arrays, Python objects, library workspaces), not other processes (a
  DataLoader's workers). Where ``/proc`` or glibc is missing, the figure is None (unmeasured).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20

MEMORY_NOTE = (
    "peak memory: on a GPU, torch.cuda.max_memory_allocated above what was allocated before the call; on "
    "the CPU, the peak resident set size of the benchmark process above its size just before the call "
    "(VmHWM reset through /proc/self/clear_refs, freed memory returned first with malloc_trim): everything "
    "the call touches in this process, not a DataLoader's worker processes"
)


# ----------------------------------------------------------------------------------------------------
# The machine


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_name()} ({platform.machine()}), {torch.get_num_threads()} threads"


def machine_slug(device: torch.device) -> str:
    """``cpu-x86-64-2-threads`` or the CUDA device's name (``nvidia-h100-80gb-hbm3``): the results' file name."""
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu {platform.machine()} {torch.get_num_threads()} threads"
    )
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def machine_info(device: torch.device) -> dict:
    """Device, library versions, thread count, date (UTC) and commit: the header of every results file."""
    return {
        "machine": machine_slug(device),
        "device": describe_device(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The checkout's commit, with ``-dirty`` when tracked files differ from it (None outside git)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT, capture_output=True).returncode
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


# ----------------------------------------------------------------------------------------------------
# Timing and memory


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if os.name == "posix" else None


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class PeakMemory:
    """Context manager: ``.mib`` = peak memory (MiB) of what ran inside it, as the module docstring says."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.mib: float | None = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = None
        trim = getattr(_LIBC, "malloc_trim", None)
        if trim is not None:
            trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current VmRSS
            self._base = _status_kib("VmRSS")
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / MIB
        elif self._base is not None:
            peak = _status_kib("VmHWM")
            self.mib = None if peak is None else max(peak - self._base, 0) / 1024
        return False


@dataclass
class Timing:
    seconds: float  # the fastest timed call
    runs: list[float]  # every timed call
    peak_mib: float | None  # peak memory over the timed calls
    result: object  # what the last call returned


def measure(fn: Callable[[], object], device: torch.device | str = "cpu", repeats: int = 3, warmup: int = 1) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones; the fastest, and the peak memory."""
    for _ in range(warmup):
        fn()
        sync(device)
    runs, result = [], None  # nothing of the warm-up is alive when the memory window opens
    with PeakMemory(device) as memory:
        for _ in range(repeats):
            result = None  # the previous result is not kept alive during the next call
            start = time.perf_counter()
            result = fn()
            sync(device)
            runs.append(time.perf_counter() - start)
    return Timing(min(runs), runs, memory.mib, result)


# ----------------------------------------------------------------------------------------------------
# A figure of the results


def figure(
    name: str,
    what: str,
    unit: str,
    ours: float,
    baseline: float | None,
    *,
    higher_is_better: bool = False,
    peak_mib: tuple[float | None, float | None] = (None, None),
    baseline_what: str | None = None,
    target: str | None = None,
    passed: bool | None = None,
    **extra,
) -> dict:
    """One measured figure: nclab's value, the baseline's in the same run, and the speed-up ratio (> 1 =
    nclab faster: baseline time / our time, or our rate / the baseline's rate). ``target`` says what the
    issue asks for and ``passed`` whether it is met (None: the target does not apply to this device or
    these sizes)."""
    ratio = None
    if baseline is not None and ours > 0 and baseline > 0:
        ratio = ours / baseline if higher_is_better else baseline / ours
    return {
        "name": name,
        "what": what,
        "unit": unit,
        "ours": ours,
        "baseline": baseline,
        "baseline_what": baseline_what,
        "ratio": ratio,
        "higher_is_better": higher_is_better,
        "peak_mib": {"ours": peak_mib[0], "baseline": peak_mib[1]},
        "target": target,
        "pass": passed,
        **extra,
    }
