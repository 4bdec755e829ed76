"""Student versions: solutions replaced at their indentation, solution-only cells dropped, outputs cleared,
every possible leak fails loudly, and the committed student/ is what the generator makes now."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from nclab.course.student import (
    SolutionLeak,
    stale_student_versions,
    strip_solutions,
    student_notebook,
    write_student_versions,
)

ROOT = Path(__file__).resolve().parents[1]


def _notebook(*cells):
    return new_notebook(cells=list(cells))


def test_block_is_replaced_at_the_marker_indentation():
    source = (
        "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\n"
        "### BEGIN SOLUTION\nz = f(2)\n### END SOLUTION\ncheck('f', f)"
    )
    student, blocks = strip_solutions(source)
    assert student == (
        "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n"
        "# YOUR CODE HERE\nraise NotImplementedError()\ncheck('f', f)"
    )
    assert blocks == ["    return x + y", "z = f(2)"]


def test_solution_only_cells_dropped_outputs_cleared_badge_points_at_student():
    code = new_code_cell(
        "x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION",
        execution_count=3,
        outputs=[new_output("stream", name="stdout", text="2\n")],
    )
    secret = new_markdown_cell("The answer is 2.", metadata={"tags": ["solution-only"]})
    badge = new_markdown_cell("[badge](https://colab.research.google.com/github/o/r/blob/main/notebooks/01_a.ipynb)")
    original = _notebook(badge, code, secret)
    student = student_notebook(original, "01_a.ipynb")
    assert [cell.source for cell in student.cells] == [
        "[badge](https://colab.research.google.com/github/o/r/blob/main/student/01_a.ipynb)",
        "x = 1\n# YOUR CODE HERE\nraise NotImplementedError()",
    ]
    assert student.cells[1].outputs == [] and student.cells[1].execution_count is None
    assert student.cells[1].id == code.id
    assert original.cells[1].outputs and len(original.cells) == 3  # the instructor notebook is untouched


@pytest.mark.parametrize(
    "source, problem",
    [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n### END SOLUTION", "line 2: ### END SOLUTION without"),
        (
            "### BEGIN SOLUTION\n  ### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n### END SOLUTION",
            "line 2: ### BEGIN SOLUTION inside",
        ),
        ("print('### BEGIN SOLUTION')\nx = 1", "'BEGIN SOLUTION' survives"),
        ("x = 1  ### END SOLUTION", "'END SOLUTION' survives"),
    ],
)
def test_unbalanced_nested_or_hidden_markers_fail_naming_notebook_and_cell(source, problem):
    notebook = _notebook(new_markdown_cell("# title"), new_code_cell(source))
    with pytest.raises(SolutionLeak, match="01_a.ipynb, (student )?cell 1 ") as error:
        student_notebook(notebook, "01_a.ipynb")
    assert problem in str(error.value)


def test_marker_in_markdown_or_repeated_solution_fails():
    with pytest.raises(SolutionLeak, match="cell 0 .*markdown.*'BEGIN SOLUTION' survives"):
        student_notebook(_notebook(new_markdown_cell("### BEGIN SOLUTION\nx = 2\n### END SOLUTION")), "n")
    repeated = _notebook(
        new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION"), new_markdown_cell("Hint: `answer = 42`.")
    )
    with pytest.raises(SolutionLeak, match="cell 1 .*contains the solution block 'answer = 42'"):
        student_notebook(repeated, "n")


def test_command_line_fails_loudly_and_writes_nothing_on_a_leak(tmp_path):
    source, out = tmp_path / "notebooks", tmp_path / "student"
    source.mkdir()
    nbformat.write(_notebook(new_code_cell("### BEGIN SOLUTION\nx = 1")), source / "01_bad.ipynb")
    done = subprocess.run(
        [sys.executable, "-m", "nclab", "student", "--notebooks", str(source), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "01_bad.ipynb, cell 0" in done.stderr and "never closed" in done.stderr
    assert not out.exists()


def test_write_then_check_and_stale_versions_are_removed(tmp_path):
    source, out = tmp_path / "notebooks", tmp_path / "student"
    source.mkdir()
    nbformat.write(_notebook(new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")), source / "01_a.ipynb")
    out.mkdir()
    (out / "00_gone.ipynb").write_text("{}")
    assert stale_student_versions(source, out) == ["00_gone.ipynb", "01_a.ipynb"]
    assert write_student_versions(source, out) == [out / "01_a.ipynb"]
    assert sorted(p.name for p in out.iterdir()) == ["01_a.ipynb"] and stale_student_versions(source, out) == []
    nbformat.write(_notebook(new_code_cell("y = 2")), source / "01_a.ipynb")
    assert stale_student_versions(source, out) == ["01_a.ipynb"]


def test_committed_student_versions_are_up_to_date():
    """CI fails when a notebook changed and `make student` was not run."""
    stale = stale_student_versions(ROOT / "notebooks", ROOT / "student")
    assert not stale, f"student/ is out of date for {stale}: run `make student` and commit student/"


def test_student_folder_is_excluded_from_the_book_and_from_nbval():
    import tomllib
    import yaml

    assert "student" in yaml.safe_load((ROOT / "_config.yml").read_text())["exclude_patterns"]
    testpaths = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"]
    assert "student" not in testpaths and not any(path.startswith("student") for path in testpaths)
