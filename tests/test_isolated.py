"""A submission's grading in a process of its own (``nclab.course.grading.isolated``), on plain functions:
what it returns comes back, and memory, time, processes and exceptions each become a status, with a
control group where the machine has one and the stated fallback where it does not."""

import os
import subprocess
import sys
import time

import pytest

from nclab.course.grading import cgroup, isolated, sandbox

GROUPS = cgroup.unavailable_reason()
BOUND = cgroup.Bound(memory_bytes=2**30, processes=64)


def _double(x):
    return 2 * x


def _hog():
    return len(bytearray(3 * 2**30))


def _bomb():
    for count in range(1000):
        try:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        except OSError:
            return count
    return None


def _raise():
    raise ValueError("bad \udcff answer")


def test_the_value_comes_back_and_an_exception_is_a_status_not_a_raise():
    assert isolated.run_bounded(_double, 21, bound=BOUND, seconds=30)[:2] == ("ok", 42)
    status, reason, _ = isolated.run_bounded(_raise, bound=BOUND, seconds=30)
    assert status == "error" and reason.startswith("ValueError: bad")


def test_past_the_deadline_it_is_stopped():
    began = time.monotonic()
    status, reason, _ = isolated.run_bounded(time.sleep, 60, bound=BOUND, seconds=1)
    assert status == "timeout" and "1 s" in reason and time.monotonic() - began < 10


@pytest.mark.skipif(bool(GROUPS), reason=f"needs control groups: {GROUPS}")
def test_a_group_bounds_memory_and_processes_and_leaves_nothing():
    status, reason, peak = isolated.run_bounded(_hog, bound=BOUND, seconds=60)
    assert status == "memory" and "1 GiB" in reason and peak <= 2**30
    status, forked, _ = isolated.run_bounded(_bomb, bound=BOUND, seconds=60)
    assert status == "ok" and forked < BOUND.processes  # each fork failed past pids.max, and all were killed
    assert not [path for folder in cgroup.parents().values() for path in folder.glob(f"{cgroup.GROUP_PREFIX}*")]


@pytest.mark.skipif(bool(GROUPS), reason=f"needs control groups: {GROUPS}")
def test_a_group_left_by_a_dead_grader_is_removed_and_a_failed_group_falls_back(monkeypatch):
    dead = 2**22 + 12345  # above any PID this machine hands out
    stale = cgroup.create(f"{cgroup.GROUP_PREFIX}{dead}-left", BOUND)
    assert cgroup.remove_stale() >= 1
    assert not any(folder.exists() for folder in stale.folders.values())

    def refuse(name, bound):
        raise RuntimeError("cannot make the submission's control group (test)")

    monkeypatch.setattr(cgroup, "create", refuse)  # graded anyway, bounded by the fallback
    assert isolated.run_bounded(_double, 4, bound=BOUND, seconds=30) == ("ok", 8, None)


def test_without_groups_the_grading_process_alone_is_bounded_and_graders_take_turns(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroup, "unavailable_reason", lambda: "no cgroup (test)")
    status, reason, peak = isolated.run_bounded(_hog, bound=BOUND, seconds=60)
    assert status == "memory" and peak is None
    monkeypatch.setattr(isolated, "LOCK", tmp_path / "grader.lock")
    first = isolated.alone_without_groups()
    with pytest.raises(RuntimeError, match=rf"another `nclab grade` is running \(process {os.getpid()}\)"):
        isolated.alone_without_groups()
    assert isolated.alone_without_groups(unsafe=True) is None  # no sandbox user: nothing shared
    first.close()
    isolated.alone_without_groups().close()  # released: the next grader runs


def _orphan():
    """A process left behind, as an unsafe kernel is when its grading process is killed: it carries the
    grading process's token, as the sandbox gives it to an unsafe kernel."""
    env = {**os.environ, "NCLAB_SANDBOX_RUN": os.environ[sandbox.RUN_TOKEN]}
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env, start_new_session=True)
    time.sleep(60)


def test_without_groups_what_the_grading_process_left_is_killed_by_its_token(monkeypatch):
    monkeypatch.setattr(cgroup, "unavailable_reason", lambda: "no cgroup (test)")
    before = set(sandbox.processes(uid=os.getuid()))
    status, _, _ = isolated.run_bounded(_orphan, bound=BOUND, seconds=3)
    assert status == "timeout"
    left = [pid for pid in set(sandbox.processes(uid=os.getuid())) - before if "sleep(120)" in _cmdline(pid)]
    assert left == []


def _cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        return ""


def test_a_grading_kernel_is_given_no_run_pack(monkeypatch, tmp_path):
    """The sandbox has no network: the grader's pack would fail every cell that loads a missing run."""
    from nclab import config
    from nclab.course.grading import kernel

    monkeypatch.setenv("NCLAB_RUNS_URL", "https://example.org/pack")
    monkeypatch.setenv("NCLAB_PROFILE", "full")
    env = kernel.kernel_environment()
    assert (env["NCLAB_RUNS_URL"], env["NCLAB_PROFILE"]) == ("", "full")
    (tmp_path / "_config.yml").write_text("nclab:\n  runs:\n    url: https://example.org/pack\n    profile: full\n")
    monkeypatch.chdir(tmp_path)  # the course's _config.yml names a pack too, and is overridden
    monkeypatch.setenv("NCLAB_RUNS_URL", env["NCLAB_RUNS_URL"])
    assert config.runs_url("full") == ""
