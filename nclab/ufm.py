"""The unconstrained-features model (UFM): neural collapse as the optimum of a problem small enough to
solve on a CPU in seconds (SPEC §10).

A network expressive enough can place its last-layer features anywhere; the UFM (Mixon et al. 2020; the
"layer-peeled model" of Fang et al. 2021) takes that literally. The features H = [h_i] (N, p) of the N
training samples are free variables, trained with the classifier (W, b) by full-batch gradient descent on

    (1/N) Σ_i ℓ(W h_i + b, y_i) + (λ_W/2)‖W‖²_F + (λ_H/2)‖H‖²_F + (λ_b/2)‖b‖²,

ℓ the cross-entropy (or the squared error to the one-hot label). With balanced classes and p ≥ C − 1 every
global minimiser of the cross-entropy problem is collapsed (Zhu et al., NeurIPS 2021, Thm 3.1): h_i equal
to its class mean (NC1), the rows of W a simplex ETF (NC2), w_c ∝ h_c (NC3), hence NC4, and b = 0 when
λ_b > 0. :class:`UFM` trains it and measures every SPEC §1 metric along the way with the same
``collapse.nc_metrics`` as for real networks; :func:`optimum` gives the optimum's norms in closed form.
With imbalanced classes the minority rows of W merge (Fang et al., PNAS 2021: minority collapse).
Book chapter "Why collapse"; notebook 00.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from .collapse import class_means, nc_metrics, variability_metrics
from .config import log_spaced_epochs
from .features import FeatureSet

__all__ = [
    "UFM",
    "optimum",
    "mean_pairwise_cosine",
    "cosine_search",
    "cosine_table",
    "lambda_sweep",
    "imbalance_sweep",
]


def optimum(num_classes: int, per_class: int, lambda_H: float, lambda_W: float) -> dict[str, float]:
    """The norms of the collapsed global minimiser of the balanced cross-entropy UFM (λ_b > 0, so b = 0).

    At the optimum every h_i is its class mean h_c, the rows w_c form a simplex ETF of norm ω and
    w_c = α h_c with α = √(n λ_H / λ_W) (n = ``per_class``, C = ``num_classes``). The logits of a sample
    of class c are then t on its class and −t/(C−1) elsewhere, t = ω²/α, and the objective reduces to

        F(t) = log(1 + (C−1) e^{−tC/(C−1)}) + C √(n λ_H λ_W) · t,

    minimised at e^{−tC/(C−1)} = κ / (1 − (C−1)κ), κ = √(n λ_H λ_W), when κ < 1/C; else at t = 0 (the
    regularisation wins: W = 0, H = 0). Returns ``margin`` t, ``w_norm`` ω = √(α t), ``h_norm`` √(t/α)
    and ``objective`` F(t). Derived from Zhu et al. (2021), Theorem 3.1.
    """
    C, n = int(num_classes), int(per_class)
    if C < 2 or n < 1 or not (lambda_H > 0 and lambda_W > 0):
        raise ValueError(f"need C ≥ 2, n ≥ 1 and λ_H, λ_W > 0, got {C}, {n}, {lambda_H}, {lambda_W}")
    kappa, alpha = math.sqrt(n * lambda_H * lambda_W), math.sqrt(n * lambda_H / lambda_W)
    t = 0.0 if kappa >= 1 / C else -(C - 1) / C * math.log(kappa / (1 - (C - 1) * kappa))
    objective = math.log(1 + (C - 1) * math.exp(-t * C / (C - 1))) + C * kappa * t
    return {"margin": t, "w_norm": math.sqrt(alpha * t), "h_norm": math.sqrt(t / alpha), "objective": objective}


@dataclass
class UFM:
    """The unconstrained-features model: free features H (N, p), a classifier W (C, p) and b (C,).

    ``per_class``: images per class, an int (balanced) or one count per class (imbalanced). ``loss``:
    "ce" (cross-entropy) or "mse" (½‖W h + b − onehot(y)‖², averaged over the samples). λ's: the weight
    decays of SPEC §10. ``lr``: the gradient-descent step; ``seed``: the random start (small Gaussian H,
    W). ``dtype``: float64 by default, so that NC1 can be followed down to 10⁻¹⁰ and below.
    """

    num_classes: int
    dim: int
    per_class: int | list[int] = 10
    lambda_H: float = 5e-4
    lambda_W: float = 5e-4
    lambda_b: float = 5e-4
    loss: str = "ce"
    lr: float = 2.0
    seed: int = 0
    dtype: torch.dtype = torch.float64

    def __post_init__(self):
        counts = [self.per_class] * self.num_classes if isinstance(self.per_class, int) else list(self.per_class)
        if len(counts) != self.num_classes or min(counts) < 1:
            raise ValueError(f"per_class must be an int ≥ 1 or {self.num_classes} counts ≥ 1, got {self.per_class}")
        if self.loss not in ("ce", "mse"):
            raise ValueError(f"loss must be 'ce' or 'mse', not {self.loss!r}")
        if min(self.lambda_H, self.lambda_W, self.lambda_b) < 0 or not self.lr > 0:
            raise ValueError("the weight decays must be ≥ 0 and the step lr > 0")
        self.counts = counts
        self.labels = torch.repeat_interleave(torch.arange(self.num_classes), torch.tensor(counts))  # (N,)
        generator = torch.Generator().manual_seed(self.seed)
        N, p, C = len(self.labels), self.dim, self.num_classes
        self.H = (0.1 * torch.randn(N, p, generator=generator, dtype=self.dtype)).requires_grad_()
        self.W = (0.1 * torch.randn(C, p, generator=generator, dtype=self.dtype)).requires_grad_()
        self.b = torch.zeros(C, dtype=self.dtype, requires_grad=True)
        self.step = 0
        self.snapshots: dict[int, FeatureSet] = {}  # step → features, logits, labels (fit(..., snapshots=True))

    def objective(self) -> torch.Tensor:
        """The regularised loss of SPEC §10 at the current H, W, b."""
        logits = self.H @ self.W.T + self.b  # (N, C)
        if self.loss == "ce":
            fit = F.cross_entropy(logits, self.labels)
        else:
            fit = 0.5 * ((logits - F.one_hot(self.labels, self.num_classes).to(logits)) ** 2).sum(1).mean()
        decay = self.lambda_W * self.W.pow(2).sum() + self.lambda_H * self.H.pow(2).sum()
        return fit + 0.5 * (decay + self.lambda_b * self.b.pow(2).sum())

    def metrics(self, features: FeatureSet | None = None) -> dict[str, float]:
        """Every SPEC §1 metric of the current features and classifier (``collapse.nc_metrics``; NC1 alone,
        ``variability_metrics``, when p < C − 1; none when the class means coincide, at the trivial optimum
        of strong decay), the objective, the training accuracy, and the mean norms of the class means and of
        the rows of W. ``features``: :meth:`features`, when already taken."""
        fs = self.features() if features is None else features
        with torch.no_grad():
            W = self.W.detach()
            try:
                if self.dim >= self.num_classes - 1:
                    metrics = nc_metrics(fs.features, fs.labels, W, self.b.detach())
                else:  # no simplex ETF fits in R^p: NC1 only (SPEC §1)
                    metrics = variability_metrics(fs.features, fs.labels, self.num_classes)
            except ValueError as error:  # strong decay (κ ≥ 1/C) drives H to 0 and Σ_B underflows to 0
                if "Σ_B = 0" not in str(error):
                    raise
                metrics = {}
            return {
                "objective": self.objective().item(),
                "accuracy": fs.accuracy,
                "w_norm": W.norm(dim=1).mean().item(),
                "h_norm": self.class_means().norm(dim=1).mean().item(),
                **metrics,
            }

    def fit(self, steps: int, records: int = 40, snapshots: bool = False) -> pd.DataFrame:
        """``steps`` more steps of full-batch gradient descent; returns the trajectory: one row per
        log-spaced step (about ``records`` of them, the first and last included) with ``step`` and every
        key of :meth:`metrics`. With ``snapshots``, the features at those steps are kept too, in
        ``self.snapshots`` ({step: FeatureSet}, as ``widgets.collapse_explorer`` takes them)."""
        if steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {steps}")
        start = self.step
        keep = set(log_spaced_epochs(steps, records))  # log-spaced steps, the last included
        optimizer = torch.optim.SGD([self.H, self.W, self.b], lr=self.lr)
        rows = []
        for done in range(0 if start == 0 else 1, steps + 1):
            if done:
                optimizer.zero_grad(set_to_none=True)
                self.objective().backward()
                optimizer.step()
                self.step += 1
            if done in keep or done == 0:
                fs = self.features()
                rows.append({"step": self.step, **self.metrics(fs)})
                if snapshots:
                    self.snapshots[self.step] = fs
        return pd.DataFrame(rows)

    def features(self) -> FeatureSet:
        """The current features, logits W h + b and labels, detached: a FeatureSet like a network's."""
        with torch.no_grad():
            H = self.H.detach().clone()
            return FeatureSet(H, H @ self.W.detach().T + self.b.detach(), self.labels.clone())

    def class_means(self) -> torch.Tensor:
        """The class means h_c of the current features: (C, p)."""
        return class_means(self.H.detach(), self.labels, self.num_classes)[0]


