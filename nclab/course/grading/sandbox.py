"""The grader's sandbox: one submission's kernel as an unprivileged user, in namespaces that die with it.

``kernel_manager(workdir, hide=[submissions, out])`` yields a ``jupyter_client.AsyncKernelManager`` for
``NotebookClient(km=...)``. Its kernelspec starts this file as a launcher (as root, ``python -I -S``: the
standard library only, ~20 ms), which unshares a PID namespace and forks the namespace's first process, init.
Init, still root, enters new mount, network and IPC namespaces and builds the kernel's file system from an
allow-list (no bubblewrap needed: Python and the kernel's own calls, ``unshare``, ``mount``, ``pivot_root``
and ``mount_setattr``, do it in a few milliseconds):

* a new root, an empty tmpfs, holding only :data:`SYSTEM` (/usr, /bin, /lib*, the few files of /etc that the
  C library, Python, torch and matplotlib read), the Python, the venv, nclab and the ``expose`` folders, each
  bound where the grader has it; init ``pivot_root``s into it and detaches the old root, so the rest of the
  repository, /home, /srv, /opt, pip.conf and any folder a private one holds (/root, but for a pyenv Python
  in it) do not exist for the kernel, whatever their modes;
* every mount read-only, nosuid and nodev, recursively, but the tmpfs and the cache below;
* a fresh ``/dev`` (tmpfs, nodev, noexec) holding null, zero, full, random and urandom, bound from the host's
  (and the GPU's /dev/nvidia* where they exist): a device node found anywhere else does not open;
* an empty, mode-000 tmpfs over each ``hide`` folder inside those trees (submissions, results); /dev/null
  over files;
* fresh tmpfs (``Limits.disk_bytes`` each) on ``/tmp``, ``/dev/shm`` and the working copy ``workdir``, which
  belongs to the user (mode 0700; HOME and the caches point there) and vanishes with the namespace;
* the grader's ``cache`` (its checkpoints and data sets) as an overlay: readable, and what the kernel trains
  or overwrites lands in a tmpfs of its own, never in the grader's folder (no student poisons another's runs);
* a new ``/proc`` that shows only the sandbox's processes; loopback up, no other network.

Init forks the kernel, which drops to the user (``nclab-grader``, made with ``useradd --system`` when missing),
sets no_new_privs, a seccomp filter and the rlimits of :class:`Limits`, and execs ``python -m ipykernel_launcher``
with only the variables :data:`KERNEL_ENVIRONMENT` names of the grader's environment (PATH, the locale, NCLAB_*,
thread counts: no token or key), the home and caches in the working copy. The filter blocks user namespaces, in
which a student would be root with every capability (mounts, nf_tables): clone and unshare with CLONE_NEWUSER fail
with EPERM, clone3 with ENOSYS (the C library then uses clone); its numbers are x86_64's, and a system call of
another ABI fails or kills. The grader talks to it over ZMQ ``ipc`` sockets in a folder bound into the sandbox;
once the kernel has bound them, init makes that folder read-only (no student code can swap a socket for a symlink
that the root grader would follow), the launcher writes a ``ready`` file, and only then does ``start_kernel``
return. Init then drops to the user too and reaps orphans. When the kernel exits, or the launcher dies (init's
parent-death signal), or the grader dies (the launcher polls for it), init exits and Linux kills every process of
the PID namespace: ``start_new_session``, double forks and ``setsid`` do not escape. The kernel's raw stdout and
stderr reach the grader through the launcher, cut after ``Limits.output_bytes``. A kernel starts as fast as a
plain one.

Defended: writing to the package, the venv or anything but the working copy, /tmp and /dev/shm; reading anything
outside the allowed trees (the instructor's solutions, other students' working copies, world-readable files
anywhere), and the hidden folders within them; the grader's environment variables; device nodes but those of /dev;
user namespaces; seeing, ptracing or signalling the grader or the launcher (another PID namespace:
``os.getppid()`` is init, which ignores signals from inside); setuid programs; the network and abstract unix
sockets; SysV IPC; processes outliving the submission; one process taking all memory (RLIMIT_AS), process slots
(RLIMIT_NPROC), file descriptors or disk; a flood of raw output.

Bounded outside this module: the memory and processes of the whole submission together (the grader grades each
submission in a control group of its own, ``isolated`` and ``cgroup``, which the launcher's kernel leaf joins).
Not defended: CPU time (the grader's time limits end the namespace); the outputs sent over ZMQ (the grader must
cap what it keeps); what the allowed trees hold (all of /usr and the venv, and /proc's view of the machine);
kernel exploits. RLIMIT_AS breaks CUDA, which reserves huge address ranges: give ``Limits(memory_bytes=None)``
on a GPU. Needs root, Linux ≥ 5.12 and x86_64 (elsewhere :func:`unavailable_reason` says so). Without root
:func:`kernel_manager` refuses, unless ``unsafe=True``: then the kernel runs as the caller with the limits and
the allowed environment but no isolation, and the processes it leaves are found by a token in their environment
(one that clears it escapes).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import pwd
import resource
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path

__all__ = ["USER", "Limits", "SandboxUnavailable", "unavailable_reason", "check", "ensure_user", "kernel_manager"]
__all__ += ["processes", "kill_all", "KERNEL_ENVIRONMENT", "allowed_environment", "SYSTEM"]

USER = "nclab-grader"
RUN_TOKEN = "NCLAB_GRADE_RUN"  # set by the grader's grading process (``isolated``): the unsafe kernels' token
_PACKAGE = Path(__file__).resolve().parents[2]  # nclab/, which the kernel imports (read-only)
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
START_TIMEOUT = 60.0  # s: a kernel that has not bound its sockets by then is killed

# The grader's environment variables a kernel gets, by name or, ending in "*", by prefix; no other one reaches
# it (a token, a password or a cloud key of the grader's would). HOME, USER, TMPDIR and the caches' folders
# are not taken from the grader: the sandbox sets them to the working copy (:func:`_kernel_env`).
KERNEL_ENVIRONMENT = (
    "PATH",  # where programs are: subprocess, `!ls`
    "LANG",  # the locale: how text files and the terminal encode characters
    "LANGUAGE",
    "LC_*",
    "TZ",  # the time zone of timestamps
    "NCLAB_*",  # the course's settings: NCLAB_PROFILE, NCLAB_DEVICE, NCLAB_DATA, NCLAB_PROGRESS, …
    "OMP_NUM_THREADS",  # how many CPU threads torch and NumPy use
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",  # which GPUs the kernel may use
    "PYTHONHASHSEED",  # str hashes as reproducible as the grader's, when it fixes them
    "JPY_PARENT_PID",  # jupyter_client's own, by name (JupyterHub's JPY_API_TOKEN must never pass)
    "JPY_SESSION_NAME",
)

# What of the grader's file system the kernel's root holds besides the Python, the venv, nclab, the exposed
# folders and the cache, all read-only; nothing else exists there (no /home, /srv, /opt, /var, /run, /sys; a
# private folder such as /root holds only what is bound into it).
SYSTEM = (
    "/usr",  # programs, shared libraries, fonts, time zones
    "/bin",  # each of these a link into /usr on most systems, copied as such
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",  # of /etc, only what the C library, Python, torch and matplotlib read: not pip.conf,
    "/etc/ld.so.conf",  # ssh, environment, … (the dynamic linker finds /usr/lib/<arch> through these three)
    "/etc/ld.so.conf.d",
    "/etc/alternatives",  # Debian's links for programs and BLAS
    "/etc/passwd",  # user names: `~`, getpass, ls -l
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/localtime",  # the time zone
    "/etc/timezone",
    "/etc/hosts",  # `localhost`, and port and protocol names for the socket module
    "/etc/services",
    "/etc/protocols",
    "/etc/fonts",  # fontconfig: matplotlib runs fc-list when it first looks for fonts
    "/etc/mime.types",  # the mimetypes module
)  # no /sys: torch, NumPy and DataLoader workers run without it (CPU counts come from /proc and the scheduler)
DEVICES = ("null", "zero", "full", "random", "urandom")  # the kernel's /dev, bound from the host's; and the GPU's
GPU_DEVICES = "nvidia"  # /dev/nvidia*, the nodes CUDA opens, where they exist
NEW_ROOT = "/tmp"  # where init assembles the kernel's root before pivoting into it


@dataclass(frozen=True)
class Limits:
    """What one submission may use. A smoke-profile notebook (torch, a small CNN on the CPU) peaks at ~4.5 GiB
    of address space and a few dozen threads; the defaults leave room for that and stop a runaway loop."""

    memory_bytes: int | None = 8 * 2**30  # bytes of address space per process (RLIMIT_AS); None: no limit
    processes: int | None = 512  # processes and threads of the user (RLIMIT_NPROC); None: the cgroup's pids.max
    open_files: int = 1024  # file descriptors per process (RLIMIT_NOFILE)
    file_bytes: int = 256 * 2**20  # bytes: the largest file a process may write (RLIMIT_FSIZE)
    disk_bytes: int = 2**30  # bytes: size of each tmpfs (working copy, /tmp, /dev/shm)
    output_bytes: int = 2**20  # bytes of the kernel's raw stdout/stderr passed on to the grader's


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here (not root, no user, no namespaces): the message says why and what to do."""


