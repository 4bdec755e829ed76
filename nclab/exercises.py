"""Exercises with instant feedback: ``check(name, answer)`` says ✅ or ❌ and, when ❌, what is wrong.

Every exercise of a notebook asks for one global name (a function, usually): the notebook cell defines it
and calls ``check``; the grader (:mod:`nclab.grade`) finds the same name in a submission and runs the same
check. ``EXERCISES`` maps each exercise to that name and to its check function. A check function takes the
student's answer and returns ``(passed, message)``; it compares the answer with nclab's own implementation
on a tiny hand case and on random inputs, and names the typical mistakes it recognises. Points are not
here: they live in one table, :data:`nclab.grade.POINTS`.

One section per notebook, each ending with its dict (``NOTEBOOK_01``, …) merged into ``EXERCISES``; a
section that outgrows this module moves to ``exercises_NN.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from . import collapse, data, models, ood, train

__all__ = ["check", "run_check", "Result", "Exercise", "Wrong", "EXERCISES"]


@dataclass(frozen=True)
class Result:
    """The outcome of one check: ``passed`` and a message for the student."""

    name: str
    passed: bool
    message: str

    def __str__(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.name}: {self.message}"


@dataclass(frozen=True)
class Exercise:
    """An exercise: the global name its answer is defined under, and the function that checks it."""

    answer: str                                        # e.g. "cifar_stem_layer": what the grader looks up
    check: Callable[[Any], tuple[bool, str]]           # answer → (passed, message)


class Wrong(Exception):
    """Raised inside a check function to fail with its message as is."""


NOT_ANSWERED = ("not answered yet (it raises NotImplementedError): replace `# YOUR CODE HERE` and "
                "`raise NotImplementedError()` with your code, then rerun the cell.")


def run_check(name: str, answer: Any) -> Result:
    """Check ``answer`` for exercise ``name`` without printing. Never raises because of the answer."""
    if name not in EXERCISES:
        raise KeyError(f"No exercise {name!r}; nclab knows {sorted(EXERCISES)}.")
    if answer is None or answer is Ellipsis:
        return Result(name, False, f"not answered yet: `{EXERCISES[name].answer}` is {answer!r}.")
    try:
        passed, message = EXERCISES[name].check(answer)
    except NotImplementedError:
        return Result(name, False, NOT_ANSWERED)
    except Wrong as wrong:
        return Result(name, False, str(wrong))
    except Exception as error:  # the student's code crashed: say how, never re-raise
        return Result(name, False, f"your code raised {type(error).__name__}: {error}")
    return Result(name, bool(passed), message)


def check(name: str, answer: Any) -> Result:
    """Check ``answer`` for exercise ``name``, print ✅/❌ with what is wrong, and return the Result."""
    result = run_check(name, answer)
    print(result)
    return result


# ----------------------------------------------------------------------------------------------------
# Comparing tensors, naming the mistake


def _show(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')} tensor"
    return f"a {type(x).__name__}"


def _compare(got: Any, expected: torch.Tensor, case: str, mistakes: dict[str, torch.Tensor]) -> str | None:
    """None when ``got`` equals ``expected``; else what differs: type, shape, dtype, a known mistake, or
    the first wrong value (the whole tensors when they are small enough to read)."""
    if not isinstance(got, torch.Tensor):
        return f"{case}: expected {_show(expected)}, got {_show(got)}."
    if got.shape != expected.shape:
        return f"{case}: your output has shape {tuple(got.shape)}, expected {tuple(expected.shape)}."
    if got.dtype != expected.dtype:
        return (f"{case}: your output is {got.dtype}, expected {expected.dtype} (the input's): "
                f"augmentation works on the uint8 images, before normalisation.")
    if torch.equal(got, expected):
        return None
    for mistake, wrong in mistakes.items():
        if torch.equal(got, wrong):
            return f"{case}: {mistake}"
    if expected.numel() <= 36:
        return f"{case}: expected {expected.tolist()}, got {got.tolist()}."
    index = tuple(int(i) for i in (got != expected).nonzero()[0])
    return f"{case}: first wrong value at index {list(index)}: got {got[index].item()}, expected {expected[index].item()}."


def _call_on_copy(function: Callable, case: str, images: torch.Tensor, *args) -> Any:
    """``function(images, *args)``; fails with ``case`` named if it crashes or changes ``images`` in place."""
    original = images.clone()
    try:
        output = function(images, *args)
    except NotImplementedError:
        raise
    except Exception as error:
        raise Wrong(f"{case}: your code raised {type(error).__name__}: {error}") from None
    if not torch.equal(images, original):
        raise Wrong(f"{case}: your function changed its input `images` in place; return a new tensor.")
    return output


def _as_number(value: Any) -> float | None:
    """``float(value)`` for a number or a one-element tensor; None for anything else, text included."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several values
        return None


def _random_images(batch: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)


# ----------------------------------------------------------------------------------------------------
# Notebook 01: training ResNet-18 on CIFAR-100


