"""The grader's sandbox: one submission's kernel as an unprivileged user, in namespaces that die with it.

``kernel_manager(workdir, hide=[submissions, out])`` yields a ``jupyter_client.AsyncKernelManager`` for
``NotebookClient(km=...)``. Its kernelspec starts this file as a launcher (as root, ``python -I -S``: the
standard library only, ~20 ms), which unshares a PID namespace and forks the namespace's first process, init.
Init, still root, enters new mount, network and IPC namespaces and seals them (no bubblewrap needed: Python
and the kernel's own calls, ``unshare``, ``mount`` and ``mount_setattr``, do it in a few milliseconds):

* every mount read-only and nosuid, recursively: the package, the venv, the whole system;
* an empty, mode-000 tmpfs over each ``hide`` folder (submissions, results) and ``/run``; /dev/null over files;
* fresh tmpfs (``Limits.disk_bytes`` each) on ``/tmp``, ``/dev/shm`` and the working copy ``workdir``, which
  belongs to the user (mode 0700; HOME and the caches point there) and vanishes with the namespace;
* the Python, the venv, nclab and the ``expose`` folders bound in where the grader has them, even below a
  private folder (a pyenv Python under /root: a tmpfs replaces /root, with only them in it);
* the grader's ``cache`` (its checkpoints and data sets) as an overlay: readable, and what the kernel trains
  or overwrites lands in a tmpfs of its own, never in the grader's folder (no student poisons another's runs);
* a new ``/proc`` that shows only the sandbox's processes; loopback up, no other network.

Init forks the kernel, which drops to the user (``nclab-grader``, made with ``useradd --system`` when missing),
sets no_new_privs and the rlimits of :class:`Limits` and execs ``python -m ipykernel_launcher``. The grader
talks to it over ZMQ ``ipc`` sockets in a folder bound into the sandbox; once the kernel has bound them, init
makes that folder read-only (no student code can swap a socket for a symlink that the root grader would
follow), the launcher writes a ``ready`` file, and only then does ``start_kernel`` return. Init then drops to
the user too and reaps orphans. When the kernel exits, or the launcher dies (init's parent-death signal), or
the grader dies (the launcher polls for it), init exits and Linux kills every process of the PID namespace:
``start_new_session``, double forks and ``setsid`` do not escape. The kernel's raw stdout and stderr reach
the grader through the launcher, cut after ``Limits.output_bytes``. A kernel starts as fast as a plain one.

Defended: writing to the package, the venv or anything but the working copy, /tmp and /dev/shm; reading the
hidden folders, other students' working copies and root's files; seeing, ptracing or signalling the grader
or the launcher (another PID namespace: ``os.getppid()`` is init, which ignores signals from inside); setuid
programs; the network and abstract unix sockets; SysV IPC; processes outliving the submission; one process
taking all memory (RLIMIT_AS), process slots (RLIMIT_NPROC), file descriptors or disk; a flood of raw output.

Not defended: the memory of many processes together (processes × RLIMIT_AS; a cgroup would bound it, not
used); CPU time (the grader's time limits end the namespace); the outputs sent over ZMQ (the grader must cap
what it keeps); world-readable files outside the hidden folders (/etc, /sys, /home/* if its modes allow);
the grader's environment variables (the kernel gets them); kernel exploits. RLIMIT_AS breaks CUDA, which
reserves huge address ranges: give ``Limits(memory_bytes=None)`` on a GPU. Needs root and Linux ≥ 5.12.
Without root :func:`kernel_manager` refuses, unless ``unsafe=True``: then the kernel runs as the caller with
the limits but no isolation, and the processes it leaves are found by a token in their environment (one that
clears it escapes).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import pwd
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["USER", "Limits", "SandboxUnavailable", "unavailable_reason", "check", "ensure_user", "kernel_manager"]
__all__ += ["processes", "kill_all"]

USER = "nclab-grader"
_PACKAGE = Path(__file__).resolve().parents[2]  # nclab/, which the kernel imports (read-only)
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
START_TIMEOUT = 60.0  # s: a kernel that has not bound its sockets by then is killed


@dataclass(frozen=True)
class Limits:
    """What one submission may use. A smoke-profile notebook (torch, a small CNN on the CPU) peaks at ~4.5 GiB
    of address space and a few dozen threads; the defaults leave room for that and stop a runaway loop."""

    memory_bytes: int | None = 8 * 2**30  # bytes of address space per process (RLIMIT_AS); None: no limit
    processes: int = 512  # processes and threads of the user (RLIMIT_NPROC)
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
ATTR_RDONLY, ATTR_NOSUID, AT_RECURSIVE, SYS_MOUNT_SETATTR = 1, 2, 0x8000, 442
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
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
    """Bind the folder open as ``source_fd`` (opened before the mounts that hid it) onto ``target``."""
    os.makedirs(target, exist_ok=True)
    _mount(f"/proc/self/fd/{source_fd}", target, None, MS_BIND)
    os.close(source_fd)


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl {option}")


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack("16sH", fcntl.ioctl(sock, 0x8913, struct.pack("16sH14x", b"lo", 0))[:18])[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP


def _seal_basics() -> None:
    """In fresh mount, network and IPC namespaces: nothing propagates out, everything read-only and nosuid."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
    _set_attr("/", set_=ATTR_RDONLY | ATTR_NOSUID, propagation=MS_PRIVATE, recursive=True)