# ----------------------------------------------------------------------------------------------------
# Linux calls that Python 3.11's os module lacks

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x8000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_PRIVATE = 1, 2, 4, 8, 4096, 1 << 18
MS_REC, MNT_DETACH, SYS_PIVOT_ROOT = 16384, 2, 155  # pivot_root's number is x86_64's (glibc has no wrapper)
ATTR_RDONLY, ATTR_NOSUID, ATTR_NODEV, AT_RECURSIVE, SYS_MOUNT_SETATTR = 1, 2, 4, 0x8000, 442
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 38
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    args = (source.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode())
    _check(_libc.mount(*args), f"mount {fstype or 'bind'} on {target}")


def _set_attr(path: str, set_: int = 0, clear: int = 0, propagation: int = 0, recursive: bool = False) -> None:
    attr = (ctypes.c_uint64 * 4)(set_, clear, propagation, 0)  # struct mount_attr
    flags = AT_RECURSIVE if recursive else 0
    _check(_libc.syscall(SYS_MOUNT_SETATTR, -100, path.encode(), flags, attr, 32), f"mount_setattr {path}")


def _bind(source_fd: int, target: str) -> None:
    """Bind the folder or file open as ``source_fd`` (opened before the mounts that hid it) onto ``target``,
    with the mounts below it."""
    if os.path.isdir(f"/proc/self/fd/{source_fd}"):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    _mount(f"/proc/self/fd/{source_fd}", target, None, MS_BIND | MS_REC)
    os.close(source_fd)


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl {option}")


