"""One control group per submission: the memory and the processes of everything its grading starts (the
grader's own process that reads the kernel's messages, the sandbox, the kernel and whatever the kernel forks)
bounded together, and killed together at the end.

A per-process limit (``RLIMIT_AS``) lets one submission hold many times its bound over many processes, and
tmpfs writes count against none of them; a cgroup counts them all, tmpfs pages included. Linux offers it in
two shapes: the unified hierarchy (cgroup v2: ``memory.max``, ``pids.max``, ``memory.peak``, ``cgroup.kill``)
and the older per-controller one (v1: ``memory.limit_in_bytes``, ``pids.max``, ``memory.max_usage_in_bytes``),
which is what this course's machines have. :func:`create` makes whichever the machine has (v1: under the
grader's own group; v2: at the hierarchy's root, see :func:`parents`). Where it has neither (not root, a
container without cgroup access) :func:`unavailable_reason` says why, and the grader falls back on an
address-space limit for its grading process, inherited by its kernel (``isolated``), and refuses a second
concurrent grader.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Bound", "Group", "create", "in_submission_group", "parents", "remove_stale", "unavailable_reason"]

ROOT = Path("/sys/fs/cgroup")
GRADER, KERNEL = "grader", "kernel"  # the two leaves of a submission's group
LEAVES = ("", GRADER, KERNEL)  # "": processes of the group itself (v1 only)
GROUP_PREFIX = "nclab-grade-"  # the name of every group the grader makes starts with it
HEADROOM = 64  # processes and threads the grading process keeps for itself, whatever the kernel starts


@dataclass(frozen=True)
class Bound:
    """What one submission may hold at once, over all its processes: its grading process, the kernel with
    torch and whatever the kernel starts (the ``memory_peak_gib`` column of the CSV gives each one's peak)."""

    memory_bytes: int = 6 * 2**30
    processes: int = 512  # processes and threads (pids.max counts both)


def _memberships() -> list[tuple[str, str]]:
    """(controllers, path) of each hierarchy this process is in, as /proc/self/cgroup lists them ("" for
    v2's unified one); [] where it cannot be read."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    return [tuple(line.split(":", 2)[1:]) for line in lines if line.count(":") >= 2]


def _own(controller: str) -> str | None:
    """This process's group in ``controller``'s v1 hierarchy ("" for v2's unified one), or None."""
    return next((path for controllers, path in _memberships() if controllers.split(",") == [controller]), None)


def _v2_root() -> Path | None:
    """The unified hierarchy's mount where it has the memory and pids controllers for its children."""
    for mount in (ROOT, ROOT / "unified"):
        with contextlib.suppress(OSError):
            if {"memory", "pids"} <= set((mount / "cgroup.subtree_control").read_text().split()):
                return mount
    return None


def _v1_folders() -> dict[str, Path] | None:
    folders = {}
    for controller in ("memory", "pids"):
        own = _own(controller)
        if own is None or not (ROOT / controller / "cgroup.procs").exists():
            return None
        folders[controller] = ROOT / controller / own.lstrip("/")
    return folders


def unavailable_reason() -> str | None:
    """None where :func:`create` can make a group here, else why not."""
    if os.geteuid() != 0:
        return "not root: only root may make control groups"
    if _v2_root() is None and _v1_folders() is None:
        return "no cgroup hierarchy with the memory and pids controllers under /sys/fs/cgroup"
    return None


class Group:
    """A control group (its folder in each hierarchy): ``add`` a process, read ``peak`` and ``oom_killed``,
    ``close`` kills what is left in it and removes it."""

    def __init__(self, folders: dict[str, Path], version: int):
        self.folders, self.version = folders, version

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes its PID into to join the group's ``grader`` leaf (one per hierarchy)."""
        return sorted({str(folder / GRADER / "cgroup.procs") for folder in self.folders.values()})

    def _all_procs_files(self) -> list[Path]:
        return sorted({folder / leaf / "cgroup.procs" for folder in self.folders.values() for leaf in LEAVES})

    def add(self, pid: int) -> None:
        for path in self.procs_files:
            Path(path).write_text(str(pid))

    def _read(self, controller: str, name: str, leaf: str = "") -> str:
        try:
            return (self.folders[controller] / leaf / name).read_text()
        except OSError:
            return ""

    def peak(self) -> int | None:
        """The most memory the group held at once, in bytes (None where the kernel does not say)."""
        text = self._read("memory", "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")
        return int(text) if text.strip().isdigit() else None

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the group for passing its memory bound (the kill is
        counted in the leaf the process was in)."""
        for leaf in LEAVES:
            events = self._read("memory", "memory.events" if self.version == 2 else "memory.oom_control", leaf)
            counts = dict(line.split() for line in events.splitlines() if len(line.split()) == 2)
            if counts.get("oom_kill", "0") != "0":
                return True
        return False

    def pids(self) -> list[int]:
        found = set()
        for path in self._all_procs_files():
            with contextlib.suppress(OSError):
                found |= {int(pid) for pid in Path(path).read_text().split()}
        return sorted(found)

    def close(self, timeout: float = 30.0) -> None:
        """SIGKILL every process left in the group (a fork bomb included: ``pids.max`` stops it from growing)
        until none is left, then remove the group. RuntimeError if processes outlive ``timeout`` s."""
        if self.version == 2:
            with contextlib.suppress(OSError):
                (self.folders["memory"] / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {pids[:10]} of the submission survived SIGKILL for {timeout:g} s")
            time.sleep(0.01)
        folders = {folder / leaf for folder in self.folders.values() for leaf in (GRADER, KERNEL)}
        for folder in sorted(folders) + sorted(set(self.folders.values())):  # the leaves first
            for _ in range(500):  # rmdir fails with EBUSY while the last killed tasks are being released
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def leaf_procs_files(leaf: str) -> list[str]:
    """The ``cgroup.procs`` files of ``leaf`` beside this process's leaf, when this process runs in the
    ``grader`` leaf of a submission's group ([] otherwise): the sandbox's launcher joins the ``kernel`` leaf,
    so that a fork bomb meets the kernel's own ``pids.max`` and the grading process keeps its threads."""
    files = []
    for controllers, path in _memberships():
        if not path.endswith(f"/{GRADER}") or controllers not in ("", "memory", "pids"):
            continue
        hierarchy = (_v2_root() or ROOT) if controllers == "" else ROOT / controllers
        files.append(str(hierarchy / path.lstrip("/")[: -len(GRADER)] / leaf / "cgroup.procs"))
    return sorted(set(files))


def in_submission_group() -> bool:
    """Whether this process runs in a group made by the grader (whose ``pids.max`` then bounds the
    submission's processes, so the sandbox needs no per-user process limit shared by concurrent graders)."""
    return any(f"/{GROUP_PREFIX}" in path for _, path in _memberships())


def parents() -> dict[str, Path]:
    """{controller: the folder} where :func:`create` makes groups: on v2 the unified hierarchy's root (its
    "no internal processes" rule keeps a group with controllers out of a group that holds processes, such as
    the grader's own), on v1 the grader's own group in the memory and the pids hierarchies."""
    if (unified := _v2_root()) is not None:
        return {"memory": unified, "pids": unified}
    return _v1_folders() or {}


def _named(name: str) -> Group:
    """The group ``name`` in :func:`parents` (made or not)."""
    return Group({controller: folder / name for controller, folder in parents().items()}, 2 if _v2_root() else 1)


def remove_stale() -> int:
    """Remove the groups named ``GROUP_PREFIX<pid>-…`` whose grader (``pid``) is gone (a grader killed with
    its machine leaves its last group behind), killing what is left in them; returns how many."""
    removed = 0
    for name in {path.name for folder in parents().values() for path in folder.glob(f"{GROUP_PREFIX}*")}:
        pid = name.removeprefix(GROUP_PREFIX).split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError, RuntimeError):
                _named(name).close()
                removed += 1
    return removed


def create(name: str, bound: Bound) -> Group:
    """A new group ``name`` (made unique by the grader: its PID and a random part) holding at most ``bound``,
    in :func:`parents`, with two leaves: ``grader`` (:attr:`Group.procs_files`, for the grading process) and
    ``kernel`` (for the sandbox, ``HEADROOM`` processes fewer). RuntimeError, saying why, where it cannot."""
    if reason := unavailable_reason():
        raise RuntimeError(f"no control group for the submission: {reason}")
    group = _named(name)
    if group.version == 2:
        settings = {"memory.max": bound.memory_bytes, "memory.swap.max": 0, "pids.max": bound.processes}
    else:
        settings = {"memory.limit_in_bytes": bound.memory_bytes, "pids.max": bound.processes}
        settings |= {"memory.memsw.limit_in_bytes": bound.memory_bytes}  # no swapping past the bound either
    try:
        for folder in set(group.folders.values()):
            folder.mkdir(mode=0o700)
        for setting, value in settings.items():
            path = group.folders["pids" if setting.startswith("pids") else "memory"] / setting
            if path.exists():
                path.write_text(str(value))
        if group.version == 2:  # processes live only in leaves; the leaves get the controllers
            (group.folders["pids"] / "cgroup.subtree_control").write_text("+memory +pids")
        for leaf in (GRADER, KERNEL):
            for folder in set(group.folders.values()):
                (folder / leaf).mkdir(mode=0o700)
        (group.folders["pids"] / KERNEL / "pids.max").write_text(str(max(bound.processes - HEADROOM, 1)))
    except OSError as error:
        with contextlib.suppress(OSError, RuntimeError):
            group.close()
        raise RuntimeError(f"cannot make the submission's control group ({error})") from error
    return group
