"""Static checks of the course files: every notebook is in the book, opens with prose and a Colab badge
pointing at itself, installs nclab on Colab only, and is committed without outputs."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPOSITORY = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _toc_files():
    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return set(walk(yaml.safe_load((ROOT / "_toc.yml").read_text())))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_the_book(path):
    assert f"notebooks/{path.stem}" in _toc_files()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_title_and_its_own_colab_badge(path):
    first = _cells(path)[0]
    text = "".join(first["source"])
    assert first["cell_type"] == "markdown" and text.startswith("# ")
    repo = REPOSITORY.removeprefix("https://github.com/")
    assert f"colab.research.google.com/github/{repo}/blob/main/notebooks/{path.name}" in text
    assert "Learning goals" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_installs_only_on_colab(path):
    install = "".join(_cells(path)[1]["source"])
    assert '"google.colab" in sys.modules' in install and REPOSITORY.removeprefix("https://") in install
    assert re.search(r"^if .google\.colab. in sys\.modules:\n(    .*\n|\s*\n)*", install, re.M)
    assert not re.search(r"^(%|!)pip", install, re.M), "pip must run inside the Colab-only branch"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_is_hidden_on_the_site_and_nbval_directives_are_tags(path):
    cells = _cells(path)
    assert "remove-cell" in cells[1].get("metadata", {}).get("tags", [])  # kept in the notebook, not shown
    for cell in cells:
        source = "".join(cell["source"])
        assert "NBVAL_" not in source, "nbval directives go in cell tags, not in comments the site prints"
        for tag in cell.get("metadata", {}).get("tags", []):
            assert tag in {
                "remove-cell",
                "nbval-ignore-output",
                "nbval-skip",
                "solution-only",
                "hide-input",
                "hide-output",
                "remove-input",
                "remove-output",
            }, tag


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_call_the_library_for_tables_and_banners(path):
    code = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    assert "OFFLINE STAND-IN" not in code, "the stand-in note is the library's (nclab.data.load)"
    assert "in ood.DETECTORS.items()" not in code, "fit every detector with nclab.tables.fit_detectors"
    assert "torch.quantile" not in code and "model.fc" not in code and re.search(r"\bP = ", code) is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None


def test_book_chapters_exist():
    for file in _toc_files():
        assert any((ROOT / f"{file}{suffix}").exists() for suffix in (".md", ".ipynb")), file


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_defines_no_helper_functions(path):
    """Notebooks call, the library computes: the only functions a notebook defines are its exercises'
    answers (in their solution cells); a helper a notebook needs belongs in nclab, tested."""
    import ast

    helpers = []
    for cell in _cells(path):
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "### BEGIN SOLUTION" in source:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:  # IPython syntax (a magic): look for a def at the start of a line
            helpers += re.findall(r"^\s*(?:async\s+)?def (\w+)", source, re.M)
            continue
        defined = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        helpers += [node.name for node in ast.walk(tree) if isinstance(node, defined)]
    assert not helpers, f"{path.name} defines {helpers}: move them into nclab"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_setup_cell_is_imports_and_one_library_call(path):
    import ast

    setup = next("".join(c["source"]) for c in _cells(path)[2:4] if c["cell_type"] == "code")
    statements = [s for s in ast.parse(setup).body if not isinstance(s, ast.Import | ast.ImportFrom)]
    assert [ast.unparse(s) for s in statements] == ["profile, device = config.setup()"], path.name