def _loopback_up() -> None:
    import fcntl
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack("16sH", fcntl.ioctl(sock, 0x8913, struct.pack("16sH14x", b"lo", 0))[:18])[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP


def _seal_basics() -> None:
    """In fresh mount, network and IPC namespaces: nothing propagates out, everything read-only and nosuid."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
    _set_attr("/", set_=ATTR_RDONLY | ATTR_NOSUID, propagation=MS_PRIVATE, recursive=True)


def _pivot(new_root: str) -> None:
    """Make the mount ``new_root`` this namespace's root and detach the old one: nothing of it stays reachable."""
    os.chdir(new_root)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")  # the old root now lies over the new one
    _check(_libc.umount2(b".", MNT_DETACH), "unmount the old root")
    os.chdir("/")


def _build_root(args, limits: Limits, uid: int, gid: int) -> None:
    """Build the kernel's file system from an allow-list in a tmpfs and pivot into it: :data:`SYSTEM`, the
    ``expose`` folders (the Python, the venv, nclab and the cache among them) and the sockets' folder bound in
    where the grader has them; a /dev of :data:`DEVICES`; tmpfs on /tmp, /dev/shm and the working copy; a new
    /proc; the cache copy-on-write. Every mount then read-only, nosuid and nodev but the tmpfs, the cache and
    the devices; ``hide`` covered last. Each source is opened before the new root covers the host's /tmp."""
    plan = {}  # path in the new root: ("bind", fd), ("link", target), ("tmpfs", flags, options) or ("proc",)
    for path in SYSTEM:
        if os.path.islink(path):
            plan[path] = ("link", os.readlink(path))
        elif os.path.exists(path):
            plan[path] = ("bind", os.open(path, os.O_PATH))
    devices = [f"/dev/{name}" for name in DEVICES] + _gpu_devices()
    for path in [*args.expose, args.sockets, *devices]:
        if path not in plan:
            plan[path] = ("bind", os.open(path, os.O_PATH))
    plan["/dev/fd"] = ("link", "/proc/self/fd")
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        plan[f"/dev/{name}"] = ("link", f"/proc/self/fd/{fd}")
    scratch = f"size={limits.disk_bytes},nr_inodes=100000"
    plan["/dev"] = ("tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=755")
    plan["/tmp"] = plan["/dev/shm"] = ("tmpfs", MS_NOSUID | MS_NODEV, f"{scratch},mode=1777")
    plan[args.workdir] = ("tmpfs", MS_NOSUID | MS_NODEV, f"{scratch},mode=700,uid={uid},gid={gid}")
    plan["/proc"] = ("proc",)  # shows only the sandbox's processes
    _mount("nclab-root", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path in sorted(plan, key=lambda path: Path(path).parts):  # a folder before what it holds
        (kind, *how), target = plan[path], NEW_ROOT + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if kind == "bind":
            _bind(how[0], target)
        elif kind == "link":
            os.symlink(how[0], target)
        elif kind == "proc":
            os.mkdir(target)
            _mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        else:
            os.makedirs(target, exist_ok=True)
            _mount("nclab-tmp", target, "tmpfs", *how)
    if args.cache:
        _overlay_cache(NEW_ROOT + args.cache, uid, gid, scratch)
    _pivot(NEW_ROOT)
    _set_attr("/", set_=ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, recursive=True)
    for path in ["/tmp", "/dev/shm", args.workdir, *([args.cache] if args.cache else [])]:
        _set_attr(path, clear=ATTR_RDONLY)
    for path in devices:
        _set_attr(path, clear=ATTR_NODEV)  # the only device nodes that open
    for path in args.hide:  # inside the trees bound in: an empty folder nobody can open, a file /dev/null
        if os.path.isdir(path):
            _mount("nclab-hidden", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=000")
        elif os.path.exists(path):
            _mount("/dev/null", path, None, MS_BIND)


def _gpu_devices() -> list[str]:
    """The GPU's device nodes (/dev/nvidia0, /dev/nvidiactl, …) of this machine; none without one."""
    names = [name for name in os.listdir("/dev") if name.startswith(GPU_DEVICES)]
    return [f"/dev/{name}" for name in sorted(names) if stat.S_ISCHR(os.stat(f"/dev/{name}").st_mode)]


def _overlay_cache(cache: str, uid: int, gid: int, scratch: str) -> None:
    """Cover the grader's cache, bound at ``cache``, with an overlay: the kernel reads the grader's runs, and
    what it trains or overwrites lands in a tmpfs of its own, unmounted from the tree once the overlay holds it."""
    layers = NEW_ROOT + "/.layers"
    os.mkdir(layers)
    _mount("nclab-cache", layers, "tmpfs", MS_NOSUID | MS_NODEV, f"{scratch},mode=700")
    for folder, _, _ in os.walk(cache):  # every folder the user's, so it can add runs anywhere
        mirror = os.path.join(layers, "upper", os.path.relpath(folder, cache))
        os.makedirs(mirror, mode=0o755)
        os.chown(mirror, uid, gid)
    os.mkdir(f"{layers}/work")
    options = f"lowerdir={cache},upperdir={layers}/upper,workdir={layers}/work"
    _mount("nclab-cache", cache, "overlay", MS_NOSUID | MS_NODEV, options)
    _check(_libc.umount2(layers.encode(), MNT_DETACH), f"unmount {layers}")
    os.rmdir(layers)


def _block_user_namespaces() -> None:
    """Install a seccomp filter (x86_64's numbers) on this process and its children: clone and unshare with
    CLONE_NEWUSER fail with EPERM, clone3 (whose flags lie in memory a filter cannot read) with ENOSYS, on which
    the C library falls back to clone; a call of the x32 ABI fails with EPERM, one of another architecture
    (i386's int 0x80) kills the process. In a user namespace of their own, students would be root, with every
    capability there: mounts, nf_tables, a large part of the Linux kernel to attack."""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    allow, fail = 0x7FFF0000, 0x50000  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO (| the errno)
    program = [  # (code, true: skip that many, false: skip that many, k)
        (ld, 0, 0, 4),  # 0: seccomp_data.arch
        (jeq, 1, 0, 0xC000003E),  # 1: AUDIT_ARCH_X86_64: to 3
        (ret, 0, 0, 0x80000000),  # 2: SECCOMP_RET_KILL_PROCESS
        (ld, 0, 0, 0),  # 3: seccomp_data.nr
        (jge, 7, 0, 0x40000000),  # 4: __X32_SYSCALL_BIT: to 12
        (jeq, 7, 0, 435),  # 5: clone3: to 13
        (jeq, 2, 0, 272),  # 6: unshare: to 9
        (jeq, 1, 0, 56),  # 7: clone: to 9
        (ret, 0, 0, allow),  # 8
        (ld, 0, 0, 16),  # 9: seccomp_data.args[0], low half: the flags of unshare and clone
        (jset, 1, 0, 0x10000000),  # 10: CLONE_NEWUSER: to 12
        (ret, 0, 0, allow),  # 11
        (ret, 0, 0, fail | errno.EPERM),  # 12
        (ret, 0, 0, fail | errno.ENOSYS),  # 13
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *step) for step in program))
    header = ctypes.create_string_buffer(struct.pack("=H6xQ", len(program), ctypes.addressof(code)))  # sock_fprog
    _check(_libc.prctl(PR_SET_SECCOMP, 2, header, 0, 0), "seccomp")  # 2: SECCOMP_MODE_FILTER


# ----------------------------------------------------------------------------------------------------
# The launcher: `python -I -S sandbox.py launch CONFIG CONNECTION_FILE [kernel arguments]`, started as root


def _socket_paths(connection: dict) -> list[str]:
    return [f"{connection['ip']}-{connection[channel]}" for channel in CHANNELS]


def allowed_environment(environ) -> dict[str, str]:
    """The variables of ``environ`` (a mapping) that :data:`KERNEL_ENVIRONMENT` lets through to a kernel."""
    names = {name for name in KERNEL_ENVIRONMENT if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in KERNEL_ENVIRONMENT if name.endswith("*"))
    return {name: value for name, value in environ.items() if name in names or name.startswith(prefixes)}


def _kernel_env(workdir: str, user: str, cache: str | None) -> dict[str, str]:
    """The grader's environment as :func:`allowed_environment` filters it, with the home and every cache in
    the working copy; NCLAB_CACHE too, unless the grader shares its ``cache``."""
    home = {"HOME": workdir, "USER": user, "LOGNAME": user, "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
    caches = ("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"), ("IPYTHONDIR", ".ipython")
    caches += ("MPLCONFIGDIR", ".config/matplotlib"), ("NCLAB_CACHE", ".cache/nclab"), ("TORCH_HOME", ".cache/torch")
    env = {**allowed_environment(os.environ), **home, **{name: f"{workdir}/{folder}" for name, folder in caches}}
    return {**env, "NCLAB_CACHE": cache} if cache else env


def _set_limits(limits: Limits, processes: bool = True) -> None:
    values = {
        resource.RLIMIT_AS: limits.memory_bytes,
        resource.RLIMIT_NPROC: limits.processes if processes else None,
        resource.RLIMIT_NOFILE: limits.open_files,
        resource.RLIMIT_FSIZE: limits.file_bytes,
        resource.RLIMIT_CORE: 0,
    }
    for which, value in values.items():
        if value is not None:  # never above a lower limit already set (the grader's own bound, inherited)
            hard = resource.getrlimit(which)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))