def check_flip(random_flip_student: Callable) -> tuple[bool, str]:
    """01_flip: ``random_flip_student(images, flips)`` mirrors left–right exactly the flagged images.

    x'_{b,k,i,j} = x_{b,k,i,W-1-j} if flips_b else x_{b,k,i,j}. Compared with ``nclab.data.random_flip``
    on a hand case (two 1×2×3 images, the first flagged) and on a random uint8 batch; recognises a
    top–bottom flip, a colour flip, flipping every image, none, or the unflagged ones; checks shape,
    dtype, and that the input is left unchanged.
    """
    hand = torch.arange(12, dtype=torch.uint8).view(2, 1, 2, 3)
    cases = [("hand case: images [[0, 1, 2], [3, 4, 5]] and [[6, 7, 8], [9, 10, 11]] with flips [True, False]",
              hand, torch.tensor([True, False])),
             ("a random (6, 3, 8, 8) uint8 batch", _random_images(6, 8, seed=1),
              torch.tensor([True, False, False, True, True, False]))]
    for case, images, flips in cases:
        where = flips[:, None, None, None]
        mistakes = {
            "you mirrored top–bottom (dimension -2, the rows); a horizontal flip reverses the columns, dimension -1.":
                torch.where(where, images.flip(-2), images),
            "you reversed the colour channels (dimension 1); a horizontal flip reverses the columns, dimension -1.":
                torch.where(where, images.flip(1), images),
            "every image is flipped; flip only those whose entry of `flips` is True (torch.where broadcasts "
            "flips[:, None, None, None]).": images.flip(-1),
            "your output equals the input: no image was flipped.": images,
            "you flipped the images whose flag is False and kept the flagged ones.":
                torch.where(~where, images.flip(-1), images),
        }
        wrong = _compare(_call_on_copy(random_flip_student, case, images, flips), data.random_flip(images, flips),
                         case, mistakes)
        if wrong:
            return False, wrong
    return True, "the flagged images are mirrored left–right, the others untouched, as uint8."


def check_crop(random_crop_student: Callable) -> tuple[bool, str]:
    """01_crop: ``random_crop_student(images, shifts)`` pads by 4 zeros and cuts each image's window.

    x'_{b,k,i,j} = pad_4(x)_{b,k,i+δr_b,j+δc_b}. Compared with ``nclab.data.random_crop`` on a hand case
    (a 3×3 image at shifts (4, 4) = identity, (3, 4), (5, 5) and (0, 0) = all padding) and on a random
    (8, 3, 32, 32) uint8 batch; recognises ignored shifts, swapped row/column, windows moving the wrong
    way, one shift for the whole batch, and wrapping around (torch.roll) instead of zero padding.
    """
    hand = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3).repeat(4, 1, 1, 1)
    cases = [("hand case: the 3×3 image [[1, 2, 3], [4, 5, 6], [7, 8, 9]] at shifts (4, 4), (3, 4), (5, 5), (0, 0)",
              hand, torch.tensor([[4, 4], [3, 4], [5, 5], [0, 0]])),
             ("a random (8, 3, 32, 32) uint8 batch", _random_images(8, 32, seed=2),
              torch.randint(0, 9, (8, 2), generator=torch.Generator().manual_seed(3)))]
    for case, images, shifts in cases:
        rolled = torch.stack([image.roll((4 - int(r), 4 - int(c)), dims=(-2, -1))
                              for image, (r, c) in zip(images, shifts)])
        mistakes = {
            "your output equals the input: the shifts were ignored ((4, 4) is the identity, (0, 0) shows "
            "4 rows and columns of padding at the top left).": images,
            "rows and columns are swapped: shifts[b] is (δr, δc), the row first.": data.random_crop(images, shifts.flip(1)),
            "the window moves the wrong way: shifts[b] is the window's top-left corner in the padded image, "
            "so (0, 0) shows the padding above and left of the image.": data.random_crop(images, 8 - shifts),
            "every image got the first image's shift: index with each image's own row of `shifts`.":
                data.random_crop(images, shifts[:1].expand_as(shifts)),
            "pixels wrap around to the other side (torch.roll?): where the window leaves the image it must "
            "show the zero padding.": rolled,
        }
        got = _call_on_copy(random_crop_student, case, images, shifts)
        if isinstance(got, torch.Tensor) and got.shape[-2:] == (images.shape[-2] + 8, images.shape[-1] + 8):
            return False, (f"{case}: your output has shape {tuple(got.shape)}, the padded size: cut a window of "
                           f"the input's size H × W = {tuple(images.shape[-2:])}.")
        wrong = _compare(got, data.random_crop(images, shifts), case, mistakes)
        if wrong:
            return False, wrong
    return True, "every image is cropped at its own shift, with zero padding, as uint8."


