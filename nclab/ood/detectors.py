"""Post-hoc OOD detectors on penultimate features (SPEC §2).

Every detector has scikit-learn's shape: ``ViM(dim=256).fit(train_features, train_labels, weight, bias)``
returns the detector, ``.score(features)`` a (M,) tensor, **higher = more in-distribution** (pytorch-ood's
scores are "higher = OOD": flip the sign to compare). ``fit`` takes the same four arguments everywhere and
ignores those a detector does not use, so the six of :data:`DETECTORS` are interchangeable. Fitted state
lives in ``name_`` attributes.

Numerics: p × p matrices (covariances, precision, eigenvectors) are float64, decomposed with eigh; (N × p)
products run in the features' dtype over row blocks summed in float64 (float32 BLAS is 2× faster on a
CPU; pass float64 features for float64 throughout). Everything runs on the features' device, and no
(N, C, p) tensor is ever built.
"""

from __future__ import annotations

import torch

from .. import stats

__all__ = [
    "Detector",
    "MSP",
    "MaxLogit",
    "Energy",
    "Mahalanobis",
    "ViM",
    "NECO",
    "DETECTORS",
]


def _tensor(x, name: str, ndim: int, device=None) -> torch.Tensor:
    """`x` (tensor or array) as a detached float32/float64 tensor of `ndim` dimensions, finite entries."""
    return stats.as_matrix(torch.as_tensor(x), name, ndim, device)


def _mean(h: torch.Tensor) -> torch.Tensor:
    """(1/N) Σ_i h_i: (N, p) → (p,) float64 (the one class sum of all rows)."""
    return stats.class_sums(h, torch.zeros(len(h), dtype=torch.long, device=h.device), 1)[0] / len(h)


def _check_dim(dim, detector: str, default: str):
    """An integer hyperparameter ≥ 1, or None for its default; anything else raises."""
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise ValueError(f"{detector} dim must be an integer ≥ 1 (or None for {default}), got {dim!r}")
    return dim


# Detectors -------------------------------------------------------------------------------------------


class Detector:
    """The shape every detector shares: ``fit(train_features, train_labels, weight, bias)`` → self and
    ``score(features)`` → (M,), higher = ID; here the input checks, the linear head l = W h + b and the
    fitted-or-not guard."""

    _needs = ()  # which of train_features, train_labels, weight this detector's fit uses

    def fit(self, train_features, train_labels=None, weight=None, bias=None):
        """Fit on training features h (N, p), labels y (N,) and the head W (C, p), b (C,); returns self."""
        name = type(self).__name__
        given = {"train_features": train_features, "train_labels": train_labels, "weight": weight}
        for arg, value in given.items():
            if arg in self._needs and value is None:
                raise ValueError(
                    f"{name} needs {arg}: call {name}().fit(train_features, train_labels, W, b) with "
                    f"W, b = nclab.heads.weight_and_bias(model)"
                )
        for fitted in [key for key in vars(self) if key.endswith("_")]:  # a refit starts afresh
            delattr(self, fitted)
        h = None if train_features is None else _tensor(train_features, "train_features", 2)
        device = None if h is None else h.device
        if weight is not None:
            W = _tensor(weight, "weight", 2, device)
            if h is not None and W.shape[1] != h.shape[1]:
                raise ValueError(
                    f"feature dimension p = {h.shape[1]} differs from the weight's "
                    f"p = {W.shape[1]} (weight must be (C, p))"
                )
            b = torch.zeros_like(W[:, 0]) if bias is None else _tensor(bias, "bias", 1, device)
            if b.shape != (W.shape[0],):
                raise ValueError(
                    f"bias must have shape ({W.shape[0]},) to match weight {tuple(W.shape)}, got {tuple(b.shape)}"
                )
            self.weight_, self.bias_ = W, b
        y = None if train_labels is None or h is None else stats.as_labels(train_labels, len(h), "train_labels", device)
        self._fit(h, y)
        self.n_features_ = h.shape[1] if h is not None else self.weight_.shape[1]  # marks it fitted
        return self

    def _fit(self, h, y):
        pass

    def score(self, features) -> torch.Tensor:
        """Score of each feature h (M, p) → (M,); higher = in-distribution."""
        if not hasattr(self, "n_features_"):
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted yet: call "
                f".fit(train_features, train_labels, weight, bias) first"
            )
        h = _tensor(features, "features", 2)
        if h.shape[1] != self.n_features_:
            raise ValueError(
                f"features have p = {h.shape[1]} dimensions, the detector was fitted on p = {self.n_features_}"
            )
        return self._score(h)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """l = W h + b: (M, p) → (M, C), in h's dtype and on h's device."""
        return torch.addmm(self.bias_.to(h), h, self.weight_.to(h).T)

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k[0] != "_" and k[-1] != "_")
        return f"{type(self).__name__}({params})"