def _drop_to(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def _exec_kernel(connection_file: str, extra: list[str], env: dict[str, str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the grader interrupts through the process group
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execve(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", connection_file, *extra], env)


def _wait_for_sockets(connection: dict, kernel: int) -> bool:
    """True once the kernel has bound all its sockets; False if it exited or did not within START_TIMEOUT."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if all(map(os.path.exists, _socket_paths(connection))):
            return True
        if os.waitpid(kernel, os.WNOHANG)[0]:
            return False
        time.sleep(0.002)
    os.kill(kernel, signal.SIGKILL)
    return False


def _init(args, connection: dict, extra: list[str], alive: int, ready: int) -> None:
    """PID 1 of the sandbox: seal the namespaces, start the kernel, report it ready, reap until it exits."""
    limits, uid, gid = Limits(**args.limits), args.uid, args.gid
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([alive], [], [], 0)[0]:  # EOF: the launcher died before the line above
        os._exit(72)
    os.umask(0o022)  # the folders init makes in the new root: the user must cross them
    _seal_basics()
    _build_root(args, limits, uid, gid)
    _set_attr(args.sockets, clear=ATTR_RDONLY)  # until the kernel has bound its sockets
    _loopback_up()
    copy = os.path.join(args.sockets, "connection.json")
    with open(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        json.dump(connection, file)
    os.chown(copy, uid, gid)
    os.chdir(args.workdir)
    # the kernel's parent is init, PID 1: ipykernel would take a parent it cannot see for a dead one
    env = {**_kernel_env(args.workdir, args.user, args.cache), "JPY_PARENT_PID": "1"}
    kernel = os.fork()
    if kernel == 0:
        _drop_to(uid, gid)
        _block_user_namespaces()
        _set_limits(limits)
        _exec_kernel(copy, extra, env)
    if not _wait_for_sockets(connection, kernel):
        os._exit(71)
    _set_attr(args.sockets, set_=ATTR_RDONLY)  # the kernel's sockets can no longer be replaced
    os.write(ready, b"1")
    _drop_to(uid, gid)
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # again: changing the user reset it
    if select.select([alive], [], [], 0)[0]:  # EOF: the launcher died meanwhile
        os._exit(72)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == kernel:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _launch(config: str, connection_file: str, extra: list[str]) -> None:
    """The kernel process jupyter_client sees: forks init in a new PID namespace, writes ``ready`` when init
    says so, passes on at most ``output_bytes`` of the sandbox's output, and exits when the namespace is gone."""
    with open(config) as file:  # written by the grader, root-only: no path shows in the processes' cmdline
        args = types.SimpleNamespace(**json.load(file))
    with open(connection_file) as file:
        connection = json.load(file)
    limits = Limits(**args.limits)
    for procs in args.cgroup:  # the kernel's leaf of the submission's control group, before anything starts
        with open(procs, "w") as file:
            file.write(str(os.getpid()))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts are for the kernel, in the same process group
    if args.unsafe:
        _set_limits(limits, processes=False)  # RLIMIT_NPROC would count all the caller's processes
        user = pwd.getpwuid(os.getuid()).pw_name
        env = {**_kernel_env(args.workdir, user, args.cache), "NCLAB_SANDBOX_RUN": args.run}
        _exec_kernel(connection_file, extra, env)
    # The grader's PID from the config, not os.getppid(): a grader killed while this process starts has
    # already left it to init, and the sandbox must not outlive it.
    grader, (alive_r, alive_w), (ready_r, ready_w), (output_r, output_w) = args.grader, os.pipe(), os.pipe(), os.pipe()
    _check(_libc.unshare(CLONE_NEWPID), "unshare PID namespace")
    init = os.fork()
    if init == 0:
        try:
            for fd in (alive_w, ready_r, output_r):
                os.close(fd)
            os.dup2(output_w, 1)
            os.dup2(output_w, 2)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            _init(args, connection, extra, alive_r, ready_w)
        except BaseException as error:
            print(f"nclab sandbox: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        os._exit(70)
    for fd in (alive_r, ready_w, output_w):
        os.close(fd)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(init, signal.SIGKILL))
    passed, streams = 0, [ready_r, output_r]
    while streams:
        if os.getppid() != grader:  # the grader died: so does the sandbox
            os.kill(init, signal.SIGKILL)
        for fd in select.select(streams, [], [], 1.0)[0]:
            data = os.read(fd, 65536)
            if not data:
                streams.remove(fd)
            elif fd == ready_r:
                os.close(os.open(args.ready, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            elif passed < limits.output_bytes:
                data = data[: limits.output_bytes - passed]
                passed += len(data)
                if passed == limits.output_bytes:
                    data += f"\n[nclab sandbox: output cut after {passed:,} bytes]\n".encode()
                with contextlib.suppress(OSError):  # the grader's stdout is closed: drop the output
                    os.write(1, data)
    os._exit(os.waitstatus_to_exitcode(os.waitpid(init, 0)[1]) & 0xFF)


def _probe() -> None:
    """Exit 0 if this machine lets the launcher build its namespaces, else print why and exit 1."""
    _check(_libc.unshare(CLONE_NEWPID), "unshare PID namespace")
    if (child := os.fork()) == 0:
        try:
            _seal_basics()
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            _loopback_up()
            _mount("nclab-root", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k")
            _pivot(NEW_ROOT)
            _block_user_namespaces()
        except OSError as error:
            print(error, file=sys.stderr)
            os._exit(1)
        os._exit(0)
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))


# ----------------------------------------------------------------------------------------------------
# In the grader


def unavailable_reason() -> str | None:
    """Why the sandbox cannot run here, or None if it can."""
    if sys.platform != "linux":
        return f"the sandbox needs Linux, this is {sys.platform}"
    if os.uname().machine != "x86_64":  # the seccomp filter's system call numbers are x86_64's
        return f"the sandbox's seccomp filter knows x86_64 only, this is {os.uname().machine}"
    if os.geteuid() != 0:
        return (
            f"the sandbox needs root (this process is uid {os.geteuid()}): it runs each kernel as the "
            f"unprivileged user {USER}, which it creates, in namespaces only root can make"
        )
    return _probe_once()


def check(unsafe: bool = False) -> str | None:
    """None if the sandbox can run here; else, with ``unsafe``, why it cannot (the kernel will run as the caller,
    unisolated); without, :class:`SandboxUnavailable` saying why and what to do. The grader calls it first."""
    reason = unavailable_reason()
    if reason and not unsafe:
        raise SandboxUnavailable(
            f"Refusing to run students' code: {reason}. Run the grader as root (sudo), or pass unsafe=True "
            "(nclab grade --unsafe) to run it as yourself without a sandbox, only for code you trust."
        )
    return reason


@functools.cache
def _probe_once() -> str | None:
    probe = subprocess.run([sys.executable, "-I", "-S", __file__, "probe"], capture_output=True, text=True)
    if probe.returncode:
        return f"this machine refuses the sandbox's namespaces ({probe.stderr.strip() or probe.returncode})"
    return None


def ensure_user(name: str = USER) -> tuple[int, int]:
    """(uid, gid) of the system user ``name``, created (no home, no login shell) when missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if shutil.which("useradd") is None:
            raise SandboxUnavailable(f"no user {name} and no useradd to create it: create it by hand") from None
        command = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        subprocess.run([*command, "--shell", "/usr/sbin/nologin", name], capture_output=True)
        entry = pwd.getpwnam(name)  # KeyError if useradd failed (and no other grader made it meanwhile)
    return entry.pw_uid, entry.pw_gid


@functools.cache
def _manager_class():
    import asyncio

    from jupyter_client import AsyncKernelManager

    class SandboxedKernelManager(AsyncKernelManager):
        """An AsyncKernelManager whose kernel starts through the sandbox launcher: ``start_kernel`` returns once
        the sandbox is sealed (its ``ready`` file exists), or raises if the launcher exited first."""

        spec, ready, unsafe, namespace = None, "", False, None

        @property
        def kernel_spec(self):
            return self.spec

        def _started(self) -> bool:
            if self.unsafe:  # no init to seal anything: ready once the kernel listens
                return all(map(os.path.exists, _socket_paths(self.get_connection_info())))
            return os.path.exists(self.ready)

        async def _async_post_start_kernel(self, **kw) -> None:
            deadline = time.monotonic() + START_TIMEOUT + 5
            while not self._started():
                if not await self.is_alive() or time.monotonic() > deadline:
                    status = self.provisioner.process.poll() if self.provisioner else None
                    raise RuntimeError(f"the sandboxed kernel did not start (launcher exit status {status})")
                await asyncio.sleep(0.005)
            if not self.unsafe:  # the launcher's children live in the sandbox's PID namespace
                self.namespace = os.readlink(f"/proc/{self.provisioner.pid}/ns/pid_for_children")
            await super()._async_post_start_kernel(**kw)

    return SandboxedKernelManager


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@contextlib.contextmanager
def kernel_manager(
    workdir, *, hide=(), expose=(), cache=None, limits: Limits = Limits(), user: str = USER, unsafe: bool = False
):
    """Yield an ``AsyncKernelManager`` whose kernel runs in the sandbox, with ``workdir`` as its (private,
    empty) working copy, the folders and files ``hide`` invisible, and the folders ``expose`` readable besides
    the Python, the venv, nclab and :data:`SYSTEM` (read-only, even below a private folder; each must be
    world-readable itself): nothing else of the file system exists for the kernel. ``cache`` (the grader's
    NCLAB_CACHE) becomes the kernel's NCLAB_CACHE, copy-on-write: its runs load, and what the kernel trains or
    changes stays in the sandbox (without it, NCLAB_CACHE is empty, in the working copy). Give it to
    ``NotebookClient(km=...)`` with ``resources={"metadata": {"path": workdir}}``. On leaving, every process
    of the submission is killed. Raises :class:`SandboxUnavailable` where the sandbox cannot run (not root),
    unless ``unsafe``: then the kernel runs as the caller, without isolation."""
    from jupyter_client.kernelspec import KernelSpec

    from .cgroup import KERNEL, in_submission_group, leaf_procs_files  # here: this file also runs as a script

    reason = check(unsafe)
    if in_submission_group():  # the group's pids.max bounds the submission: no per-user count shared with others
        limits = replace(limits, processes=None)
    workdir, hidden = Path(workdir).resolve(), [Path(folder).resolve() for folder in hide]
    python = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), _PACKAGE}
    cache = Path(cache).resolve() if cache is not None else None
    if cache is not None and (not cache.is_dir() or set(str(cache)) & set(",:\\")):
        raise ValueError(f"cache {cache}: not a folder, or a name with , : or \\ (overlayfs cannot stack it)")
    exposed = sorted(python | {Path(folder).resolve() for folder in expose} | ({cache} if cache else set()))
    needed = {"working copy": workdir, "temporary folder": Path(tempfile.gettempdir()).resolve()}
    needed |= {f"readable folder {path}": path for path in exposed}
    for folder in hidden:
        for what, path in needed.items():
            if _inside(path, folder):
                raise ValueError(f"cannot hide {folder}: it holds the sandbox's {what}")
    if Path("/") in exposed:
        raise ValueError("cannot expose /: the kernel's root is built from what it needs; expose the folders it reads")
    uid, gid = (os.getuid(), os.getgid()) if reason else ensure_user(user)
    base = Path(tempfile.mkdtemp(prefix="nclab-sandbox-"))
    # the token that finds an unsafe kernel's processes: the grader's (RUN_TOKEN, so that it can kill them when it
    # kills the grading process itself), else a fresh one
    sockets, run = base / "sockets", os.environ.get(RUN_TOKEN) or os.urandom(8).hex()
    if len(f"{sockets}/k-99999") >= 108:
        shutil.rmtree(base)
        raise ValueError(f"temporary folder too deep for a unix socket path: {base} (set TMPDIR shorter)")
    sockets.mkdir(mode=0o700)
    os.chown(sockets, uid, gid)
    config = dict(workdir=str(workdir), sockets=str(sockets), ready=str(base / "ready"), user=user, uid=uid, gid=gid)
    config |= dict(run=run, limits=asdict(limits), hide=list(map(str, hidden)), expose=list(map(str, exposed)))
    config |= dict(cache=str(cache) if cache else None, grader=os.getpid(), cgroup=leaf_procs_files(KERNEL))
    with open(os.open(base / "launch.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        json.dump({**config, "unsafe": bool(reason)}, file)
    argv = [sys.executable, "-I", "-S", __file__, "launch", str(base / "launch.json"), "{connection_file}"]
    km = _manager_class()(
        transport="ipc", ip=str(sockets / "k"), connection_file=str(base / "connection.json"), kernel_name="python3"
    )
    km.spec = KernelSpec(argv=argv, display_name="Python 3 (nclab sandbox)", language="python")
    km.ready, km.unsafe = str(base / "ready"), bool(reason)
    try:
        yield km
    finally:
        process = km.provisioner.process if km.provisioner is not None else None
        if process is not None and process.poll() is None:
            process.terminate()  # the launcher kills init, so the namespace dies, and exits
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()  # init's parent-death signal does the same
                process.wait()
        try:  # a fork bomb takes time to kill: a long deadline, and the sandbox's folder removed whatever happens
            kill_all(namespace=km.namespace, run=run if km.unsafe else None, timeout=60.0)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def processes(*, namespace: str | None = None, uid: int | None = None, run: str | None = None) -> list[int]:
    """The live processes (PIDs as seen here; zombies have exited and do not count) in the PID namespace
    ``namespace`` ("pid:[…]"), of real user ``uid``, or with ``NCLAB_SANDBOX_RUN=run`` in their environment."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        proc = Path("/proc", entry)
        try:
            if int(entry) == os.getpid() or (proc / "stat").read_text().rsplit(")", 1)[1][1] in "ZX":
                continue
            if (
                (namespace is not None and os.readlink(proc / "ns" / "pid") == namespace)
                or (uid is not None and f"\nUid:\t{uid}\t" in (proc / "status").read_text())
                or (run is not None and f"NCLAB_SANDBOX_RUN={run}\0".encode() in (proc / "environ").read_bytes())
            ):
                found.append(int(entry))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def kill_all(
    *, namespace: str | None = None, uid: int | None = None, run: str | None = None, timeout: float = 5.0
) -> int:
    """SIGKILL the :func:`processes` of ``namespace``, ``uid`` (e.g. of ``USER``, when no other grader runs)
    or ``run`` until none is left; return how many were killed. RuntimeError if some outlive ``timeout`` s."""
    killed, deadline = set(), time.monotonic() + timeout
    while pids := processes(namespace=namespace, uid=uid, run=run):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of the submission survived SIGKILL for {timeout:g} s")
        time.sleep(0.01)
    return len(killed)


if __name__ == "__main__":  # the launcher: `sandbox.py probe` or `sandbox.py launch CONFIG CONNECTION_FILE ...`
    command, *rest = sys.argv[1:]
    _probe() if command == "probe" else _launch(rest[0], rest[1], rest[2:])
