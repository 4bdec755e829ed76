"""Time every OOD detector of nclab.ood against a naive implementation of it, on random features.

    python benchmarks/ood_speed.py [--n 50000 --m 10000 --p 512 --classes 100 --device cpu --repeat 3]

Fits each of the six detectors on n random training features (p dimensions, `classes` classes, seed 0)
and scores m test features; the target is ≤ 2 s for all six together on a 2-core CPU (the fastest of
--repeat rounds, after a warm-up, since a shared CPU makes single runs noisy). The baselines are the
detectors written the obvious way, as their reference code does, in NumPy / SciPy / scikit-learn on the
features as NumPy arrays (``NAIVE``): softmax and logsumexp of the logits; Mahalanobis with a loop over
the classes for the means and the distances and scikit-learn's ``EmpiricalCovariance`` (Lee et al.,
OpenOOD); ViM with ``EmpiricalCovariance`` and ``np.linalg.eig`` (the authors' code); NECO with
``StandardScaler`` and a full ``PCA`` (the authors' code). Both give the same scores (the largest relative
difference is printed). ``run(...)`` returns the figures as a dict, for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp, softmax
from sklearn.covariance import EmpiricalCovariance
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # a checkout
from common import figure, measure  # noqa: E402

from nclab.ood import DETECTORS  # noqa: E402

TARGET_S = 2.0  # seconds for all six detectors (fit + score), 50k train / 10k test × 512, C = 100, 2 CPU cores


def synthetic(n: int, m: int, p: int, classes: int, device: str):
    """Class-clustered training features (n, p), labels (n,), a head (C, p), (C,), test features (m, p)."""
    g = torch.Generator().manual_seed(0)
    means = 3 * torch.randn(classes, p, generator=g)
    labels = torch.randint(classes, (n,), generator=g)
    train = means[labels] + torch.randn(n, p, generator=g)
    test = means[torch.randint(classes, (m,), generator=g)] + torch.randn(m, p, generator=g)
    weight, bias = means / p**0.5, 0.1 * torch.randn(classes, generator=g)
    return [t.to(device) for t in (train, labels, weight, bias, test)]


# The naive detectors: (train features, labels, W, b, test features) as NumPy arrays → scores (M,), higher = ID


def naive_msp(h, y, W, b, t):
    """max_c of SciPy's softmax of the NumPy logits."""
    return softmax(t @ W.T + b, axis=1).max(axis=1)


def naive_maxlogit(h, y, W, b, t):
    """max_c of the NumPy logits."""
    return (t @ W.T + b).max(axis=1)


def naive_energy(h, y, W, b, t):
    """SciPy's logsumexp of the NumPy logits."""
    return logsumexp(t @ W.T + b, axis=1)


def naive_mahalanobis(h, y, W, b, t):
    """Lee et al. / OpenOOD: class means by a loop, one tied covariance of the centred features, then the
    distance to every class mean by a loop over the classes; −min_c."""
    classes = np.unique(y)
    means = np.stack([h[y == c].mean(axis=0) for c in classes])
    centred = np.concatenate([h[y == c] - means[i] for i, c in enumerate(classes)])
    precision = EmpiricalCovariance(assume_centered=False).fit(centred).precision_
    distances = np.empty((len(t), len(classes)))
    for i, mu in enumerate(means):
        z = t.astype(np.float64) - mu
        distances[:, i] = ((z @ precision) * z).sum(axis=1)
    return -distances.min(axis=1)


def naive_vim(h, y, W, b, t, dim=None):
    """The ViM authors' code: origin −W⁺b, EmpiricalCovariance about it, eig, the residual space."""
    dim = h.shape[1] // 2 if dim is None else dim
    u = -np.linalg.pinv(W) @ b
    covariance = EmpiricalCovariance(assume_centered=True).fit(h - u).covariance_
    eig_vals, eigen_vectors = np.linalg.eig(covariance)
    NS = np.ascontiguousarray((eigen_vectors.real.T[np.argsort(eig_vals.real * -1)[dim:]]).T)
    alpha = (h @ W.T + b).max(axis=-1).mean() / np.linalg.norm((h - u) @ NS, axis=-1).mean()
    return logsumexp(t @ W.T + b, axis=-1) - alpha * np.linalg.norm((t - u) @ NS, axis=-1)


def naive_neco(h, y, W, b, t, dim=None):
    """The NECO authors' code: StandardScaler, a full PCA, the norm of the first C − 1 components."""
    dim = W.shape[0] - 1 if dim is None else dim
    scaler = StandardScaler().fit(h)
    pca = PCA(h.shape[1]).fit(scaler.transform(h))
    s = scaler.transform(t)
    return np.linalg.norm(pca.transform(s)[:, :dim], axis=1) / np.linalg.norm(s, axis=1)


