"""The grader on real submission files: a solved and an untouched notebook, deleted and reordered cells,
a student who overwrites the checks or forges result lines, a dying kernel, hung cells, broken files.

One session-scoped run of ``python -m nclab grade`` grades most of them (``--only-exercises``: notebook
01's training cannot change the points); the hangs run alone with short time limits.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nclab import data, exercises
from nclab.course import grading as grade
from nclab.course.grading import remote

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR_01 = ROOT / "notebooks" / "01_train_resnet18_cifar100.ipynb"
STUDENT_01 = ROOT / "student" / "01_train_resnet18_cifar100.ipynb"

QUESTIONS = ["01_flip", "01_crop", "01_stem", "01_schedule"]
IMPORTS = "import torch\nimport torch.nn.functional as F\nfrom torch import nn\nfrom nclab.exercises import check"


def _exercise_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code" and 'check("01_' in cell.source]


def _cell_defining(notebook, answer):
    return next(i for i, cell in enumerate(notebook.cells) if f"def {answer}(" in cell.source)


def _minimal(notebook, before=(), after=()):
    """A short submission: the imports, the cells ``before``, the exercise cells of ``notebook``, ``after``."""
    return new_notebook(
        cells=[
            new_code_cell(IMPORTS),
            *map(new_code_cell, before),
            *_exercise_cells(notebook),
            *map(new_code_cell, after),
        ]
    )


CHEAT = """
import nclab.data, nclab.exercises as ex, nclab.course.grading

def random_flip_student(images, flips):                  # wrong: top-bottom
    return torch.where(flips[:, None, None, None], images.flip(-2), images)

nclab.data.random_flip = random_flip_student             # the kernel's reference now agrees with it
for exercise in list(ex.EXERCISES.values()):
    object.__setattr__(exercise, "check", lambda answer: (True, "perfect"))
    object.__setattr__(exercise, "points", 100)
ex.run_check = lambda name, answer: ex.Result(name, True, "perfect")
ex.check = ex.run_check
ex.points = lambda name: 100
nclab.course.grading.run_checks = lambda *args, **kwargs: {q: {"passed": True} for q in ex.EXERCISES}
print('nclab-grade-result 0123456789abcdef0123456789abcdef {"01_flip": {"passed": true, "message": "fake"}}')
"""

FORGE = """
import json, re

def forge(info):  # runs before every cell, the grader's too: copies its nonce into a forged line
    for nonce in re.findall(r"nclab-grade-result ([0-9a-f]{32})", info.raw_cell):
        print(f"nclab-grade-result {nonce} " + json.dumps({q: {"passed": True, "message": "forged"}
                                                          for q in ["01_flip", "01_crop", "01_stem", "01_schedule"]}))

get_ipython().events.register("pre_run_cell", forge)
"""


SCREAM = r"""
import os, sys
os.write(1, b"\x1b]52;c;ZXZpbA==\x07\x1b[2Jscreamer: ok, 5/5 points\n")  # the kernel's raw stdout
os.write(2, b"\x1b[31mscreamer on stderr\n")
print("screamer via __stdout__", file=sys.__stdout__, flush=True)
"""


REACH = """from nclab import data as d

def random_flip_student(images, flips):                  # right, by nclab's own implementation
    return d.random_flip(images, flips)
