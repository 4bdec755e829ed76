"""Students who attack the grader (issue 16), as real submission files of notebook 03's exercises
(``tests/submissions/03/*.submission``, written by ``tests/submissions/make_attacks.py``; not ``.ipynb``, so that
nbval never runs them unsandboxed), copied to a temporary folder and graded in one run of ``python -m nclab
grade`` between honest students.

Every attacker gets 0, or the points of what it answered honestly; the honest students before and after
them keep theirs; the package's files are unchanged; no process of a submission survives. The grader
compares in its own process, so what a submission does to its kernel (json, stdout, torch, an input
transformer, tensor subclasses) can only change what its own answers return; the random cases come from
a secret seed per submission, so answers hard-coded for the notebook's inputs fail. The run needs the
sandbox (root): one attack rewrites the package's files, which only the sandbox keeps read-only.
"""

import hashlib
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nclab import exercises
from nclab.course import grading as grade
from nclab.course.grading import remote, sandbox, wire
from nclab.exercises import core

ROOT = Path(__file__).resolve().parents[1]
SUBMISSIONS = ROOT / "tests" / "submissions" / "03"
QUESTIONS = ["03_energy", "03_covariance", "03_fpr95"]
REASON = sandbox.unavailable_reason()
needs_sandbox = pytest.mark.skipif(REASON is not None, reason=f"sandbox unavailable here: {REASON}")