NAIVE = {
    "msp": naive_msp,
    "maxlogit": naive_maxlogit,
    "energy": naive_energy,
    "mahalanobis": naive_mahalanobis,
    "vim": naive_vim,
    "neco": naive_neco,
}


def run(
    n: int = 50_000,
    m: int = 10_000,
    p: int = 512,
    classes: int = 100,
    device: str = "cpu",
    repeats: int = 3,
    naive_repeats: int = 1,
) -> dict:
    """Fit + score of each detector, ours (best of ``repeats``) and naive (best of ``naive_repeats``), each
    after a warm-up call; then all six together (the fastest round: min over the repeats of the sum)."""
    train, labels, weight, bias, test = synthetic(n, m, p, classes, device)
    arrays = [x.cpu().numpy() for x in (train, labels, weight, bias, test)]
    figures, rounds, naive_total, memory = [], np.zeros(repeats), 0.0, [0.0, 0.0]
    # nclab's detectors all first, then the naive ones: NumPy's OpenBLAS threads keep spinning for a while
    # after a call, and would slow the torch call that follows on a 2-core machine
    timings = {
        name: measure(lambda D=Detector: D().fit(train, labels, weight, bias).score(test), device, repeats)
        for name, Detector in DETECTORS.items()
    }
    naive_timings = {name: measure(lambda f=NAIVE[name]: f(*arrays), "cpu", naive_repeats) for name in DETECTORS}
    for name, Detector in DETECTORS.items():
        ours, naive = timings[name], naive_timings[name]
        ours_scores = ours.result.double().cpu()
        gap = ((ours_scores - torch.from_numpy(naive.result).double()).abs() / ours_scores.abs().clamp_min(1)).max()
        rounds += ours.runs
        naive_total += naive.seconds
        memory = [max(memory[0], ours.peak_mib or 0), max(memory[1], naive.peak_mib or 0)]
        figures.append(
            figure(
                f"ood {name}",
                f"nclab.ood.{Detector.__name__}().fit(train, labels, W, b).score(test): {n:,} train / {m:,} test "
                f"× {p} float32, C = {classes}",
                "s",
                ours.seconds,
                naive.seconds,
                baseline_what=" ".join(NAIVE[name].__doc__.split()),
                peak_mib=(ours.peak_mib, naive.peak_mib),
                max_relative_difference=float(gap),
            )
        )
    total = float(rounds.min())
    full = (n, m, p, classes) == (50_000, 10_000, 512, 100) and torch.device(device).type == "cpu"
    figures.insert(
        0,
        figure(
            "ood all detectors",
            f"the six detectors of nclab.ood.DETECTORS, fit + score, {n:,} train / {m:,} test × {p}, C = {classes} "
            "(fastest round of the repeats)",
            "s",
            total,
            naive_total,
            baseline_what="the six naive implementations (sum of their best times)",
            peak_mib=(memory[0], memory[1]),
            target=f"≤ {TARGET_S:g} s on the 2-core CPU (50k train / 10k test × 512, C = 100)",
            passed=total <= TARGET_S if full else None,
            rounds=rounds.tolist(),
        ),
    )
    settings = {
        "n_train": n,
        "n_test": m,
        "p": p,
        "classes": classes,
        "device": str(device),
        "repeats": repeats,
        "naive_repeats": naive_repeats,
        "statistic": "best of the repeats, after one warm-up call",
        "peak_mib of the total": "the largest of the six detectors'",
    }
    return {"settings": settings, "figures": figures}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="training features")
    parser.add_argument("--m", type=int, default=10_000, help="test features")
    parser.add_argument("--p", type=int, default=512, help="feature dimension")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the fastest is reported")
    args = parser.parse_args()
    print(
        f"n = {args.n:,} train, m = {args.m:,} test, p = {args.p}, C = {args.classes}, "
        f"device = {args.device}, torch threads = {torch.get_num_threads()}"
    )
    total, *detectors = run(args.n, args.m, args.p, args.classes, args.device, args.repeat)["figures"]
    for fig in detectors:
        print(
            f"{fig['name']:16s} {fig['ours']:6.3f} s   naive {fig['baseline']:6.3f} s   {fig['ratio']:5.1f}×   "
            f"max relative difference {fig['max_relative_difference']:.1e}"
        )
    verdict = "met" if total["ours"] <= TARGET_S else "MISSED"
    print(
        f"{'total':16s} {total['ours']:6.3f} s   naive {total['baseline']:6.3f} s   {total['ratio']:5.1f}×   "
        f"(target ≤ 2 s on a 2-core CPU: {verdict}; rounds: " + ", ".join(f"{r:.2f}" for r in total["rounds"]) + " s)"
    )


if __name__ == "__main__":
    main()
