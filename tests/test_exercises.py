"""The checks students see: the solutions pass, typical mistakes get a specific ❌, nothing raises; and the
package's layout: one table per notebook carrying the points, merged without duplicates or import circles."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nclab import data, exercises
from nclab.exercises import EXERCISES as EXERCISES
from nclab.exercises import (
    NOT_ANSWERED,
    check,
    core,
    notebook00,
    notebook01,
    notebook02,
    notebook03,
    notebook04,
    notebook05,
    notebook06,
    notebook07,
    notebook08,
    notebook09,
    run_check,
    stand_in,
)

ROOT = Path(__file__).resolve().parents[1]
TABLES = {
    "00": notebook00.EXERCISES,
    "01": notebook01.EXERCISES,
    "02": notebook02.EXERCISES,
    "03": notebook03.EXERCISES,
    "04": notebook04.EXERCISES,
    "05": notebook05.EXERCISES,
    "06": notebook06.EXERCISES,
    "07": notebook07.EXERCISES,
    "08": notebook08.EXERCISES,
    "09": notebook09.EXERCISES,
}
MODULES = ["core", *(f"notebook{number}" for number in TABLES)]


def _not_implemented(*args, **kwargs):
    raise NotImplementedError()


# --- reference answers and typical mistakes ------------------------------------------------------------


def flip(images, flips):
    return torch.where(flips[:, None, None, None], images.flip(-1), images)


def crop(images, shifts, padding=4):
    B, C, H, W = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows, cols = shifts[:, :1] + torch.arange(H), shifts[:, 1:] + torch.arange(W)
    return padded[
        torch.arange(B)[:, None, None, None],
        torch.arange(C)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def stem(width):
    return nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)


def schedule(step, total_steps, gamma=0.1):
    return gamma ** sum(step >= m for m in (total_steps // 3, 2 * total_steps // 3))


def _overwritten(width):  # the ImageNet stem with a CIFAR stem's attributes written over it
    layer = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    layer.kernel_size, layer.stride, layer.padding = (3, 3), (1, 1), (1, 1)
    return layer


class _Zeros(nn.Conv2d):  # the right fields, another computation
    def forward(self, x):
        return torch.zeros(x.shape[0], self.out_channels, *x.shape[2:])


RIGHT = {"01_flip": flip, "01_crop": crop, "01_stem": stem, "01_schedule": schedule}

MISTAKES = {  # (exercise, typical wrong answer, what the message must say)
    "vertical flip": ("01_flip", lambda x, f: torch.where(f[:, None, None, None], x.flip(-2), x), "top–bottom"),
    "flip all": ("01_flip", lambda x, f: x.flip(-1), "every image is flipped"),
    "flip to float": ("01_flip", lambda x, f: flip(x, f).float(), "torch.float32, expected torch.uint8"),
    "flip in place": ("01_flip", lambda x, f: x.copy_(flip(x, f)), "in place"),
    "crop swapped": ("01_crop", lambda x, s: crop(x, s.flip(1)), "rows and columns are swapped"),
    "crop wrong way": ("01_crop", lambda x, s: crop(x, 8 - s), "moves the wrong way"),
    "crop by roll": (
        "01_crop",
        lambda x, s: torch.stack([i.roll((4 - int(r), 4 - int(c)), (-2, -1)) for i, (r, c) in zip(x, s)]),
        "wrap around",
    ),
    "crop padded size": ("01_crop", lambda x, s: F.pad(x, (4,) * 4), "the padded size"),
    "crop loop of 32": (
        "01_crop",
        lambda x, s: torch.stack([F.pad(i, (4,) * 4)[:, r : r + 32, c : c + 32] for i, (r, c) in zip(x, s.tolist())]),
        "hand case: the 3×3 image [[1, 2, 3], [4, 5, 6], [7, 8, 9]] at shifts (4, 4), (3, 4), (5, 5), "
        "(0, 0): your code raised RuntimeError",
    ),
    "stride 2 stem": ("01_stem", lambda w: nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False), "stride is (2, 2)"),
    "ImageNet stem": (
        "01_stem",
        lambda w: nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False),
        "kernel_size is (7, 7)",
    ),
    "no padding": ("01_stem", lambda w: nn.Conv2d(3, w, 3, bias=False), "padding is (0, 0)"),
    "stem bias": ("01_stem", lambda w: nn.Conv2d(3, w, 3, padding=1), "has a bias"),
    "fixed width": (
        "01_stem",
        lambda w: nn.Conv2d(3, 16, 3, padding=1, bias=False),
        "cifar_stem_layer(24).out_channels is 16",
    ),
    "a layer, not a function": ("01_stem", stem(16), "define a function"),
    "circular padding": (
        "01_stem",
        lambda w: nn.Conv2d(3, w, 3, padding=1, bias=False, padding_mode="circular"),
        "padding_mode='circular'",
    ),
    "attributes overwritten": ("01_stem", lambda w: _overwritten(w), "build the layer with the right arguments"),
    "forward replaced": ("01_stem", lambda w: _Zeros(3, w, 3, padding=1, bias=False), "not the 3×3 convolution"),
    "decays a step late": (
        "01_schedule",
        lambda t, T, g=0.1: g ** sum(t > m for m in (T // 3, 2 * T // 3)),
        "your factor changes at steps [11, 21]; it should drop at steps [10, 20]",
    ),
    "ignores gamma": ("01_schedule", lambda t, T, g=0.1: schedule(t, T), "use the `gamma` argument"),
    "starts low": ("01_schedule", lambda t, T, g=0.1: 0.1 * schedule(t, T, g), "f(0) = 1"),
    "returns text": ("01_schedule", lambda t, T, g=0.1: "0.1", "returned a str"),
}


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_right_answer_passes(name, capsys):
    result = check(name, RIGHT[name])
    assert result.passed and result.name == name
    assert capsys.readouterr().out == f"✅ {name}: {result.message}\n"


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_typical_mistake_gets_a_specific_message(mistake):
    name, answer, expected = MISTAKES[mistake]
    result = run_check(name, answer)
    assert not result.passed
    assert expected in result.message, result.message


def test_the_schedule_check_asks_for_all_the_steps_of_a_schedule_at_once():
    """One ``call_each`` per (T, γ), never one call per step: the grader's stand-in for the student's function
    runs such a list in one round trip to the kernel (not ~400)."""
    batches = []

    class Remote:  # the shape of the grader's stand-in: callable, and a call_each(case, calls)
        def __call__(self, *args):
            raise AssertionError("called one step at a time")

        def call_each(self, case, calls):
            batches.append(calls)
            return [schedule(*args) for args in calls]

    assert run_check("01_schedule", Remote()).passed
    assert [len(calls) for calls in batches[:4]] == [30, 31, 299, 30] and len(batches) == 5
    assert all(calls == [(t, *calls[0][1:]) for t in range(len(calls))] for calls in batches)


def test_hand_case_message_shows_the_expected_values():
    result = run_check("01_flip", lambda x, f: torch.where(f[:, None, None, None], x.roll(1, -1), x))
    assert "expected [[[[2, 1, 0], [5, 4, 3]]], [[[6, 7, 8], [9, 10, 11]]]], got [[[[2, 0, 1]" in result.message


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_not_implemented_and_missing_answers_say_not_answered_yet(name, capsys):
    assert check(name, _not_implemented) == exercises.Result(name, False, NOT_ANSWERED, answered=False)
    assert capsys.readouterr().out.startswith(f"❌ {name}: not answered yet (it raises NotImplementedError)")
    assert run_check(name, None).message.startswith("not answered yet")


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_a_crashing_answer_is_reported_not_raised(name):
    def crash(*args):
        raise ZeroDivisionError("division by zero")

    result = run_check(name, crash)
    assert not result.passed and "raised ZeroDivisionError: division by zero" in result.message


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match="01_flip"):
        check("01_nothing", flip)


def test_checks_compare_with_the_package_on_random_inputs():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    shifts, flips = torch.randint(0, 9, (5, 2)), torch.rand(5) < 0.5
    assert torch.equal(crop(images, shifts), data.random_crop(images, shifts))
    assert torch.equal(flip(images, flips), data.random_flip(images, flips))


def test_every_check_function_is_documented():
    for name, exercise in exercises.EXERCISES.items():
        assert exercise.check.__doc__.startswith(f"{name}: ``{exercise.answer}("), name


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_each_exercise_is_checked_once_in_its_notebook_and_its_answer_never_reassigned(path):
    """A later cell reusing an answer's name would overwrite the student's answer before grading."""
    sources = [cell.source for cell in nbformat.read(path, 4).cells if cell.cell_type == "code"]
    number = path.name.split("_")[0]
    for name, exercise in exercises.EXERCISES.items():
        if name.startswith(f"{number}_"):
            calls = [s for s in sources if f'check("{name}", {exercise.answer})' in s]
            assert len(calls) == 1, f"{path.name} should call check({name!r}, {exercise.answer}) once"
            binds = re.compile(
                rf"(^\s*def\s+{exercise.answer}\b|\b{exercise.answer}\s*=[^=]"
                rf"|for\s+{exercise.answer}\b)",
                re.M,
            )
            assert sum(len(binds.findall(s)) for s in sources) == 1, f"{exercise.answer} is bound more than once"


# --- the package: one table per notebook, with the points -------------------------------------------------


def test_every_question_has_positive_int_points_and_its_notebook_number():
    for number, table in TABLES.items():
        for name, exercise in table.items():
            assert name.startswith(f"{number}_"), f"{name} sits in notebook{number}.py's table"
            assert type(exercise.points) is int and exercise.points > 0, name
            assert exercises.points(name) == exercise.points and exercises.EXERCISES[name] is exercise
    assert {number: sum(e.points for e in table.values()) for number, table in TABLES.items()} == {
        "00": 3,
        "01": 7,
        "02": 4,
        "03": 5,
        "04": 5,
        "05": 4,
        "06": 4,
        "07": 3,
        "08": 4,
        "09": 4,
    }
    assert list(exercises.EXERCISES) == [name for table in TABLES.values() for name in table]


@pytest.mark.parametrize("points", [0, -1, 1.5, True, "2", None])
def test_points_must_be_a_positive_int(points):
    with pytest.raises(ValueError, match="must be a positive int"):
        exercises.Exercise("random_flip_student", notebook01.check_flip, points)


def test_points_of_an_unknown_question_name_the_known_ones():
    assert exercises.points("01_crop") == 2 and exercises.points("04_neco") == 1
    with pytest.raises(KeyError, match="01_flip"):
        exercises.points("01_nothing")


def test_a_question_in_two_tables_raises():
    with pytest.raises(ValueError, match="'01_flip' is defined in two notebooks"):
        core.merge_tables(notebook01.EXERCISES, {"01_flip": notebook02.EXERCISES["02_nc1"]})
    assert core.merge_tables({"01_a": exercises.EXERCISES["01_flip"]}, {"02_b": exercises.EXERCISES["02_nc1"]}) == {
        "01_a": exercises.EXERCISES["01_flip"],
        "02_b": exercises.EXERCISES["02_nc1"],
    }


def test_a_question_in_two_notebooks_stops_the_import():
    code = (
        "import importlib, nclab.exercises as ex\n"
        "ex.notebook02.EXERCISES['01_flip'] = ex.notebook02.EXERCISES['02_nc1']\n"
        "importlib.reload(ex)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "ValueError: '01_flip' is defined in two notebooks" in done.stderr


FRESH_IMPORTS = """
import importlib, os, sys
import matplotlib.pyplot, numpy, pandas, seaborn, torch, torchvision  # third-party only, imported once
assert not any(name.split(".")[0] == "nclab" for name in sys.modules)
failed = []
for module in sys.argv[1:]:
    child = os.fork()  # a process with no nclab module imported yet
    if child == 0:
        try:
            importlib.import_module(f"nclab.exercises.{module}")
            import nclab.exercises as ex
            assert len(ex.EXERCISES) == 25 and ex.check is not None
        except BaseException as error:
            print(f"{module}: {error!r}", file=sys.stderr, flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitpid(child, 0)[1]:
        failed.append(module)
sys.exit(f"failed first imports: {failed}" if failed else 0)
"""


def test_each_module_imports_first_in_a_fresh_process():
    """Importing any exercise module before the others works (no import-order dependency): one fork per
    module of a process that has imported the heavy third-party packages but nothing of nclab."""
    done = subprocess.run([sys.executable, "-c", FRESH_IMPORTS, *MODULES], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("module", MODULES)
def test_checks_import_only_core_and_the_computing_modules_relatively(module):
    """No circle through the package's __init__, and no absolute ``nclab`` import: the grader's fresh copy
    of the package must check with its own modules, never with the kernel's (possibly overwritten) ones."""
    tree = ast.parse((ROOT / "nclab" / "exercises" / f"{module}.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not any(alias.name.split(".")[0] == "nclab" for alias in node.names), ast.unparse(node)
        if isinstance(node, ast.ImportFrom):
            assert node.module != "nclab" and not (node.module or "").startswith("nclab."), ast.unparse(node)
            if node.level == 1:
                assert module != "core" and node.module == "core", ast.unparse(node)
            if node.level >= 2:
                assert module != "core" and node.level == 2 and node.module is None, ast.unparse(node)
                assert not {alias.name for alias in node.names} & {"exercises", "grade"}, ast.unparse(node)


def test_on_grid_rounds_to_multiples_of_two_to_the_minus_bits():
    x = torch.tensor([1 / 3, -2.5, 1e-9], dtype=torch.float64)
    assert core.on_grid(x).tolist() == [round(2**20 / 3) / 2**20, -2.5, 0.0]
    assert torch.equal(core.on_grid(x + 1e-15), core.on_grid(x))  # the machine's last bits do not matter
    assert core.on_grid(torch.tensor([0.3]), bits=2).item() == 0.25


WITH_REFERENCE = [name for name, exercise in EXERCISES.items() if exercise.reference is not None]


def test_the_exercises_whose_answer_later_cells_call_have_a_reference():
    assert set(WITH_REFERENCE) == {"00_ufm_step", "04_pca", "04_neco", "09_bounds"}


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_a_reference_passes_its_own_check_and_stands_in_only_for_an_unanswered_exercise(name, capsys):
    reference = EXERCISES[name].reference
    assert run_check(name, lambda *args: reference(*args)).passed  # the library's computation is right

    def unanswered(*args):
        raise NotImplementedError()

    lent = stand_in(name, unanswered)
    assert "is not answered yet, so the cells below use nclab's own computation" in capsys.readouterr().out
    assert lent is not unanswered and getattr(lent, "__nclab_stand_in__", False)
    result = run_check(name, lent)  # copied into the answer's name, the stand-in scores nothing
    assert not result.passed and not result.answered and "stand-in" in result.message
    for answered in (reference, lambda *args: 0):  # right or wrong, a written answer is used as it is
        assert stand_in(name, answered) is answered
    assert capsys.readouterr().out == ""
    assert stand_in(name, None) is not None


def test_stand_in_refuses_an_exercise_without_a_reference():
    name = next(n for n, e in EXERCISES.items() if e.reference is None)
    with pytest.raises(ValueError, match="no reference to stand in"):
        stand_in(name, None)
