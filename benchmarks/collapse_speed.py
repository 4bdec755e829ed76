"""Time nclab.collapse.nc_metrics against a plain per-class loop written from the SPEC §1 formulas.

    python benchmarks/collapse_speed.py [--n 50000 --p 512 --classes 100]

Random float32 features (torch, seed 0). Prints the thread count and CPU, the best of 7 timings after a
warm-up for nc_metrics (without and with a linear head) and for the naive loop (loop over classes for the
means and Σ_W, numpy ``pinv`` for Σ_B†), their ratio, whether the targets are met (0.3 s without the head,
0.1 s with it), and checks that both give the same nc1 (relative 1e-6). Not a test. ``run(...)`` returns
the same as a dict, for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # a checkout
from common import cpu_name, figure, measure  # noqa: E402

from nclab.collapse import nc_metrics  # noqa: E402

TARGET_S = 0.3  # seconds for nc_metrics without a weight, 50,000 × 512 features, 100 classes, 2 CPU cores
HEAD_TARGET_S = 0.1  # seconds for nc_metrics with the head W, b, same sizes and CPU


def naive_nc1(features: np.ndarray, labels: np.ndarray, C: int) -> float:
    """nc1 = Tr(Σ_W Σ_B†)/C with a loop over classes, float64, numpy pinv for Σ_B†."""
    N, p = features.shape
    mu = np.zeros((C, p))
    Sigma_W = np.zeros((p, p))
    for c in range(C):
        H_c = features[labels == c].astype(np.float64)  # (N_c, p)
        mu[c] = H_c.mean(axis=0)
        Z = H_c - mu[c]
        Sigma_W += Z.T @ Z
    Sigma_W /= N
    M = (mu - mu.mean(axis=0)).T  # (p, C)
    Sigma_B = M @ M.T / C
    # rcond well above rounding: the default (1e-15) may keep a "zero" eigenvalue of the rank-(C−1) Σ_B,
    # the SPEC §9 pitfall
    Sigma_B_pinv = np.linalg.pinv(Sigma_B, rcond=1e-10, hermitian=True)
    return float(np.trace(Sigma_W @ Sigma_B_pinv) / C)


def synthetic(n: int, p: int, classes: int):
    """Class-clustered float32 features (n, p), labels (n,) and a head W (C, p), b (C,) (torch, seed 0)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, classes, (n,), generator=generator)
    centres = torch.randn(classes, p, generator=generator)
    features = centres[labels] + torch.randn(n, p, generator=generator)
    weight = torch.randn(classes, p, generator=generator)
    bias = torch.randn(classes, generator=generator)
    return features, labels, weight, bias


def run(n: int = 50_000, p: int = 512, classes: int = 100, repeats: int = 7) -> dict:
    """Time nc_metrics (without and with the head) and the naive loop; returns {"settings", "figures"}.

    The targets, 0.3 s for nc_metrics without a weight and 0.1 s with the head W, b, apply at the full size
    (50,000 × 512, C = 100) on the CPU; ``pass`` is None at other sizes. Best of 7: the head figure sits
    within a few tens of milliseconds of its target, where one slow run on a shared machine matters.
    """
    features, labels, weight, bias = synthetic(n, p, classes)
    H, y = features.numpy(), labels.numpy()
    fast = measure(lambda: nc_metrics(features, labels), repeats=repeats)
    head = measure(lambda: nc_metrics(features, labels, weight, bias), repeats=repeats)
    naive = measure(lambda: naive_nc1(H, y, classes), repeats=repeats)
    rel = abs(fast.result["nc1"] - naive.result) / abs(naive.result)
    full = (n, p, classes) == (50_000, 512, 100)
    size = f"{n:,} × {p} float32 features, C = {classes}"
    baseline_what = "per-class loop for μ_c and Σ_W, numpy pinv for Σ_B† (float64), nc1 only"
    return {
        "settings": {"n": n, "p": p, "classes": classes, "repeats": repeats, "statistic": "best of the repeats"},
        "figures": [
            figure(
                "nc_metrics",
                f"collapse.nc_metrics without a head (NC1 both ways, NC2 of the class means) on {size}",
                "s",
                fast.seconds,
                naive.seconds,
                baseline_what=baseline_what,
                peak_mib=(fast.peak_mib, naive.peak_mib),
                target=f"≤ {TARGET_S} s on the 2-core CPU (50,000 × 512, C = 100)",
                passed=fast.seconds <= TARGET_S if full else None,
                nc1_relative_difference=rel,
            ),
            figure(
                "nc_metrics with head",
                f"collapse.nc_metrics with the head W, b (adds NC2 of W, the ETF distance, NC3, NC4) on {size}",
                "s",
                head.seconds,
                naive.seconds,
                baseline_what=baseline_what + " (it computes less than nc_metrics with a head)",
                peak_mib=(head.peak_mib, naive.peak_mib),
                target=f"≤ {HEAD_TARGET_S} s on the 2-core CPU (50,000 × 512, C = 100)",
                passed=head.seconds <= HEAD_TARGET_S if full else None,
            ),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="number of feature vectors N")
    parser.add_argument("--p", type=int, default=512, help="feature dimension p")
    parser.add_argument("--classes", type=int, default=100, help="number of classes C")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_name()}")
    print(f"N = {args.n}, p = {args.p}, C = {args.classes}, float32 features")
    fast, head = run(args.n, args.p, args.classes)["figures"]
    print(f"nc_metrics (no weight):   {fast['ours']:.3f} s  (best of 7)")
    print(f"nc_metrics (with W, b):   {head['ours']:.3f} s")
    print(f"naive per-class loop:     {fast['baseline']:.3f} s  -> nc_metrics is {fast['ratio']:.1f}x faster")
    print(f"target {TARGET_S} s without the head: {'met' if fast['ours'] <= TARGET_S else 'NOT met'}")
    print(f"target {HEAD_TARGET_S} s with the head: {'met' if head['ours'] <= HEAD_TARGET_S else 'NOT met'}")
    rel = fast["nc1_relative_difference"]
    print(f"nc1: relative difference nc_metrics vs naive {rel:.1e} -> {'same' if rel <= 1e-6 else 'DIFFERENT'} at 1e-6")


if __name__ == "__main__":
    main()
