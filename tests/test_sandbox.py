"""The grader's sandbox with real kernels, started as the grader starts them (``NotebookClient(km=...)``).

Each test runs a few cells of "student" code in one sandboxed kernel (about half a second) and checks what the
code could do: who it runs as, what it can write, read, see and kill, and that nothing it started survives.
They need root (the sandbox switches to the user ``nclab-grader`` and builds namespaces) and are skipped
without it; the refusal without root is tested everywhere.
"""

import asyncio
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

import nclab
from nclab.course.grading import kernel, sandbox

_PACKAGE = Path(nclab.__file__).resolve().parent

REASON = sandbox.unavailable_reason()
needs_sandbox = pytest.mark.skipif(REASON is not None, reason=f"sandbox unavailable here: {REASON}")


def _text(output) -> str:
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return f"{output.ename}: {output.evalue}\n"
    return output.get("data", {}).get("text/plain", "") + "\n"


def run_cells(cells, workdir, on_cell_executed=None, timeout=30, **options) -> list[str]:
    """The output (text, or "Error: message") of each cell of ``cells``, run in one sandboxed kernel."""
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    with sandbox.kernel_manager(workdir, **options) as km:
        client = NotebookClient(
            notebook,
            km=km,
            allow_errors=True,
            timeout=timeout,
            interrupt_on_timeout=True,
            shutdown_kernel="immediate",  # as the grader does: SIGKILL to the launcher's process group
            resources={"metadata": {"path": str(workdir)}},
            on_cell_executed=on_cell_executed,
        )
        client.execute(cleanup_kc=True)  # with a km of ours, nbclient only stops its channels when told
    return ["".join(map(_text, cell.outputs)).strip() for cell in notebook.cells]


@pytest.fixture
def workdir(tmp_path):
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def grader_uid():
    sandbox.ensure_user()
    return pwd.getpwnam(sandbox.USER).pw_uid


@needs_sandbox
def test_code_runs_as_the_unprivileged_user_in_an_empty_private_working_copy(workdir, grader_uid):
    outputs = run_cells(
        [
            "import os; print(os.getuid(), os.geteuid(), os.getgroups())",
            "print(os.getcwd() == os.environ['HOME'] == os.environ['MPLCONFIGDIR'].split('/.config')[0], os.listdir())",
            "status = open('/proc/self/status').read().splitlines()\n"
            "print([line.split()[1] for line in status if line.startswith(('CapEff', 'NoNewPrivs'))])",
            "open('notes.txt', 'w').write('x' * 10); print(sorted(os.listdir()))",
        ],
        workdir,
    )
    assert outputs[0] == f"{grader_uid} {grader_uid} []"
    assert outputs[1] == "True ['.ipython']"  # the kernel's own IPython profile, nothing of the grader's
    assert outputs[2] == "['0000000000000000', '1']"  # no capabilities, no_new_privs
    assert outputs[3] == "['.ipython', 'notes.txt']"
    assert list(workdir.iterdir()) == []  # the working copy was a tmpfs: nothing reaches the grader's folder


@needs_sandbox
def test_package_venv_system_and_the_kernels_sockets_are_read_only(workdir):
    package, venv = Path(nclab.__file__).parent, Path(sys.prefix)
    targets = [package / "evil.py", venv / "evil.pth", Path("/usr/evil"), Path("/evil")]  # /: the sandbox's root
    outputs = run_cells(
        [
            "import errno, os, nclab, numpy; print(nclab.__file__)",
            *[
                f"try:\n    open({str(path)!r}, 'w')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])"
                for path in targets
            ],
            "from ipykernel import get_connection_file\nsocket = os.path.dirname(get_connection_file()) + '/k-1'\n"
            "try:\n    os.unlink(socket)\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
        ],
        workdir,
    )
    assert outputs[0] == nclab.__file__
    assert outputs[1:] == ["EROFS"] * 5  # read-only mounts, whatever the files' modes say; the sockets too
    assert not any(path.exists() for path in targets)


