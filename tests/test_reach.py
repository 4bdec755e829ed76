"""What reaches an exercise's key (``nclab.course.grading.reach``): a static look at a submission's own code,
one test per way of reaching nclab's own implementation, the notebook's given cells never counted, and the
grader's row and CSV scoring a flagged exercise 0 unless the instructor allows it. No kernel is started."""

from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nclab import exercises, ood
from nclab.course import cli
from nclab.course import grading as grade
from nclab.course.grading import grader, reach

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["03_energy", "03_covariance", "03_fpr95"]  # notebook 03's, graded together
IMPORTS = "import torch\nfrom nclab import ood\nfrom nclab.exercises import check, stand_in"
DEMO = "scores = ood.Energy().fit(None, weight=torch.eye(3)).score(torch.zeros(2, 3))\nprint(scores)"
TEMPLATE = [IMPORTS, DEMO]  # what every student received: the given cells use the library on purpose
HONEST = (
    "def energy_score(logits, T=1.0):\n    return T * torch.logsumexp(logits / T, dim=1)\n\n\n"
    "check('03_energy', energy_score)"
)


def _found(*cells: str, template=TEMPLATE, questions=QUESTIONS) -> dict[str, tuple[str, ...]]:
    """What the template's cells followed by ``cells`` reach (the markdown cell counts in the numbering)."""
    notebook = new_notebook(cells=[new_markdown_cell("# 03"), *map(new_code_cell, [*template, *cells])])
    return reach.find(notebook, questions, template).found


def _every(what: str, cell: int = 4, line: int = 1) -> dict[str, tuple[str, ...]]:
    return {q: (f"{what} (cell {cell}, line {line})",) for q in QUESTIONS}


# --- the keys ----------------------------------------------------------------------------------------------


def test_every_exercise_names_keys_nclab_has_and_only_05_etf_has_none():
    for question in exercises.EXERCISES:
        assert all(name.startswith("nclab.") for _, name in reach.keys(question) if "stand-in" not in name)
    assert [q for q in exercises.EXERCISES if not reach.keys(q)] == ["05_etf"]  # no function builds M from U
    assert reach.keys("03_energy") == ((ood.Energy, "nclab.ood.Energy"),)
    assert reach.keys("09_bounds")[0][1] == "nclab.pitfalls.ncc_accuracy_bounds"


def test_a_reference_that_nclab_does_not_have_is_named_with_its_exercise(monkeypatch):
    typo = exercises.Exercise("f", lambda answer: (True, ""), 1, references=("nclab.ood.Enrgy",))
    monkeypatch.setitem(exercises.EXERCISES, "99_typo", typo)
    with pytest.raises(ValueError, match="exercise 99_typo names the reference nclab.ood.Enrgy, which nclab does not"):
        reach.keys("99_typo")


# --- one test per way of reaching the key ------------------------------------------------------------------


def test_a_direct_import_and_each_use_of_it():
    found = _found("from nclab.ood import Energy\n\ndef energy_score(l, T=1.0):\n    return Energy(T).score(l)")
    assert found == {"03_energy": ("nclab.ood.Energy (cell 4, line 1)", "nclab.ood.Energy (cell 4, line 4)")}


def test_an_alias_and_another_path_to_the_same_object_are_one_reference():
    assert _found("import nclab.ood.detectors as d\nd.Energy") == {"03_energy": ("nclab.ood.Energy (cell 4, line 2)",)}
    assert _found("import nclab\nx = nclab.ood\ny = x\ny.Energy") == {
        "03_energy": ("nclab.ood.Energy (cell 4, line 4)",)
    }


def test_from_nclab_import_ood_as_o_then_o_energy():
    assert _found("from nclab import ood as o; o.Energy") == {"03_energy": ("nclab.ood.Energy (cell 4, line 1)",)}


def test_the_templates_own_alias_used_in_the_students_cell():
    found = _found("def energy_score(logits, T=1.0):\n    return ood.Energy(temperature=T).score(logits)")
    assert found == {"03_energy": ("nclab.ood.Energy (cell 4, line 2)",)}