def check_stem(cifar_stem_layer: Callable) -> tuple[bool, str]:
    """01_stem: ``cifar_stem_layer(width)`` returns the CIFAR stem, ``nn.Conv2d(3, width, 3, stride=1, padding=1,
    bias=False)``.

    Compares the layer built for widths 16 and 24 with ``nclab.models.resnet18(...).conv1`` field by
    field (channels, kernel, stride, padding, dilation, groups, bias) and checks that a 32×32 input
    keeps its 32×32 map: H_out = ⌊(H + 2p − k)/s⌋ + 1.
    """
    if isinstance(cifar_stem_layer, nn.Module):
        return False, "`cifar_stem_layer` is a layer; define a function `cifar_stem_layer(width)` that returns the layer."
    for width in (16, 24):
        stem = cifar_stem_layer(width)
        if not isinstance(stem, nn.Conv2d):
            return False, (f"cifar_stem_layer({width}) returned {_show(stem)}; expected one nn.Conv2d (BatchNorm and "
                           f"ReLU follow it in the network, they are not part of the answer).")
        reference = models.resnet18(10, width).conv1
        fields = {
            "in_channels": "the input has 3 colour channels",
            "out_channels": "the stem has `width` output channels: use the argument, not a constant",
            "kernel_size": "the CIFAR stem is a 3×3 convolution (ImageNet's 7×7 sees most of a 32×32 image at once)",
            "stride": "a stride of 2 halves the map (32 → 16); the CIFAR stem keeps every pixel: stride 1",
            "padding": "with a 3×3 kernel, padding 1 keeps 32 × 32 (without it the map shrinks to 30 × 30)",
            "dilation": "a plain convolution has dilation 1",
            "groups": "every output channel sees all 3 input channels: groups=1",
        }
        for field, why in fields.items():
            if getattr(stem, field) != getattr(reference, field):
                return False, (f"cifar_stem_layer({width}).{field} is {getattr(stem, field)}, expected "
                               f"{getattr(reference, field)}: {why}.")
        if stem.bias is not None:
            return False, (f"cifar_stem_layer({width}) has a bias: BatchNorm follows and subtracts the mean, so the "
                           f"bias would be useless. Use bias=False.")
        shape = tuple(stem(torch.zeros(2, 3, 32, 32)).shape)
        if shape != (2, width, 32, 32):
            return False, f"cifar_stem_layer({width}) maps a (2, 3, 32, 32) batch to {shape}, expected (2, {width}, 32, 32)."
    return True, "3 → width channels, 3×3, stride 1, padding 1, no bias: the map stays 32 × 32."


def check_schedule(multistep_factor: Callable) -> tuple[bool, str]:
    """01_schedule: ``multistep_factor(step, total_steps, gamma)`` = γ^([t ≥ ⌊T/3⌋] + [t ≥ ⌊2T/3⌋]).

    Compared with ``nclab.train.lr_factor`` for a multi-step TrainConfig (one step per epoch) at every
    step t = 0 … T−1 of T = 30, 31 and 299 steps, and with γ = 0.5; reports where the factor changes
    against where it should (the boundaries ⌊T/3⌋ and ⌊2T/3⌋ themselves included).
    """
    for total, gamma in ((30, 0.1), (31, 0.1), (299, 0.1), (30, 0.5)):
        reference = train.lr_factor(train.TrainConfig(epochs=total, schedule="multistep", gamma=gamma), 1)
        expected = [reference(t) for t in range(total)]
        got = []
        for t in range(total):
            value = multistep_factor(t, total, gamma)
            if _as_number(value) is None:
                return False, f"multistep_factor({t}, {total}, {gamma}) returned {_show(value)}; return a number."
            got.append(_as_number(value))
        if all(math.isclose(g, e, rel_tol=1e-6) for g, e in zip(got, expected)):
            continue
        if not math.isclose(got[0], 1.0):
            return False, f"multistep_factor(0, {total}, {gamma}) is {got[0]:g}: training starts at the full rate, f(0) = 1."
        changes = [t for t in range(1, total) if not math.isclose(got[t], got[t - 1])]
        should = [t for t in range(1, total) if expected[t] != expected[t - 1]]
        if changes != should:
            return False, (f"with T = {total} steps your factor changes at steps {changes}; it should drop at "
                           f"steps {should} = ⌊T/3⌋, ⌊2T/3⌋ (the milestone step itself already has the smaller rate).")
        levels = sorted({round(g, 12) for g in got}, reverse=True)
        return False, (f"with γ = {gamma} your factor takes the values {levels}; expected 1, γ = {gamma:g} and "
                       f"γ² = {gamma ** 2:g}: use the `gamma` argument.")
    return True, "f(t) drops by γ at ⌊T/3⌋ and again at ⌊2T/3⌋, exactly as train.lr_factor."


NOTEBOOK_01 = {
    "01_flip": Exercise("random_flip_student", check_flip),
    "01_crop": Exercise("random_crop_student", check_crop),
    "01_stem": Exercise("cifar_stem_layer", check_stem),
    "01_schedule": Exercise("multistep_factor", check_schedule),
}

# ----------------------------------------------------------------------------------------------------
# Comparing float results, naming the mistake (notebooks 03 and 04)


