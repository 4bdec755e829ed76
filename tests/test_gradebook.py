"""The gradebook (``nclab gradebook``): hand and automatic points merged per student, in the CSV forms that
Canvas and Moodle import, on a grader's CSV written by hand for notebook 09 (exercises 09_bounds and
09_audit, 2 points each; 09_q_report graded by hand, 3 points)."""

import stat
import subprocess
import sys

import pandas as pd
import pytest

from nclab.course.grading.gradebook import gradebook, write_gradebook
from nclab.course.grading.scores import read_scores, write_csv

ROWS = [  # student, automatic total, the hand points typed
    ("ada", 4, "3"),
    ("bob", 2, "1.5"),
    ("=cmd", 0, "0"),  # an id a spreadsheet would run as a formula
]


def _scores(tmp_path, rows=ROWS):
    frame = pd.DataFrame(
        [
            {"student": s, "status": "ok", "errors": "", "total": t, "max": 4, "09_q_report_answer": "…"}
            | {"09_q_report_points": p, "hand_max": 3, "seconds": 1.0}
            for s, t, p in rows
        ]
    )
    write_csv(frame, tmp_path / "scores.csv")
    return tmp_path / "scores.csv"


def test_plain_gradebook_adds_hand_points_to_the_automatic_ones(tmp_path):
    table, missing = gradebook(_scores(tmp_path))
    assert missing == []
    assert table.set_index("student")["total"].to_dict() == {"ada": 7.0, "bob": 3.5, "=cmd": 0.0}
    assert set(table["max"]) == {7}


def test_canvas_and_moodle_layouts(tmp_path):
    canvas, _ = gradebook(_scores(tmp_path), lms="canvas", assignment="Notebook 09")
    assert list(canvas.columns) == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Notebook 09"]
    assert canvas.iloc[0]["Student"].strip() == "Points Possible" and canvas.iloc[0]["Notebook 09"] == 7
    assert canvas.iloc[1]["SIS User ID"] == "ada" and canvas.iloc[1]["ID"] == "" and canvas.iloc[1]["Notebook 09"] == 7
    login, _ = gradebook(_scores(tmp_path), lms="canvas", id_column="SIS Login ID")
    assert login.iloc[2]["SIS Login ID"] == "bob" and login.iloc[2]["SIS User ID"] == ""
    moodle, _ = gradebook(_scores(tmp_path), lms="moodle")
    assert list(moodle.columns) == ["ID number", "nclab"] and moodle["nclab"].tolist() == [7.0, 3.5, 0.0]


@pytest.mark.parametrize(
    "typed, message",
    [("", "hand grades are still empty"), ("4", "a number from 0 to 3"), ("-1", "from 0 to 3"), ("x", "'x'")],
)
def test_a_hand_grade_that_is_missing_or_not_a_grade_stops_the_export_naming_it(tmp_path, typed, message):
    scores = _scores(tmp_path, [("ada", 4, "3"), ("bob", 2, typed)])
    with pytest.raises(ValueError, match=message) as error:
        gradebook(scores)
    assert "bob: 09_q_report" in str(error.value)


def test_partial_counts_an_empty_hand_grade_as_zero_and_says_which(tmp_path):
    table, missing = gradebook(_scores(tmp_path, [("ada", 4, "3"), ("bob", 2, "")]), partial=True)
    assert missing == ["bob: 09_q_report"] and table.set_index("student").loc["bob", "total"] == 2


def test_bad_inputs_are_refused_clearly(tmp_path):
    scores = _scores(tmp_path, [("ada", 4, "3"), ("ada", 2, "1")])
    with pytest.raises(ValueError, match="students graded twice.*ada"):
        gradebook(scores)
    with pytest.raises(ValueError, match="unknown LMS 'blackboard'"):
        gradebook(_scores(tmp_path), lms="blackboard")
    with pytest.raises(ValueError, match="moodle matches students by"):
        gradebook(_scores(tmp_path), lms="moodle", id_column="SIS User ID")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a CSV written by `nclab grade`"):
        gradebook(tmp_path / "other.csv")
    with pytest.raises(ValueError, match="is the grader's CSV itself"):
        write_gradebook(_scores(tmp_path), tmp_path / "scores.csv")


def test_the_command_writes_a_private_csv_with_formulas_neutralised(tmp_path):
    out = tmp_path / "canvas.csv"
    done = subprocess.run(
        [sys.executable, "-m", "nclab", "gradebook", str(_scores(tmp_path)), "--lms", "canvas", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    written = read_scores(out)
    assert "'=cmd" in written["Student"].tolist()
    failed = subprocess.run(
        [sys.executable, "-m", "nclab", "gradebook", str(tmp_path / "missing.csv")], capture_output=True, text=True
    )
    assert failed.returncode == 1 and "missing.csv" in failed.stderr and "Traceback" not in failed.stderr