def test_getattr_with_a_constant_is_resolved_and_with_a_computed_name_is_dynamic_access():
    assert _found("getattr(ood, 'Energy')") == {"03_energy": ("nclab.ood.Energy (cell 4, line 1)",)}
    assert _found('getattr(ood, "En" + "ergy")') == _every("dynamic access to nclab: getattr with a computed name")


def test_inspect_getsource_then_exec():
    found = _found("import inspect\nsource = inspect.getsource(ood.Energy)\nexec(source)")
    assert found["03_energy"][0] == "nclab.ood.Energy (cell 4, line 2)"
    for q in QUESTIONS:
        assert "dynamic access to nclab: inspect.getsource (cell 4, line 2)" in found[q]
        assert "dynamic access to nclab: exec of computed code (cell 4, line 3)" in found[q]


def test_importlib_import_module_and_what_it_returns():
    found = _found("import importlib\nm = importlib.import_module('nclab.ood')\nm.Energy")
    dynamic = "dynamic access to nclab: importlib.import_module('nclab.ood') (cell 4, line 2)"
    assert found == {**{q: (dynamic,) for q in QUESTIONS}, "03_energy": (dynamic, "nclab.ood.Energy (cell 4, line 3)")}


def test_dunder_import_of_nclab():
    assert _found("m = __import__('nclab')") == _every("dynamic access to nclab: __import__('nclab')")


def test_the_exercises_reference_stand_in_through_nclab_exercises():
    assert _found("import nclab.exercises as ex\nenergy_score = ex.EXERCISES['03_energy'].reference") == _every(
        "nclab.exercises.EXERCISES", line=2
    )
    found = _found("from nclab.exercises import notebook04\nprincipal_axes = notebook04.reference_principal_axes",
                   questions=["04_pca", "04_neco"])  # fmt: skip
    assert found["04_pca"][-1].startswith("nclab.exercises.notebook04.reference_principal_axes (the exercise's")
    assert found["04_neco"] == (
        "nclab.exercises.notebook04 (cell 4, line 1)",
        "nclab.exercises.notebook04 (cell 4, line 2)",
    )


def test_stand_ins_result_given_by_the_template_and_used_in_the_students_answer():
    template = ["from nclab.exercises import stand_in", "bounds = stand_in('09_bounds', ncc_accuracy_bounds_student)"]
    found = _found("def ncc_accuracy_bounds_student(r, a):\n    return bounds(r, a)", template=template,
                   questions=["09_bounds"])  # fmt: skip
    assert found == {"09_bounds": ("nclab.exercises.stand_in('09_bounds') (through `bounds`) (cell 4, line 2)",)}


def test_a_function_reads_the_globals_bound_after_it_as_the_grader_calls_it_after_every_cell():
    """Notebook 00 builds `reference = ufm.UFM(...)` in a given cell after the exercise's: an answer that
    steps it is caught though it never names nclab."""
    answer = "def ufm_step(H, W, b, *rest):\n    reference.H, reference.W, reference.b = H, W, b\n    reference.fit(1)"
    template = ["from nclab import ufm", "def ufm_step(H, W, b, *rest):\n    raise NotImplementedError()",
                "reference = ufm.UFM(num_classes=4, dim=8, per_class=10, seed=3)"]  # fmt: skip
    notebook = new_notebook(cells=[new_code_cell(source) for source in [template[0], answer, template[2]]])
    found = reach.find(notebook, ["00_ufm_step"], template).found
    assert found == {"00_ufm_step": tuple(f"nclab.ufm.UFM (through `reference`) (cell 2, line {n})" for n in (2, 3))}


def test_containers_subclasses_and_objects_built_from_a_key():
    assert _found("ood.DETECTORS['energy']") == {
        "03_energy": ("nclab.ood.DETECTORS (holds nclab.ood.Energy) (cell 4, line 1)",),
        "03_covariance": ("nclab.ood.DETECTORS (holds nclab.ood.Mahalanobis) (cell 4, line 1)",),
    }
    assert _found("from nclab import pitfalls\npitfalls.MahalanobisTotal") == {
        "03_covariance": ("nclab.pitfalls.MahalanobisTotal (a subclass of nclab.ood.Mahalanobis) (cell 4, line 2)",)
    }
    built = _found(
        "detector = ood.Mahalanobis()\ndef shared_covariance(h, y):\n    return detector.fit(h, y).covariance_"
    )
    assert built["03_covariance"][-1] == "nclab.ood.Mahalanobis (through `detector`) (cell 4, line 3)"
    fitted = _found(
        "fitted = ood.Mahalanobis().fit(h, y)", "def shared_covariance(h, y):\n    return fitted.covariance_"
    )
    assert fitted["03_covariance"][-1] == "nclab.ood.Mahalanobis (through `fitted`) (cell 5, line 2)"  # fit: self
    assert _found("modules = [ood]\nmodules[0].Energy") == {
        "03_energy": ("`.Energy` of an object the check cannot trace (cell 4, line 2)",)
    }