def _as_float_tensor(got: Any, case: str, expected: torch.Tensor) -> torch.Tensor:
    """``got`` as a float64 tensor of ``expected``'s shape (a number for a 0-d ``expected``); else Wrong."""
    if expected.dim() == 0 and not isinstance(got, torch.Tensor):
        try:
            return torch.tensor(float(got), dtype=torch.float64)
        except (TypeError, ValueError):
            raise Wrong(f"{case}: expected a number, got {_show(got)}.") from None
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"{case}: expected {_show(expected)}, got {_show(got)}: return a torch tensor.")
    if got.numel() == 1 and expected.dim() == 0:
        return got.detach().reshape(()).double()
    if got.shape != expected.shape:
        raise Wrong(f"{case}: your output has shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
    if not (got.is_floating_point() or got.is_complex()):
        raise Wrong(f"{case}: your output is {got.dtype}; these values are real numbers, return a float tensor.")
    return got.detach().double()


def _compare_close(got: Any, expected: torch.Tensor, case: str, mistakes: dict[str, torch.Tensor],
                   rtol: float = 1e-5, atol: float = 1e-7) -> str | None:
    """None when ``got`` ≈ ``expected`` (float64, tolerances rtol/atol); else what differs: shape, NaN/inf,
    a known mistake, or the values (the whole tensors when they are small enough to read)."""
    try:
        got = _as_float_tensor(got, case, expected)
    except Wrong as wrong:
        return str(wrong)
    expected = expected.double()
    if not torch.isfinite(got).all():
        return f"{case}: your output contains NaN or inf ({got.flatten()[:6].tolist()} …)."
    if torch.allclose(got, expected, rtol=rtol, atol=atol):
        return None
    for mistake, wrong in mistakes.items():
        if wrong.shape == got.shape and torch.allclose(got, wrong.double(), rtol=rtol, atol=atol):
            return f"{case}: {mistake}"
    if expected.numel() <= 12:
        return (f"{case}: expected {[round(v, 6) for v in expected.flatten().tolist()]}, "
                f"got {[round(v, 6) for v in got.flatten().tolist()]}.")
    index = int((got - expected).abs().flatten().argmax())
    return (f"{case}: largest difference at flat index {index}: got {got.flatten()[index].item():.6g}, "
            f"expected {expected.flatten()[index].item():.6g} (tolerance {rtol:g} relative).")


def _call(function: Callable, case: str, *args) -> Any:
    """``function(*args)`` on copies of the tensor arguments; fails with ``case`` named if it crashes or
    changes an argument in place."""
    copies = [arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in args]
    try:
        output = function(*copies)
    except NotImplementedError:
        raise
    except Exception as error:
        raise Wrong(f"{case}: your code raised {type(error).__name__}: {error}") from None
    for arg, copy in zip(args, copies):
        if isinstance(arg, torch.Tensor) and not torch.equal(arg, copy):
            raise Wrong(f"{case}: your function changed one of its inputs in place; work on a copy.")
    return output




# ----------------------------------------------------------------------------------------------------
# Notebook 02: measuring neural collapse


def _collapse_case(C: int = 4, p: int = 6, per_class: int = 5, seed: int = 0):
    """Features of C classes around random means in R^p, with their class means, Σ_W and Σ_B."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat(per_class)
    features = 3 * torch.randn(C, p, generator=generator, dtype=torch.float64)[labels] + \
        torch.randn(C * per_class, p, generator=generator, dtype=torch.float64)
    means, _ = collapse.class_means(features, labels)
    Sigma_W = collapse.within_class_covariance(features, labels, means)
    Sigma_B = collapse.between_class_covariance(means)
    return features, labels, means, Sigma_W, Sigma_B


def check_nc1(nc1_from_covariances: Callable) -> tuple[bool, str]:
    """02_nc1: ``nc1_from_covariances(Sigma_W, Sigma_B, C)`` = Tr(Σ_W Σ_B†)/C, Σ_B† from the top C − 1
    eigenpairs of Σ_B.

    Compared with ``nclab.collapse.nc_metrics`` on a hand case (Σ_W = I₂, Σ_B = diag(2, 0), C = 2:
    Tr(I · diag(½, 0))/2 = ¼) and on random 4-class features in R⁶; recognises the missing 1/C, a full
    pseudo-inverse that inverts Σ_B's rounding-error eigenvalues, and Tr(Σ_W)/Tr(Σ_B).
    """
    hand = ("hand case: Σ_W = I₂, Σ_B = diag(2, 0), C = 2", torch.eye(2, dtype=torch.float64),
            torch.diag(torch.tensor([2.0, 0.0], dtype=torch.float64)), 2, torch.tensor(0.25, dtype=torch.float64))
    features, labels, means, Sigma_W, Sigma_B = _collapse_case()
    expected = torch.tensor(collapse.nc_metrics(features, labels)["nc1"], dtype=torch.float64)
    random_case = ("random 4-class features in R^6", Sigma_W, Sigma_B, 4, expected)
    for case, S_W, S_B, C, nc1 in (hand, random_case):
        mistakes = {"you forgot to divide by C: NC1 = Tr(Σ_W Σ_B†) / C.": nc1 * C,
                    "that is Tr(Σ_W)/Tr(Σ_B), the trace ratio; NC1 uses the pseudo-inverse: Tr(Σ_W Σ_B†)/C.":
                        torch.trace(S_W) / torch.trace(S_B)}
        got = _call(nc1_from_covariances, case, S_W, S_B, C)
        if isinstance(got, (torch.Tensor, float)) and getattr(got, "numel", lambda: 1)() == 1 and \
                abs(float(got)) > 1e3 * float(nc1):
            return False, (f"{case}: got {float(got):.4g}, expected {float(nc1):.6g}. Σ_B has rank C − 1 = {C - 1} "
                           f"in R^{S_B.shape[0]}: keep only its top C − 1 eigenpairs when building Σ_B†, or the "
                           f"inverted rounding-error eigenvalues blow NC1 up.")
        wrong = _compare_close(got, nc1, case, mistakes, rtol=1e-6, atol=1e-9)
        if wrong:
            return False, wrong
    return True, "Tr(Σ_W Σ_B†)/C with Σ_B† from the top C − 1 eigenpairs: the NC1 of Papyan et al., divided by C."


def check_ncc(ncc_classify: Callable) -> tuple[bool, str]:
    """02_ncc: ``ncc_classify(features, means)`` → (N,) int, argmin_c ‖h − μ_c‖.

    Compared with ``nclab.collapse.ncc_predictions`` on a hand case (means (0, 0), (4, 0), (0, 4) in R²)
    and random features; recognises argmax of the distance and argmax of the dot product h·μ_c (which
    ignores ‖μ_c‖²).
    """
    hand_means = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    hand_h = torch.tensor([[0.5, 0.5], [3.0, 1.0], [1.0, 3.5], [2.1, 0.0], [5.0, 5.0]], dtype=torch.float64)
    features, _, means, _, _ = _collapse_case(seed=1)
    for case, h, mu in (("hand case: means (0, 0), (4, 0), (0, 4)", hand_h, hand_means),
                        ("random 4-class features in R^6", features, means)):
        expected = collapse.ncc_predictions(h, mu)
        distances = torch.cdist(h, mu)
        mistakes = {"that picks the *farthest* class centre: use argmin of the distance.": distances.argmax(1),
                    "argmax of h·μ_c ignores the ‖μ_c‖² term of ‖h − μ_c‖²: compare distances.": (h @ mu.T).argmax(1)}
        got = _call(ncc_classify, case, h, mu)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.is_floating_point():
            got = got.long()
        wrong = _compare(got, expected, case, mistakes)
        if wrong:
            return False, wrong
    return True, "argmin_c ‖h − μ_c‖: the nearest-class-centre classifier that NC4 compares the network with."


def check_etf_gram(simplex_gram: Callable) -> tuple[bool, str]:
    """02_etf_gram: ``simplex_gram(C)`` → (C, C), the cosine Gram of a simplex ETF: 1 on the diagonal,
    −1/(C − 1) off it.

    Compared with ``nclab.collapse.simplex_etf_gram`` for C = 2, 3 and 10; recognises the centring matrix
    I − 11ᵀ/C without its scale C/(C − 1) and off-diagonal entries −1/C.
    """
    for C in (2, 3, 10):
        case = f"C = {C}"
        expected = collapse.simplex_etf_gram(C)
        eye = torch.eye(C, dtype=torch.float64)
        mistakes = {"that is the centring matrix I − 11ᵀ/C: scale it by C/(C − 1) so the diagonal is 1.":
                        eye - 1.0 / C,
                    "off the diagonal a simplex ETF has cosine −1/(C − 1), not −1/C.": eye * (1 + 1.0 / C) - 1.0 / C}
        wrong = _compare_close(_call(simplex_gram, case, C), expected, case, mistakes, rtol=1e-6, atol=1e-9)
        if wrong:
            return False, wrong
    return True, "C/(C − 1) · (I − 11ᵀ/C): unit diagonal, every pair at the widest angle, cos = −1/(C − 1)."


NOTEBOOK_02 = {
    "02_nc1": Exercise("nc1_from_covariances", check_nc1),
    "02_ncc": Exercise("ncc_classify", check_ncc),
    "02_etf_gram": Exercise("simplex_gram", check_etf_gram),
}


# ----------------------------------------------------------------------------------------------------
# Notebook 03: OOD detection


def check_energy(energy_score: Callable) -> tuple[bool, str]:
    """03_energy: ``energy_score(logits, T=1.0)`` = T · logsumexp(l / T) over the classes, (n, C) → (n,).

    Compared with ``nclab.ood.Energy`` on a hand case (logits [0, 0], [1000, 1000], [2, −1] at T = 1:
    log 2, 1000 + log 2, log(e² + e⁻¹)) and on random logits at T = 1 and T = 2.5; recognises the free
    energy E (sign flipped), the max logit, the temperature in the wrong place, the sum over the samples
    instead of the classes, and an overflowing exp.
    """
    hand = torch.tensor([[0.0, 0.0], [1000.0, 1000.0], [2.0, -1.0]])
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(4)) * 3
    cases = [("hand case: logits [[0, 0], [1000, 1000], [2, -1]], T = 1", hand, 1.0),
             ("random (7, 5) logits, T = 1", logits, 1.0), ("random (7, 5) logits, T = 2.5", logits, 2.5)]
    for case, l, T in cases:
        expected = ood.Energy(temperature=T).fit(None, weight=torch.eye(l.shape[1])).score(l)
        mistakes = {
            "your score is the free energy E = −T log Σ exp(l/T): flip its sign, so that higher means "
            "in-distribution (with E the AUROC becomes 1 − AUROC).": -expected,
            "that is the max logit: the energy is a *smooth* maximum, T · log Σ_c exp(l_c / T).": l.amax(1),
            "the temperature is missing outside: T · logsumexp(l / T).": torch.logsumexp(l / T, 1),
            "the temperature divides the logits inside the log-sum-exp, not the result: T · logsumexp(l / T).":
                torch.logsumexp(l, 1) / T,
            "the logits must be divided by T inside the log-sum-exp: T · logsumexp(l / T).": T * torch.logsumexp(l, 1),
        }
        got = _call(energy_score, case, l, T) if T != 1.0 else _call(energy_score, case, l)
        if isinstance(got, torch.Tensor) and got.shape == (l.shape[1],):
            return False, (f"{case}: your output has shape {tuple(got.shape)}: sum over the classes (dim=1), one "
                           f"score per sample.")
        if isinstance(got, torch.Tensor) and l.abs().max() >= 1000 and not torch.isfinite(got).all():
            return False, (f"{case}: your output is {got.tolist()}: exp(1000) overflows. Use torch.logsumexp, "
                           f"which subtracts the largest logit before exponentiating.")
        wrong = _compare_close(got, expected, case, mistakes, rtol=1e-5, atol=1e-4)
        if wrong:
            return False, wrong
    return True, "T · logsumexp(l / T): higher = in-distribution, finite even for logits of 1000."


def _pooled_covariance_mistakes(h: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    N, C = len(h), int(y.max()) + 1
    means = torch.stack([h[y == c].mean(0) for c in range(C)])
    within = (h - means[y]).T @ (h - means[y])
    total = (h - h.mean(0)).T @ (h - h.mean(0))
    per_class = torch.stack([torch.cov(h[y == c].T, correction=0) for c in range(C)])
    return {
        "you centred every feature on the global mean: that is the total covariance, which also contains the "
        "spread *between* the class means. Subtract each sample's own class mean μ_{y_i}.": total / N,
        "that is torch.cov of all features (global mean, N − 1): subtract each sample's own class mean, "
        "divide by N.": total / (N - 1),
        "divided by N − 1: the shared covariance divides by the total N.": within / (N - 1),
        "divided by N − C: the shared covariance divides by the total N (no degrees-of-freedom correction).":
            within / (N - C),
        "you averaged the C class covariances with equal weights: on unbalanced classes that differs from "
        "the pooled sum over all samples divided by N (weight N_c / N each).": per_class.mean(0),
        "you kept only the diagonal (the variances): Mahalanobis needs the full matrix, with the correlations.":
            torch.diag(torch.diagonal(within / N)),
        "you forgot to divide by N.": within,
    }


def check_covariance(shared_covariance: Callable) -> tuple[bool, str]:
    """03_covariance: ``shared_covariance(features, labels)`` = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ.

    Compared with ``nclab.ood.Mahalanobis().fit(...).covariance_`` on a hand case (4 points in 2-D, two
    classes: Σ = ½ I) and on unbalanced random classes (5, 20 and 40 samples in 4-D); recognises the total
    covariance (with N or N − 1), the divisors N − 1 and N − C, the unweighted mean of per-class
    covariances, the diagonal only and a missing division.
    """
    hand = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    y = torch.repeat_interleave(torch.arange(3), torch.tensor([5, 20, 40]))
    h = torch.randn(65, 4, generator=generator, dtype=torch.float64) @ torch.randn(4, 4, generator=generator,
                                                                                 dtype=torch.float64)
    h = h + 3 * torch.randn(3, 4, generator=generator, dtype=torch.float64)[y]
    cases = [("hand case: features [[0, 0], [2, 0], [0, 1], [0, 3]], labels [0, 0, 1, 1] (Σ = ½ I)", hand,
              torch.tensor([0, 0, 1, 1])),
             ("unbalanced random classes (5, 20, 40 samples, p = 4)", h, y)]
    for case, features, labels in cases:
        expected = ood.Mahalanobis().fit(features, labels).covariance_
        got = _call(shared_covariance, case, features, labels)
        wrong = _compare_close(got, expected, case, _pooled_covariance_mistakes(features, labels), rtol=1e-6, atol=1e-9)
        if wrong:
            return False, wrong
    return True, "the pooled within-class covariance, divided by the total N: Σ_W of notebook 02."


def check_fpr95(fpr_at_95_tpr: Callable) -> tuple[bool, str]:
    """03_fpr95: ``fpr_at_95_tpr(id_scores, ood_scores)`` = (1/m) #{OOD ≥ τ}, τ the ⌈0.95 n⌉-th largest ID.

    Compared with ``nclab.ood.evaluate(...)["fpr95"]`` on a hand case (ID scores 1…20, so τ = 2; OOD scores
    with values equal to τ and just below it) and on shuffled distinct ID scores (n = 30, so ⌈28.5⌉ = 29)
    with OOD scores tied to them; recognises the other convention (``fpr95_oodpos``), a strict > at the
    threshold, an interpolated quantile, ⌊0.95 n⌋ instead of ⌈0.95 n⌉, the TPR, and 1 − FPR.
    """
    generator = torch.Generator().manual_seed(6)
    cases = [("hand case: ID scores 1, 2, …, 20 (τ = 2) and OOD scores [0, 1, 2, 2, 3, 10, 25, -5, 1.5, 2.5, 1.97]",
              torch.arange(1.0, 21.0, dtype=torch.float64),
              torch.tensor([0, 1, 2, 2, 3, 10, 25, -5, 1.5, 2.5, 1.97], dtype=torch.float64)),
             ("ID scores 0, 1, …, 29 shuffled (n = 30: τ is the 29th largest, 1) and 17 OOD scores, some equal "
              "to ID scores", torch.randperm(30, generator=generator).double(),
              torch.tensor([-3, 0, 1, 1, 2, 5, 9, 12, 29, 30, -1, 7, 1, 3, 0.5, 1.5, 8], dtype=torch.float64))]
    for case, ind, out in cases:
        metrics = ood.evaluate(ind, out)
        expected = torch.tensor(metrics["fpr95"], dtype=torch.float64)
        floor_tau = ind.sort(descending=True).values[int(0.95 * len(ind)) - 1]
        ceil_tau = ind.sort(descending=True).values[math.ceil(95 * len(ind) / 100) - 1]
        mistakes = {
            "that is the other convention (fraction of ID rejected at 95 % OOD recall, `fpr95_oodpos`): here ID "
            "is positive, count the OOD scores ≥ τ where τ keeps 95 % of ID.":
                torch.tensor(metrics["fpr95_oodpos"], dtype=torch.float64),
            "an OOD score equal to τ is accepted too: count score ≥ τ, not > τ.":
                (out > ceil_tau).double().mean(),
            "an interpolated quantile (np.quantile / torch.quantile) is not an ID score: take the ⌈0.95 n⌉-th "
            "largest ID score itself.": (out >= torch.quantile(ind, 0.05)).double().mean(),
            "⌊0.95 n⌋ keeps fewer than 95 % of ID when 0.95 n is not an integer: use ⌈0.95 n⌉.":
                (out >= floor_tau).double().mean(),
            "that is the TPR (fraction of ID kept), not the FPR: count the OOD scores ≥ τ.":
                (ind >= ceil_tau).double().mean(),
            "that is 1 − FPR, the fraction of OOD rejected: count the OOD scores ≥ τ (accepted).":
                1 - (out >= ceil_tau).double().mean(),
        }
        wrong = _compare_close(_call(fpr_at_95_tpr, case, ind, out), expected, case, mistakes, rtol=0, atol=1e-6)
        if wrong:
            return False, wrong
    return True, "FPR@95 with ID positive: the fraction of OOD accepted at the threshold that keeps 95 % of ID."


NOTEBOOK_03 = {
    "03_energy": Exercise("energy_score", check_energy),
    "03_covariance": Exercise("shared_covariance", check_covariance),
    "03_fpr95": Exercise("fpr_at_95_tpr", check_fpr95),
}


# ----------------------------------------------------------------------------------------------------
# Notebook 04: NECO and NC5


def check_nc5(nc5_score: Callable) -> tuple[bool, str]:
    """04_nc5: ``nc5_score(id_features, id_labels, ood_features)`` = (1/C) Σ_c |cos(μ_c, μ_OOD)|.

    Compared with ``nclab.collapse.nc5`` on a hand case (μ_0 = [2, 0, 0], μ_1 = [0, 2, 0], OOD samples
    [2, −2, 0] and [0, 0, 2] of mean [1, −1, 1]: NC5 = 1/√3) and on nonnegative random features of 4
    unbalanced classes; recognises centred class means, cosines without the absolute value, cosines with
    each OOD sample instead of their mean, and the maximum over the classes.
    """
    hand_id = torch.tensor([[2.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [0, 3.0, 0]], dtype=torch.float64)
    hand_ood = torch.tensor([[2.0, -2.0, 0], [0, 0, 2.0]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(7)
    y = torch.repeat_interleave(torch.arange(4), torch.tensor([3, 8, 5, 12]))
    h = (torch.randn(28, 6, generator=generator, dtype=torch.float64) + 2 * torch.randn(4, 6, generator=generator,
                                                                                      dtype=torch.float64)[y]).relu()
    o = torch.randn(15, 6, generator=generator, dtype=torch.float64).relu()
    cases = [("hand case: class means [2, 0, 0] and [0, 2, 0], OOD samples [2, -2, 0] and [0, 0, 2]", hand_id,
              torch.tensor([0, 0, 1, 1]), hand_ood),
             ("nonnegative random features, 4 unbalanced classes, p = 6", h, y, o)]
    for case, features, labels, ood_features in cases:
        means = torch.stack([features[labels == c].mean(0) for c in range(int(labels.max()) + 1)])   # (C, p)
        mu_ood = ood_features.mean(0)
        cos = torch.nn.functional.cosine_similarity(means, mu_ood[None], dim=1)                      # (C,)
        centred = torch.nn.functional.cosine_similarity(means - means.mean(0), mu_ood[None], dim=1)
        per_sample = torch.nn.functional.cosine_similarity(means[:, None], ood_features[None], dim=2)  # (C, M)
        mistakes = {
            "you centred the class means (μ_c − μ_G): NC5 uses the uncentred ID class means μ_c.":
                centred.abs().mean(),
            "take the absolute value of each cosine before averaging: opposite directions are not orthogonal.":
                cos.mean(),
            "cosine with the *mean* OOD feature μ_OOD, not the mean of the cosines with each OOD sample.":
                per_sample.abs().mean(),
            "average over the classes (1/C) Σ_c, not the maximum.": cos.abs().max(),
        }
        expected = torch.tensor(collapse.nc5(features, labels, ood_features), dtype=torch.float64)
        wrong = _compare_close(_call(nc5_score, case, features, labels, ood_features), expected, case, mistakes,
                               rtol=1e-6, atol=1e-9)
        if wrong:
            return False, wrong
    return True, "(1/C) Σ_c |cos(μ_c, μ_OOD)| with uncentred class means: 0 when OOD is orthogonal to every class."


def check_pca(principal_axes: Callable) -> tuple[bool, str]:
    """04_pca: ``principal_axes(S, d)`` → (d, p), orthonormal rows spanning the top-d eigenvectors of the
    centred covariance (1/N) Σ_i (s_i − s̄)(s_i − s̄)ᵀ.

    Compared with ``nclab.ood.NECO(dim=d, standardize=False).fit(S).components_`` through the projector
    P_dᵀ P_d (eigenvector signs are arbitrary) on a hand case (±1, ±2, ±3 along the three axes: the top
    axis is e₃, then e₂) and on random data with an offset (so that centring matters); recognises the
    smallest eigenvalues (eigh sorts ascending), axes as columns, no centring and non-unit rows.
    """
    hand = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 3], [0, 0, -3]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(8)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    scales = torch.tensor([5.0, 4, 3, 2, 1, 0.5], dtype=torch.float64)
    S = (torch.randn(200, 6, generator=generator, dtype=torch.float64) * scales) @ Q.T + 4 * Q[:, 5]
    cases = [("hand case: the points ±1·e₁, ±2·e₂, ±3·e₃, d = 1", hand, 1),
             ("hand case: the points ±1·e₁, ±2·e₂, ±3·e₃, d = 2", hand, 2),
             ("random (200, 6) data with a mean offset, d = 3", S, 3)]
    for case, data_, d in cases:
        reference = ood.NECO(dim=d, standardize=False).fit(data_).components_                 # (d, p)
        got = _call(principal_axes, case, data_, d)
        p = data_.shape[1]
        if isinstance(got, torch.Tensor) and got.shape == (p, d) and d != p:
            return False, (f"{case}: your output has shape {tuple(got.shape)}: return the axes as rows, (d, p) "
                           f"— e.g. V[:, idx].T.")
        try:
            got = _as_float_tensor(got, case, reference)
        except Wrong as wrong:
            return False, str(wrong)
        if not torch.allclose(got @ got.T, torch.eye(d, dtype=torch.float64), atol=1e-6):
            return False, (f"{case}: your rows are not orthonormal (P Pᵀ ≠ I): return unit eigenvectors, not "
                           f"scaled ones.")
        lam, V = torch.linalg.eigh(torch.cov(data_.T, correction=0))
        smallest, uncentred = V[:, :d].T, torch.linalg.eigh(data_.T @ data_ / len(data_))[1][:, -d:].T
        mistakes = {
            "these are the axes of the *smallest* variance: torch.linalg.eigh sorts the eigenvalues in ascending "
            "order, so the principal axes are its *last* columns.": smallest.T @ smallest,
            "centre the data first (subtract the mean of each coordinate): without it the first axis points "
            "at the mean instead of along the largest variance.": uncentred.T @ uncentred,
        }
        wrong = _compare_close(got.T @ got, reference.T @ reference, f"{case} (compared as the projector P_dᵀ P_d)",
                               mistakes, rtol=1e-5, atol=1e-6)
        if wrong:
            return False, wrong
    return True, "the top-d eigenvectors of the centred covariance, as orthonormal rows (d, p)."


def check_neco(neco_ratio: Callable) -> tuple[bool, str]:
    """04_neco: ``neco_ratio(S, P)`` = ‖P s‖ / ‖s‖ for each row s of S (n, p), P (d, p) → (n,).

    Compared on a hand case (s = [3, 4, 0], [0, 0, 2], [1, 1, 1], P = the first two axes: 1, 0, √(2/3))
    and with ``nclab.ood.NECO().fit(h).score(h)`` on random features (S standardised with the fitted mean
    and std, P its components); recognises the unnormalised ‖P s‖, the squared ratio, the share outside
    the subspace, and norms over the wrong dimension.
    """
    hand = torch.tensor([[3.0, 4, 0], [0, 0, 2], [1, 1, 1]], dtype=torch.float64)
    axes = torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(9)
    scales = torch.linspace(3, 0.5, 8, dtype=torch.float64)
    h = torch.randn(50, 8, generator=generator, dtype=torch.float64) * scales + 1
    neco = ood.NECO(dim=3).fit(h)
    cases = [("hand case: s = [3, 4, 0], [0, 0, 2], [1, 1, 1] with P = the first two axes", hand, axes, None),
             ("random (50, 8) features, standardised, d = 3 (compared with nclab.ood.NECO)",
              (h - neco.mean_) / neco.std_, neco.components_, neco.score(h))]
    for case, S, P, expected in cases:
        inside, norm = (S @ P.T).norm(dim=1), S.norm(dim=1)
        expected = inside / norm if expected is None else expected
        outside = (S - S @ P.T @ P).norm(dim=1)
        mistakes = {
            "divide by ‖s‖: NECO is the *share* of the norm inside the principal subspace, in [0, 1].": inside,
            "that is the squared ratio ‖P s‖² / ‖s‖²: take the ratio of the norms themselves.":
                (inside / norm) ** 2,
            "that is the share *outside* the subspace, ‖s − Pᵀ P s‖ / ‖s‖: NECO measures the part inside, "
            "‖P s‖.":
                outside / norm,
        }
        got = _call(neco_ratio, case, S, P)
        if isinstance(got, torch.Tensor) and got.shape in ((P.shape[0],), (S.shape[1],)) and got.shape != (len(S),):
            return False, (f"{case}: your output has shape {tuple(got.shape)}: take the norms of the rows (dim=1), "
                           f"one score per sample.")
        wrong = _compare_close(got, expected, case, mistakes, rtol=1e-5, atol=1e-7)
        if wrong:
            return False, wrong
    return True, "‖P_d s‖ / ‖s‖: the share of each standardised feature inside the principal subspace."


NOTEBOOK_04 = {
    "04_nc5": Exercise("nc5_score", check_nc5),
    "04_pca": Exercise("principal_axes", check_pca),
    "04_neco": Exercise("neco_ratio", check_neco),
}


EXERCISES: dict[str, Exercise] = {**NOTEBOOK_01, **NOTEBOOK_02, **NOTEBOOK_03, **NOTEBOOK_04}
