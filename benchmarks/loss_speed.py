"""Time per step of the UFM and of the methods' losses, against a naive per-sample (or per-class) loop.

    python benchmarks/loss_speed.py [--batch 256 --p 512 --classes 100]

A "step" of a loss is its forward and backward on random features u (B, p) and class vectors w (C, p)
(leaf tensors that need a gradient), as in a training step, without the network. The baselines write
the loss's sum over the batch as a Python loop over the samples (or the classes), straight from the
formula in the docstring of the nclab function; both give the same value (the largest relative
difference is printed). A step of the UFM is one full-batch gradient step of ``nclab.ufm.UFM``
(objective, backward, SGD step); it has no baseline, since ``UFM.objective`` already is the direct
formula; nor does SpA-Reg (``SpARegLoss``), whose running centres make a loop version a second
implementation rather than a naive one. Times: best of the repeats of ``steps`` steps, after a warm-up,
divided by ``steps``. Everything runs on the CPU, on every machine. ``run(...)`` returns the figures as a
dict, for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # a checkout
from common import figure, measure  # noqa: E402

from nclab import losses  # noqa: E402
from nclab.losses import BatchOutput, CrossEntropy  # noqa: E402
from nclab.methods.control import entropy_regularizer  # noqa: E402
from nclab.methods.ncfal import alignment_penalty  # noqa: E402
from nclab.methods.spa import SpARegLoss, spa_project  # noqa: E402
from nclab.ufm import UFM  # noqa: E402

TAU = 0.1

# The naive versions: a Python loop over the samples (or the classes), the formula as written


def naive_normface(u, w, y, tau):
    """−(1/B) Σ_i log(exp(ŵ_{y_i}·û_i/τ) / Σ_c exp(ŵ_c·û_i/τ)), a loop over i."""
    total = 0
    for i in range(len(u)):
        s = (w / w.norm(dim=1, keepdim=True)) @ (u[i] / u[i].norm()) / tau  # (C,)
        total = total - torch.log(torch.exp(s[y[i]]) / torch.exp(s).sum())
    return total / len(u)


def naive_ntce(u, w, y, tau):
    """−(1/B) Σ_i log(exp(s_ii) / Σ_j exp(s_ij)), s_ij = ŵ_{y_i}·û_j/τ, a loop over the anchors i."""
    u_hat = u / u.norm(dim=1, keepdim=True)
    total = 0
    for i in range(len(u)):
        s = u_hat @ (w[y[i]] / w[y[i]].norm()) / tau  # (B,) s_ij
        total = total - torch.log(torch.exp(s[i]) / torch.exp(s).sum())
    return total / len(u)


def naive_nonl(u, w, y, tau):
    """(1/B) Σ_i (−s_ii) + mean over the anchors with a negative of log Σ_{j: y_j ≠ y_i} exp(s_ij)."""
    u_hat = u / u.norm(dim=1, keepdim=True)
    align, push, count = 0, 0, 0
    for i in range(len(u)):
        s = u_hat @ (w[y[i]] / w[y[i]].norm()) / tau
        align = align - s[i]
        negative = y != y[i]
        if negative.any():
            push, count = push + torch.log(torch.exp(s[negative]).sum()), count + 1
    return align / len(u) + push / max(count, 1)


def naive_dot_regression(h, w, y):
    """½ mean_i (h_iᵀŵ_{y_i} − ‖ŵ_{y_i}‖‖h_i‖)² / ‖h_i‖, ‖h_i‖ detached, a loop over i."""
    total = 0
    for i in range(len(h)):
        norm = h[i].norm().clamp_min(1e-8).detach()
        total = total + 0.5 * (h[i] @ w[y[i]] - w[y[i]].norm() * norm) ** 2 / norm
    return total / len(h)


def naive_supcon(u, y, tau):
    """−mean over anchors with a positive of (1/|P(i)|) Σ_p log(exp(û_i·û_p/τ) / Σ_{a≠i} exp(û_i·û_a/τ))."""
    u_hat = u / u.norm(dim=1, keepdim=True)
    total, anchors = 0, 0
    for i in range(len(u)):
        others = torch.arange(len(u)) != i
        s = u_hat @ u_hat[i] / tau
        positives = others & (y == y[i])
        if positives.any():
            log_prob = s[positives] - torch.log(torch.exp(s[others]).sum())
            total, anchors = total - log_prob.mean(), anchors + 1
    return total / max(anchors, 1)


def naive_entropy(z):
    """−(1/B) Σ_i log(‖ẑ_i − ẑ_nn(i)‖ + 1e-8), the nearest neighbour found by a loop over i."""
    z_hat = z / z.norm(dim=1, keepdim=True)
    total = 0
    for i in range(len(z)):
        distances = (z_hat - z_hat[i]).norm(dim=1)
        nearest = int(torch.where(torch.arange(len(z)) == i, math.inf, distances.detach()).argmin())
        total = total - torch.log(distances[nearest] + 1e-8)
    return total / len(z)


def naive_alignment(features, y, env):
    """nclab's split-half alignment penalty, with loops over the (half, environment, class) cells."""
    h = features.float()
    half = torch.arange(len(y)) % 2
    environments, classes = torch.unique(env).tolist(), torch.unique(y).tolist()
    shared = [
        c
        for c in classes
        if all(bool(((env == e) & (half == k) & (y == c)).any()) for e in environments for k in (0, 1))
    ]
    if len(environments) < 2 or not shared:
        return h.sum() * 0
    spread = 0
    for c in shared:
        means = [[h[(env == e) & (half == k) & (y == c)].mean(0) for e in environments] for k in (0, 1)]
        centre = [sum(means[k]) / len(environments) for k in (0, 1)]
        for e in range(len(environments)):
            spread = spread + (means[0][e] - centre[0]) @ (means[1][e] - centre[1])
    spread = spread / (len(shared) * len(environments))
    return spread / ((h - h.mean(0)).pow(2).sum(-1).mean() + 1e-8)


