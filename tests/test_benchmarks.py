"""The benchmark suite (benchmarks/run.py, `make bench`): its results files and the figures' arithmetic.

No timing is asserted (a shared CI machine has none worth asserting): the quick run checks that every
benchmark runs, that the JSON and Markdown files hold what the issue asks (each figure with its baseline,
a positive ratio, peak memory, the targets with pass / fail), and that every baseline computes the same
numbers as nclab. The dry run (benchmarks/dry_run.py) must pass its checks at the quick sizes, and the
CIFAR-100 files it writes must be read (and checksum-verified) by torchvision through nclab.data.load. The
DDP benchmark (benchmarks/ddp_scaling.py) must launch 1 and 2 processes under torchrun and derive its
speed-ups from the histories they write.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from common import PeakMemory, figure  # noqa: E402

NAMES = ["trainer", "features", "collapse", "ood", "losses", "dryrun", "ddp"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--device", "cpu", "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=240,
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
    # tiny sizes on a CPU: no target applies (each is for a GPU or for the full sizes) but the dry run's and
    # the DDP launches', whose checks (the real code path) hold at any size
    assert all(t["pass"] is None for (name, _), t in targets.items() if name not in ("dryrun", "ddp"))
    assert [t["pass"] for (name, _), t in targets.items() if name == "dryrun"] == [True, True]
    assert [t["pass"] for (name, _), t in targets.items() if name == "ddp"] == [True, True]  # 1 and 2 processes


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


# ----------------------------------------------------------------------------------------------------
# The dry run


def test_dry_run_checks_files_and_estimates(quick_run):
    """Both profiles ran the real path (files read by torchvision, snapshots as scheduled, a resume, finite
    numbers); the checkpoint files are the schedule's; the estimates are the measured rates times the sizes."""
    report, _ = quick_run
    dry = report["benchmarks"]["dryrun"]
    assert dry["all_checks_pass"] and len(dry["checks"]) == 8 and all(dry["checks"].values())
    figures = {fig["name"]: fig for fig in dry["figures"]}
    assert "write CIFAR-100 files" in figures
    for name, epochs, snapshots in (
        ("quick", 20, ["epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]),
        ("full", 350, ["epoch_0001.pt", "epoch_0002.pt"]),
    ):
        details = dry["profiles"][name]
        training, features, estimates = details["training"], details["features"], details["estimates"]
        assert details["config"]["width"] == 16 and details["config"]["batch_size"] == 128
        assert details["data"] == {"train_images": 512, "test_images": 200, "read_s": details["data"]["read_s"]}
        assert sorted(training["checkpoint_files_mib"]) == [*snapshots, "last.pt"]
        assert training["epochs_trained"] == 3 and training["steps_per_epoch"] == 1
        assert "No checkpoint" in training["said"] and "resuming" in training["said_on_resume"]
        assert training["s_per_step"] == pytest.approx(training["s_per_step_by_epoch"][1])  # the first warms up
        assert training["images_per_s"] == pytest.approx(128 / training["s_per_step"])
        assert features["images"] == 256 and features["p"] == 128
        test_pass = 200 / features["images_per_s"]
        assert estimates["full_epoch_s"] == pytest.approx(4 * training["s_per_step"] + test_pass)  # 512 // 128 steps
        assert estimates["profile_hours"] == pytest.approx(epochs * estimates["full_epoch_s"] / 3600)
        assert figures[f"{name}: regime A, all epochs (est.)"]["ours"] == pytest.approx(
            epochs * estimates["full_epoch_s"]
        )
        assert estimates["feature_pass_s"] == pytest.approx(712 / features["images_per_s"])
        assert set(figures[f"{name}: ood all detectors"]["detectors_s"]) == {
            "msp",
            "maxlogit",
            "energy",
            "mahalanobis",
            "vim",
            "neco",
        }
        assert details["nc_metrics"]["values"]["nc1"] > 0


def test_dry_run_cifar100_files_read_by_torchvision(tmp_path):
    """The written files are CIFAR-100's format: nclab.data.load reads them through torchvision, with the
    checksums patched only inside cifar100_at; a corrupted file is refused; outside, the real MD5s refuse them."""
    import dry_run

    from nclab.data import load

    splits = dry_run.random_cifar100(250, 120, seed=3)
    checksums = dry_run.write_cifar100(tmp_path, splits)
    data, labels = splits["train"]
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        entry = pickle.load(f, encoding="latin1")  # as torchvision reads it
    assert set(entry) == {"data", "fine_labels", "coarse_labels", "filenames", "batch_label"}
    assert entry["coarse_labels"][:3] == [label // 5 for label in labels[:3]]
    assert all(sorted(labels[i : i + 100]) == list(range(100)) for i in (0, 100))  # every class per 100 rows

    real_md5 = torchvision.datasets.CIFAR100.train_list[0][1]
    before = os.environ.get("NCLAB_DATA")
    with dry_run.cifar100_at(tmp_path, checksums):
        assert os.environ["NCLAB_DATA"] == str(tmp_path)
        train, test = load("cifar100", "train"), load("cifar100", "test")
        assert not train.standin and train.name == "cifar100/train" and len(test) == 120
        assert train.classes == [f"class_{c:02d}" for c in range(100)]  # from the meta file
        assert torch.equal(train.images, torch.from_numpy(data).view(250, 3, 32, 32))  # CHW rows, as CIFAR's
        assert train.images[7, 2, 5, 9] == data[7, 2 * 1024 + 5 * 32 + 9]  # blue plane, row 5, column 9
        assert train.labels.tolist() == labels and test.labels.tolist() == splits["test"][1]
        path = tmp_path / "cifar-100-python" / "train"
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit flipped
        with pytest.raises(FileNotFoundError, match="corrupted"):
            load("cifar100", "train")
        path.write_bytes(original)
    assert os.environ.get("NCLAB_DATA") == before
    assert torchvision.datasets.CIFAR100.train_list[0][1] == real_md5 == "16019d7e3df5f24257cddd939b257f8d"
    with pytest.raises(FileNotFoundError):  # torchvision's own checksums: these are not CIFAR-100's files
        load("cifar100", "train", root=tmp_path)


# ----------------------------------------------------------------------------------------------------
# DistributedDataParallel under torchrun


def test_ddp_quick_launches_one_and_two_processes(quick_run):
    """Both launches ran under torchrun as asked (world size, threads, steps); every figure is the arithmetic
    of the histories: s/step of the second epoch, images/s, speed-up over 1 process, efficiency."""
    report, _ = quick_run
    ddp = report["benchmarks"]["ddp"]
    assert ddp["all_checks_pass"] and len(ddp["checks"]) == 8 and ddp["skipped"] == []
    one, two = ddp["launches"]
    threads = report["threads"]  # the suite's torch threads, shared out over the processes
    assert ddp["settings"]["threads"] == threads and ddp["settings"]["backend"] == "gloo"
    for launch, n in ((one, 1), (two, 2)):
        assert (launch["processes"], launch["batch_size"]) == (n, 32)
        assert launch["threads_per_process"] == max(1, threads // n)
        assert launch["steps_per_epoch"] == [2, 2]  # max_steps=2 of the 512 // 32 = 16 batches
        assert launch["s_per_step"] == pytest.approx(launch["s_per_step_by_epoch"][1])  # the first warms up
        assert launch["images_per_s"] == pytest.approx(32 / launch["s_per_step"])
        assert launch["wall_s"] > sum(launch["s_per_step_by_epoch"]) * 2  # the launch holds the training loop
        assert len(launch["peak_mib_by_rank"]) == n and launch["peak_mib"] == max(launch["peak_mib_by_rank"])
    assert "× 2 processes" in two["said"] and "processes" not in one["said"]  # load_or_train's own words
    assert one["speedup"] == 1 and two["speedup"] == pytest.approx(one["s_per_step"] / two["s_per_step"])
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
    figures = {fig["name"]: fig for fig in ddp["figures"]}
    assert list(figures) == [
        "ddp step: 1 process, batch 32",
        "ddp launch: 1 process, batch 32",
        "ddp step: 2 processes, batch 32",
        "ddp launch: 2 processes, batch 32",
    ]
    step = figures["ddp step: 2 processes, batch 32"]
    assert (step["ours"], step["baseline"]) == (two["s_per_step"], one["s_per_step"])
    assert step["ratio"] == pytest.approx(two["speedup"]) and step["efficiency"] == two["efficiency"]
    launch = figures["ddp launch: 2 processes, batch 32"]
    assert (launch["ours"], launch["baseline"]) == (two["wall_s"], one["wall_s"])


def test_ddp_seconds_per_step_from_a_history():
    """Steps per epoch from the history's images/s × seconds; s/step is the mean over the epochs after the first."""
    import ddp_scaling

    seconds = [1.0, 0.5, 0.7]  # 4 global batches of 32 in each epoch
    result = {
        "world_size": 2,
        "threads": 1,
        "device": "cpu",
        "history": [{"seconds": s, "images_per_s": 128 / s, "train_loss": 4.6} for s in seconds],
        "peak_mib_by_rank": [10.0, 12.0],
        "said": "",
    }
    measured = ddp_scaling._measure(result, 2, 1, 32, 4, wall_s=9.0)
    assert measured["steps_per_epoch"] == [4, 4, 4]
    assert measured["s_per_step_by_epoch"] == pytest.approx([0.25, 0.125, 0.175])
    assert measured["s_per_step"] == pytest.approx(0.15) and measured["images_per_s"] == pytest.approx(32 / 0.15)
    assert measured["peak_mib"] == 12.0 and all(measured["checks"].values())
    wrong = ddp_scaling._measure({**result, "world_size": 1, "threads": 2}, 2, 1, 32, 5, wall_s=9.0)
    assert list(wrong["checks"].values()) == [False, False, False, True]  # no group, 4 steps not 5, 2 threads


def test_ddp_process_counts(monkeypatch):
    import ddp_scaling

    assert ddp_scaling.default_processes(torch.device("cpu")) == (1, 2)
    for count, expected in ((1, (1,)), (4, (1, 2, 4)), (6, (1, 2, 4, 6)), (8, (1, 2, 4, 8))):
        monkeypatch.setattr(torch.cuda, "device_count", lambda count=count: count)
        assert ddp_scaling.default_processes(torch.device("cuda")) == expected
    with pytest.raises(ValueError, match="must include 1"):
        ddp_scaling.run(processes=(2, 4), device="cpu")