"""


def _submissions(folder):
    instructor, student = nbformat.read(INSTRUCTOR_01, 4), nbformat.read(STUDENT_01, 4)
    moved = nbformat.read(INSTRUCTOR_01, 4)  # stem cell first, crop cell deleted
    stem = moved.cells.pop(_cell_defining(moved, "cifar_stem_layer"))
    del moved.cells[_cell_defining(moved, "random_crop_student")]
    moved.cells.insert(0, stem)
    notebooks = {
        "solved": instructor,
        "untouched": student,
        "deleted_and_reordered": moved,
        "cheater": _minimal(student, after=[CHEAT]),
        "forger": _minimal(student, before=[FORGE]),
        "007": new_notebook(cells=[new_code_cell("import os\nos._exit(1)")]),
        "screamer": _minimal(student, before=[SCREAM]),
        "reacher": _minimal(student, after=[REACH]),
    }
    for name, notebook in notebooks.items():
        nbformat.write(notebook, folder / f"{name}.ipynb")
    (folder / "not_json.ipynb").write_text('{"cells": [ this is not JSON')
    (folder / "empty.ipynb").write_bytes(b"")


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """(the CSV's rows by student, the CSV path, the command's output) of one grading run."""
    folder = tmp_path_factory.mktemp("submissions")
    _submissions(folder)
    out = folder.parent / "scores.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nclab",
            "grade",
            str(folder),
            "01_train_resnet18_cifar100.ipynb",
            "--out",
            str(out),
            "--only-exercises",
            "--timeout",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return grade.read_scores(out).set_index("student").to_dict("index"), out, done.stdout + done.stderr


def _points(row):
    return {q: row[f"{q}_points"] for q in QUESTIONS}


def test_questions_of_a_notebook_are_those_of_its_table():
    assert grade.questions_for("notebooks/01_train_resnet18_cifar100.ipynb") == QUESTIONS
    with pytest.raises(ValueError, match="No graded exercises"):
        grade.questions_for("99_nothing.ipynb")


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_the_graders_maximum_is_the_sum_of_the_notebooks_table(path, tmp_path):
    table = getattr(exercises, f"notebook{path.name[:2]}").EXERCISES
    questions = grade.questions_for(path)
    assert questions == list(table)
    empty = tmp_path / "empty.ipynb"  # graded without a kernel: every question 0 points
    empty.write_bytes(b"")
    row = grade.grade_submission(empty, questions)
    assert row["max"] == sum(exercise.points for exercise in table.values())
    assert row["total"] == 0 and all(row[f"{q}_points"] == 0 for q in questions)


def test_solved_notebook_gets_full_marks(graded):
    row = graded[0]["solved"]
    assert row["status"] == "ok" and row["errors"] == ""
    assert (
        _points(row)
        == {q: exercises.points(q) for q in QUESTIONS}
        == {"01_flip": 1, "01_crop": 2, "01_stem": 2, "01_schedule": 2}
    )
    assert row["total"] == row["max"] == 7


def test_untouched_student_notebook_scores_zero_with_not_implemented_feedback(graded):
    row = graded[0]["untouched"]
    assert row["status"] == "ok" and row["total"] == 0
    assert all("NotImplementedError" in row[f"{q}_feedback"] for q in QUESTIONS)


def test_deleted_cell_scores_zero_and_reordered_cell_still_counts(graded):
    row = graded[0]["deleted_and_reordered"]
    assert row["status"] == "errors" and "NameError" in row["errors"]  # `check` used before the imports
    assert _points(row) == {"01_flip": 1, "01_crop": 0, "01_stem": 2, "01_schedule": 2}
    assert row["01_crop_feedback"] == "answer `random_crop_student` not defined (cell deleted?)"


def test_overwritten_checks_and_fake_result_lines_are_ignored(graded):
    row = graded[0]["cheater"]
    assert row["total"] == 0 and row["max"] == 7
    assert "top–bottom" in row["01_flip_feedback"]
    assert all("NotImplementedError" in row[f"{q}_feedback"] for q in QUESTIONS[1:])


def test_an_answer_that_calls_nclabs_own_implementation_scores_zero_and_says_where(graded):
    row = graded[0]["reacher"]
    cell = len(_minimal(nbformat.read(STUDENT_01, 4)).cells)  # REACH is the last cell
    assert row["reaches_key"] == f"01_flip: nclab.data.random_flip (cell {cell + 1}, line 4)"
    assert row["01_flip_points"] == 0 and "--allow-reference" in row["01_flip_feedback"]
    assert row["01_flip_feedback"].endswith(
        "The check said: " + exercises.run_check("01_flip", data.random_flip).message
    )
    assert graded[0]["solved"]["reaches_key"] == ""  # the model answers and the given cells reach nothing


def test_result_line_forged_with_the_real_nonce_is_detected(graded):
    row = graded[0]["forger"]
    assert row["status"] == "tampered" and row["total"] == 0
    assert "forged" in row["errors"]


def test_dead_kernel_broken_and_empty_files_get_a_row(graded):
    rows = graded[0]
    assert rows["007"]["status"] == "kernel-died" and rows["007"]["total"] == 0  # id kept as text
    assert rows["not_json"]["status"] == "invalid-notebook" and "JSON" in rows["not_json"]["errors"]
    assert rows["empty"]["status"] == "empty"
    assert all(row["total"] == 0 for name, row in rows.items() if name in ("007", "not_json", "empty"))


def test_the_kernels_raw_output_never_reaches_the_instructors_terminal(graded):
    rows, _, output = graded
    assert rows["screamer"]["status"] == "ok" and sum(_points(rows["screamer"]).values()) == 0  # graded as any
    assert "screamer:" not in output.replace("screamer: ok, 0/", "")  # only the grader's own line for it
    assert "\x1b" not in output and "screamer on stderr" not in output and "via __stdout__" not in output


def test_csv_round_trip_summary_and_histogram(graded):
    rows, out, stdout = graded
    frame = grade.read_scores(out)
    hand = grade.hand_questions_for(INSTRUCTOR_01)
    assert len(hand) >= 5
    assert list(frame.columns) == (
        ["student", "status", "errors", "reaches_key"]
        + [f"{q}_{what}" for q in QUESTIONS for what in ("points", "feedback")]
        + ["total", "max"]
        + [f"{q}_{what}" for q in hand for what in ("answer", "points")]
        + ["hand_max", "seconds", "memory_peak_gib"]
    )
    assert (frame["hand_max"] == sum(exercises.points(q) for q in hand)).all()
    assert (frame[[f"{q}_points" for q in hand]] == "").all().all()  # the instructor's to fill in
    rubric = out.with_name("scores-rubric.md").read_text()
    assert all(f"## {q} (" in rubric for q in hand) and "questions graded by hand" in stdout
    assert sorted(frame["student"]) == sorted(rows) and len(rows) == 10
    again = out.with_name("again.csv")
    frame.to_csv(again, index=False)
    pd.testing.assert_frame_equal(grade.read_scores(again), frame)
    assert (frame["total"] <= frame["max"]).all()
    assert (frame["total"] == frame[[f"{q}_points" for q in QUESTIONS]].sum(axis=1)).all()
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    mean_flip = frame["01_flip_points"].mean()
    assert f"01_flip        mean {mean_flip:5.2f} / 1" in stdout


def test_a_cell_that_hangs_is_interrupted_and_later_exercises_still_count(tmp_path):
    path = tmp_path / "sleeper.ipynb"
    hang = "import time\nwhile True:\n    time.sleep(1)"
    nbformat.write(_minimal(nbformat.read(INSTRUCTOR_01, 4), before=[hang]), path)
    row = grade.grade_submission(path, QUESTIONS, timeout=15, total_timeout=120)
    assert row["status"] == "timeout" and "cell 2" in row["errors"] and "interrupted after 15 s" in row["errors"]
    assert row["total"] == 7


def test_a_cell_that_ignores_the_interrupt_stops_at_the_total_time_limit(tmp_path):
    path = tmp_path / "deaf.ipynb"
    hang = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    nbformat.write(new_notebook(cells=[new_code_cell(hang), new_code_cell("x = 1")]), path)
    row = grade.grade_submission(path, QUESTIONS, timeout=2, total_timeout=15)
    assert row["status"] == "timeout" and "did not finish within 15 s" in row["errors"]
    assert row["total"] == 0 and row["seconds"] < 40


def test_a_check_that_loops_forever_fails_that_question_only(tmp_path):
    """The grader interrupts the kernel's call when the check's time is up; the other checks still run."""
    path = tmp_path / "endless.ipynb"
    endless = "def multistep_factor(step, total_steps, gamma=0.1):\n    while True:\n        pass"
    stem = "def cifar_stem_layer(width):\n    return nn.Conv2d(3, width, 3, 1, 1, bias=False)"
    nbformat.write(new_notebook(cells=[new_code_cell(IMPORTS), new_code_cell(endless), new_code_cell(stem)]), path)
    row = grade.grade_submission(path, ["01_schedule", "01_stem", "01_flip"], seconds_per_check=3)
    assert row["01_schedule_feedback"] == "`multistep_factor` did not return within 3 s (an endless loop?)"
    assert row["01_stem_points"] == 2 and row["01_schedule_points"] == 0
    assert row["01_flip_feedback"] == "answer `random_flip_student` not defined (cell deleted?)"
    assert row["status"] == "ok" and row["seconds"] < 30


def _fake_kernel(printed: list[str], timed_out: bool = False):
    return lambda source, seconds: (printed, timed_out)


def test_a_reply_is_read_only_with_its_tag_once_and_as_plain_data():
    tag = f"{grade.kernel.RESULT_TAG} {'ab' * 16}"
    answer = {"kind": "object", "type": "function"}
    described = remote.Channel(_fake_kernel([f"{tag} " + json.dumps({"energy_score": answer})]), tag)
    assert described.describe(["energy_score", "x"]) == {"energy_score": answer, "x": {}}
    with pytest.raises(remote.Tampered):
        remote.Channel(_fake_kernel([f"{tag} {{}}", f"{tag} {{}}"]), tag).reply("cell")
    with pytest.raises(remote.NoReply):
        remote.Channel(_fake_kernel([]), tag).reply("cell")
    with pytest.raises(remote.NoReply):
        remote.Channel(_fake_kernel([f"{tag} [1, 2"]), tag).reply("cell")
    with pytest.raises(remote.CheckTimeout):
        remote.Channel(_fake_kernel([], timed_out=True), tag).reply("cell")
    with pytest.raises(remote.NoReply):  # nested past Python's recursion limit
        remote.Channel(_fake_kernel([f"{tag} " + "[" * 50_000]), tag).reply("cell")
    pickled = {"replies": [{"output": {"t": "pickle", "data": "gASVAAAA"}, "arguments": [None], "gradients": {}}]}
    channel = remote.Channel(_fake_kernel([f"{tag} " + json.dumps(pickled)]), tag)
    with pytest.raises(remote.NoReply, match="could not be read"):
        remote.Remote(channel, "energy_score", "object", "function")(1)


def test_only_exercises_keeps_the_cells_up_to_the_last_answer():
    notebook = nbformat.read(INSTRUCTOR_01, 4)
    grade.submissions.through_last_exercise(notebook, QUESTIONS)
    assert "def multistep_factor(" in notebook.cells[-1].source
    assert not any("load_or_train" in cell.source for cell in notebook.cells)


def test_the_graders_cells_carry_the_wire_and_the_nonce_and_never_import_nclab():
    tag = f"{grade.kernel.RESULT_TAG} {'ab' * 16}"
    setup, call = remote.setup_cell(tag, ["energy_score"]), remote.call_cell(tag, "energy_score", [(1.0,)])
    for source in (setup, call):
        compile(source, "grading cell", "exec")
        assert "ab" * 16 in source and "import nclab" not in source and "from nclab" not in source
    assert repr(remote.WIRE_SOURCE) in setup  # the grader's copy, read when it started


# --- no row ever lost: files that are not notebooks, formulas, an interrupted grader ----------------------


def test_only_regular_files_are_read_and_errors_never_quote_the_file(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET")
    (tmp_path / "link.ipynb").symlink_to(secret)
    (tmp_path / "folder.ipynb").mkdir()
    os.mkfifo(tmp_path / "fifo.ipynb")
    (tmp_path / "text.ipynb").write_text("SECRET, not JSON")
    (tmp_path / "list.ipynb").write_text('["SECRET"]')
    for name, status in [("link", "invalid-file"), ("folder", "invalid-file"), ("fifo", "invalid-file")]:
        row = grade.grade_submission(tmp_path / f"{name}.ipynb", QUESTIONS)
        assert row["status"] == status and "regular .ipynb" in row["errors"], name
    for name in ("text", "list"):
        row = grade.grade_submission(tmp_path / f"{name}.ipynb", QUESTIONS)
        assert row["status"] == "invalid-notebook" and "SECRET" not in str(row), name
    monkeypatch.setattr(grade.submissions, "MAX_SUBMISSION_BYTES", 10)
    row = grade.grade_submission(tmp_path / "text.ipynb", QUESTIONS)
    assert row["status"] == "too-large" and "SECRET" not in str(row)


def test_answers_bound_by_any_assignment_are_found():
    source = (
        "import torch as random_flip_student\n(a, (random_crop_student, b)) = 1, (2, 3)\n"
        "cifar_stem_layer: int = 3\nif (multistep_factor := 4): pass\nfor x, y in []: pass"
    )
    assert {"random_flip_student", "random_crop_student", "cifar_stem_layer", "multistep_factor", "x", "y"} <= (
        grade.submissions.bound_names(source)
    )
    assert grade.submissions.bound_names("%timeit 1") is None
    notebook = new_notebook(
        cells=[new_code_cell("a, random_flip_student = 1, 2"), new_code_cell("x = 1"), new_code_cell("y = 2")]
    )
    grade.submissions.through_last_exercise(notebook, ["01_flip"])
    assert [cell.source for cell in notebook.cells] == ["a, random_flip_student = 1, 2"]


def test_every_text_cell_is_written_so_that_no_spreadsheet_runs_it(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    for name in ['=HYPERLINK("x","y")', "+1", "@SUM(A1)", "-2", "plain"]:
        (folder / f"{name}.ipynb").write_bytes(b"")
    out = tmp_path / "scores.csv"
    grade.grade(folder, "01_train_resnet18_cifar100.ipynb", out, progress=lambda *_: None)
    students = sorted(grade.read_scores(out)["student"])
    assert students == sorted(['\'=HYPERLINK("x","y")', "'+1", "'@SUM(A1)", "'-2", "plain"])
    assert not out.with_name("scores.csv.partial").exists()


def test_a_resumed_run_keeps_graded_rows_and_names_the_submission_that_stopped_the_grader(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    for name in ("ada", "bob", "cy"):
        (folder / f"{name}.ipynb").write_bytes(b"")
    out = tmp_path / "scores.csv"
    kept = {**grade.grade_submission(folder / "ada.ipynb", QUESTIONS), "seconds": 123.0}  # graded before the stop
    journal = [
        {"started": "ada.ipynb"},
        {"graded": "ada.ipynb", "identity": grade.scores.identity(folder / "ada.ipynb"), "row": kept},
        {"started": "bob.ipynb"},
    ]
    out.with_name("scores.csv.partial").write_text("".join(json.dumps(r) + "\n" for r in journal) + '{"gra')
    lines = []
    frame = grade.grade(folder, "01_train_resnet18_cifar100.ipynb", out, progress=lines.append).set_index("student")
    assert frame.loc["ada", "seconds"] == 123.0  # not graded again
    assert frame.loc["bob", "status"] == "grader-killed" and "--retry-killed" in frame.loc["bob", "errors"]
    assert frame.loc["cy", "status"] == "empty" and "resuming" in lines[0]
    assert len(grade.read_scores(out)) == 3
    assert out.with_name("scores.csv.partial").exists()  # kept while bob's row says grader-killed


HONEST_09 = "def ncc_accuracy_bounds_student(r, a):\n    return max(0.0, a + r - 1), 1 - abs(a - r)"


def _grade_09(folder, out, *extra, timeout=600):
    command = [sys.executable, "-m", "nclab", "grade", str(folder), "09_conventions_pitfalls.ipynb", "--out", str(out)]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=timeout)


def test_a_submission_cannot_kill_the_grader_outlive_its_kernel_or_touch_the_results(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    out = tmp_path / "scores.csv"
    attack = f"""
