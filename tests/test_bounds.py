"""The grader's memory and processes, bounded per submission whatever it sends or starts (issue 29).

Each attack is one submission graded between honest ones: the run finishes, the attacker's row says why,
and the honest students around it score full marks. Each submission is graded in a process of its own, in a
control group of its own (``nclab.course.grading.isolated``); the grader's own process, which only collects
rows, must not grow. The bound here is 1.5 GiB (the default is 6 GiB): an honest submission of notebook 09
peaks near 0.35 GiB. Slow: each test grades a few submissions (seconds each) and sends gigabytes through ZMQ.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from textwrap import dedent

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from test_grade import HONEST_09

from nclab.course.grading import cgroup, grade, read_scores
from nclab.course.grading.sandbox import unavailable_reason

pytestmark = pytest.mark.skipif(
    bool(unavailable_reason() or cgroup.unavailable_reason()),
    reason=f"needs the sandbox and control groups: {unavailable_reason() or cgroup.unavailable_reason()}",
)

BOUND = cgroup.Bound(memory_bytes=3 * 2**29)  # 1.5 GiB
GROWTH_BOUND = 300 * 2**20  # bytes the grader's own process may grow by while it grades them all
CHUNK = "chunk = b'x' * (15 * 2**20)  # under the 16 MB a frame may have\n"
ATTACKS = {
    # one message of 100 frames of 15 MB on each channel the grader reads
    "iopub": "k = get_ipython().kernel\n" + CHUNK + "k.session.send(k.iopub_socket, 'stream', "
    "{'name': 'stdout', 'text': ''}, parent=k.get_parent('shell'), buffers=[chunk] * 100)\n"
    "import time; time.sleep(3)",
    "shell": "k = get_ipython().kernel\n" + CHUNK + "k.session.send(k.shell_stream, 'execute_reply', "
    "{'status': 'ok'}, parent=k.get_parent('shell'), ident=k._parent_ident['shell'], buffers=[chunk] * 100)\n"
    "import time; time.sleep(3)",
    # eight processes of 400 MB each: under the per-process limit, over the submission's
    "processes": dedent("""\
        import os, time
        for i in range(8):
            if os.fork() == 0:
                b = bytearray(400 * 2**20)
                for j in range(0, len(b), 4096):
                    b[j] = 1
                time.sleep(60)
                os._exit(0)
        time.sleep(20)"""),
    # the sandbox's three tmpfs, each under its own size, hold RAM together
    "tmpfs": dedent("""\
        import os
        for d in ('/dev/shm', '/tmp', os.getcwd()):
            for n in range(4):
                try:
                    with open(f'{d}/big{n}', 'wb') as f:
                        for i in range(2):
                            f.write(b'x' * (120 * 2**20))
                except OSError as e:
                    print(e)"""),
}
# 120 comm messages of 15 MB (1.8 GB): counted like output and never kept, so the student is graded in bounds
COMM = dedent("""\
    from comm import create_comm
    c = create_comm(target_name='x')
    for i in range(120):
        c.send({'a': 'x' * (15 * 2**20)})""")
HOLD = dedent("""\
    import os, time
    for i in range(2000):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(40)
            os._exit(0)
    time.sleep(30)""")


def _write(folder: Path, name: str, *sources: str) -> None:
    nbformat.write(new_notebook(cells=[new_code_cell(source) for source in sources]), folder / f"{name}.ipynb")


def _resident() -> tuple[int, int]:
    """(resident bytes now, the most since the last reset) of this process."""
    status = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"{field}:\s+(\d+)", status).group(1)) * 1024 for field in ("VmRSS", "VmHWM"))


def test_no_channel_message_type_or_process_count_lets_a_submission_grow_the_grader(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    _write(folder, "a_honest", HONEST_09)
    for name, attack in ATTACKS.items():
        _write(folder, f"b_{name}", attack, HONEST_09)
    _write(folder, "c_comm", COMM, HONEST_09)
    _write(folder, "d_honest", HONEST_09)
    Path("/proc/self/clear_refs").write_text("5")  # the peak below counts from here
    before, _ = _resident()
    frame = grade(folder, "09_conventions_pitfalls.ipynb", tmp_path / "scores.csv", bound=BOUND, progress=lambda _: 0)
    grown = _resident()[1] - before
    rows = frame.set_index("student")
    for name in ATTACKS:
        assert rows.loc[f"b_{name}", "status"] == "out-of-memory", rows.loc[f"b_{name}"].to_dict()
        assert "memory bound of 1.5 GiB" in rows.loc[f"b_{name}", "errors"]
    assert rows.loc["c_comm", "status"] == "ok" and rows.loc["c_comm", "09_bounds_points"] == 2
    for honest in ("a_honest", "d_honest"):
        assert rows.loc[honest, "status"] == "ok" and rows.loc[honest, "09_bounds_points"] == 2
        assert 0 < rows.loc[honest, "memory_peak_gib"] < 1.0
    assert (rows["memory_peak_gib"] <= 1.5).all()
    assert grown < GROWTH_BOUND, f"the grader's own process grew by {grown / 2**20:.0f} MiB"


def test_two_graders_side_by_side_do_not_share_a_process_limit(tmp_path):
    """A submission holding every process it may in one grader; an honest student in a second grader
    started meanwhile scores full marks (each submission has its own pids.max, no per-user limit)."""
    holder, honest = tmp_path / "holder", tmp_path / "honest"
    for folder in (holder, honest):
        folder.mkdir()
    _write(holder, "holder", HOLD, HONEST_09)
    _write(honest, "honest", HONEST_09)
    command = [sys.executable, "-m", "nclab", "grade"]
    first = subprocess.Popen([*command, str(holder), "09_conventions_pitfalls.ipynb", "--out", str(tmp_path / "a.csv")])
    time.sleep(8)  # the holder has its processes by now
    second = subprocess.run(
        [*command, str(honest), "09_conventions_pitfalls.ipynb", "--out", str(tmp_path / "b.csv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    assert first.wait(timeout=300) == 0
    row = read_scores(tmp_path / "b.csv").set_index("student").loc["honest"]
    assert row["status"] == "ok" and row["09_bounds_points"] == 2, row.to_dict()


def test_a_fork_bomb_is_its_own_row_and_leaves_nothing_behind(tmp_path):
    folder, scratch = tmp_path / "submissions", tmp_path / "tmp"
    folder.mkdir()
    scratch.mkdir()
    _write(folder, "bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    _write(folder, "honest", HONEST_09)
    command = [sys.executable, "-m", "nclab", "grade", str(folder), "09_conventions_pitfalls.ipynb"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "scores.csv"), "--timeout", "5", "--total-timeout", "20"],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr
    rows = read_scores(tmp_path / "scores.csv").set_index("student")
    assert rows.loc["bomb", "status"] in ("timeout", "kernel-died", "errors")
    assert rows.loc["honest", "status"] == "ok" and rows.loc["honest", "09_bounds_points"] == 2
    assert not list(scratch.glob("nclab-*")), f"left behind: {list(scratch.iterdir())}"
    left = [path for folder in cgroup.parents().values() for path in folder.glob(f"{cgroup.GROUP_PREFIX}*")]
    assert not left, f"control groups left behind: {left}"


def test_a_notebook_of_100000_cells_is_stopped_at_the_total_time_limit(tmp_path):
    """Reading, parsing and running it all count against --total-timeout (plus the margin to start a kernel)."""
    from nclab.course.grading.grader import START_SECONDS

    folder = tmp_path / "submissions"
    folder.mkdir()
    _write(folder, "huge", *(["x = 1"] * 100_000))
    _write(folder, "honest", HONEST_09)
    began = time.monotonic()
    frame = grade(
        folder, "09_conventions_pitfalls.ipynb", tmp_path / "scores.csv", total_timeout=10, progress=lambda _: 0
    )
    rows = frame.set_index("student")
    assert rows.loc["huge", "status"] == "timeout"
    assert rows.loc["huge", "seconds"] <= 10 + START_SECONDS + 5
    assert rows.loc["honest", "09_bounds_points"] == 2
    assert time.monotonic() - began < 10 + START_SECONDS + 120


def test_without_control_groups_a_small_bound_still_grades(tmp_path, monkeypatch):
    """The fallback (an address-space limit on the grading process) is inherited by the kernel, whose own
    limit is then capped at it instead of failing: the honest student is graded."""
    monkeypatch.setattr(cgroup, "unavailable_reason", lambda: "no cgroup (test)")
    monkeypatch.setattr("nclab.course.grading.isolated.LOCK", tmp_path / "grader.lock")
    folder = tmp_path / "submissions"
    folder.mkdir()
    _write(folder, "honest", HONEST_09)
    bound = cgroup.Bound(memory_bytes=2**31)  # less than the kernel's own 8 GiB address-space limit
    frame = grade(folder, "09_conventions_pitfalls.ipynb", tmp_path / "scores.csv", bound=bound, progress=lambda _: 0)
    row = frame.set_index("student").loc["honest"]
    assert row["status"] == "ok" and row["09_bounds_points"] == 2 and row["memory_peak_gib"] == ""