def test_ipython_magics_are_read_as_the_code_they_run():
    assert _found("%time e = ood.Energy()") == {"03_energy": ("nclab.ood.Energy (cell 4, line 1)",)}
    assert _found("%%time\nx = 1\ne = ood.Energy()") == {"03_energy": ("nclab.ood.Energy (cell 4, line 3)",)}
    assert _found("ood.Energy??") == {"03_energy": ("nclab.ood.Energy (cell 4, line 1)",)}


def _each(*whats: str, line: int = 1) -> dict[str, tuple[str, ...]]:
    return {q: tuple(f"dynamic access to nclab: {what} (cell 4, line {line})" for what in whats) for q in QUESTIONS}


@pytest.mark.parametrize("attribute", ["__getattribute__", "__dict__", "__class__", "__globals__", "__module__"])
def test_a_dunder_of_a_value_from_nclab_is_dynamic_access(attribute):
    assert _found(f"x = ood.{attribute}") == _each(f"`.{attribute}`")


def test_a_dunder_with_a_computed_name_or_of_an_object_built_by_nclab():
    assert _found('ood.__getattribute__("Ener" + "gy")') == _each("`.__getattribute__`")
    reached = _found("e = ood.Mahalanobis()\ne.__class__.__code__")
    assert reached["03_fpr95"] == tuple(
        f"dynamic access to nclab: `.{a}` (cell 4, line 2)" for a in ("__class__", "__code__")
    )


def test_builtins_getattr_under_every_name_is_getattr():
    computed = _each("getattr with a computed name")
    assert _found('__builtins__.getattr(ood, "Ener" + "gy")') == computed
    assert _found('import builtins\nbuiltins.getattr(ood, "Ener" + "gy")') == _each(
        "getattr with a computed name", line=2
    )
    assert _found('import builtins as b\nb.getattr(ood, "Ener" + "gy")') == _each(
        "getattr with a computed name", line=2
    )
    assert _found('object.__getattribute__(ood, "Ener" + "gy")') == computed
    assert _found("__builtins__.getattr(ood, 'Energy')") == {"03_energy": ("nclab.ood.Energy (cell 4, line 1)",)}


def test_a_getattr_family_callable_passed_as_a_value():
    found = _found('import functools, nclab\nfunctools.reduce(getattr, ["ood", "Energy"], nclab)')
    assert found == _each("getattr passed as a value", line=2)
    assert _found("list(map(vars, [ood]))") == _each("vars passed as a value")
    assert _found("import operator\nget = operator.attrgetter") == _each(
        "operator.attrgetter passed as a value", line=2
    )
    assert _found("load = __import__") == _each("__import__ passed as a value")


def test_sys_modules_gc_and_importlib_util_reach_every_module():
    found = _found('import sys\nfor name, m in sys.modules.items():\n    getattr(m, "Ener" + "gy")')
    assert found == _each("sys.modules", line=2)
    assert _found("import gc\nobjects = gc.get_objects()") == _each("gc.get_objects", line=2)
    assert _found("import importlib.util as u\nspec = u.find_spec(name)") == _each("importlib.util", line=2)
    followed = {"03_energy": ("nclab.ood.Energy (cell 4, line 2)",)}  # a constant key is read, not flagged
    assert _found("import sys\nsys.modules['nclab.ood'].Energy") == followed
    assert _found("import sys\nsys.modules.get('nclab.ood').Energy") == followed


def test_subclasses_of_anything_reach_the_reference_classes():
    assert _found("x = torch.nn.Module\nx.__base__.__subclasses__()") == _each("`.__subclasses__`", line=2)


