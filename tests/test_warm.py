"""The cache warmed once before grading (``nclab.course.grading.warm``): the instructor's notebook runs once per
notebook, profile and version, a failing one stops the grading before anyone is graded, and without it the
grader says the command to run."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nclab.course.grading import warm


def _instructor(tmp_path, source):
    path = tmp_path / "notebooks" / "05_layerwise_nc_control.ipynb"
    path.parent.mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell(source)]), path)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NCLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_instructors_notebook_runs_once_in_the_profile_asked(tmp_path, cache, monkeypatch):
    # the "training": the kernel appends its profile to a file in the cache, as a run would land there
    source = "import os, pathlib\nwith open(pathlib.Path(os.environ['NCLAB_CACHE']) / 'ran', 'a') as f:\n"
    source += "    f.write(os.environ['NCLAB_PROFILE'] + '\\n')"
    path = _instructor(tmp_path, f"import os\nos.makedirs(os.environ['NCLAB_CACHE'], exist_ok=True)\n{source}")
    monkeypatch.setattr(warm, "instructor_notebook", lambda notebook: path)
    said = []
    assert warm.warm_cache(path.name, "smoke", said.append) is True
    assert warm.warm_cache(path.name, "smoke", said.append) is False  # the mark: not again
    assert (cache / "ran").read_text() == "smoke\n"
    assert warm.warm_mark(path.name, "smoke").is_file() and not warm.warm_mark(path.name, "quick").exists()
    assert said[0].startswith("warming the cache: running 05_layerwise_nc_control.ipynb once (smoke profile)")


def test_a_failing_notebook_stops_before_anyone_is_graded_and_leaves_no_mark(tmp_path, cache, monkeypatch):
    path = _instructor(tmp_path, "raise ValueError('no data')")
    monkeypatch.setattr(warm, "instructor_notebook", lambda notebook: path)
    with pytest.raises(RuntimeError, match="05_layerwise_nc_control.ipynb: a cell raised ValueError: no data"):
        warm.warm_cache(path.name, "smoke", lambda line: None)
    assert not warm.warm_mark(path.name, "smoke").exists()


def test_without_the_instructors_notebook_it_says_what_to_run(cache, monkeypatch):
    monkeypatch.setattr(warm, "instructor_notebook", lambda notebook: None)
    said = []
    assert warm.warm_cache("07_long_tailed_alignment.ipynb", "quick", said.append) is False
    assert "`NCLAB_PROFILE=quick nclab train --notebook 07`" in said[0]
