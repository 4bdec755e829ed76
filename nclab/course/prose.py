"""Numbers that a page's text states and its outputs do not print.

A number typed into a markdown cell (a model answer's "37.6 %", a summary's "NC1 0.1092") is true of the
run it was copied from and of no other: after a rerun, another profile or another data set the sentence
beside the table is false. :func:`unprinted_numbers` reads an executed notebook and names every decimal
number and every percentage of its markdown cells, model answers included, that none of its outputs prints
to the precision the text gives, and that its code does not set (a hyperparameter, a size). What it names
is either pasted (a defect: read the value from the table, or have code print it) or holds by
construction (7.5 % of 60 steps is 4.5 steps), which the caller allows by name, with its reason.
``tests/test_prose.py`` runs it on every notebook the book build executed.
"""

from __future__ import annotations

import html
import re

import nbformat

__all__ = ["stated_numbers", "printed_numbers", "unprinted_numbers"]

# a decimal, or an integer followed by "%"; not a section or exercise number ("Exercise 4.1"), a version
# ("2.14.1"), the mantissa of a power of ten ("4.5\cdot10^{-5}"), a part of a name or a path, or a value
# that the text computes in its own formula ("$2/5! \approx 0.017$")
_STATED = re.compile(
    r"(?<![\w.^{}\\/\-])(?<!Exercise )(?<!Question )(?<!section )(?<!§)(?<!\\approx )(?<!\\approx)"
    r"(?P<number>\d+(?:,\d{3})*\.\d+|\d+(?=\s?%))(?!\w|\.\d|\s?\\cdot|\s?\\times\s?10|\s?·\s?10|\s?×\s?10)"
)
_PRINTED = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")
_TAGS = re.compile(r"<style.*?</style>|<[^>]+>", re.S)
_SOURCED = re.compile(r"\{cite|practical-work\s+report|the\s+report's|\(report:")  # a citation, or the report
_PARAGRAPH_END = re.compile(r"\n\s*\n")


def _paragraph(text: str, at: int) -> str:
    """The paragraph of ``text`` around position ``at`` (a table is one paragraph)."""
    starts = [m.end() for m in _PARAGRAPH_END.finditer(text, 0, at)]
    end = _PARAGRAPH_END.search(text, at)
    return text[starts[-1] if starts else 0 : end.start() if end else len(text)]


def stated_numbers(text: str) -> list[tuple[str, int]]:
    """The numbers a text states: (as written, position), decimals and percentages only."""
    return [(m.group("number"), m.start()) for m in _STATED.finditer(text)]


def printed_numbers(notebook: nbformat.NotebookNode) -> list[float]:
    """Every number the code cells' outputs print (streams, plain text, HTML tables without their markup),
    each also × 100 (a fraction printed, a percentage stated)."""
    values = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            texts = [output.get("text", "")] + [output.get("data", {}).get(k, "") for k in ("text/plain", "text/html")]
            for text in texts:
                text = html.unescape(_TAGS.sub(" ", "".join(text) if isinstance(text, list) else text))
                for m in _PRINTED.finditer(text):
                    value = float(m.group().replace(",", ""))
                    values += [value, value * 100]
    return values


def unprinted_numbers(notebook: nbformat.NotebookNode, allowed=()) -> list[tuple[str, str, str]]:
    """(cell id, number, the words around it) for every number a markdown cell states that no output prints
    to the precision it is written with, that no code cell contains, that is not in ``allowed``, and whose
    paragraph cites no source (a ``{cite:…}`` role, or the practical-work report by name)."""
    printed = sorted(set(printed_numbers(notebook)))
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for number, at in stated_numbers(cell.source):
            value = float(number.replace(",", ""))
            half = 0.5 * 10 ** -len(number.partition(".")[2]) + 1e-9  # "0.18" stands for [0.175, 0.185]
            in_code = re.search(rf"(?<![\d.]){re.escape(number)}(?![\d.]|e\d)", code)  # a token, not a digit of one
            if number in allowed or in_code or any(abs(value - p) <= half for p in printed):
                continue
            if _SOURCED.search(_paragraph(cell.source, at)):  # a published number, cited where it is stated
                continue
            context = " ".join(cell.source[max(0, at - 60) : at + len(number) + 20].split())
            found.append((cell.get("id", "?"), number, context))
    return found