def test_runpy_on_the_package():
    found = _found('import runpy\nrunpy.run_module("nclab.ood.detectors")')
    assert found == _each("runpy", "a string naming nclab's code ('nclab.ood.detectors')", line=2)
    assert _found("import runpy\nrunpy.run_path(path)") == _each("runpy", line=2)


def test_a_process_running_python_and_ipythons_shell_escapes():
    found = _found('import subprocess, sys\nsubprocess.run([sys.executable, "-c", "from nclab.ood import Energy"])')
    string = "a string naming nclab's code ('from nclab.ood import Energy')"
    assert found == _each(string, "subprocess.run running Python", line=2)
    assert _found('import os\nos.system("python3 train.py")') == _each("os.system running Python", line=2)
    assert _found('!python -c "import nclab.ood"') == _each(
        "a string naming nclab's code ('python -c \"import nclab.ood\"')", "get_ipython().system (a `!`) running Python"
    )
    assert _found("!{command}") == _each("get_ipython().system (a `!`) running a command the check cannot read")
    assert _found("%run nclab/ood/detectors.py") == _each("the IPython magic %run")
    assert _found("%load -r 1-40 nclab/ood/detectors.py") == _each("the IPython magic %load")


def test_a_string_naming_nclabs_code_is_dynamic_access():
    assert _found('x = "ncl" + "ab.ood"') == _each("a string naming nclab's code ('nclab.ood')")
    assert _found('x = b"import nclab"') == _each("a string naming nclab's code ('import nclab')")
    assert _found('m = f"nclab.{part}"') == _each("a string naming nclab's code ('nclab._')")
    assert _found("%cd nclab/ood") == _each("a string naming nclab's code ('nclab/ood')")


# --- what is not flagged, and what cannot stop the check ---------------------------------------------------


def test_an_honest_answer_beside_the_templates_own_use_of_the_reference_is_not_flagged():
    assert _found(HONEST) == {}
    edited = DEMO + "\nprint(scores.mean())"  # a given cell the student added a line to: its given lines stay given
    assert _found(HONEST, edited) == {}
    assert _found("def energy_score(ood, T=1.0):\n    bounds = ood\n    return bounds") == {}  # local names


def test_ordinary_student_code_and_messages_naming_nclab_are_not_flagged():
    assert _found('label = "my nclab answer"\nprint("mine vs nclab.ood.Energy:", 1.0, f"nclab.ood: {label}")') == {}
    assert _found('def f(x):\n    """As nclab.ood.Energy, by hand."""\n    return x.__class__.__name__') == {}
    assert _found("!pip install -q seaborn\n%matplotlib inline") == {}
    assert _found("import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'pip', 'install', name])") == {}
    assert _found("import subprocess\nsubprocess.run(['nvidia-smi'], check=True)") == {}
    assert _found("import sys\nif 'google.colab' in sys.modules:\n    sys.path.append('..')") == {}
    net = "class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\nprint(torch.__version__)"
    assert _found(net) == {}


def test_every_instructor_notebook_reaches_no_key_of_its_own():
    """The model answers (the instructor's notebooks, solutions in place) compute every answer themselves."""
    given = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        questions = grade.questions_for(path)
        notebook = nbformat.read(path, as_version=4)
        assert reach.find(notebook, questions, reach.template(questions, path)).found == {}, path.name
        if reach.find(notebook, questions, ()).found:  # without the template, the given cells would count
            given.append(path.name[:2])
    assert given == ["00", "01", "02", "03", "04", "05", "09"]


def test_a_cell_that_does_not_parse_is_noted_never_raised():
    notebook = new_notebook(cells=[new_code_cell("def f(:\n"), new_code_cell("x = " + "-" * 5000 + "1")])
    assert reach.find(notebook, QUESTIONS, TEMPLATE) == reach.Reach(
        {}, ("cell 1 not read (SyntaxError)", "cell 2 not read (RecursionError)")
    )
    deep = _found("x = ood" + ".e" * 900)  # parses and runs, but past what the walk follows: counted
    assert deep == _every("code the check could not follow (RecursionError)")


# --- the grader: row, CSV, feedback, --allow-reference -----------------------------------------------------


def _reached() -> reach.Reach:
    return reach.Reach({"03_energy": ("nclab.ood.Energy (cell 4, line 1)",)}, ("cell 9 not read (SyntaxError)",))


