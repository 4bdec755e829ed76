"""The benchmark suite (``make bench``): every benchmark of benchmarks/, one results file per machine.

    python benchmarks/run.py                   # every benchmark at the sizes of this device (CPU or GPU)
    python benchmarks/run.py --quick           # tiny sizes: checks that the suite runs (seconds), not speed
    python benchmarks/run.py --only ood --only collapse    # some of them (merged into the machine's file)

Writes ``benchmarks/results/<machine>.json`` and ``<machine>.md`` (``--out`` for another folder; with
``--quick`` the files are ``<machine>-quick.*``), ``<machine>`` a slug of the device: ``cpu-x86-64-2-threads``
or the CUDA device's name. The JSON holds the device, torch version, threads, date, git commit, the sizes,
and per benchmark its settings, its figures and what it skipped and why. Every figure is measured in the
same run against a baseline written the obvious way: nclab's value, the baseline's, the ratio (> 1 = nclab
faster), the peak memory of each (see ``common.py``), and the issue's target with pass / fail (None where
the target is for another device or size). The Markdown file is the same as a table.

Benchmarks (``--only`` names): trainer (``train_throughput.py``), features (``feature_speed.py``),
collapse (``collapse_speed.py``), ood (``ood_speed.py``), losses (``loss_speed.py``), dryrun
(``dry_run.py``: the ``quick`` and ``full`` profiles end to end at full size, a few steps per epoch; no
baseline, its figures are the cost of each stage and the estimated cost of a full epoch and profile), ddp
(``ddp_scaling.py``: training launched by torchrun in 1, 2, … processes, DistributedDataParallel on gloo or
NCCL; the baseline is the 1-process launch, the ratio the speed-up); each script also runs on its own. The
sizes of each are in :data:`SIZES`; ``--device`` overrides nclab's choice (cuda if present) for the trainer,
features, ood, ddp and the dry run's training and extraction; collapse and losses run on the CPU (the
NC-metrics target is a CPU one).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # a checkout
import collapse_speed  # noqa: E402
import ddp_scaling  # noqa: E402
import dry_run  # noqa: E402
import feature_speed  # noqa: E402
import loss_speed  # noqa: E402
import ood_speed  # noqa: E402
import train_throughput  # noqa: E402
from common import MEMORY_NOTE, machine_info  # noqa: E402

from nclab.config import get_device  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

BENCHMARKS = {  # name: (function, what it measures)
    "trainer": (train_throughput.run, "nclab GpuLoader + train.fit vs torchvision DataLoader + PIL transforms"),
    "features": (feature_speed.run, "features.extract_features vs a DataLoader loop over the same model"),
    "collapse": (collapse_speed.run, "collapse.nc_metrics vs a per-class loop"),
    "ood": (ood_speed.run, "every detector of nclab.ood vs its naive NumPy / scikit-learn version"),
    "losses": (loss_speed.run, "UFM step and the methods' losses per step vs per-sample loops"),
    "dryrun": (dry_run.run, "the quick and full profiles end to end at full size, a few training steps per epoch"),
    "ddp": (ddp_scaling.run, "training under torchrun: N DistributedDataParallel processes vs 1, same global batch"),
}

# The dry run at full size, 2 steps per epoch: the same on a GPU (without a step limit it would train for hours)
DRY_RUN = dict(images=50_000, test_images=10_000, max_steps=2, epochs={"quick": 3, "full": 4}, extract_batches=2)

# The keyword arguments of each benchmark's run(): on a CPU, a GPU, and --quick
SIZES = {
    "cpu": {
        "trainer": dict(width=16, images=2_048, batch_size=128, epochs=3),
        "features": dict(width=16, images=4_096, batch_size=500),
        "collapse": dict(n=50_000, p=512, classes=100),
        "ood": dict(n=50_000, m=10_000, p=512, classes=100),
        "losses": dict(batch=256, p=512, classes=100),
        "dryrun": DRY_RUN,
        "ddp": dict(processes=(1, 2), width=16, images=4_096, batch_size=128, max_steps=8, epochs=2),
    },
    "cuda": {
        "trainer": dict(width=64, images=50_000, batch_size=512, epochs=2),
        "features": dict(width=64, images=10_000, batch_size=500),
        "collapse": dict(n=50_000, p=512, classes=100),
        "ood": dict(n=50_000, m=10_000, p=512, classes=100),
        "losses": dict(batch=256, p=512, classes=100),
        "dryrun": DRY_RUN,
        # 1, 2, 4, … GPUs up to torch.cuda.device_count() (ddp_scaling.default_processes); the profile's batch and 4×
        "ddp": dict(processes=None, width=64, images=50_000, batch_size=(128, 512), max_steps=50, epochs=2),
    },
    "quick": {
        "trainer": dict(width=16, images=256, batch_size=64, epochs=1, workers=0),
        "features": dict(width=16, images=256, batch_size=128, workers=0, repeats=1),
        "collapse": dict(n=2_000, p=32, classes=10, repeats=1),
        "ood": dict(n=2_000, m=500, p=32, classes=10, repeats=1),
        "losses": dict(batch=32, p=32, classes=10, steps=2, naive_steps=1, ufm_per_class=5, repeats=1),
        "dryrun": dict(
            images=512,
            test_images=200,
            width=16,  # 8 · 16 = 128 features ≥ C − 1 = 99, as nc_metrics needs
            max_steps=1,
            epochs={"quick": 2, "full": 2},
            extract_batches=1,
            eval_batch_size=256,
            repeats=1,
        ),
        # width 16, not 8: ResNet-18 needs 8 · width ≥ C − 1 = 99 features (nclab.models)
        "ddp": dict(processes=(1, 2), width=16, images=512, batch_size=32, max_steps=2, epochs=2),
    },
}
DEVICE_ARGUMENT = {"trainer", "features", "ood", "dryrun", "ddp"}  # the benchmarks that run on the chosen device


def run_suite(names: list[str], device: torch.device, quick: bool) -> dict:
    """Run the benchmarks ``names``; returns {name: {"what", "sizes", "date", "seconds", "settings", "figures",
    "skipped"}}."""
    sizes = SIZES["quick" if quick else device.type]
    results = {}
    for name in names:
        function, what = BENCHMARKS[name]
        kwargs = dict(sizes[name])
        if name in DEVICE_ARGUMENT:
            kwargs["device"] = device if name != "ood" else str(device)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {what} {kwargs}", flush=True)
        began = time.perf_counter()
        result = function(**kwargs)
        gc.collect()
        seconds = time.perf_counter() - began
        results[name] = {
            "what": what,
            "sizes": {key: str(value) if key == "device" else value for key, value in kwargs.items()},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": seconds,
            "skipped": [],
            **result,
        }
        for fig in result["figures"]:
            ours, baseline = _value(fig["ours"], fig["unit"]), _value(fig["baseline"], fig["unit"])
            print(f"    {fig['name']:32s} {ours:>16s} vs {baseline}")
        print(f"    ({seconds:.0f} s)", flush=True)
    return results


def targets(benchmarks: dict) -> list[dict]:
    """Every figure with a target: what the issue asks, the value, and pass (None: not for this device/size)."""
    return [
        {"benchmark": name, "figure": fig["name"], "target": fig["target"], "value": fig["ours"], "unit": fig["unit"]}
        | {"pass": fig["pass"]}
        for name, result in benchmarks.items()
        for fig in result["figures"]
        if fig["target"] is not None
    ]


# ----------------------------------------------------------------------------------------------------
# Markdown


def _value(x: float | None, unit: str) -> str:
    if x is None:
        return "—"
    if unit == "images/s":
        return f"{x:,.0f} img/s"
    if unit == "s" and x >= 3600:
        return f"{x / 3600:.3g} h"
    if unit in ("s", "s/step") and x < 0.1:
        return f"{1e3 * x:.3g} ms" + ("/step" if unit == "s/step" else "")
    return f"{x:.3g} s" + ("/step" if unit == "s/step" else "")


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}" if x >= 10 else f"{x:.1f}"


def markdown(report: dict) -> str:
    verdict = {True: "✅ met", False: "❌ missed", None: "n/a here"}
    lines = [
        f"# Benchmarks on {report['device']}",
        "",
        f"{report['date']} · torch {report['torch']} · {report['threads']} threads · commit "
        f"`{report['git_commit']}` · `{report['command']}`"
        + (" · **quick sizes: not a measurement**" if report["quick"] else ""),
        "",
        "ratio = how many times faster nclab is than the baseline measured in the same run (> 1: nclab faster). "
        f"Peak memory in MiB, {report['memory_note'].removeprefix('peak memory: ')}.",
        "",
        "| benchmark | figure | nclab | baseline | ratio | peak MiB nclab / baseline | target | |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for name, result in report["benchmarks"].items():
        for fig in result["figures"]:
            ratio = "—" if fig["ratio"] is None else f"{fig['ratio']:.2f}×"
            peak = f"{_mib(fig['peak_mib']['ours'])} / {_mib(fig['peak_mib']['baseline'])}"
            target = fig["target"] or ""
            lines.append(
                f"| {name} | {fig['name']} | {_value(fig['ours'], fig['unit'])} | "
                f"{_value(fig['baseline'], fig['unit'])} | {ratio} | {peak} | {target} | "
                f"{verdict[fig['pass']] if target else ''} |"
            )
    lines += ["", "## What each figure measures", ""]
    for name, result in report["benchmarks"].items():
        settings = json.dumps(result["settings"], ensure_ascii=False)
        lines.append(
            f"**{name}** ({result['what']}; {result['date']}, {result['seconds']:.0f} s) — settings: `{settings}`"
        )
        lines.append("")
        for fig in result["figures"]:
            baseline = f" Baseline: {fig['baseline_what']}." if fig["baseline_what"] else " No baseline."
            lines.append(f"- *{fig['name']}*: {fig['what']}.{baseline}")
        for skip in result.get("skipped", []):
            lines.append(f"- skipped *{skip['name']}*: {skip['why']}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: nclab's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results files")
    args = parser.parse_args(argv)

    device = get_device(args.device)
    names = args.only or list(BENCHMARKS)
    info = machine_info(device)
    stem = info["machine"] + ("-quick" if args.quick else "")
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    print(f"{info['device']} | torch {info['torch']} | {info['threads']} threads | commit {info['git_commit']}")
    benchmarks = run_suite(names, device, args.quick)
    if args.only and json_path.exists():  # keep the other benchmarks of an earlier run on this machine
        benchmarks = {**json.loads(json_path.read_text())["benchmarks"], **benchmarks}
        benchmarks = {name: benchmarks[name] for name in BENCHMARKS if name in benchmarks}
    report = {
        **info,
        "command": "python benchmarks/run.py" + (f" {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()),
        "quick": args.quick,
        "sizes": {name: result["sizes"] for name, result in benchmarks.items()},
        "memory_note": MEMORY_NOTE,
        "benchmarks": benchmarks,
    }
    report["targets"] = targets(benchmarks)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    md_path.write_text(markdown(report) + "\n")
    print(f"written {json_path} and {md_path}")
    for target in report["targets"]:
        print(f"target {target['benchmark']}/{target['figure']}: {target['target']} -> {target['pass']}")
    return report


if __name__ == "__main__":
    main()
