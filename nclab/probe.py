"""Linear probes: how much a frozen layer's features know, measured by a logistic regression trained on them.

A linear probe is the standard measure of what a layer has learned (Alain & Bengio, 2016) and of how well
it transfers (Kornblith et al., 2019): freeze the network, take one layer's features of a data set, and
fit a multinomial logistic regression on them. Notebook 05 uses probes twice per layer: on the ID training
set (its logits feed the energy score, a per-layer OOD detector) and on another data set (CIFAR-10, the
"OOD generalisation" of seed 000).

:class:`LinearProbe` minimises scikit-learn's ``LogisticRegression`` objective (multinomial, L2 on W, not
on b) on standardised features, with full-batch L-BFGS in torch so that it runs on the GPU where the
features are (``tests/test_probe.py`` checks it against scikit-learn). Its fitted W, b act on the raw
features (the standardisation is folded in), so ``nclab.ood`` detectors take them like any head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import stats

__all__ = ["LinearProbe"]


class LinearProbe:
    """Multinomial logistic regression on frozen features, fitted by full-batch L-BFGS.

    Minimises (1/N) Σ_i CE(W s_i + b, y_i) + (l2/2) ‖W‖²_F over W (C, p) and b (C,), s_i = (h_i − m)/σ the
    features standardised with the training mean m and std σ (σ = 1 for a constant coordinate). With C ≥ 3
    classes this is scikit-learn's ``LogisticRegression(C=1/(l2·N))`` on ``StandardScaler`` features. With 2
    classes scikit-learn fits one vector v (logit v·s + c) where the probe fits two rows, and at the optimum
    w₁ = −w₀ = v/2, so the probe's penalty (l2/2)(‖w₀‖² + ‖w₁‖²) is (l2/4)‖v‖²: the same model is
    ``LogisticRegression(C=2/(l2·N))`` (``tests/test_probe.py`` checks both). After :meth:`fit`,
    ``weight_`` (C, p) and ``bias_`` (C,) give the logits of the *raw* features, l = weight_ h + bias_
    (float32, on the features' device); ``iterations_`` is the number of L-BFGS iterations run and
    ``converged_`` says whether it stopped on its tolerances rather than on ``max_iter`` (or 4 × as many
    evaluations of the objective).
    """

    def __init__(self, l2: float = 1e-4, max_iter: int = 1000, tolerance: float = 1e-6):
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0 (it keeps W finite on separable features), got {l2!r}")
        if not max_iter >= 1:
            raise ValueError(f"max_iter must be ≥ 1, got {max_iter!r}")
        self.l2, self.max_iter, self.tolerance = float(l2), int(max_iter), float(tolerance)

    def fit(self, features, labels, num_classes: int | None = None) -> LinearProbe:
        """Fit on features (N, p) and integer labels (N,) in 0..C−1; returns self."""
        H = stats.as_matrix(features, "features").float()  # (N, p)
        y = stats.as_labels(labels, len(H), device=H.device)
        C = int(y.max()) + 1 if num_classes is None else int(num_classes)
        if C < 2 or int(y.max()) >= C:
            raise ValueError(f"a linear probe needs labels in 0..C−1 with C ≥ 2, got C = {C}, max label {int(y.max())}")
        mean, std = H.mean(0), H.std(0, correction=0)  # (p,)
        std = torch.where(std > 0, std, torch.ones_like(std))
        S = (H - mean) / std  # (N, p) standardised
        W = torch.zeros(C, H.shape[1], device=H.device, requires_grad=True)
        b = torch.zeros(C, device=H.device, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [W, b],
            lr=1,
            max_iter=self.max_iter,
            max_eval=4 * self.max_iter,
            tolerance_grad=self.tolerance,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def objective():
            optimizer.zero_grad()
            loss = F.cross_entropy(S @ W.T + b, y) + 0.5 * self.l2 * (W * W).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(objective)
        state = optimizer.state[W]
        self.iterations_ = state.get("n_iter", 0)
        self.converged_ = self.iterations_ < self.max_iter and state.get("func_evals", 0) < 4 * self.max_iter
        with torch.no_grad():
            self.weight_ = (W / std).detach()  # (C, p): W s = (W/σ) h − (W/σ) m
            self.bias_ = (b - self.weight_ @ mean).detach()  # (C,)
        return self

    def logits(self, features) -> torch.Tensor:
        """l = weight_ h + bias_: (n, p) → (n, C)."""
        if not hasattr(self, "weight_"):
            raise RuntimeError("this LinearProbe is not fitted yet: call probe.fit(features, labels) first.")
        H = stats.as_matrix(features, "features").float().to(self.weight_.device)
        return H @ self.weight_.T + self.bias_

    def predict(self, features) -> torch.Tensor:
        """argmax_c l_c: (n,) int64."""
        return self.logits(features).argmax(1)

    def accuracy(self, features, labels) -> float:
        """Fraction of ``features`` (n, p) whose predicted class is their label (n,)."""
        predictions = self.predict(features)
        y = stats.as_labels(labels, len(predictions), device=predictions.device)
        return (predictions == y).float().mean().item()
