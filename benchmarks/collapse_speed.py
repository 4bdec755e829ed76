"""Time nclab.collapse.nc_metrics against a plain per-class loop written from the SPEC §1 formulas.

    python benchmarks/collapse_speed.py [--n 50000 --p 512 --classes 100]

Random float32 features (torch, seed 0). Prints the thread count and CPU, the best of 3 timings after a
warm-up for nc_metrics (without and with a linear head) and for the naive loop (loop over classes for the
means and Σ_W, numpy ``pinv`` for Σ_B†), their ratio, whether the 0.3 s target is met, and checks that
both give the same nc1 (relative 1e-6). Not a test.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from nclab.collapse import nc_metrics  # noqa: E402

TARGET_S = 0.3  # seconds for nc_metrics without a weight, 50,000 × 512 features, 100 classes, 2 CPU cores


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


def best_of(fn, repeats: int = 3) -> tuple[float, object]:
    result = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="number of feature vectors N")
    parser.add_argument("--p", type=int, default=512, help="feature dimension p")
    parser.add_argument("--classes", type=int, default=100, help="number of classes C")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, args.classes, (args.n,), generator=generator)
    centres = torch.randn(args.classes, args.p, generator=generator)
    features = centres[labels] + torch.randn(args.n, args.p, generator=generator)
    weight = torch.randn(args.classes, args.p, generator=generator)
    bias = torch.randn(args.classes, generator=generator)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_name()}")
    print(f"N = {args.n}, p = {args.p}, C = {args.classes}, float32 features")
    t_fast, fast = best_of(lambda: nc_metrics(features, labels))
    t_head, _ = best_of(lambda: nc_metrics(features, labels, weight, bias))
    H, y = features.numpy(), labels.numpy()
    t_naive, nc1_naive = best_of(lambda: naive_nc1(H, y, args.classes))
    print(f"nc_metrics (no weight):   {t_fast:.3f} s  (best of 3)")
    print(f"nc_metrics (with W, b):   {t_head:.3f} s")
    print(f"naive per-class loop:     {t_naive:.3f} s  -> nc_metrics is {t_naive / t_fast:.1f}x faster")
    print(f"target {TARGET_S} s: {'met' if t_fast <= TARGET_S else 'NOT met'}")
    rel = abs(fast["nc1"] - nc1_naive) / abs(nc1_naive)
    print(
        f"nc1 = {fast['nc1']:.10g} (nc_metrics) vs {nc1_naive:.10g} (naive): relative difference {rel:.1e} "
        f"-> {'same' if rel <= 1e-6 else 'DIFFERENT'} at 1e-6"
    )


if __name__ == "__main__":
    main()
