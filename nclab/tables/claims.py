"""The claims the course judges, each traced to its source, and the table of their verdicts (notebooks 05–08).

:data:`CLAIMS` holds every claim a notebook tests: what is claimed (in the course's words), the source's
own words, where they are, and whether the claim is a direction, a size, a best case or a match. A seed
paper's words are quoted from its **abstract** only (``../shared/seeds/``; the machine-written summaries
beside some abstracts are not sources, and ``tests/test_claims.py`` checks that every quote lies in the
abstract it names). A number from outside the seeds cites its paper (``book/references.bib``).
:func:`verdict_table` judges the claims of a notebook on the differences a run measured, with
:func:`nclab.tables.verdicts.judge`; :func:`claims_table` is the list itself, as the chapters show it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from .verdicts import Difference, judge

__all__ = ["Claim", "CLAIMS", "claims_table", "verdict_table"]

_SEED_000 = "000_5deea66c4265f106.txt"  # Harun et al., controlling neural collapse
_SEED_003 = "003_7cdcbcc353a81882.txt"  # Wang et al., space alignment (SpA)
_SEED_004 = "004_301d7bf5b26d4ed3.txt"  # Koromilas et al., neural collapse by design


@dataclass(frozen=True)
class Claim:
    key: str  # what a notebook passes to verdict_table
    notebook: str  # "05" … "08"
    says: str  # the claim as the notebook tests it: what is compared with what, in which measure
    quote: str  # the source's words, verbatim
    source: str  # a seed file in ../shared/seeds, or a key of book/references.bib
    where: str  # "abstract" for a seed; a section or table for a paper
    kind: str  # "direction", "size", "best case" or "match" (nclab.tables.verdicts.judge)
    size: float | None = None  # the claimed difference (size, best case) or the tolerance (match), in `unit`
    unit: str = "points"  # of the measured difference


_EXCELS = "In experiments, our method excels at both tasks across OOD datasets and DNN architectures."
_INVERSE = "stronger NC improves OOD detection but degrades generalization"
_SURPASS = "NTCE and NONL surpass CE accuracy"
_TRANSFER = "The learned geometry yields $+5.5\\%$ mean relative improvement in transfer learning"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "more collapsed detects better",
        "05",
        "of the controlled network's two last representations (encoder layer4, ETF projector), the one with "
        "the smaller NC1 detects OOD inputs better (energy of a linear probe, AUROC)",
        _INVERSE,
        _SEED_000,
        "abstract",
        "direction",
    ),
    Claim(
        "less collapsed transfers better",
        "05",
        "of the same two representations, the one with the larger NC1 transfers better (linear-probe accuracy "
        "on another data set)",
        _INVERSE,
        _SEED_000,
        "abstract",
        "direction",
    ),
    Claim(
        "controlled detects better",
        "05",
        "the controlled network's projector detects OOD inputs better than the baseline's layer4 (energy of a "
        "linear probe, AUROC over the natural-image OOD sets)",
        _EXCELS,
        _SEED_000,
        "abstract",
        "direction",
    ),
    Claim(
        "controlled transfers better",
        "05",
        "the controlled network's encoder (layer4) transfers better than the baseline's (linear-probe accuracy)",
        _EXCELS,
        _SEED_000,
        "abstract",
        "direction",
    ),
    Claim(
        "SpA boosts its base loss",
        "07",
        "a SpA plug-in raises the test accuracy of the loss it is added to (CE or logit adjustment)",
        "consistently boost examined baselines",
        _SEED_003,
        "abstract",
        "direction",
    ),
    Claim(
        "IRMv1 beats ERM",
        "06",
        "IRMv1 is more accurate than ERM on the test environment of Colored-MNIST (the IRM paper: 66.9 % "
        "against 17.1 %)",
        "",
        "arjovsky2019invariant",
        "section 5.2",
        "direction",
    ),
    Claim(
        "NTCE beats CE",
        "08",
        "NTCE's test accuracy is higher than cross-entropy's",
        _SURPASS,
        _SEED_004,
        "abstract",
        "direction",
    ),
    Claim(
        "NONL beats CE",
        "08",
        "NONL's test accuracy is higher than cross-entropy's",
        _SURPASS,
        _SEED_004,
        "abstract",
        "direction",
    ),
    Claim(
        "prototypes match probing",
        "08",
        "SupCon's class-mean prototypes classify as well as a linear probe on its features (within the "
        "course's tolerance of 2 points: the abstract gives none)",
        "SCL with fixed prototypes matches linear probing",
        _SEED_004,
        "abstract",
        "match",
        2.0,
    ),
    Claim(
        "transfer gain",
        "08",
        "a linear probe on NTCE's or NONL's encoder transfers better than on CE's, by 5.5 % of CE's accuracy",
        _TRANSFER,
        _SEED_004,
        "abstract",
        "size",
        5.5,
        "% of CE's accuracy",
    ),
    Claim(
        "transfer gain under imbalance",
        "08",
        "trained on a long tail, NONL's encoder transfers better than CE's (the abstract's +8.7 % is its best "
        "case, not judged as a typical gain)",
        "up to $+8.7\\%$ under severe class imbalance",
        _SEED_004,
        "abstract",
        "best case",
        8.7,
        "% of CE's accuracy",
    ),
)


def claims_table(notebook: str | None = None) -> pd.DataFrame:
    """The claims (of one notebook, or all): claim, source and where, the quoted words, kind and size."""
    rows = [asdict(c) for c in CLAIMS if notebook is None or c.notebook == notebook]
    if not rows:
        raise ValueError(f"no claim is judged in notebook {notebook!r}; notebooks with claims: {_notebooks()}")
    return pd.DataFrame(rows).set_index("key")


def verdict_table(measured: dict[str, Difference | dict[str, Difference]]) -> pd.DataFrame:
    """One row per measured comparison: the claim, what was compared, the difference with its interval, the
    claimed size, and the verdict of :func:`~nclab.tables.verdicts.judge`.

    ``measured`` maps a claim's key to a :class:`Difference` (method − baseline, in the claim's unit), or to
    {comparison: Difference} where the claim covers several (e.g. each SpA plug-in on each base loss).
    """
    claims = {c.key: c for c in CLAIMS}
    unknown = [key for key in measured if key not in claims]
    if unknown:
        raise ValueError(f"no claim {unknown} in nclab.tables.CLAIMS; its keys: {sorted(claims)}")
    rows = []
    for key, differences in measured.items():
        claim = claims[key]
        for compared, d in differences.items() if isinstance(differences, dict) else [("", differences)]:
            rows.append(
                {
                    "claim": key,
                    "compared": compared,
                    "difference": d.estimate,
                    "lo": d.lo,
                    "hi": d.hi,
                    "seeds": d.seeds,
                    "claimed": _claimed(claim),
                    "verdict": judge(d, claim.kind, claim.size),
                }
            )
    return pd.DataFrame(rows).set_index(["claim", "compared"])


def _claimed(claim: Claim) -> str:
    if claim.kind == "direction":
        return "a gain"
    what = {"size": "a gain of", "best case": "up to (not judged)", "match": "a match within ±"}[claim.kind]
    return f"{what} {claim.size:g} {claim.unit}".replace("± ", "±")


def _notebooks() -> list[str]:
    return sorted({c.notebook for c in CLAIMS})