def _package_digest() -> dict[str, str]:
    """{file: sha256} of the package's Python files."""
    files = sorted((ROOT / "nclab").rglob("*.py"))
    return {str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """(rows by student, the package digest before, after) of one grading run of the attack folder."""
    out = tmp_path_factory.mktemp("attacks") / "scores.csv"
    folder = out.parent / "submissions"
    folder.mkdir()
    for path in SUBMISSIONS.glob("*.submission"):
        shutil.copyfile(path, folder / f"{path.stem}.ipynb")
    before = _package_digest()
    done = subprocess.run(
        [sys.executable, "-m", "nclab", "grade", str(folder), "03_ood_detection.ipynb", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    time.sleep(5)  # attack_daemon's process, had it outlived its sandbox, would have struck by now
    assert "'=HYPERLINK" in out.read_text() and not (folder / "zz_pwned.ipynb").exists()
    return grade.read_scores(out).set_index("student").to_dict("index"), before, _package_digest()


def _points(row) -> dict:
    return {q: row[f"{q}_points"] for q in QUESTIONS}


HONEST = {
    "a_solved": 5,
    "b_untouched": 0,
    "c_energy_only": 1,
    "c_flood_then_solved": 5,  # 30 MB of prints before: the checks' replies are not lost to the output cap
    "c_chatty_solved": 5,  # answers that print(..., end="")
    "z_solved_after": 5,
    "z_untouched_after": 0,
    '\'=HYPERLINK("evil.example")': 5,  # its id neutralised for spreadsheets, its answers graded
    "attack_kill_grader": 5,  # the grader is out of its reach: its honest answers count
}


@needs_sandbox
def test_the_honest_students_around_the_attackers_keep_their_points(attacked):
    rows = attacked[0]
    assert {student: rows[student]["total"] for student in HONEST} == HONEST
    assert all(rows[student]["status"] == "ok" for student in HONEST)
    assert len(rows) == len(list(SUBMISSIONS.glob("*.submission")))  # one complete row per file


@needs_sandbox
@pytest.mark.parametrize(
    "attack, energy",
    [
        ("attack_stdout_rewrite", 0),
        ("attack_input_transformer", 0),
        ("attack_patch_torch", 0),
        ("attack_tensor_subclass", 1),  # its energy answer, written honestly after the attack, counts
        ("attack_rewrite_package", 0),
        ("attack_remote_hands", 0),
        ("attack_hard_coded", 0),
        ("attack_kill_at_grading", 0),
        ("attack_daemon", 0),
    ],
)
def test_each_attack_scores_zero_or_its_honest_points(attacked, attack, energy):
    row = attacked[0][attack]
    assert _points(row) == {"03_energy": energy, "03_covariance": 0, "03_fpr95": 0}, row


@needs_sandbox
def test_the_feedback_says_what_was_wrong(attacked):
    rows = attacked[0]
    assert "subclass of torch.Tensor" in rows["attack_tensor_subclass"]["03_covariance_feedback"]
    assert "got a Equal" in rows["attack_tensor_subclass"]["03_fpr95_feedback"]
    assert "expected [" in rows["attack_hard_coded"]["03_energy_feedback"]  # a secret random case
    assert "NotImplementedError" in rows["attack_patch_torch"]["03_energy_feedback"]
    killer = rows["attack_kill_at_grading"]  # its row is written, and the students after it are graded
    assert killer["status"] == "kernel-died" and "before the grading step" in killer["03_energy_feedback"]


@needs_sandbox
def test_the_package_files_are_unchanged_and_no_process_survives(attacked):
    _, before, after = attacked
    assert before == after
    deadline = time.monotonic() + 5  # the last kernel's sandbox is torn down as the grader exits
    while sandbox.processes(uid=pwd.getpwnam(sandbox.USER).pw_uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox.processes(uid=pwd.getpwnam(sandbox.USER).pw_uid) == []


def test_the_hard_coded_answers_pass_the_notebooks_check_but_not_a_secret_seed():
    """The attack is real: without a secret seed (in the notebook) its answers pass."""
    import nbformat

    namespace: dict = {"exercises": exercises}
    for cell in nbformat.read(SUBMISSIONS / "attack_hard_coded.submission", 4).cells:
        if cell.cell_type == "code":
            exec(cell.source.replace("check(", "exercises.run_check("), namespace)
    answers = {q: namespace[exercises.EXERCISES[q].answer] for q in QUESTIONS}
    assert all(exercises.run_check(q, answers[q]).passed for q in QUESTIONS)
    with core.secret_seed(12345):
        assert not any(exercises.run_check(q, answers[q]).passed for q in QUESTIONS)


# --- the channel between the grader and the kernel ----------------------------------------------------


def test_a_drawn_case_never_repeats_the_notebooks_draw_while_grading():
    public = core.draw_int(70, 8, 97, avoid=(16, 24))
    for seed in range(200):
        with core.secret_seed(seed):
            assert core.draw_int(70, 8, 97, avoid=(16, 24)) not in (16, 24, public)


def test_a_remote_call_reflects_in_place_changes_and_brings_the_gradient():
    """The kernel's side (wire.serve) run here on a function, read by the grader's side (remote.Remote)."""

    def kernel(source: str, seconds: float) -> tuple[list[str], bool]:
        import contextlib
        import io

        namespace = {"square_in_place": lambda x: x.mul_(x), "double": lambda x: 2 * x}
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(source, {"_nclab_wire_" + "ab" * 16: vars(wire), "globals": lambda: namespace})
        return [line for line in printed.getvalue().splitlines() if line.startswith(tag)], False

    tag = f"{grade.kernel.RESULT_TAG} {'ab' * 16}"
    channel = remote.Channel(kernel, tag)
    channel.begin_check(10)
    x = torch.tensor([1.0, 2.0, 3.0])
    with pytest.raises(core.Wrong, match="in place"):
        core.call(remote.Remote(channel, "square_in_place", "object", "function"), "case", x)
    leaf = x.double().requires_grad_(True)
    output = core.call(remote.Remote(channel, "double", "object", "function"), "case", leaf)
    assert torch.equal(output.detach(), 2 * leaf.detach()) and output.requires_grad
    assert torch.equal(core._gradient(output, leaf), torch.full((3,), 2.0, dtype=torch.float64))


def test_no_notebook_under_tests_that_nbval_would_run_unsandboxed():
    """make test runs nbval over every ``*.ipynb`` it collects: an attack stored as one would run as you."""
    assert not list((ROOT / "tests").rglob("*.ipynb"))
