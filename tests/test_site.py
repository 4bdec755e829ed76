"""The student site's source: the instructor notebooks' outputs under the student versions' code, the
chapters and table of contents pointing at student/, and a check that finds a solution on any built page."""

import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from nclab.course import site
from nclab.course.repository import Repository, badge, install_cell

SOLUTION = "    ### BEGIN SOLUTION\n    return torch.where(flips, images.flip(-1), images)\n    ### END SOLUTION"


def _course(root):
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n\nSee {doc}`../notebooks/01_x`.\n")
    (root / "_config.yml").write_text(
        "title: t\nexclude_patterns: [_build, student, tests]\nexecute:\n  execute_notebooks: force\n"
        "repository:\n  url: https://github.com/o/n\n  branch: main\n"
    )
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/01_x\n")
    (root / "notebooks").mkdir()
    notebook = new_notebook(
        cells=[
            new_markdown_cell(
                "# 01 · x\n\n[badge](https://colab.research.google.com/github/o/n/blob/main/notebooks/01_x.ipynb)"
            ),
            new_code_cell(f"def flip(images, flips):\n{SOLUTION}\n\n\ncheck('01_flip', flip)"),
            new_markdown_cell("**Model answer.** the secret", metadata={"tags": ["solution-only"]}),
            new_code_cell("print(1 + 1)"),
        ]
    )
    nbformat.write(notebook, root / "notebooks" / "01_x.ipynb")


def _executed(path):
    """A stand-in for executing: every code cell gets an output naming it."""
    notebook = nbformat.read(path, as_version=4)
    for k, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.outputs = [new_output("stream", name="stdout", text=f"output of cell {k}\n")]
            cell.execution_count = k
    return notebook


