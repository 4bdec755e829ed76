"""No number in a page's text that the page's outputs do not print (``nclab.course.prose``).

A number pasted into a model answer or a summary from an earlier run drifts when the notebook is rerun on
another profile or data set, and the sentence then contradicts the table beside it. The slow test reads
every notebook as the book build executed it (``_build/student-src/executed/``, written by ``make book``;
without it the test fails and says to run ``make book``) and names each number of a markdown cell that no
output prints. What is allowed below holds by construction, each with its reason.
"""

from pathlib import Path

import nbformat
import pytest

from nclab.course.prose import printed_numbers, stated_numbers, unprinted_numbers
from nclab.course.site import EXECUTED

ROOT = Path(__file__).resolve().parents[1]
STAGED = ROOT / "_build" / "student-src" / EXECUTED
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))

_CIFAR100_STATISTICS = "CIFAR-100's published per-channel mean and std (the normalisation constants)"
_REPORT = "quoted from the practical-work report that the notebook audits (its excerpts, table E1–E7)"

ALLOWED = {  # notebook → {number as written: why it holds whatever the run prints}
    "01_train_resnet18_cifar100.ipynb": {
        **dict.fromkeys(["0.5071", "0.4865", "0.4409", "0.2673", "0.2564", "0.2762"], _CIFAR100_STATISTICS),
        "80": "the share of a cosine schedule above a tenth of its peak (arccos arithmetic)",
        "6.4": "the share of a cosine schedule below a hundredth of its peak (arccos arithmetic)",
    },
    "02_neural_collapse_metrics.ipynb": {
        "98.2": "arccos(−1/7) in degrees, the simplex ETF angle for 8 classes",
        "0.125": "chance for 8 classes, 1/C",
    },
    "03_ood_detection.ipynb": {
        "0.70": "the question's hypothetical table (MSP 0.70, energy 0.30 = 1 − 0.70)",
        "0.30": "the question's hypothetical table (MSP 0.70, energy 0.30 = 1 − 0.70)",
        "8.2": "a worked example: the 95th percentile of a uniform tail on [8, 12] holding 10 %",
        "10": "a worked example's 10 % tail; losing 10 % of real inputs at a strict threshold",
        "5": "the worked example's tail holding more than 5 % of the OOD inputs",
        "3.8": "a worked example: 12 − 8.2",
        "0.095": "a worked example: 0.1 × 3.8/4",
    },
    "04_neco_nc5.ipynb": {"0.44": "√(d/p) for d = 99, p = 512: NECO's value for a feature with no structure"},
    "06_ncfal_ood_generalization.ipynb": {
        "10": "the colour's agreement with the label in the test environment, by construction",
        "25": "Colored-MNIST's label noise, by construction",
        "0.25": "Colored-MNIST's label noise, by construction",
    },
    "07_long_tailed_alignment.ipynb": {"2.2": "2 methods × 3 seeds × 22 min, an estimate the text derives"},
    "09_conventions_pitfalls.ipynb": dict.fromkeys(
        ["7.5", "43.6", "7.8", "0.2971", "0.7028", "0.7029", "0.5779", "0.3759", "0.01", "0.6850"], _REPORT
    ),
    "05_layerwise_nc_control.ipynb": {
        "0.99": "the chance that a given image is not of one class of 100, in a probability computed in the text",
        "7.9": "a smoke batch of 64 holds 63/8 ≈ 7.9 classmates of each image",
        "0.01": "the authors' learning rate at batch 512 (their released scripts)",
        "2.3": "the unsourced listing-page number, named so as not to be judged against",
        "1.8": "the unsourced listing-page number, named so as not to be judged against",
        "5": "the warm-up over 5 % of training, the recipe's",
    },
    "08_nc_by_design.ipynb": {
        "4.5": "7.5 % of the smoke recipe's 60 steps",
        "10.5": "the full profile's traced step 8,197 of 78,000; the 10.5 GB of ImageNet features in float32",
        "1.28": "ImageNet's 1.28 million training images",
        "7.5": "the seed's threshold: 7.5 % of cross-entropy's iterations",
    },
}


def _notebook(markdown: str, printed: str, code: str = "") -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(code, outputs=[nbformat.v4.new_output("stream", text=printed)])
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown, id="m"), cell])


def test_stated_numbers_are_decimals_and_percentages_not_names_or_formulas():
    text = r"Exercise 4.1: CE 37.6 %, colour 90 % (torch 2.14.1, seed 004, $4.5\cdot10^{-5}$, $2/5! \approx 0.017$)"
    assert [number for number, _ in stated_numbers(text)] == ["37.6", "90"]


def test_a_number_the_outputs_print_passes_and_a_pasted_one_is_named():
    printed = "CE: test accuracy 0.3764 | NC1 0.1092\n<td>83.2%</td>"
    notebook = _notebook("CE reaches 37.6 % (NC1 0.109); the baseline 83.25 %, lr 0.05.", printed, "lr = 0.05")
    assert 37.64 in [round(v, 6) for v in printed_numbers(notebook)]  # a fraction, read as a percentage too
    assert [(cell, number) for cell, number, _ in unprinted_numbers(notebook)] == [("m", "83.25")]
    assert unprinted_numbers(notebook, allowed={"83.25"}) == []
    assert [n for _, n, _ in unprinted_numbers(_notebook("NC1 0.1093", printed))] == ["0.1093"]  # to its precision
    cited = "Reported: 71.3 % {cite:p}`key`.\n\nThe practical-work\nreport's energy 0.297 is flipped.\n\nWe get 0.42."
    assert [n for _, n, _ in unprinted_numbers(_notebook(cited, printed))] == ["0.42"]  # a cited number is sourced


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_number_the_text_states_is_printed_beside_it(name):
    path = STAGED / name
    if not path.exists():
        pytest.fail(f"no executed notebook at {path}: run `make book` first (it executes every notebook)")
    found = unprinted_numbers(nbformat.read(path, as_version=4), ALLOWED.get(name, {}))
    assert not found, f"{name}: numbers stated that no output prints (read them from the table, or print them):\n" + (
        "\n".join(f"  cell {cell}: {number!r} in “…{context}…”" for cell, number, context in found)
    )
