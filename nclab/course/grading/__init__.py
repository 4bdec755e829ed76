"""Grading: run each submitted notebook in a fresh kernel, check its answers from the grader, one CSV row
per student.

``grade(submissions_dir, notebook, out)`` executes every ``*.ipynb`` of ``submissions_dir`` (the student
id is the file name) with nbclient: a per-cell time limit interrupts a hung cell, errors do not stop the
run, so every exercise still counts. Then it checks the answers **in its own process**
(``remote``): each exercise's check function, loaded when the grader started, runs here on a stand-in for
the student's function; each call of it runs the student's function in the kernel, in a cell the grader
appends, on the grader's inputs, and brings back plain data (``wire``: JSON, tensors as raw bytes, never
pickle). The expected values never enter the kernel, and the random cases
are drawn from a secret seed per submission. Whatever the student's code does to its kernel (patch nclab,
torch or json, replace ``sys.stdout``, rewrite the grader's cells with an input transformer) changes only
what its own functions return; a cell whose output carries two reply lines is ``tampered``. Points come
from the exercise tables (``nclab.exercises.EXERCISES``) on the grader's side.

Interpretation questions graded by hand (``nclab.exercises.QUESTIONS``) are not scored: for each, the
row carries the student's text (``<question>_answer``, from the markdown cell whose metadata names it) and
an empty ``<question>_points`` column for the instructor to fill in; ``hand_max`` is their total, and a
rubric file (the model answers of the instructor's notebook) is written beside the CSV when that notebook
is found.

Each kernel runs in the ``sandbox`` (as root: an unprivileged user in its own PID, mount and network
namespaces, the package read-only, the submissions folder and the results hidden, rlimits, every process
killed when the submission ends; not root: refused unless ``unsafe``), and the grader keeps at most
``MAX_OUTPUT_BYTES`` of outputs per cell. An answer that calls nclab's own implementation of an exercise (the
package ships it) would pass its check: ``reach`` looks at the submission's own code, statically, for what
reaches an exercise's key (``Exercise.references``, its ``reference``, nclab.exercises' internals, dynamic
access to nclab); such an exercise scores 0, said in its feedback and the ``reaches_key`` column, unless
the instructor allows it (``allow_reference``). The library's source copied by hand is not seen.

The package, one idea per module: ``answers`` (what a notebook asks, what a student wrote, the rubric),
``submissions`` (a submission read and rebuilt without trusting it), ``kernel`` (its cells run with capped
outputs, its answers checked), ``remote`` and ``wire`` (the checks' calls into the kernel, as plain data),
``sandbox`` (the kernel's isolation), ``isolated`` and ``cgroup`` (each submission graded in a process and a
control group of its own, memory and processes bounded together), ``reach``, ``keys``, ``walker`` and
``dynamic`` (what reaches an exercise's key), ``warm`` (the cache warmed once before grading), ``scores``
(rows, journal, CSV, summary), ``grader`` (a whole class), ``gradebook`` (hand and automatic points merged,
for an LMS).
"""

from .answers import hand_questions_for, questions_for, rubric, written_answers
from .grader import grade, grade_submission
from .scores import read_scores, summarize

__all__ = [
    "questions_for",
    "hand_questions_for",
    "written_answers",
    "rubric",
    "grade",
    "grade_submission",
    "read_scores",
    "summarize",
]