# ----------------------------------------------------------------------------------------------------
# The launcher: `python -I -S sandbox.py launch CONFIG CONNECTION_FILE [kernel arguments]`, started as root


def _socket_paths(connection: dict) -> list[str]:
    return [f"{connection['ip']}-{connection[channel]}" for channel in CHANNELS]


def _kernel_env(workdir: str, user: str, cache: str | None) -> dict[str, str]:
    """The grader's environment, with the home and every cache in the working copy; NCLAB_CACHE too, unless
    the grader shares its ``cache``."""
    home = {"HOME": workdir, "USER": user, "LOGNAME": user, "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
    caches = ("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"), ("IPYTHONDIR", ".ipython")
    caches += ("MPLCONFIGDIR", ".config/matplotlib"), ("NCLAB_CACHE", ".cache/nclab"), ("TORCH_HOME", ".cache/torch")
    env = {**os.environ, **home, **{name: f"{workdir}/{folder}" for name, folder in caches}}
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
        if value is not None:
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
    _seal_basics()
    sources = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in [*args.expose, args.sockets]}
    scratch = f"size={limits.disk_bytes},nr_inodes=100000"
    if args.cache:  # copy-on-write: the kernel reads the grader's runs and writes into a tmpfs covered below
        _mount("nclab-cache", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"{scratch},mode=700")
        for folder, _, _ in os.walk(args.cache):  # every folder the user's, so it can add runs anywhere
            mirror = os.path.join("/dev/shm/upper", os.path.relpath(folder, args.cache))
            os.makedirs(mirror, mode=0o755)
            os.chown(mirror, uid, gid)
        os.mkdir("/dev/shm/work")
        layers = f"lowerdir={args.cache},upperdir=/dev/shm/upper,workdir=/dev/shm/work"
        _mount("nclab-cache", args.cache, "overlay", MS_NOSUID | MS_NODEV, layers)
        os.close(sources[args.cache])
        sources[args.cache] = os.open(args.cache, os.O_PATH | os.O_DIRECTORY)
    for path in [*args.hide, "/run"]:  # a folder becomes an empty one nobody can open, a file /dev/null
        if os.path.isdir(path):
            _mount("nclab-hidden", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=000")
        elif os.path.exists(path):
            _mount("/dev/null", path, None, MS_BIND)
    for folder in ("/tmp", "/dev/shm"):
        _mount("nclab-tmp", folder, "tmpfs", MS_NOSUID | MS_NODEV, f"{scratch},mode=1777")
    for path in args.expose:
        above = [str(parent) for parent in reversed(Path(path).parents) if str(parent) != "/"]
        private = next((folder for folder in above if os.path.isdir(folder) and not os.stat(folder).st_mode & 1), None)
        if private is not None:  # a folder the user cannot cross: a tmpfs in its place, holding only `path`
            _mount("nclab-exposed", private, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
        if private is not None or not os.path.isdir(path):
            _bind(sources[path], path)
        else:
            os.close(sources[path])
    os.makedirs(args.workdir, exist_ok=True)
    _mount("nclab-work", args.workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"{scratch},mode=700,uid={uid},gid={gid}")
    _bind(sources[args.sockets], args.sockets)
    _set_attr(args.sockets, clear=ATTR_RDONLY)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
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
    the Python, the venv and nclab (read-only, even below a private folder; each must be world-readable
    itself). ``cache`` (the grader's NCLAB_CACHE) becomes the kernel's NCLAB_CACHE, copy-on-write: its runs
    load, and what the kernel trains or changes stays in the sandbox (without it, NCLAB_CACHE is empty, in the
    working copy). Give it to ``NotebookClient(km=...)`` with ``resources={"metadata": {"path": workdir}}``. On
    leaving, every process of the submission is killed. Raises :class:`SandboxUnavailable` where the sandbox
    cannot run (not root), unless ``unsafe``: then the kernel runs as the caller, without isolation."""
    from jupyter_client.kernelspec import KernelSpec

    reason = check(unsafe)
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
    uid, gid = (os.getuid(), os.getgid()) if reason else ensure_user(user)
    base = Path(tempfile.mkdtemp(prefix="nclab-sandbox-"))
    sockets, run = base / "sockets", os.urandom(8).hex()
    if len(f"{sockets}/k-99999") >= 108:
        shutil.rmtree(base)
        raise ValueError(f"temporary folder too deep for a unix socket path: {base} (set TMPDIR shorter)")
    sockets.mkdir(mode=0o700)
    os.chown(sockets, uid, gid)
    config = dict(workdir=str(workdir), sockets=str(sockets), ready=str(base / "ready"), user=user, uid=uid, gid=gid)
    config |= dict(run=run, limits=asdict(limits), hide=list(map(str, hidden)), expose=list(map(str, exposed)))
    config |= dict(cache=str(cache) if cache else None, grader=os.getpid())
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
        kill_all(namespace=km.namespace, run=run if km.unsafe else None)
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