class MSP(Detector):
    """Maximum softmax probability: score = max_c softmax(l)_c, l = W h + b; in [1/C, 1].

    Higher = in-distribution. Uses only the head W (C, p), b (C,) (zeros if None). (M, p) → (M,).
    Hendrycks & Gimpel, "A baseline for detecting misclassified and OOD examples", ICLR 2017.
    """

    _needs = ("weight",)

    def _score(self, h):
        return torch.softmax(self._logits(h), dim=1).amax(dim=1)


class MaxLogit(Detector):
    """Maximum logit: score = max_c l_c, l = W h + b.

    Higher = in-distribution. Uses only the head W (C, p), b (C,). (M, p) → (M,).
    Hendrycks et al., "Scaling out-of-distribution detection for real-world settings", ICML 2022.
    """

    _needs = ("weight",)

    def _score(self, h):
        return self._logits(h).amax(dim=1)


class Energy(Detector):
    """Negative free energy: score = T · logsumexp(l / T), l = W h + b, temperature T > 0 (default 1).

    Higher = in-distribution: the score is −E(h; T) (with the sign of E, AUROC falls below 0.5).
    Uses only the head W (C, p), b (C,). (M, p) → (M,).
    Liu et al., "Energy-based out-of-distribution detection", NeurIPS 2020.
    """

    _needs = ("weight",)

    def __init__(self, temperature: float = 1.0):
        if not 0 < float(temperature) < float("inf"):
            raise ValueError(f"Energy temperature must be a positive finite number, got {temperature!r}")
        self.temperature = float(temperature)

    def _score(self, h):
        T = self.temperature
        return T * torch.logsumexp(self._logits(h) / T, dim=1)


class Mahalanobis(Detector):
    """Minimum Mahalanobis distance to a class mean: score = −min_c (h − μ_c)ᵀ Σ⁺ (h − μ_c).

    μ_c = class means from the true training labels; Σ = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ,
    ONE shared pooled within-class covariance (not the total covariance, not its diagonal, no ½
    factor), accumulated in float64; Σ⁺ its pseudo-inverse with the cut-off of scikit-learn's ``pinvh``,
    which the reference code (Lee et al.; OpenOOD, through ``EmpiricalCovariance``) uses: eigenvalues
    with |λ| ≤ p·ε·max|λ|, ε = 2.2e-16 of float64, are dropped, so a within-class spectrum spanning many
    decades keeps its small directions (where OOD features often stand out). Higher = in-distribution.
    (M, p) → (M,). Fit it on un-augmented training features. Fitted (float64): classes_ (C,) labels
    present, means_ (C, p), covariance_ (p, p), precision_ (p, p). Lee et al., "A simple unified framework
    for detecting OOD samples and adversarial attacks", NeurIPS 2018.
    """

    _needs = ("train_features", "train_labels")

    def _fit(self, h, y):
        counts = torch.bincount(y)
        self.classes_ = torch.nonzero(counts).squeeze(1)  # classes present: (C,)
        y = (torch.cumsum(counts > 0, 0) - 1)[y]  # label → 0..C−1: (N,)
        N_c = counts[self.classes_]  # (C,)
        self.means_ = stats.class_sums(h, y, len(N_c)) / N_c[:, None]  # μ_c: (C, p)
        self.covariance_ = stats.scatter(h, self.means_, y, dtype=torch.float64) / len(h)  # Σ: (p, p)
        eps = torch.finfo(torch.float64).eps
        self.precision_ = stats.pinv_psd(self.covariance_, rtol=h.shape[1] * eps)  # Σ⁺ as pinvh

    def _score(self, h):
        precision, mu = self.precision_.to(h.device), self.means_.to(h.device)
        mu_G = mu.mean(0)  # centring first keeps the expansion well-conditioned
        x, m = h.double() - mu_G, mu - mu_G  # (M, p), (C, p)
        xP = x @ precision  # (M, p)
        # (h − μ_c)ᵀ Σ⁺ (h − μ_c) = hᵀΣ⁺h − 2 hᵀΣ⁺μ_c + μ_cᵀΣ⁺μ_c, with no (M, C, p) tensor
        d = (xP * x).sum(1, keepdim=True) - 2 * xP @ m.T + ((m @ precision) * m).sum(1)  # (M, C)
        return -d.amin(dim=1).to(h.dtype)


