"""Every claim the course judges is traced to its source: a seed's abstract, quoted verbatim, or a paper in
the bibliography; never a machine-written summary."""

import re
from pathlib import Path

import pytest

from nclab import tables
from nclab.tables.verdicts import Difference

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT.parent / "shared" / "seeds"


def _abstract(path: Path) -> str:
    """The paragraph under a seed file's "Abstract" heading (each seed holds its abstract on one line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip().endswith("Abstract"):
            following = [x for x in lines[i + 1 :] if x.strip()]
            if following and len(following[0]) > 300:
                return following[0]
    raise AssertionError(f"{path.name} has no abstract")


@pytest.mark.skipif(not SEEDS.is_dir(), reason="../shared/seeds is not beside the repository")
@pytest.mark.parametrize("claim", [c for c in tables.CLAIMS if c.where == "abstract"], ids=lambda c: c.key)
def test_each_quote_lies_in_the_abstract_of_the_seed_it_names(claim):
    assert claim.quote and claim.quote in _abstract(SEEDS / claim.source)


@pytest.mark.skipif(not SEEDS.is_dir(), reason="../shared/seeds is not beside the repository")
def test_the_machine_written_summary_is_not_an_abstract():
    """Seed 000's "AI Summary" holds the +2.3 / +1.8 that no abstract states: no claim may come from it."""
    abstract = _abstract(SEEDS / "000_5deea66c4265f106.txt")
    assert "2.3" not in abstract and "1.8" not in abstract
    assert "+2.3" in (SEEDS / "000_5deea66c4265f106.txt").read_text(encoding="utf-8")  # it is in the summary
    assert all("2.3" not in c.quote and "1.8" not in c.quote for c in tables.CLAIMS)


def test_a_claim_from_outside_the_seeds_cites_a_paper_of_the_bibliography():
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(encoding="utf-8")))
    for claim in tables.CLAIMS:
        if claim.where != "abstract":
            assert claim.source in keys, claim.key


def test_claims_have_unique_keys_a_known_kind_and_a_size_where_the_kind_needs_one():
    keys = [c.key for c in tables.CLAIMS]
    assert len(keys) == len(set(keys))
    for claim in tables.CLAIMS:
        assert claim.kind in tables.verdicts.KINDS
        assert (claim.size is not None) == (claim.kind != "direction"), claim.key


def test_the_verdict_table_judges_each_comparison_and_refuses_an_unknown_claim():
    gain, within = Difference(3.0, 1.0, 5.0, 1, 800), Difference(0.2, -1.0, 1.4, 1, 800)
    table = tables.verdict_table(
        {"NTCE beats CE": gain, "prototypes match probing": within, "SpA boosts its base loss": {"CE + Reg": within}}
    )
    assert table.loc[("NTCE beats CE", ""), "verdict"] == "reproduced"
    assert table.loc[("prototypes match probing", ""), "verdict"] == "reproduced"
    assert table.loc[("SpA boosts its base loss", "CE + Reg"), "verdict"] == "inconclusive"
    assert table.loc[("prototypes match probing", ""), "claimed"] == "a match within ±2 points"
    with pytest.raises(ValueError, match="no claim"):
        tables.verdict_table({"CE is best": gain})
    assert set(tables.claims_table("05").index) == {c.key for c in tables.CLAIMS if c.notebook == "05"}
    with pytest.raises(ValueError, match="notebooks with claims"):
        tables.claims_table("01")


@pytest.mark.parametrize("notebook", ["05", "06", "07", "08"])
def test_each_chapter_lists_the_claims_its_notebook_judges(notebook):
    chapter = next((ROOT / "book").glob(f"{notebook}_*.md")).read_text(encoding="utf-8")
    notebook_text = next((ROOT / "notebooks").glob(f"{notebook}_*.ipynb")).read_text(encoding="utf-8")
    for claim in tables.CLAIMS:
        if claim.notebook == notebook:
            assert claim.key in chapter, f"book chapter {notebook} does not list the claim {claim.key!r}"
    assert f'claims_table(\\"{notebook}\\")' in notebook_text, f"notebook {notebook} does not show its claims"