def naive_spa_project(weight, grad, centres, keep=0.4):
    """SpA-Proj's rule, row by row (a loop over the classes)."""
    rows = []
    for w_c, g, mu in zip(weight.float(), grad.float(), centres.float()):
        w_hat = w_c / w_c.norm()
        tangent = g - (g @ w_hat) * w_hat
        d = mu - (mu @ w_hat) * w_hat
        d = d / d.norm() if d.norm() > 0 else d
        along = tangent @ d
        if along > 0:
            tangent = tangent - along * d
        rows.append(keep * tangent + (1 - keep) * g)
    return torch.stack(rows)


def _step(loss_of, *leaves, doc: str | None = None):
    """One forward + backward; the leaves' gradients are cleared first. ``doc``: what the step computes."""

    def step():
        for leaf in leaves:
            leaf.grad = None
        value = loss_of()
        value.backward()
        return value.detach()

    step.__doc__ = doc
    return step


def _repeat(fn, steps):
    def many():
        for _ in range(steps):
            value = fn()
        return value

    return many


def run(
    batch: int = 256,
    p: int = 512,
    classes: int = 100,
    steps: int = 20,
    naive_steps: int = 3,
    ufm_per_class: int = 50,
    repeats: int = 3,
) -> dict:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(classes, (batch,), generator=g)
    u = torch.randn(batch, p, generator=g).requires_grad_()
    w = torch.randn(classes, p, generator=g).requires_grad_()
    env = torch.randint(2, (batch,), generator=g)  # NCFAL: 2 environments and 2 classes, as on Colored-MNIST
    y2 = torch.randint(2, (batch,), generator=g)
    cases = {  # name: (what, ours step, naive step or None)
        "normface": (
            "losses.normface",
            _step(lambda: losses.normface(u, w, y, TAU), u, w),
            _step(lambda: naive_normface(u, w, y, TAU), u, w, doc=naive_normface.__doc__),
        ),
        "ntce": (
            "losses.ntce (NTCE)",
            _step(lambda: losses.ntce(u, w, y, TAU), u, w),
            _step(lambda: naive_ntce(u, w, y, TAU), u, w, doc=naive_ntce.__doc__),
        ),
        "nonl": (
            "losses.nonl (NONL)",
            _step(lambda: losses.nonl(u, w, y, TAU), u, w),
            _step(lambda: naive_nonl(u, w, y, TAU), u, w, doc=naive_nonl.__doc__),
        ),
        "dot regression": (
            "losses.dot_regression",
            _step(lambda: losses.dot_regression(u, w, y), u, w),
            _step(lambda: naive_dot_regression(u, w, y), u, w, doc=naive_dot_regression.__doc__),
        ),
        "supcon": (
            "losses.supcon (one view)",
            _step(lambda: losses.supcon(u, y, TAU), u),
            _step(lambda: naive_supcon(u, y, TAU), u, doc=naive_supcon.__doc__),
        ),
        "entropy regulariser": (
            "methods.control.entropy_regularizer",
            _step(lambda: entropy_regularizer(u), u),
            _step(lambda: naive_entropy(u), u, doc=naive_entropy.__doc__),
        ),
        "ncfal alignment": (
            "methods.ncfal.alignment_penalty (2 environments, 2 classes as on Colored-MNIST)",
            _step(lambda: alignment_penalty(u, y2, env), u),
            _step(lambda: naive_alignment(u, y2, env), u, doc=naive_alignment.__doc__),
        ),
    }
    grad = torch.randn(classes, p, generator=g)
    centres = torch.randn(classes, p, generator=g)

    def spa_naive():
        return naive_spa_project(w.detach(), grad, centres)

    spa_naive.__doc__ = naive_spa_project.__doc__
    cases["spa projection"] = (
        f"methods.spa.spa_project, the gradient rule of one step (no backward), C = {classes}, p = {p}",
        lambda: spa_project(w.detach(), grad, centres),
        spa_naive,
    )
    head = nn.Linear(p, classes)
    spa_reg = SpARegLoss(CrossEntropy(), classes)
    spa_reg.update(u.detach(), y)  # running centres present: the every-step path
    model = SimpleNamespace(head=head)
    cases["spa regulariser"] = (
        "methods.spa.SpARegLoss(CrossEntropy()) with running centres",
        _step(lambda: spa_reg(BatchOutput(u, head(u), {}, model), y), u, head.weight, head.bias),
        None,
    )
    ufm = UFM(classes, p, ufm_per_class, dtype=torch.float32)
    optimizer = torch.optim.SGD([ufm.H, ufm.W, ufm.b], lr=ufm.lr)

    def ufm_step():
        optimizer.zero_grad(set_to_none=True)
        value = ufm.objective()
        value.backward()
        optimizer.step()
        return value.detach()

    cases["ufm step"] = (
        f"one gradient step of ufm.UFM (C = {classes}, p = {p}, {ufm_per_class} per class, float32, CE)",
        ufm_step,
        None,
    )

    figures = []
    for name, (what, ours, naive) in cases.items():
        ours_t = measure(_repeat(ours, steps), repeats=repeats)
        naive_t = measure(_repeat(naive, naive_steps), repeats=repeats) if naive is not None else None
        extra = {}
        if naive is not None:
            a, b = ours(), naive()
            extra["max_relative_difference"] = ((a - b).abs() / b.abs().clamp_min(1)).max().item()
        size = f"B = {batch}, p = {p}" + (f", C = {classes}" if name != "ncfal alignment" else "")
        figures.append(
            figure(
                name,
                f"{what}: forward + backward per step, {size}" if name not in ("spa projection", "ufm step") else what,
                "s/step",
                ours_t.seconds / steps,
                naive_t.seconds / naive_steps if naive_t else None,
                baseline_what=" ".join(naive.__doc__.split()) if naive is not None and naive.__doc__ else None,
                peak_mib=(ours_t.peak_mib, naive_t.peak_mib if naive_t else None),
                **extra,
            )
        )
    return {
        "settings": {
            "batch": batch,
            "p": p,
            "classes": classes,
            "tau": TAU,
            "steps_per_timing": {"ours": steps, "naive": naive_steps},
            "ufm_per_class": ufm_per_class,
            "repeats": repeats,
            "statistic": "best of the repeats of `steps` steps, divided by `steps`, after a warm-up",
        },
        "figures": figures,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--p", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    args = parser.parse_args()
    print(f"B = {args.batch}, p = {args.p}, C = {args.classes}, torch threads = {torch.get_num_threads()}")
    for fig in run(args.batch, args.p, args.classes)["figures"]:
        naive = "" if fig["baseline"] is None else f"   naive {1e3 * fig['baseline']:8.3f} ms   {fig['ratio']:6.1f}×"
        print(f"{fig['name']:20s} {1e3 * fig['ours']:8.3f} ms/step{naive}")


if __name__ == "__main__":
    main()