def test_a_flagged_exercise_scores_zero_by_default_and_keeps_its_points_when_allowed(tmp_path):
    report = {q: (True, "right") for q in QUESTIONS}
    path = tmp_path / "ada.ipynb"
    flagged = grade.scores.row(path, "ok", "", QUESTIONS, [], report, reached=_reached())
    assert flagged["03_energy_points"] == 0 and flagged["03_covariance_points"] == 2 and flagged["total"] == 4
    assert flagged["03_energy_feedback"].startswith("0 points: the submission reaches nclab's own implementation")
    assert "--allow-reference" in flagged["03_energy_feedback"] and flagged["03_energy_feedback"].endswith("right")
    assert flagged["reaches_key"] == "03_energy: nclab.ood.Energy (cell 4, line 1) | cell 9 not read (SyntaxError)"
    allowed = grade.scores.row(path, "ok", "", QUESTIONS, [], report, reached=_reached(), allow_reference=True)
    assert allowed["03_energy_points"] == 1 and allowed["total"] == 5
    assert "allowed by --allow-reference: nclab.ood.Energy (cell 4, line 1)" in allowed["03_energy_feedback"]
    assert list(flagged)[:4] == ["student", "status", "errors", "reaches_key"]
    grade.scores.write_csv(pd.DataFrame([flagged, allowed]), tmp_path / "scores.csv")
    back = grade.read_scores(tmp_path / "scores.csv")
    assert list(back["03_energy_points"]) == [0, 1] and back.loc[0, "reaches_key"] == flagged["reaches_key"]


def test_what_the_submission_wrote_reaches_the_csv_printable():
    reached = reach.Reach({"03_energy": ("dynamic access to nclab: importlib.import_module('nclab\x1b[2J\n')",)})
    row = grade.scores.row(Path("ada.ipynb"), "ok", "", QUESTIONS, [], {q: (False, "wrong") for q in QUESTIONS},
                           reached=reached)  # fmt: skip
    assert "\x1b" not in row["reaches_key"] and "\n" not in row["reaches_key"] and "\ufffd[2J" in row["reaches_key"]
    assert row["03_energy_feedback"].startswith("wrong (the submission also reaches")


def test_grade_submission_reads_the_whole_submission_against_the_courses_template(tmp_path, monkeypatch):
    """The kernel's part replaced by a report where every check passed: what decides is the static check."""
    questions = grade.questions_for("03_ood_detection.ipynb")
    student = nbformat.read(ROOT / "student" / "03_ood_detection.ipynb", as_version=4)
    student.cells.append(new_code_cell("from nclab import ood as o\nenergy_score = lambda l, T=1.0: o.Energy(T)"))
    student.cells.append(new_code_cell("def broken(:"))
    nbformat.write(student, tmp_path / "ada.ipynb")
    monkeypatch.setattr(grader, "execute", lambda *args: ("ok", [], {q: (True, "right") for q in questions}))
    row = grade.grade_submission(tmp_path / "ada.ipynb", questions)
    n = len(student.cells)
    assert row["reaches_key"] == f"03_energy: nclab.ood.Energy (cell {n - 1}, line 2) | cell {n} not read (SyntaxError)"
    assert row["03_energy_points"] == 0 and row["total"] == row["max"] - exercises.points("03_energy")
    row = grade.grade_submission(tmp_path / "ada.ipynb", questions, allow_reference=True)
    assert row["total"] == row["max"]
    monkeypatch.setattr(reach, "find", lambda *args: 1 / 0)  # the check itself fails: a note, never a stop
    row = grade.grade_submission(tmp_path / "ada.ipynb", questions)
    assert (
        row["total"] == row["max"]
        and "check for nclab's own implementation failed: ZeroDivisionError" in (row["errors"])
    )


def test_the_grade_command_passes_allow_reference(monkeypatch):
    seen = {}
    monkeypatch.setattr(grade, "grade", lambda *args, **options: seen.update(options))
    assert cli.main(["grade", "submissions", "03_ood_detection.ipynb", "--allow-reference"]) == 0
    assert seen["allow_reference"] is True
    cli.main(["grade", "submissions", "03_ood_detection.ipynb"])
    assert seen["allow_reference"] is False