@needs_sandbox
def test_hidden_folders_and_files_cannot_be_listed_or_read(workdir, tmp_path):
    course = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nclab-test-course-"))  # exposed, outside /tmp
    submissions, visible, out = course / "submissions", course / "visible", tmp_path / "out"
    try:
        for folder in (course, submissions, visible, out):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o755)
        for folder in (submissions, visible, out):
            (folder / "bob.ipynb").write_text("bob's answers")
            (folder / "bob.ipynb").chmod(0o644)  # world-readable: only the sandbox keeps it from the kernel
        journal = visible / "scores.csv.partial"
        journal.write_text("bob: 7 points")
        journal.chmod(0o644)
        read = "try:\n    print(sorted(os.listdir({0!r})), open({0!r} + '/bob.ipynb').read())\n"
        read += "except OSError as e:\n    print(type(e).__name__)"
        outputs = run_cells(
            [
                "import os",
                *[read.format(str(folder)) for folder in (submissions, out, visible)],
                f"print(repr(open({str(journal)!r}).read()))",
            ],
            workdir,
            expose=[course],
            hide=[submissions, out, journal],
        )
    finally:
        shutil.rmtree(course)
    assert outputs[1:3] == ["PermissionError", "FileNotFoundError"]  # out is in no exposed folder: not even there
    assert outputs[3] == "['bob.ipynb', 'scores.csv.partial'] bob's answers"  # what the sandbox did not hide
    assert outputs[4] == "''"  # a hidden file reads as /dev/null


