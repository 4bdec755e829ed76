"""A submission's grading in a process of its own (``nclab.course.grading.isolated``), on plain functions:
what it returns comes back, and memory, time, processes and exceptions each become a status, with a
control group where the machine has one and the stated fallback where it does not."""

import os
import time

import pytest

from nclab.course.grading import cgroup, isolated

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
    own = cgroup._v1_folders() or {}
    assert not [path for folder in own.values() for path in folder.glob(f"{isolated.GROUP_PREFIX}*")]


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
