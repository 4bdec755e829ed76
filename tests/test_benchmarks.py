"""The benchmark suite (benchmarks/run.py, `make bench`): its results files and the figures' arithmetic.

No timing is asserted (a shared CI machine has none worth asserting): the quick run checks that every
benchmark runs, that the JSON and Markdown files hold what the issue asks (each figure with its baseline,
a positive ratio, peak memory, the targets with pass / fail), and that every baseline computes the same
numbers as nclab.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from common import PeakMemory, figure  # noqa: E402

NAMES = ["trainer", "features", "collapse", "ood", "losses"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--device", "cpu", "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (path,) = out.glob("*-quick.json")  # <machine>-quick.json, <machine> as the subprocess names it
    assert path.stem.startswith("cpu-") and path.with_suffix(".md").exists()
    return json.loads(path.read_text()), path.with_suffix(".md").read_text()


def test_json_header_and_every_benchmark(quick_run):
    report, _ = quick_run
    for key in ("machine", "device", "torch", "threads", "date", "git_commit", "sizes", "memory_note"):
        assert report[key] not in (None, ""), key
    assert report["quick"] is True and report["machine"].startswith("cpu-")
    assert list(report["benchmarks"]) == NAMES
    for name in NAMES:
        result = report["benchmarks"][name]
        assert result["settings"] and result["figures"], name
    trainer = report["benchmarks"]["trainer"]
    assert {skip["name"] for skip in trainer["skipped"]} == {"amp", "channels_last", "compile"}  # on the CPU
    figures = [fig["name"] for result in report["benchmarks"].values() for fig in result["figures"]]
    for expected in ("trainer fp32", "trainer epoch", "feature extraction", "nc_metrics", "ood all detectors"):
        assert expected in figures
    for detector in ("msp", "maxlogit", "energy", "mahalanobis", "vim", "neco"):
        assert f"ood {detector}" in figures
    for loss in ("ntce", "nonl", "entropy regulariser", "spa projection", "ncfal alignment", "ufm step"):
        assert loss in figures


def test_figures_have_baselines_positive_ratios_and_memory(quick_run):
    report, _ = quick_run
    for result in report["benchmarks"].values():
        for fig in result["figures"]:
            assert fig["ours"] > 0, fig["name"]
            assert fig["unit"] in ("s", "s/step", "images/s")
            if fig["baseline"] is not None:
                assert fig["baseline"] > 0 and fig["ratio"] > 0, fig["name"]
                assert fig["baseline_what"], fig["name"]
            else:
                assert fig["ratio"] is None
            assert fig["peak_mib"]["ours"] is not None and fig["peak_mib"]["ours"] >= 0, fig["name"]


def test_targets_recorded_and_not_judged_at_quick_sizes(quick_run):
    report, _ = quick_run
    targets = {(t["benchmark"], t["figure"]): t for t in report["targets"]}
    for key in [("trainer", "trainer fp32"), ("trainer", "trainer epoch"), ("collapse", "nc_metrics")]:
        assert key in targets
    assert ("ood", "ood all detectors") in targets
    assert "≥ 3" in targets[("trainer", "trainer fp32")]["target"]
    assert "0.3 s" in targets[("collapse", "nc_metrics")]["target"]
    assert "2 s" in targets[("ood", "ood all detectors")]["target"]
    # tiny sizes on a CPU: no target applies (each is for a GPU or for the full sizes)
    assert all(t["pass"] is None for t in targets.values())


def test_baselines_compute_what_nclab_computes(quick_run):
    report, _ = quick_run
    benchmarks = report["benchmarks"]
    (nc,) = [fig for fig in benchmarks["collapse"]["figures"] if fig["name"] == "nc_metrics"]
    assert nc["nc1_relative_difference"] < 1e-6
    assert benchmarks["features"]["figures"][0]["max_abs_feature_difference"] < 1e-4
    for name in ("ood", "losses"):
        for fig in benchmarks[name]["figures"]:
            if "max_relative_difference" in fig:  # float32 features: ViM's naive eig in float32 gives ~1e-3
                assert fig["max_relative_difference"] < 1e-2, fig["name"]


def test_naive_detectors_agree_with_nclab_in_float64():
    """The OOD baselines are the same detectors: in float64 their scores agree with nclab's to 1e-8."""
    import ood_speed

    from nclab.ood import DETECTORS

    train, labels, weight, bias, test = (
        x.double() if x.is_floating_point() else x for x in ood_speed.synthetic(600, 200, 16, 5, "cpu")
    )
    arrays = [x.numpy() for x in (train, labels, weight, bias, test)]
    for name, Detector in DETECTORS.items():
        ours = Detector().fit(train, labels, weight, bias).score(test)
        naive = torch.from_numpy(ood_speed.NAIVE[name](*arrays))
        assert torch.allclose(ours, naive, rtol=1e-8, atol=1e-8), name


def test_naive_losses_agree_with_nclab_in_float64():
    """The per-sample loops compute the losses of nclab (value and gradient), on a batch with repeated classes."""
    import loss_speed

    from nclab import losses
    from nclab.methods.control import entropy_regularizer

    g = torch.Generator().manual_seed(1)
    y = torch.tensor([0, 1, 1, 2, 0, 0, 3, 1])
    u = torch.randn(8, 6, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.randn(4, 6, generator=g, dtype=torch.float64)
    pairs = [
        (losses.normface(u, w, y, 0.5), loss_speed.naive_normface(u, w, y, 0.5)),
        (losses.ntce(u, w, y, 0.5), loss_speed.naive_ntce(u, w, y, 0.5)),
        (losses.nonl(u, w, y, 0.5), loss_speed.naive_nonl(u, w, y, 0.5)),
        (losses.dot_regression(u, w, y), loss_speed.naive_dot_regression(u, w, y)),
        (losses.supcon(u, y, 0.5), loss_speed.naive_supcon(u, y, 0.5)),
        (entropy_regularizer(u), loss_speed.naive_entropy(u)),
    ]
    for ours, naive in pairs:
        (grad_ours,) = torch.autograd.grad(ours, u)
        (grad_naive,) = torch.autograd.grad(naive, u)
        assert torch.allclose(ours.double(), naive.double(), atol=1e-6)
        assert torch.allclose(grad_ours.double(), grad_naive.double(), atol=1e-6)


def test_markdown_table_has_a_row_per_figure(quick_run):
    report, md = quick_run
    assert "| benchmark | figure | nclab | baseline | ratio |" in md
    assert "quick sizes" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| benchmark")]
    assert len(rows) == sum(len(result["figures"]) for result in report["benchmarks"].values())
    for name in NAMES:
        assert f"| {name} |" in md


def test_ratio_is_the_speed_up_for_times_and_for_rates():
    assert figure("t", "", "s", 2.0, 6.0)["ratio"] == pytest.approx(3.0)  # baseline time / our time
    assert figure("r", "", "images/s", 600.0, 200.0, higher_is_better=True)["ratio"] == pytest.approx(3.0)
    assert figure("n", "", "s", 1.0, None)["ratio"] is None


def test_peak_memory_sees_a_100_mib_tensor():
    with PeakMemory("cpu") as memory:
        x = torch.ones(25 * 2**20)  # 100 MiB of float32, touched
        del x
    if memory.mib is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert 95 <= memory.mib <= 130