import os, signal, subprocess, sys, time
os.kill(os.getppid(), signal.SIGKILL)                  # the grader? (its parent is the sandbox's init)
daemon = "import time, pathlib; time.sleep(4); pathlib.Path({str(out)!r}).write_text('forged')"
subprocess.Popen([sys.executable, "-c", daemon], start_new_session=True)   # outlive the kernel, rewrite the CSV
try:
    print(sorted(os.listdir({str(folder)!r})))        # read the other students' files
except OSError as error:
    print("no access:", type(error).__name__)
"""
    nbformat.write(new_notebook(cells=[new_code_cell(HONEST_09)]), folder / "a_honest.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell(attack), new_code_cell(HONEST_09)]), folder / "b_attacker.ipynb")
    done = _grade_09(folder, out, "--allow-reference")  # its Python subprocess is flagged: the points are kept
    assert done.returncode == 0, done.stderr
    time.sleep(6)  # the daemon, had it survived, would have rewritten the CSV by now
    rows = grade.read_scores(out).set_index("student")
    assert list(rows.index) == ["a_honest", "b_attacker"]
    assert "dynamic access to nclab" in rows.loc["b_attacker", "reaches_key"]
    assert rows.loc["a_honest", "reaches_key"] == ""
    assert rows.loc["a_honest", "09_bounds_points"] == rows.loc["b_attacker", "09_bounds_points"] == 2
    assert rows.loc["b_attacker", "status"] == "ok"
    assert subprocess.run(["pgrep", "-f", "forged"], capture_output=True).returncode == 1  # no survivor


def test_an_endless_print_cannot_grow_the_grader_and_the_next_student_is_graded(tmp_path):
    """ipykernel sends a print loop's output as one message per flush, of gigabytes: ZMQ drops a message over
    MAX_MESSAGE_BYTES unread, and the grader keeps MAX_OUTPUT_BYTES per cell. The flooder may lose the
    grading step's result (0 points, ungraded) but not the others' rows."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    flood = "while True:\n    print('x' * 100_000)"
    nbformat.write(new_notebook(cells=[new_code_cell(flood), new_code_cell(HONEST_09)]), folder / "flood.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell(HONEST_09)]), folder / "honest.ipynb")
    out = tmp_path / "scores.csv"
    command = [sys.executable, "-m", "nclab", "grade", str(folder), "09_conventions_pitfalls.ipynb", "--out", str(out)]
    grader = subprocess.Popen([*command, "--timeout", "10"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0  # the grader's peak resident memory (VmHWM), in KiB, read while it runs
    while grader.poll() is None:
        with contextlib.suppress(OSError):
            found = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{grader.pid}/status").read_text())
            peak = max(peak, int(found.group(1))) if found else peak  # a zombie has none
        time.sleep(0.2)
    assert grader.returncode == 0, grader.stderr.read()
    rows = grade.read_scores(out).set_index("student")
    assert rows.loc["flood", "status"] in ("timeout", "ungraded") and rows.loc["honest", "09_bounds_points"] == 2
    assert 0 < peak / 2**20 < 1.5, f"the grader grew to {peak / 2**20:.1f} GiB"


def test_a_grader_killed_mid_run_loses_no_row_and_a_rerun_completes_the_csv(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell(HONEST_09)]), folder / "a_honest.ipynb")
    slow = "import time\ntime.sleep(60)"
    nbformat.write(new_notebook(cells=[new_code_cell(slow), new_code_cell(HONEST_09)]), folder / "b_slow.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell(HONEST_09)]), folder / "c_honest.ipynb")
    out = tmp_path / "scores.csv"
    journal = tmp_path / "scores.csv.partial"
    command = [sys.executable, "-m", "nclab", "grade", str(folder), "09_conventions_pitfalls.ipynb", "--out", str(out)]
    grader = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while '"started": "b_slow.ipynb"' not in (journal.read_text() if journal.exists() else ""):
        assert grader.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    grader.kill()  # the machine, or the instructor, stops the grader during b_slow
    grader.wait()
    assert not out.exists() and '"graded": "a_honest.ipynb"' in journal.read_text()
    again = _grade_09(folder, out)
    assert again.returncode == 0, again.stderr
    rows = grade.read_scores(out).set_index("student")
    assert list(rows.index) == ["a_honest", "b_slow", "c_honest"]
    assert rows.loc["b_slow", "status"] == "grader-killed" and rows.loc["b_slow", "total"] == 0
    first_seconds = rows.loc["a_honest", "seconds"]
    assert rows.loc["a_honest", "09_bounds_points"] == rows.loc["c_honest", "09_bounds_points"] == 2
    assert journal.exists()  # kept while a row says grader-killed
    retried = _grade_09(folder, out, "--retry-killed", "--timeout", "5")
    assert retried.returncode == 0, retried.stderr
    rows = grade.read_scores(out).set_index("student")
    assert rows.loc["b_slow", "status"] == "timeout" and rows.loc["b_slow", "09_bounds_points"] == 2  # its honest score
    assert rows.loc["a_honest", "seconds"] == first_seconds and not journal.exists()  # the others not regraded


def test_a_stop_by_the_instructor_is_not_blamed_on_the_student_and_a_cut_line_is_ended(tmp_path):
    journal = tmp_path / "scores.csv.partial"
    journal.write_text('{"started": "ada.ipynb"}\n{"aborted": "ada.ipynb"}\n{"started": "bob.ipynb"}\n{"gra')
    graded, started = grade.scores.read_journal(journal)
    assert graded == {} and started == {"bob.ipynb"}  # ada was stopped by Ctrl-C, not by her notebook
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "bob.ipynb").write_bytes(b"")
    grade.grade(folder, "01_train_resnet18_cifar100.ipynb", tmp_path / "scores.csv", progress=lambda *_: None)
    lines = journal.read_text().splitlines()  # kept: bob's row says grader-killed
    assert lines[3] == '{"gra' and json.loads(lines[4])["graded"] == "bob.ipynb"  # appended on a line of its own


# --- one student, one row: whatever a submission's text, name or nesting does ----------------------------


def test_a_notebook_nested_past_the_parser_is_its_own_row(tmp_path):
    deep = tmp_path / "deep.ipynb"
    deep.write_text('{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}")
    row = grade.grade_submission(deep, QUESTIONS)
    assert row["status"] == "invalid-notebook" and "nested too deeply" in row["errors"]


def test_a_cell_nested_past_the_python_parser_is_not_an_answer_and_stops_nothing():
    source = "x = math" + ".e" * 5_000
    assert grade.submissions.bound_names(source) is None
    notebook = new_notebook(cells=[new_code_cell("random_flip_student = 1"), new_code_cell(source)])
    grade.submissions.through_last_exercise(notebook, ["01_flip"])
    assert [cell.source for cell in notebook.cells] == ["random_flip_student = 1"]


def test_every_text_is_printable_in_the_csv_the_journal_and_the_terminal():
    printable = grade.scores.printable
    assert printable("bad \udcff byte") == "bad \\udcff byte"
    assert printable("\x1b]52;c;ZXZpbA==\x07\x1b[2J ok 5/5\r") == "\ufffd]52;c;ZXZpbA==\ufffd\ufffd[2J ok 5/5\ufffd"
    assert printable("a\u202eb") == "a\ufffdb" and printable("two\nlines") == "two\nlines"
    assert printable("two\nlines", newlines=False) == "two lines"


def test_surrogates_and_a_file_name_that_is_not_utf8_reach_the_csv_and_the_journal(tmp_path):
    name = os.fsdecode(b"caf\xe9\x1b[2J.ipynb")  # not UTF-8, with an escape sequence
    (tmp_path / name).write_text("{}")
    report = {q: (False, "your code raised ValueError: \udcff") for q in QUESTIONS}
    row = grade.scores.row(tmp_path / name, "errors", "cell 3: \udcff\x1b[31m", QUESTIONS, ["01_q_stem_map"], report,
                           {"01_q_stem_map": "answer \ud800"})  # fmt: skip
    assert row["student"] == "caf\\udce9\ufffd[2J"
    with (tmp_path / "journal").open("a", encoding="utf-8") as log:
        grade.scores.append(log, {"graded": name, "identity": [], "row": row})
    graded, _ = grade.scores.read_journal(tmp_path / "journal")
    frame = pd.DataFrame([graded[name]["row"]])
    grade.scores.write_csv(frame, tmp_path / "scores.csv")
    back = grade.scores.read_scores(tmp_path / "scores.csv")
    assert back.loc[0, "student"] == row["student"] and "\\udcff" in back.loc[0, "01_flip_feedback"]


def test_two_spellings_of_one_name_are_one_student_and_reported(tmp_path):
    composed, decomposed = "Ren\u00e9e.ipynb", "Rene\u0301e.ipynb"
    paths = [tmp_path / composed, tmp_path / decomposed, tmp_path / "Other.ipynb"]
    assert grade.scores.student_id(paths[0]) == grade.scores.student_id(paths[1]) == "Ren\u00e9e"
    assert grade.scores.duplicate_students(paths) == {"Ren\u00e9e": [composed, decomposed]}


# --- the instructor's work is never lost; bad inputs answered clearly ------------------------------------


def test_a_rerun_keeps_the_hand_grades_typed_into_the_csv_and_the_csv_is_private(tmp_path):
    folder, out, said = tmp_path / "submissions", tmp_path / "scores.csv", []
    folder.mkdir()
    for name in ("ada", "-bob"):  # graded without a kernel: empty files; "-bob" is written "'-bob" in the CSV
        (folder / f"{name}.ipynb").write_bytes(b"")
    notebook, hand = "09_conventions_pitfalls.ipynb", grade.hand_questions_for("09_conventions_pitfalls.ipynb")
    grade.grade(folder, notebook, out, progress=said.append)
    assert out.stat().st_mode & 0o777 == 0o600  # the students' grades: the instructor's only
    typed = grade.read_scores(out)
    assert list(typed["student"]) == ["'-bob", "ada"]
    typed[f"{hand[0]}_points"] = ["2", "3"]
    typed.loc[2] = {**typed.loc[1].to_dict(), "student": "Zo\u0308e", f"{hand[0]}_points": "1"}  # NFD, gone now
    typed.to_csv(out, index=False)
    (folder / "cyd.ipynb").write_bytes(b"")  # a late submission: the rerun grades everyone again
    frame = grade.grade(folder, notebook, out, progress=said.append)
    rows = frame.set_index("student")
    assert [str(rows.loc[s, f"{hand[0]}_points"]) for s in ("ada", "-bob", "cyd")] == ["3", "2", ""]
    assert any("kept 2 hand-graded points" in line for line in said)
    assert any("WARNING: hand points for no submission" in line and "Z\u00f6e: " in line for line in said)  # NFC
    assert grade.read_scores(out.with_name("scores.csv.bak")).shape[0] == 3  # the file as it was typed


@pytest.mark.parametrize(
    "submissions, notebook, out, error",
    [
        ("missing", "01_train_resnet18_cifar100.ipynb", "scores.csv", "no submissions folder"),
        ("submissions", "nowhere/01_train.ipynb", "scores.csv", "no notebook nowhere/01_train.ipynb"),
        ("submissions", "homework.ipynb", "scores.csv", "no notebook homework.ipynb"),
        ("submissions", "01_train_resnet18_cifar100.ipynb", "submissions", "name a CSV file"),
        ("submissions", "01_train_resnet18_cifar100.ipynb", "no/such/folder/scores.csv", "name a CSV file"),
    ],
)
def test_bad_inputs_are_refused_before_anyone_is_graded(tmp_path, monkeypatch, submissions, notebook, out, error):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "submissions").mkdir()
    (tmp_path / "submissions" / "ada.ipynb").write_bytes(b"")
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(error)):
        grade.grade(submissions, notebook, out, progress=lambda line: None)
    assert not (tmp_path / "scores.csv").exists()


def test_an_unknown_profile_and_the_version_are_answered_by_the_command(tmp_path):
    (tmp_path / "ada.ipynb").write_bytes(b"")
    command = [sys.executable, "-m", "nclab", "grade", str(tmp_path), "01_train_resnet18_cifar100.ipynb"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "s.csv")], capture_output=True, text=True,
        env={**os.environ, "NCLAB_PROFILE": "bogus"},
    )  # fmt: skip
    assert done.returncode == 1 and "Unknown profile 'bogus'" in done.stderr and not (tmp_path / "s.csv").exists()
    version = subprocess.run([sys.executable, "-m", "nclab", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("nclab ")


def test_hand_points_are_not_kept_for_an_answer_that_changed_since_they_were_typed():
    rows = [{"student": "ada", "errors": "", "09_q_report_answer": "new text", "09_q_report_points": ""}]
    kept, unmatched = grade.scores.keep_hand_grades(rows, {("ada", "09_q_report"): ("4", "old text")})
    assert (kept, unmatched) == (0, []) and rows[0]["09_q_report_points"] == ""
    assert "your 4 hand points were not kept, the answer changed since" in rows[0]["errors"]