def test_the_student_site_shows_student_code_with_the_instructor_outputs(tmp_path):
    _course(tmp_path)
    out = site.stage_student_site(tmp_path, tmp_path / "_build" / "student-src", execute=_executed)
    staged = nbformat.read(out / "student" / "01_x.ipynb", as_version=4)
    code = [cell for cell in staged.cells if cell.cell_type == "code"]
    assert "# YOUR CODE HERE" in code[0].source and "torch.where" not in code[0].source
    assert code[0].outputs == [] and code[0].execution_count is None  # the check's ✅ would describe the answer
    assert code[1].outputs[0]["text"] == "output of cell 3\n"  # every other output is kept
    assert "the secret" not in nbformat.writes(staged)  # the solution-only cell is gone
    assert "blob/main/student/01_x.ipynb" in staged.cells[0].source
    config = yaml.safe_load((out / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off" and "student" not in config["exclude_patterns"]
    assert "file: student/01_x" in (out / "_toc.yml").read_text()
    assert "{doc}`../student/01_x`" in (out / "book" / "intro.md").read_text()
    assert (tmp_path / "notebooks" / "01_x.ipynb").exists()  # the instructor notebook is left alone


def test_with_a_students_repository_the_site_links_there_and_never_to_the_course(tmp_path):
    """A private course names its students' repository: the site's pages sit where the release puts the
    notebooks (notebooks/), and its badges, install cells and launch buttons open the students' repository."""
    _course(tmp_path)
    config = tmp_path / "_config.yml"
    config.write_text(config.read_text() + "nclab:\n  student_repository:\n    url: https://github.com/o/pupils\n")
    path = tmp_path / "notebooks" / "01_x.ipynb"
    notebook = nbformat.read(path, as_version=4)  # a course notebook opens with its badge, then the install cell
    notebook.cells[0].source = f"# 01 · x\n\n{badge(Repository('o/n'), 'notebooks', '01_x.ipynb')}"
    notebook.cells.insert(1, new_code_cell(install_cell(Repository("o/n"))))
    nbformat.write(notebook, path)
    out = site.stage_student_site(tmp_path, tmp_path / "_build" / "student-src", execute=_executed)
    staged = nbformat.read(out / "notebooks" / "01_x.ipynb", as_version=4)
    assert not (out / "student").exists()
    assert "github/o/pupils/blob/main/notebooks/01_x.ipynb" in staged.cells[0].source
    assert "git+https://github.com/o/pupils@main" in staged.cells[1].source
    assert "o/n/" not in nbformat.writes(staged) and "o/n@" not in nbformat.writes(staged)
    assert "# YOUR CODE HERE" in staged.cells[2].source
    assert yaml.safe_load((out / "_config.yml").read_text())["repository"]["url"] == "https://github.com/o/pupils"
    assert "file: notebooks/01_x" in (out / "_toc.yml").read_text()
    assert "{doc}`../notebooks/01_x`" in (out / "book" / "intro.md").read_text()


def test_solution_leaks_finds_highlighted_solution_code_on_a_page(tmp_path):
    _course(tmp_path)
    html_dir = tmp_path / "html"
    html_dir.mkdir()
    (html_dir / "student.html").write_text(
        '<div class="highlight"><pre><span class="k">def</span> flip(images, flips):\n'
        '    <span class="c1"># YOUR CODE HERE</span>\n'
        '    <span class="k">raise</span> NotImplementedError()</pre></div>'
    )
    assert site.solution_leaks(html_dir, tmp_path / "notebooks") == []
    (html_dir / "instructor.html").write_text(
        '<pre><span class="k">return</span> <span class="n">torch</span><span class="o">.</span>where(flips, '
        'images.flip(<span class="o">-</span>1), images)</pre>'
    )
    leaks = site.solution_leaks(html_dir, tmp_path / "notebooks")
    assert len(leaks) == 1 and leaks[0].startswith("instructor.html: solution of 01_x.ipynb")


def test_every_solution_block_of_the_course_is_known_to_the_check():
    blocks = site.solution_blocks("notebooks")
    toc = yaml.safe_load(Path("_toc.yml").read_text())
    chapters = [chapter for part in toc["parts"] for chapter in part["chapters"]]
    notebooks = [section["file"] for chapter in chapters for section in chapter.get("sections", [])]
    assert len(blocks) == len(notebooks) and all(blocks.values())  # every notebook: exercises, each solved
    assert sum(len(found) for found in blocks.values()) >= 25  # at least one block per exercise


def test_solution_leaks_reads_the_notebooks_the_site_offers_for_download(tmp_path):
    _course(tmp_path)
    sources = tmp_path / "html" / "_sources" / "notebooks"
    sources.mkdir(parents=True)
    shutil.copy(tmp_path / "notebooks" / "01_x.ipynb", sources / "01_x.ipynb")
    leaks = site.solution_leaks(tmp_path / "html", tmp_path / "notebooks")
    assert leaks == [
        "_sources/notebooks/01_x.ipynb: solution of 01_x.ipynb: 'return torch.where(flips, images.flip(-1), images)'…"
    ]


def test_staging_never_deletes_a_folder_it_did_not_write_and_needs_a_course(tmp_path):
    _course(tmp_path)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not a staged student site"):
        site.stage_student_site(tmp_path, tmp_path / "precious", execute=_executed)
    assert (tmp_path / "precious" / "thesis.tex").exists()
    with pytest.raises(ValueError, match="not a staged student site"):
        site.stage_student_site(tmp_path, tmp_path, execute=_executed)  # the course root itself
    staged = site.stage_student_site(tmp_path, tmp_path / "staged", execute=_executed)
    assert site.stage_student_site(tmp_path, staged, execute=_executed) == staged  # its own folder: rewritten
    with pytest.raises(FileNotFoundError, match="lacks book, notebooks"):
        site.stage_student_site(tmp_path / "precious", tmp_path / "other", execute=_executed)


def test_a_leak_check_that_finds_nothing_to_read_fails(tmp_path):
    _course(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="nothing to check: 0 pages"):
        site.solution_leaks(tmp_path / "empty", tmp_path / "notebooks")


def test_model_answers_are_found_on_a_page_that_shows_them_and_not_in_the_student_version(tmp_path):
    import html

    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    markdown = create_md_parser(MdParserConfig(enable_extensions={"dollarmath", "amsmath"}), RendererHTML)

    def page(notebook):  # what a site shows: markdown rendered as MyST renders it, code highlighted
        return "\n".join(
            markdown.render(cell.source)
            if cell.cell_type == "markdown"
            else "<pre>"
            + " ".join(f'<span class="n">{html.escape(word)}</span>' for word in cell.source.split(" "))
            + "</pre>"
            for cell in notebook.cells
        )

    root = Path(__file__).resolve().parents[1]
    fragments = site.model_answer_fragments(root / "notebooks")
    assert all(fragments.values()), "every notebook has model answers, each with text the check can look for"
    (tmp_path / "notebooks").mkdir()
    shutil.copy(root / "notebooks" / "03_ood_detection.ipynb", tmp_path / "notebooks")
    for version in ("notebooks", "student"):
        (tmp_path / "html").mkdir(exist_ok=True)
        (tmp_path / "html" / f"{version}.html").write_text(
            page(nbformat.read(root / version / "03_ood_detection.ipynb", 4))
        )
    leaks = site.solution_leaks(tmp_path / "html", tmp_path / "notebooks")
    assert leaks and all(leak.startswith("notebooks.html: ") for leak in leaks)
    assert any(": model answer of 03_ood_detection.ipynb: " in leak for leak in leaks)
    assert any(": solution of 03_ood_detection.ipynb: " in leak for leak in leaks)


def test_the_student_site_leaves_out_the_instructor_part(tmp_path):
    _course(tmp_path)
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: Course\n    chapters:\n      - file: notebooks/01_x\n"
        f"  - caption: {site.INSTRUCTOR_PART}\n    chapters:\n      - file: book/instructor_guide\n"
    )
    out = site.stage_student_site(tmp_path, tmp_path / "staged", execute=_executed)
    toc = yaml.safe_load((out / "_toc.yml").read_text())
    assert toc["parts"] == [{"caption": "Course", "chapters": [{"file": "student/01_x"}]}]


def test_no_student_page_cites_the_spec_that_students_cannot_see():
    """``../shared/SPEC.md`` is the developers' file: a page a student reads cites a chapter, a notebook or the
    glossary instead (the instructor guide, off the student site, may name it)."""
    root = Path(__file__).resolve().parents[1]
    chapters = [p for p in (root / "book").glob("*.md") if p.stem != "instructor_guide"]
    pages = {p.name: p.read_text(encoding="utf-8") for p in chapters}
    for path in (root / "student").glob("*.ipynb"):
        pages[path.name] = "\n".join(cell.source for cell in nbformat.read(path, 4).cells)
    assert len(pages) > 20
    assert [name for name, text in pages.items() if re.search(r"\bSPEC\b", text)] == []


def test_the_pages_workflow_builds_every_push_and_deploys_the_configured_branch_with_cpu_torch():
    """A fork on another branch changes `_config.yml` only; the runner installs torch's CPU build with pip's
    cache, and every action is a major that runs on Node 24 (Node 20 left GitHub's runners in 2026)."""
    root = Path(__file__).resolve().parents[1]
    workflow = yaml.safe_load((root / ".github" / "workflows" / "pages.yml").read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert triggers["push"] is None  # every branch: the deploy job decides
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    assert "download.pytorch.org/whl/cpu" in build["env"]["PIP_INDEX_URL"]
    assert build["env"]["PIP_EXTRA_INDEX_URL"] == "https://pypi.org/simple"
    steps = {step.get("uses", step.get("name")).split("@")[0]: step for step in build["steps"] + deploy["steps"]}
    assert steps["actions/setup-python"]["with"]["cache"] == "pip"
    assert int(steps["actions/setup-node"]["with"]["node-version"]) >= 22
    node24 = {"actions/checkout": 5, "actions/setup-python": 6, "actions/setup-node": 5, "actions/configure-pages": 6,
              "actions/upload-pages-artifact": 5, "actions/deploy-pages": 5}  # fmt: skip
    used = {
        s["uses"].split("@")[0]: int(s["uses"].split("@v")[1]) for s in build["steps"] + deploy["steps"] if "uses" in s
    }
    assert used == node24
    assert "repository().branch" in steps["The branch the course is published from (_config.yml)"]["run"]
    assert deploy["if"] == "github.ref_name == needs.build.outputs.branch && needs.build.outputs.students != 'yes'"
    publish = steps["Publish the site to the students' repository (gh-pages)"]
    assert publish["env"]["TOKEN"] == "${{ secrets.STUDENT_SITE_TOKEN }}"
    assert "student_repository().slug" in publish["run"]
    assert "steps.students.outputs.push == 'yes'" in publish["if"]