@needs_sandbox
def test_nothing_outside_the_allowed_trees_exists(workdir):
    planted = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nclab-test-planted-"))
    planted.chmod(0o755)
    (planted / "solution.py").write_text("answer = 42")
    (planted / "solution.py").chmod(0o644)  # world-readable, as a file copied by mistake would be
    repo = _PACKAGE.parent
    assert (repo / "notebooks").is_dir()  # the instructor's notebooks, beside nclab in the repository
    try:
        outputs = run_cells(
            [
                "import os",
                f"try:\n    print(open({str(planted / 'solution.py')!r}).read())\n"
                "except OSError as e:\n    print(type(e).__name__)",
                "print(sorted(os.listdir('/')))",
                f"print(sorted(os.listdir({str(repo)!r})))",
                "print(sorted(os.listdir('/etc')))",
            ],
            workdir,
        )
    finally:
        shutil.rmtree(planted)
    assert outputs[1] == "FileNotFoundError"
    python = [_PACKAGE, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
    kept = [Path(path) for path in (*sandbox.SYSTEM, "/dev", "/proc", "/tmp") if os.path.lexists(path)]
    assert outputs[2] == str(sorted({path.parts[1] for path in kept + python}))  # no /home, /srv, /opt, /var
    assert outputs[3] == str(sorted({path.relative_to(repo).parts[0] for path in python if repo in path.parents}))
    assert outputs[4] == str(sorted(path.name for path in kept if path.parent == Path("/etc")))  # no pip.conf


@needs_sandbox
def test_user_namespaces_are_blocked_and_only_five_devices_open_while_torch_trains(workdir):
    exposed = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nclab-test-devices-"))
    exposed.chmod(0o755)
    node = exposed / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the host's /dev/null, reached elsewhere
    libc = "import ctypes, errno, os, subprocess, threading\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    failed = "print(result, errno.errorcode[ctypes.get_errno()])"
    train = """
import torch
model, x, y = torch.nn.Linear(2, 1), torch.ones(4, 2), torch.ones(4, 1)
torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
before = torch.nn.functional.mse_loss(model(x), y)
before.backward()
optimizer.step()
after = torch.nn.functional.mse_loss(model(x), y)
print(before.item(), round(after.item(), 4), torch.ones(3).share_memory_().is_shared())
"""
    plot = "import matplotlib.pyplot as plt\nplt.plot([0, 1]); plt.title('ok'); plt.savefig('plot.png'); plt.close()\n"
    plot += "print(open('plot.png', 'rb').read(4))"
    try:
        outputs = run_cells(
            [
                f"{libc}if (child := os.fork()) == 0:  # single-threaded, as unshare needs\n"
                "    os._exit(libc.unshare(0x10000000) and ctypes.get_errno())  # CLONE_NEWUSER\n"
                "print(errno.errorcode.get(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), 'unshared'))",
                f"{libc}result = libc.syscall(435, None, 0)  # clone3\n{failed}",
                f"{libc}result = libc.syscall(0x40000000 | 272, 0x10000000)  # unshare through the x32 ABI\n{failed}",
                "run = subprocess.run(['unshare', '--user', 'id'], capture_output=True, text=True)\n"
                "print(run.returncode, run.stderr.strip())",
                "done = []\nthread = threading.Thread(target=done.append, args=['thread'])\n"
                "thread.start(); thread.join()\n"
                "print(done, subprocess.run(['true']).returncode)",  # clone3 refused: the C library uses clone
                "print(sorted(os.listdir('/dev')))",
                "open('/dev/null', 'w').write('gone'); open('/dev/full', 'rb').read(1)\n"
                "print(len(open('/dev/urandom', 'rb').read(16)), open('/dev/zero', 'rb').read(2))",
                f"try:\n    open({str(node)!r})\nexcept OSError as e:\n    print(type(e).__name__)",
                train,
                plot,
            ],
            workdir,
            expose=[exposed],
            timeout=120,
        )
    finally:
        shutil.rmtree(exposed)
    assert outputs[0] == "EPERM"
    assert outputs[1] == "-1 ENOSYS"
    assert outputs[2] == "-1 EPERM"
    assert outputs[3] == "1 unshare: unshare failed: Operation not permitted"
    assert outputs[4] == "['thread'] 0"
    gpus = [path.name for path in Path("/dev").glob("nvidia*") if path.is_char_device()]  # CUDA's, on a GPU
    dev = ["fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero", *gpus]
    assert outputs[5] == str(sorted(dev))
    assert outputs[6] == "16 b'\\x00\\x00'"
    assert outputs[7] == "PermissionError"  # nodev: a device node opens only in /dev
    assert outputs[8] == "1.0 0.16 True"  # one SGD step from 0: w = b = 0.2, prediction 0.6; shared memory in /dev/shm
    assert outputs[9].splitlines()[-1] == "b'\\x89PNG'" and "rror" not in outputs[9]  # no font or config missing


@pytest.mark.parametrize("unsafe", [False, True])
def test_the_graders_secrets_stay_out_of_the_kernels_environment(workdir, monkeypatch, unsafe):
    if REASON is not None and not unsafe:
        pytest.skip(f"sandbox unavailable here: {REASON}")
    if unsafe:
        monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as a grader without root runs it
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_not_a_real_token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not_a_real_key")
    monkeypatch.setenv("NCLAB_PROFILE", "smoke")
    names = {"GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "NCLAB_PROFILE", "PATH"}
    outputs = run_cells(
        [
            f"import os; print(sorted(set(os.environ) & {names!r}), os.environ['NCLAB_PROFILE'])",
            "print(any('not_a_real' in value for value in os.environ.values()))",
            "try:\n    print('not_a_real' in open('/proc/1/environ').read())\nexcept OSError as e:\n"
            "    print(type(e).__name__)",
        ],
        workdir,
        unsafe=unsafe,
    )
    assert outputs[:2] == ["['NCLAB_PROFILE', 'PATH'] smoke", "False"]
    if not unsafe:  # init, which still holds the launcher's environment, is not the user's to read
        assert outputs[2] == "PermissionError"


def test_only_the_allowed_variables_reach_a_kernel(monkeypatch):
    environ = {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "LCX": "1", "NCLAB_DATA": "/data", "HOME": "/root"}
    environ |= {"GITHUB_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "k", "PYTHONPATH": "/src", "OMP_NUM_THREADS": "2"}
    expected = {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "NCLAB_DATA": "/data", "OMP_NUM_THREADS": "2"}
    assert sandbox.allowed_environment(environ) == expected
    monkeypatch.setattr(os, "environ", environ)
    # the grader's default profile, and no run pack (the sandbox has no network: a missing run trains)
    assert kernel.kernel_environment() == {**expected, "NCLAB_PROFILE": "smoke", "NCLAB_RUNS_URL": ""}


@needs_sandbox
def test_the_graders_cache_is_read_through_a_private_folder_and_written_copy_on_write(workdir):
    private = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nclab-test-home-"))  # mode 0700, as /root is
    cache = private / "cache"
    (cache / "runs" / "smoke").mkdir(parents=True)
    (cache / "runs" / "smoke" / "last.pt").write_text("epoch 3")
    (private / "notes").write_text("the instructor's")
    try:
        outputs = run_cells(
            [
                "import os; cache = os.environ['NCLAB_CACHE']; print(open(f'{cache}/runs/smoke/last.pt').read())",
                "open(f'{cache}/runs/smoke/tmp', 'w').write('poisoned')  # as nclab saves: a new file, renamed\n"
                "os.replace(f'{cache}/runs/smoke/tmp', f'{cache}/runs/smoke/last.pt')\n"
                "os.makedirs(f'{cache}/runs/mine')\n"
                "open(f'{cache}/runs/mine/last.pt', 'w').write('trained here')\n"
                "print(open(f'{cache}/runs/smoke/last.pt').read(), sorted(os.listdir(f'{cache}/runs')))",
                f"print(sorted(os.listdir({str(private)!r})))",
            ],
            workdir,
            cache=cache,
        )
        assert outputs[0] == "epoch 3"
        assert outputs[1] == "poisoned ['mine', 'smoke']"  # the kernel's own view changes...
        assert (cache / "runs" / "smoke" / "last.pt").read_text() == "epoch 3"  # ...the grader's does not
        assert sorted(path.name for path in (cache / "runs").iterdir()) == ["smoke"]
        assert outputs[2] == "['cache']"  # the private folder shows only what was bound into it
    finally:
        shutil.rmtree(private)


@needs_sandbox
def test_the_grader_is_invisible_and_cannot_be_killed(workdir, tmp_path):
    grader, secret = os.getpid(), tmp_path / "secret-submissions"
    secret.mkdir()
    outputs = run_cells(
        [
            "import os, signal; print(os.getppid(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
            "os.kill(os.getppid(), signal.SIGKILL); os.kill(1, signal.SIGTERM); print('still here')",
            f"try:\n    open('/proc/{grader}/cmdline').read()\nexcept OSError as e:\n    print(type(e).__name__)",
            f"try:\n    os.kill({grader}, signal.SIGKILL)\nexcept OSError as e:\n    print(type(e).__name__)",
            f"print(any({str(secret)!r} in open(f'/proc/{{p}}/cmdline').read()"
            " for p in os.listdir('/proc') if p.isdigit()))",
        ],
        workdir,
        hide=[secret],
    )
    assert outputs[0] == "1 [1, 2]"  # init and the kernel: nothing else exists for the student
    assert outputs[1:] == ["still here", "FileNotFoundError", "ProcessLookupError", "False"]


@needs_sandbox
def test_every_process_the_submission_started_is_gone_when_it_ends(workdir, grader_uid):
    started = """
import os, subprocess, time
session = subprocess.Popen(["sleep", "300"], start_new_session=True)   # its own session and process group
if os.fork() == 0:                                                     # a double-forked daemon
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "301"])
    os._exit(0)
time.sleep(0.2)
print("started")
"""
    during = []

    def count(cell, cell_index, execute_reply):
        during.extend(Path(f"/proc/{pid}/cmdline").read_text() for pid in sandbox.processes(uid=grader_uid))

    outputs = run_cells([started], workdir, on_cell_executed=count)
    assert outputs == ["started"]
    running = {"sleep\x00300\x00", "sleep\x00301\x00"}  # both sleeps, outside the kernel's session
    assert running <= set(during)
    assert sandbox.processes(uid=grader_uid) == []  # all of them are gone


@needs_sandbox
def test_limits_stop_a_memory_hog_and_a_fork_bomb_but_not_the_kernel(workdir):
    limits = sandbox.Limits(memory_bytes=2 * 2**30, processes=40, open_files=100, file_bytes=2**20)
    outputs = run_cells(
        [
            "import resource; print([resource.getrlimit(r)[0] for r in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, "
            "resource.RLIMIT_NOFILE, resource.RLIMIT_FSIZE)])",
            "hog = bytearray(3 * 2**30)",
            "import subprocess\nchildren = []\ntry:\n    for _ in range(100):\n"
            "        children.append(subprocess.Popen(['sleep', '60']))\nexcept OSError as e:\n"
            "    print(len(children) < 40, type(e).__name__)",
            "import errno\ntry:\n    open('big', 'wb').write(b'x' * 2**21)\n"
            "except OSError as e:\n    print(errno.errorcode[e.errno])",
            "print(len(bytearray(100 * 2**20)))",
        ],
        workdir,
        limits=limits,
    )
    assert outputs[0] == str([2 * 2**30, 40, 100, 2**20])
    assert outputs[1].startswith("MemoryError")
    assert outputs[2] == "True BlockingIOError"  # EAGAIN: the user's process slots are used up
    assert outputs[3] == "EFBIG"  # RLIMIT_FSIZE (Python ignores the SIGXFSZ that comes with it)
    assert outputs[4] == str(100 * 2**20)  # the kernel lived through all of it


@needs_sandbox
def test_the_kernels_raw_output_reaching_the_grader_is_capped(workdir, tmp_path):
    log = tmp_path / "kernel-output.log"

    async def flood():
        with sandbox.kernel_manager(workdir, limits=sandbox.Limits(output_bytes=2**16)) as km, log.open("wb") as out:
            await km.start_kernel(cwd=str(workdir), stdout=out, stderr=out)
            client = km.client()
            client.start_channels()
            try:
                await client.wait_for_ready(timeout=30)
                flood = "import os; os.system(\"head -c 3000000 /dev/zero | tr '\\\\0' x\")"
                await client.execute_interactive(flood, timeout=30, output_hook=lambda message: None)
            finally:
                client.stop_channels()

    asyncio.run(flood())
    note = "\n[nclab sandbox: output cut after 65,536 bytes]\n"
    text = log.read_text()  # ipykernel echoes a subprocess's output to its own stdout; the launcher cut it
    assert text.endswith("x" * 1000 + note) and len(text) == 2**16 + len(note)


@needs_sandbox
def test_a_hung_cell_is_interrupted_through_the_sandbox(workdir):
    began = time.perf_counter()
    outputs = run_cells(["import time; time.sleep(60)", "print('next')"], workdir, timeout=2)
    assert outputs[0].startswith("KeyboardInterrupt")  # nbclient's SIGINT to the launcher's process group
    assert outputs[1] == "next"
    assert time.perf_counter() - began < 15


GRADER = """
import asyncio, sys
from nclab.course.grading import sandbox

async def main():
    with sandbox.kernel_manager(sys.argv[1]) as km:
        await km.start_kernel(cwd=sys.argv[1])
        client = km.client()
        client.start_channels()
        await client.wait_for_ready(timeout=30)
        code = "import subprocess; subprocess.Popen(['sleep', '303'], start_new_session=True)"
        await client.execute_interactive(code, timeout=30, output_hook=lambda message: None)
        print("running", flush=True)
        await asyncio.sleep(300)

asyncio.run(main())
"""


@needs_sandbox
def test_a_killed_grader_takes_the_sandbox_with_it(workdir, grader_uid):
    temporary = tempfile.mkdtemp(prefix="g-")  # the killed grader cannot remove its folder: we do
    env = {**os.environ, "TMPDIR": temporary}
    grader = subprocess.Popen([sys.executable, "-c", GRADER, str(workdir)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert grader.stdout.readline() == "running\n"
        assert len(sandbox.processes(uid=grader_uid)) >= 3  # init, the kernel, the sleep
        grader.kill()  # no cleanup runs: the launcher notices its parent is gone
        grader.wait()
        deadline = time.monotonic() + 5
        while sandbox.processes(uid=grader_uid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sandbox.processes(uid=grader_uid) == []
    finally:
        grader.kill()
        shutil.rmtree(temporary)


def test_without_root_it_refuses_unless_unsafe(workdir, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(sandbox.SandboxUnavailable, match=r"needs root \(this process is uid 1000\).*--unsafe"):
        with sandbox.kernel_manager(workdir):
            pass
    code = "import os, subprocess; print(os.getuid(), subprocess.Popen(['sleep', '302'], start_new_session=True).pid)"
    uid, sleeper = run_cells([code], workdir, unsafe=True)[0].split()
    assert int(uid) == os.getuid()  # no sandbox: the caller's own user
    state = Path(f"/proc/{sleeper}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # killed by its run token


def test_hiding_a_folder_the_sandbox_needs_is_refused(workdir, monkeypatch):
    monkeypatch.setattr(sandbox, "unavailable_reason", lambda: None)
    with pytest.raises(ValueError, match="cannot hide .*: it holds the sandbox's working copy"):
        with sandbox.kernel_manager(workdir, hide=[workdir.parent]):
            pass
