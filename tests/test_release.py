"""The students' repository (``nclab release``): the student course and nothing of the instructor's, its badges
and install cells pointing at the students' repository, and every answer that slips in caught, naming the file."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nclab.course import release as release_module
from nclab.course.release import LIBRARY_ANSWERS, release_leaks, write_release
from nclab.course.repository import (
    Repository,
    RunPack,
    badge,
    install_cell,
    repository,
    run_pack,
    student_repository,
)
from nclab.course.student import SolutionLeak, write_student_versions

ROOT = Path(__file__).resolve().parents[1]
COURSE, STUDENTS = Repository("o/course", "main"), Repository("o/course-student", "spring")
SOLUTION = "    ### BEGIN SOLUTION\n    return torch.where(flips, images.flip(-1), images)\n    ### END SOLUTION"
ANSWER = "Flipping the whole batch at once keeps every image on the GPU, which is why the loader is fast."
CONFIG = (
    "title: A course\nrepository:\n  url: https://github.com/o/course\n  branch: main\n"
    "nclab:\n  student_repository:\n    url: https://github.com/o/course-student\n    branch: spring\n"
    "  runs:\n    url: https://example.org/pack\n"
)


def _course(root: Path) -> Path:
    """A small course: one notebook with a solution block and a model answer, a chapter, the instructor guide."""
    (root / "nclab").mkdir(parents=True)
    (root / "nclab" / "__init__.py").write_text('"""A stand-in package."""\n')
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n\nSee {doc}`../notebooks/01_x`.\n")
    (root / "book" / "instructor_guide.md").write_text("# Guide\n\nGrade with the rubric.\n")
    (root / "_config.yml").write_text(CONFIG)
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: Course\n    chapters:\n      - file: notebooks/01_x\n"
        "  - caption: For instructors\n    chapters:\n      - file: book/instructor_guide\n"
    )
    for name, text in [("requirements.txt", "nbformat\n"), ("pyproject.toml", "[project]\nname = 'nclab'\n"),
                       ("LICENSE", "MIT License\n"), ("LICENSE-CONTENT", "CC BY 4.0\n"),
                       ("CITATION.cff", "cff-version: 1.2.0\n")]:  # fmt: skip
        (root / name).write_text(text)
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("def test_grader_sees_the_answer():\n    assert 2 + 2 == 4\n")
    (root / "notebooks").mkdir()
    notebook = new_notebook(
        cells=[
            new_markdown_cell(f"# 01 · x\n\n{badge(COURSE, 'notebooks', '01_x.ipynb')}"),
            new_code_cell(install_cell(COURSE)),
            new_code_cell(f"def flip(images, flips):\n{SOLUTION}\n\n\ncheck('01_flip', flip)"),
            new_markdown_cell(f"**Model answer.** {ANSWER}", metadata={"tags": ["solution-only"]}),
        ]
    )
    nbformat.write(notebook, root / "notebooks" / "01_x.ipynb")
    write_student_versions(root / "notebooks", root / "student")
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_small_course_is_released_as_students_see_it(tmp_path):
    root = _course(tmp_path / "course")
    out = write_release(root, tmp_path / "release")
    assert sorted(_files(out)) == [
        ".gitignore", ".nclab-release", "CITATION.cff", "LICENSE", "LICENSE-CONTENT", "README.md", "_config.yml",
        "_toc.yml", "book/intro.md", "nclab/__init__.py", "notebooks/01_x.ipynb", "pyproject.toml", "requirements.txt",
    ]  # fmt: skip
    cells = nbformat.read(out / "notebooks" / "01_x.ipynb", 4).cells
    assert (
        "https://colab.research.google.com/github/o/course-student/blob/spring/notebooks/01_x.ipynb" in cells[0].source
    )
    assert cells[1].source == install_cell(STUDENTS, RunPack("https://example.org/pack", "full"))  # the pack too
    assert 'os.environ.setdefault("NCLAB_RUNS_URL", "https://example.org/pack")' in cells[1].source
    assert cells[
        2
    ].source == "def flip(images, flips):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n\n" + (
        "check('01_flip', flip)"
    )
    assert len(cells) == 3  # the model answer is gone
    config = yaml.safe_load((out / "_config.yml").read_text())
    assert config["repository"] == {"url": "https://github.com/o/course-student", "branch": "spring"}
    assert config["nclab"] == {"runs": {"url": "https://example.org/pack"}}  # the run pack, not the course's own
    assert config["title"] == "A course"
    toc = yaml.safe_load((out / "_toc.yml").read_text())
    assert toc["parts"] == [{"caption": "Course", "chapters": [{"file": "notebooks/01_x"}]}]
    readme = (out / "README.md").read_text()
    assert readme.startswith("# A course\n")
    assert (
        "[01 · x](https://colab.research.google.com/github/o/course-student/blob/spring/notebooks/01_x.ipynb)" in readme
    )
    assert "jupyter-book build ." in readme


def test_a_second_release_replaces_the_first_and_a_leak_leaves_it_as_it_was(tmp_path):
    root = _course(tmp_path / "course")
    out = write_release(root, tmp_path / "build" / "release")
    (out / "stray.txt").write_text("left by hand")
    first = _files(write_release(root, out))
    assert "stray.txt" not in first  # replaced whole
    chapter = root / "book" / "intro.md"
    chapter.write_text(chapter.read_text() + "\nHint: `return torch.where(flips, images.flip(-1), images)`\n")
    with pytest.raises(SolutionLeak, match=r"book/intro\.md: solution of 01_x\.ipynb: 'return torch\.where") as error:
        write_release(root, out)
    assert "is left as it was" in str(error.value)
    assert _files(out) == first and [path.name for path in out.parent.iterdir()] == ["release"]  # no temp left


def test_the_command_names_the_leaking_file_and_a_missing_student_repository(tmp_path):
    root = _course(tmp_path / "course")
    student = root / "student" / "01_x.ipynb"  # a hand-edited student version with the model answer in it
    notebook = nbformat.read(student, 4)
    notebook.cells.append(new_markdown_cell(f"Answer: *{ANSWER}*"))
    nbformat.write(notebook, student)
    command = [sys.executable, "-m", "nclab", "release", "--config", str(root / "_config.yml")]
    done = subprocess.run([*command, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "student/ is out of date (01_x.ipynb)" in done.stderr  # stale: refused first
    write_student_versions(root / "notebooks", root / "student")
    (root / "book" / "intro.md").write_text(f"# Intro\n\n{ANSWER}\n")
    done = subprocess.run([*command, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "nclab release: error: the release would give students answers" in done.stderr
    assert "  book/intro.md: model answer of 01_x.ipynb: 'Flipping the whole batch" in done.stderr
    assert not (tmp_path / "out").exists()
    (root / "_config.yml").write_text(CONFIG.split("nclab:")[0])
    done = subprocess.run([*command, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "name the students' repository under nclab: student_repository" in done.stderr


@pytest.mark.parametrize(
    "entry, error",
    [
        ("url: https://gitlab.com/o/s", "nclab.student_repository.url must be https://github.com/OWNER/NAME"),
        ("url: https://github.com/o/s\n    branch: 2027", "nclab.student_repository.branch must be text: quote it"),
        ("url: https://github.com/o/s\n    branch: a/b", "cannot carry"),
        ("url: https://github.com/o", "owner/name"),
    ],
)
def test_a_bad_student_repository_is_refused_clearly(tmp_path, entry, error):
    config = tmp_path / "_config.yml"
    config.write_text(f"nclab:\n  student_repository:\n    {entry}\n")
    with pytest.raises(ValueError, match=error):
        student_repository(config)


def test_the_students_repository_must_not_be_the_course_repository(tmp_path):
    root = _course(tmp_path / "course")
    (root / "_config.yml").write_text(CONFIG.replace("o/course-student", "O/Course.git"))
    with pytest.raises(ValueError, match="nclab.student_repository is the course repository o/course"):
        write_release(root, tmp_path / "release")


def test_a_release_never_replaces_the_course_or_a_folder_it_did_not_write(tmp_path):
    root = _course(tmp_path / "course")
    for out in (root, tmp_path, root / "nclab" / "release", root / "notebooks", root / "student"):
        with pytest.raises(ValueError, match="would replace the course's own files"):
            write_release(root, out)
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="is not a release written by nclab release"):
        write_release(root, tmp_path / "thesis")
    clone = write_release(root, tmp_path / "clone")
    (clone / ".git").mkdir()
    with pytest.raises(ValueError, match="is a git clone: release into _build/release, then copy it over"):
        write_release(root, clone)
    assert (tmp_path / "thesis" / "thesis.tex").exists() and (clone / ".git").is_dir()
    assert (root / "notebooks" / "01_x.ipynb").exists()


def test_every_kind_of_leak_is_found_naming_the_file(tmp_path):
    root = _course(tmp_path / "course")
    out = write_release(root, tmp_path / "release")
    assert release_leaks(out, root) == []
    (out / "book" / "instructor_guide.md").write_text("# Guide, edited\n")
    shutil.copy(root / "tests" / "test_x.py", out / "nclab" / "checks.py")
    (out / "nclab" / "links.py").write_text("URL = 'https://github.com/o/course/blob/main/notebooks'\n")
    notebook = nbformat.read(out / "notebooks" / "01_x.ipynb", 4)
    notebook.cells[2].source = f"def flip(images, flips):\n{SOLUTION}"  # the markers too: found all the same
    nbformat.write(notebook, out / "notebooks" / "01_x.ipynb")
    assert release_leaks(out, root) == [
        "book/instructor_guide.md: an instructor-only chapter (the 'For instructors' part of _toc.yml)",
        "nclab/checks.py: a copy of the instructor-only tests/test_x.py",
        "nclab/links.py: names the course repository o/course, which students cannot open",
        "notebooks/01_x.ipynb: solution of 01_x.ipynb: 'return torch.where(flips, images.flip(-1), images)'…",
    ]


@pytest.mark.parametrize(
    "text, leaks",
    [
        ("git clone https://github.com/o/course.git\n", True),
        ("git clone git@github.com:o/course.git\n", True),
        ("The notebooks come from github.com/o/course.\n", True),
        ("Fork O/Course: it is the instructors'.\n", True),
        ("Clone https://github.com/o/course-student.git\n", False),
        ("See o/course.student and o/course.github.io, or o/courses.\n", False),
    ],
    ids=["https .git", "ssh .git", "end of sentence", "other case", "students' repository", "longer names"],
)
def test_the_course_repository_is_found_in_every_form_but_not_in_longer_names(tmp_path, text, leaks):
    root = _course(tmp_path / "course")
    out = write_release(root, tmp_path / "release")
    (out / "README.md").write_text(text)
    named = "README.md: names the course repository o/course, which students cannot open"
    assert release_leaks(out, root) == ([named] if leaks else [])


# The course itself: one release, read by the tests below.


@pytest.fixture(scope="module")
def course_release(tmp_path_factory):
    return write_release(ROOT, tmp_path_factory.mktemp("course") / "release")


def test_the_course_release_holds_the_student_course_and_none_of_the_instructors(course_release):
    files = _files(course_release)
    assert {name.split("/")[0] for name in files} == {
        ".gitignore", ".nclab-release", "CITATION.cff", "LICENSE", "LICENSE-CONTENT", "README.md", "_config.yml",
        "_toc.yml", "book", "nclab", "notebooks", "pyproject.toml", "requirements.txt",
    }  # fmt: skip
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    chapters = sorted(path.name for path in (ROOT / "book").iterdir() if path.name != "instructor_guide.md")
    assert sorted(name.split("/")[1] for name in files if name.startswith("book/")) == chapters
    assert sorted(path.name for path in (course_release / "notebooks").iterdir()) == sorted(
        path.name for path in (ROOT / "student").glob("*.ipynb")
    )
    pages = [name for name in files if name.startswith(("notebooks/", "book/"))]
    assert len(pages) > 20 and not [name for name in pages if b"BEGIN SOLUTION" in files[name]]
    assert "instructor_guide" not in files["_toc.yml"].decode() and "For instructors" not in files["_toc.yml"].decode()
    assert release_leaks(course_release, ROOT) == []


def test_the_course_releases_notebooks_open_and_install_from_the_students_repository(course_release):
    students, course = student_repository(ROOT / "_config.yml"), repository(ROOT / "_config.yml")
    assert students.slug != course.slug
    for path in sorted((ROOT / "student").glob("*.ipynb")):
        released = nbformat.read(course_release / "notebooks" / path.name, 4).cells
        assert badge(students, "notebooks", path.name) in released[0].source
        assert released[1].source == install_cell(students, run_pack(ROOT / "_config.yml"))
        assert [cell.source for cell in released[2:]] == [cell.source for cell in nbformat.read(path, 4).cells[2:]]
    config = yaml.safe_load((course_release / "_config.yml").read_text())
    assert config["repository"]["url"] == f"https://github.com/{students.slug}"
    assert "student_repository" not in config.get("nclab", {})


def test_the_library_overlaps_with_the_exercises_are_exactly_the_listed_ones(course_release, monkeypatch):
    """The package computes a few exercises' answers (what stand_in lends): each listed, none unlisted, none stale."""
    monkeypatch.setattr(release_module, "LIBRARY_ANSWERS", {})
    leaks = release_leaks(course_release, ROOT)
    found = {(leak.split(": ")[0], leak.split(": solution of ")[1].split(":")[0]) for leak in leaks}
    assert all(": solution of " in leak for leak in leaks)
    assert found == {(name, notebook) for name, notebooks in LIBRARY_ANSWERS.items() for notebook in notebooks}


