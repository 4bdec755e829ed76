"""Interpretation questions graded by hand: every question of every notebook has an answer cell for the
student, a model answer with its points and rubric for the instructor (never in the student version), a
row in its notebook's QUESTIONS table; the grader copies the written answers into the CSV, safely."""

import re
from pathlib import Path

import nbformat
import pytest
from markdown_it.renderer import RendererHTML
from myst_parser.config.main import MdParserConfig
from myst_parser.parsers.mdit import create_md_parser
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nclab import exercises
from nclab.course import grading as grade
from nclab.course import student

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MODEL = re.compile(r"^\*\*Model answer \((\d+) points?\)\.\*\*")


def _notebook(name: str) -> Path:
    return next(path for path in NOTEBOOKS if path.name.startswith(name[:3]))


@pytest.mark.parametrize("name", sorted(exercises.QUESTIONS))
def test_each_question_is_followed_by_an_answer_cell_and_a_model_answer_with_its_points(name):
    question = exercises.QUESTIONS[name]
    cells = nbformat.read(_notebook(name), as_version=4).cells
    at = [cell.get("id") for cell in cells].index(question.cell)
    asked, answer, model = cells[at : at + 3]
    assert asked.cell_type == "markdown" and re.search(r"\*\*(Questions?|Exercise \(graded by hand\))", asked.source)
    assert answer.cell_type == "markdown" and answer.metadata["nclab"] == {"answer": name}
    assert answer.source == grade.answers.ANSWER_PLACEHOLDER
    assert student.SOLUTION_ONLY not in answer.metadata.get("tags", [])
    assert model.metadata["tags"] == [student.SOLUTION_ONLY] and model.metadata["nclab"] == {"model_answer": name}
    points = MODEL.match(model.source)
    assert points and int(points.group(1)) == question.points == exercises.points(name)
    assert "*Rubric.*" in model.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_question_of_a_notebook_is_in_its_table_and_the_student_version_keeps_only_the_answer_cell(path):
    notebook = nbformat.read(path, as_version=4)
    asked = {
        cell.id for cell in notebook.cells if cell.cell_type == "markdown" and cell.source.startswith("**Question")
    }
    table = {question.cell: name for name, question in exercises.QUESTIONS.items() if name[:2] == path.name[:2]}
    assert asked <= set(table), f"questions without a row in QUESTIONS: {sorted(asked - set(table))}"
    assert table, "every notebook asks at least one question graded by hand"
    version = nbformat.read(ROOT / "student" / path.name, as_version=4)
    written = {cell.metadata.get("nclab", {}).get("answer") for cell in version.cells} - {None}
    assert written == set(table.values())
    assert not any(cell.metadata.get("nclab", {}).get("model_answer") for cell in version.cells)
    assert "Model answer" not in nbformat.writes(version) and "*Rubric.*" not in nbformat.writes(version)


_MYST = create_md_parser(
    MdParserConfig(enable_extensions={"dollarmath", "amsmath", "colon_fence", "deflist"}), RendererHTML
)


def _stray_dollars(source: str) -> list[str]:
    found = []

    def walk(tokens):
        for token in tokens:
            if token.children:
                walk(token.children)
            elif token.type == "text" and "$" in token.content:
                found.append(token.content)

    walk(_MYST.parse(source))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS + sorted((ROOT / "book").glob("*.md")), ids=lambda path: path.name)
def test_every_formula_parses_as_the_site_renders_it(path):
    """A `$$` block glued to a paragraph renders as `$` + inline math on the site: no `$` may be left as text."""
    if path.suffix == ".md":
        sources = {"chapter": path.read_text(encoding="utf-8")}
    else:
        cells = nbformat.read(path, as_version=4).cells
        sources = {cell.get("id"): cell.source for cell in cells if cell.cell_type == "markdown"}
    broken = {where: stray[0][:60] for where, source in sources.items() if (stray := _stray_dollars(source))}
    assert broken == {}, "a $ left as text (put $$ blocks on their own lines, with blank lines around them)"


# --- the grader's side ------------------------------------------------------------------------------------


def _answers_notebook(texts: dict) -> nbformat.NotebookNode:
    cells = [new_code_cell("x = 1")]
    for name, text in texts.items():
        cells.append(new_markdown_cell(text, metadata={"nclab": {"answer": name}}))
    return new_notebook(cells=cells)


def test_written_answers_are_read_by_metadata_and_made_safe_for_a_spreadsheet():
    hand = ["09_q_report", "01_q_flip_labels", "03_q_energy_sign"]
    notebook = _answers_notebook(
        {"09_q_report": '=HYPERLINK("http://evil", "click")', "01_q_flip_labels": grade.answers.ANSWER_PLACEHOLDER}
    )
    notebook.cells += [
        new_markdown_cell("a second cell for the report", metadata={"nclab": {"answer": "09_q_report"}}),
        new_markdown_cell("not an answer cell", metadata={"nclab": "09_q_report"}),  # metadata of the wrong shape
        new_code_cell("not markdown", metadata={"nclab": {"answer": "03_q_energy_sign"}}),
        new_markdown_cell("x" * 10_000, metadata={"nclab": {"answer": "unknown_question"}}),
    ]
    answers = grade.written_answers(notebook, hand)
    assert answers == {
        "09_q_report": '\'=HYPERLINK("http://evil", "click")\n\na second cell for the report',
        "01_q_flip_labels": "",  # left at the placeholder
        "03_q_energy_sign": grade.answers.ANSWER_CELL_MISSING,  # only markdown cells count
    }
    long = grade.written_answers(_answers_notebook({"09_q_report": "-" + "y" * 9_000}), ["09_q_report"])
    assert len(long["09_q_report"]) == grade.answers.MAX_ANSWER_CHARS + 1 and long["09_q_report"].startswith("'-")


def test_a_submission_gets_its_written_answers_and_empty_points_columns(tmp_path):
    path = tmp_path / "ada.ipynb"
    nbformat.write(_answers_notebook({"09_q_report": "E1: the sign was flipped."}), path)
    hand = grade.hand_questions_for("09_conventions_pitfalls.ipynb")
    assert hand == ["09_q_report"]
    row = grade.grade_submission(path, [], hand=hand, total_timeout=120)
    assert row["09_q_report_answer"] == "E1: the sign was flipped." and row["09_q_report_points"] == ""
    assert row["hand_max"] == 3
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json")
    row = grade.grade_submission(broken, [], hand=hand)
    assert row["status"] == "invalid-notebook" and row["09_q_report_answer"] == "" and row["hand_max"] == 3


def test_the_rubric_lists_every_question_with_its_points_and_model_answer():
    text = grade.rubric(ROOT / "notebooks" / "03_ood_detection.ipynb")
    names = grade.hand_questions_for("03_ood_detection.ipynb")
    assert len(names) >= 5
    for name in names:
        assert f"## {name} ({exercises.points(name)} points)" in text
    assert text.count("**Model answer (") == len(names) and text.count("*Rubric.*") == len(names)
    assert "(no model answer" not in text and "(question cell not found)" not in text


def test_hand_graded_points_per_notebook():
    per_notebook = {}
    for name, question in exercises.QUESTIONS.items():
        per_notebook[name[:2]] = per_notebook.get(name[:2], 0) + question.points
    assert sorted(per_notebook) == [path.name[:2] for path in NOTEBOOKS]
    with pytest.raises(ValueError, match="positive int"):
        exercises.Question("cell", 0)
    with pytest.raises(ValueError, match="defined in two notebooks"):
        exercises.core.merge_tables(exercises.EXERCISES, {"01_flip": exercises.QUESTIONS["09_q_report"]})