class ViM(Detector):
    """Virtual-logit matching: score = logsumexp(l) − α ‖Rᵀ (h − o)‖, l = W h + b.

    o = −W⁺ b (where every logit is 0; the least-squares point when C > p); R (p, p − dim) = the
    eigenvectors of the uncentred-about-o covariance (1/N) Σ_i (h_i − o)(h_i − o)ᵀ beyond the top
    `dim`; α = mean_train max_c l_c / mean_train ‖Rᵀ(h − o)‖. Higher = in-distribution.
    (M, p) → (M,).
    dim: principal dimension, 1 ≤ dim < p; default p // 2 (256 for p = 512).
    Fitted: origin_ (p,), residual_basis_ (p, p − dim), alpha_ (float), dim_.
    Wang et al., "ViM: Out-of-distribution with virtual-logit matching", CVPR 2022.
    """

    _needs = ("train_features", "weight")

    def __init__(self, dim: int | None = None):
        self.dim = _check_dim(dim, "ViM", "p // 2")

    def _fit(self, h, y):
        p = h.shape[1]
        dim = p // 2 if self.dim is None else self.dim
        if not 1 <= dim < p:
            raise ValueError(f"ViM dim must satisfy 1 ≤ dim < p = {p}, got {dim}")
        self.origin_ = -stats.decompose(torch.linalg.pinv, self.weight_.double()) @ self.bias_.double()  # o
        lam, V = stats.eigh(stats.scatter(h, self.origin_) / len(h))  # ascending eigenvalues
        self.residual_basis_, self.dim_ = V[:, : p - dim], dim  # R: (p, p − dim)
        alpha = self._logits(h).amax(1).double().mean() / self._residual(h).double().mean()
        if not torch.isfinite(alpha):
            raise ValueError(
                f"the training features have no component outside the top {dim} principal "
                f"directions, so α is undefined: choose a smaller ViM dim"
            )
        self.alpha_ = float(alpha)

    def _residual(self, h):
        """‖Rᵀ(h − o)‖: (M, p) → (M,)."""
        return ((h - self.origin_.to(h)) @ self.residual_basis_.to(h)).norm(dim=1)

    def _score(self, h):
        return torch.logsumexp(self._logits(h), dim=1) - self.alpha_ * self._residual(h)


class NECO(Detector):
    """Neural-collapse OOD score: score = ‖P_d s‖ / ‖s‖ (× max_c l_c if times_maxlogit).

    s = (h − mean) / std with the training mean and population (1/N) std (a constant training dimension
    keeps std 1, as scikit-learn's StandardScaler does); standardize=False uses s = h. P_d (d, p) = the
    first d principal axes of a PCA of the standardised training features (centred covariance, eigh).
    Higher = in-distribution; the plain score lies in [0, 1]. (M, p) → (M,).
    dim: d, 1 ≤ d ≤ p, default C − 1 (C from weight, else from the labels). times_maxlogit needs the
    head; the NECO authors use it for ViTs, not ResNets.
    Fitted: mean_ (p,), std_ (p,), components_ (d, p), explained_variance_ (d,), dim_.
    Ben Ammar et al., "NECO: NEural Collapse based Out-of-distribution detection", ICLR 2024.
    """

    def __init__(self, dim: int | None = None, standardize: bool = True, times_maxlogit: bool = False):
        self.dim, self.standardize = _check_dim(dim, "NECO", "C − 1"), bool(standardize)
        self.times_maxlogit = bool(times_maxlogit)
        self._needs = ("train_features", "weight") if times_maxlogit else ("train_features",)

    def _fit(self, h, y):
        N, p = h.shape
        C = self.weight_.shape[0] if hasattr(self, "weight_") else None if y is None else len(y.unique())
        if self.dim is None and C is None:
            raise ValueError("NECO's default dim is C − 1: pass weight or train_labels, or set dim")
        dim = C - 1 if self.dim is None else self.dim
        if not 1 <= dim <= p:
            raise ValueError(f"NECO dim must satisfy 1 ≤ dim ≤ p = {p}, got {dim}")
        self.mean_ = _mean(h)  # (p,)
        Sigma = stats.scatter(h, self.mean_) / N  # covariance of h
        std = Sigma.diagonal().sqrt() if self.standardize else torch.ones_like(self.mean_)
        self.std_ = torch.where(std > 0, std, torch.ones_like(std))
        lam, V = stats.eigh(Sigma / torch.outer(self.std_, self.std_))  # covariance of s
        self.components_ = V.flip(1)[:, :dim].T  # P_d: (d, p)
        self.explained_variance_, self.dim_ = lam.flip(0)[:dim], dim

    def _score(self, h):
        s = h.double()  # (M, p)
        if self.standardize:
            s = (s - self.mean_.to(h.device)) / self.std_.to(h.device)
        norm_s = s.norm(dim=1).clamp_min(torch.finfo(s.dtype).tiny)
        score = ((s @ self.components_.to(h.device).T).norm(dim=1) / norm_s).to(h.dtype)
        return score * self._logits(h).amax(dim=1) if self.times_maxlogit else score


DETECTORS = {"msp": MSP, "maxlogit": MaxLogit, "energy": Energy, "mahalanobis": Mahalanobis, "vim": ViM, "neco": NECO}


# Metrics: ID is the positive class -------------------------------------------------------------------