def install_in_fresh_venv(release: Path, venv: Path) -> Path:
    """``release`` installed (not editable) into a fresh virtual environment at ``venv``, with a Jupyter kernel
    "release" that runs its Python; its site-packages. The dependencies (torch is GBs) come from the course's
    .venv, listed after the fresh environment's own site-packages by a .pth file."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip())
    ours = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "course-dependencies.pth").write_text("\n".join(ours) + "\n")
    install = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", release]
    subprocess.run(install, check=True, timeout=300)
    kernel = venv / "share" / "jupyter" / "kernels" / "release"
    kernel.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (kernel / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "release", "language": "python"}))
    return site


def execute_in_venv(venv: Path, notebook: Path, executed: Path, env: dict[str, str | None]) -> tuple[list, str, str]:
    """Execute ``notebook`` to its end in the "release" kernel of ``venv`` (working directory: its folder), with
    this process's environment but PYTHONPATH and VIRTUAL_ENV, updated by ``env`` (None: unset), and write it to
    ``executed``. A last cell is added that prints where nclab was imported from and the kernel's Python.
    Returns the executed cells, that file of nclab and that Python."""
    script = (
        "import sys, nbformat\nfrom nbclient import NotebookClient\nnotebook = nbformat.read(sys.argv[1], 4)\n"
        "notebook.cells.append(nbformat.v4.new_code_cell('import json, sys, nclab\\n"
        "print(json.dumps([nclab.__file__, sys.executable]))'))\n"
        "NotebookClient(notebook, timeout=600, kernel_name='release', resources={'metadata': {'path': sys.argv[2]}})"
        ".execute()\nnbformat.write(notebook, sys.argv[3])\n"
    )
    inherited = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env = inherited | {"JUPYTER_PATH": str(venv / "share" / "jupyter")} | env
    env = {key: value for key, value in env.items() if value is not None}
    done = subprocess.run(
        [venv / "bin" / "python", "-c", script, notebook, notebook.parent, executed],
        cwd=notebook.parent, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cells = nbformat.read(executed, 4).cells
    imported, kernel_python = json.loads(cells[-1].outputs[0]["text"])
    return cells, imported, kernel_python


@pytest.mark.slow
def test_a_student_installs_the_release_and_runs_a_notebook_to_the_end(course_release, tmp_path):
    """The release, installed (not editable) into a fresh virtual environment, runs notebook 00 to its last cell
    in that environment's kernel, importing nclab from there."""
    release = shutil.copytree(course_release, tmp_path / "release")
    venv = tmp_path / "venv"
    site = install_in_fresh_venv(release, venv)
    assert (site / "nclab" / "__init__.py").is_file() and not list(site.glob("__editable__*nclab*"))
    env = {"NCLAB_PROFILE": "smoke", "NCLAB_CACHE": str(tmp_path / "cache"), "NCLAB_DATA": str(tmp_path / "data")}
    notebook = release / "notebooks" / "00_why_collapse_ufm.ipynb"
    cells, imported, kernel_python = execute_in_venv(venv, notebook, tmp_path / "executed.ipynb", env)
    assert Path(imported) == site / "nclab" / "__init__.py" and ROOT not in Path(imported).parents
    assert Path(kernel_python).parent == venv / "bin"
    printed = "".join(output.get("text", "") for cell in cells if cell.cell_type == "code" for output in cell.outputs)
    assert "is not answered yet, so the cells below use nclab's own computation" in printed