# ----------------------------------------------------------------------------------------------------
# The bound on the mean pairwise cosine, and the sweeps of notebook 00


def mean_pairwise_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """The mean of cos(v_i, v_j) over the C(C−1) ordered pairs i ≠ j of the rows of ``vectors`` (C, p).

    Since 0 ≤ ‖Σ_c v̂_c‖² = C + Σ_{i≠j} cos(v_i, v_j), it is never below −1/(C−1), with equality iff the unit
    vectors v̂_c sum to zero (SPEC §10). Differentiable: :func:`cosine_search` descends on it.
    """
    if vectors.dim() != 2 or len(vectors) < 2:
        raise ValueError(f"vectors must be (C, p) with C ≥ 2 rows, got shape {tuple(vectors.shape)}")
    unit = F.normalize(vectors, dim=1)
    C = len(unit)
    return ((unit @ unit.T).sum() - C) / (C * (C - 1))  # the diagonal's C ones left out


def cosine_search(num_classes: int, dim: int, target: str = "mean", starts: int = 4, steps: int = 300, seed: int = 0):
    """Look for C unit vectors in R^p of small pairwise cosines by Adam from ``starts`` random starts
    (float64). ``target`` "mean": minimise :func:`mean_pairwise_cosine`; "largest": minimise the largest
    pairwise cosine (through a log-sum-exp of the cosines at temperature 0.005, a smooth maximum).

    Returns ``mean`` and ``largest`` pairwise cosine of the best configuration, and ``bound`` −1/(C−1).
    The mean reaches the bound whenever the unit vectors can sum to zero (in the plane, a regular polygon);
    the largest cosine reaches it only at a simplex ETF, every pair at −1/(C−1), which needs p ≥ C − 1.
    """
    if target not in ("mean", "largest"):
        raise ValueError(f"target must be 'mean' or 'largest', not {target!r}")
    generator = torch.Generator().manual_seed(seed)
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool)
    best = None
    for _ in range(starts):
        vectors = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64).requires_grad_()
        optimizer = torch.optim.Adam([vectors], lr=0.05)
        for _ in range(steps):
            unit = F.normalize(vectors, dim=1)
            cosines = (unit @ unit.T)[off_diagonal]  # (C(C−1),)
            loss = cosines.mean() if target == "mean" else 0.005 * torch.logsumexp(cosines / 0.005, dim=0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            unit = F.normalize(vectors, dim=1)
            cosines = (unit @ unit.T)[off_diagonal]
            found = {"mean": cosines.mean().item(), "largest": cosines.max().item()}
        if best is None or found[target] < best[target]:
            best = found
    return {**best, "bound": -1 / (num_classes - 1)}


def cosine_table(classes=range(2, 11), starts: int = 4, steps: int = 300) -> pd.DataFrame:
    """:func:`cosine_search` for each C in ``classes``, in p = C − 1 dimensions (room for a simplex ETF) and
    in the plane (p = 2), for both targets: one row per (C, dimension, target) with the mean and largest
    pairwise cosine found and the bound −1/(C−1)."""
    rows = []
    for C in classes:
        for dimension, p in (("p = C − 1", C - 1), ("p = 2", 2)):
            for target in ("mean", "largest"):
                found = cosine_search(C, p, target, starts=starts, steps=steps)
                rows.append({"C": C, "dimension": dimension, "p": p, "target": target, **found})
    return pd.DataFrame(rows)


def lambda_sweep(
    lambdas, num_classes: int = 4, dim: int = 8, per_class: int = 10, steps: int = 3000, lr: float = 1.0
) -> pd.DataFrame:
    """One balanced UFM per weight decay λ (λ_H = λ_W = λ_b = λ): the norms and objective gradient descent
    reaches beside :func:`optimum`'s closed form, and how collapsed it is. One row per λ, with ``C`` and
    ``n`` (the problem's size, for :func:`nclab.plots.plot_lambda_sweep`). Past κ = √n λ ≥ 1/C the optimum
    is W = 0, H = 0: the features left are rounding noise, and the NC columns are NaN there."""
    rows = []
    for lam in lambdas:
        model = UFM(num_classes, dim, per_class, lambda_H=lam, lambda_W=lam, lambda_b=lam, lr=lr)
        final = model.fit(steps, records=2).iloc[-1]
        best = optimum(num_classes, per_class, lam, lam)
        trivial = best["margin"] == 0
        rows.append(
            {
                "lambda": lam,
                "kappa": math.sqrt(per_class) * lam,
                "C": num_classes,
                "n": per_class,
                "w_norm": final["w_norm"],
                "w_norm_closed_form": best["w_norm"],
                "h_norm": final["h_norm"],
                "h_norm_closed_form": best["h_norm"],
                "objective": final["objective"],
                "objective_closed_form": best["objective"],
                "nc1": math.nan if trivial else final["nc1"],
                "nc2_etf_distance": math.nan if trivial else final["nc2_etf_distance"],
            }
        )
    return pd.DataFrame(rows)


def imbalance_sweep(
    ratios,
    majority: int = 40,
    num_classes: int = 4,
    minority_classes: int = 2,
    dim: int = 8,
    weight_decay: float = 2e-2,
    steps: int = 2000,
) -> pd.DataFrame:
    """Minority collapse: the last ``minority_classes`` of ``num_classes`` get ``majority / ratio`` features
    (at least 1) and the others ``majority``. One row per distinct minority size (ratios that round to the
    same size give one row), largest first: the cosine between the minority rows of W
    (their mean over pairs), the same for the minority class means, the cosine the ETF would give
    (−1/(C−1)), and the training accuracy of the minority classes. ``weight_decay``: λ_H = λ_W = λ_b; the
    stronger it is, the lower the ratio at which the minority rows merge (Fang et al., 2021)."""
    rows = []
    for minority in sorted({max(1, round(majority / ratio)) for ratio in ratios}, reverse=True):
        counts = [majority] * (num_classes - minority_classes) + [minority] * minority_classes
        lam = weight_decay
        model = UFM(num_classes, dim, per_class=counts, lambda_H=lam, lambda_W=lam, lambda_b=lam, lr=1.0)
        model.fit(steps, records=2)
        fs = model.features()
        rare = slice(num_classes - minority_classes, None)
        in_rare = fs.labels >= num_classes - minority_classes
        rows.append(
            {
                "ratio": majority / minority,
                "minority_size": minority,
                "cos_minority_weights": mean_pairwise_cosine(model.W.detach()[rare]).item(),
                "cos_minority_means": mean_pairwise_cosine(model.class_means()[rare]).item(),
                "cos_etf": -1 / (num_classes - 1),
                "minority_accuracy": (fs.logits[in_rare].argmax(1) == fs.labels[in_rare]).double().mean().item(),
            }
        )
    return pd.DataFrame(rows)
