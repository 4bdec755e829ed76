"""Checks of notebook 01's exercises (training ResNet-18 on CIFAR-100): answer → (passed, message).

Its table ``EXERCISES`` (question → answer name, check, points) is merged into
:data:`nclab.exercises.EXERCISES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import data, models, train
from .core import (
    Exercise,
    Question,
    as_number,
    call,
    call_each,
    compare,
    draw_int,
    generator,
    is_module,
    random_images,
    show,
)


def check_flip(random_flip_student: Callable) -> tuple[bool, str]:
    """01_flip: ``random_flip_student(images, flips)`` mirrors left–right exactly the flagged images.

    x'_{b,k,i,j} = x_{b,k,i,W-1-j} if flips_b else x_{b,k,i,j}. Compared with ``nclab.data.random_flip``
    on a hand case (two 1×2×3 images, the first flagged) and on a random uint8 batch; recognises a
    top–bottom flip, a colour flip, flipping every image, none, or the unflagged ones; checks shape,
    dtype, and that the input is left unchanged.
    """
    hand = torch.arange(12, dtype=torch.uint8).view(2, 1, 2, 3)
    cases = [
        (
            "hand case: images [[0, 1, 2], [3, 4, 5]] and [[6, 7, 8], [9, 10, 11]] with flips [True, False]",
            hand,
            torch.tensor([True, False]),
        ),
        (
            "a random (6, 3, 8, 8) uint8 batch",
            random_images(6, 8, seed=1),
            torch.tensor([True, False, False, True, True, False]),
        ),
    ]
    for case, images, flips in cases:
        where = flips[:, None, None, None]
        mistakes = {
            "you mirrored top–bottom (dimension -2, the rows); a horizontal flip reverses the columns, "
            "dimension -1.": torch.where(where, images.flip(-2), images),
            "you reversed the colour channels (dimension 1); a horizontal flip reverses the columns, "
            "dimension -1.": torch.where(where, images.flip(1), images),
            "every image is flipped; flip only those whose entry of `flips` is True (torch.where broadcasts "
            "flips[:, None, None, None]).": images.flip(-1),
            "your output equals the input: no image was flipped.": images,
            "you flipped the images whose flag is False and kept the flagged ones.": torch.where(
                ~where, images.flip(-1), images
            ),
        }
        wrong = compare(call(random_flip_student, case, images, flips), data.random_flip(images, flips), case, mistakes)
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
    cases = [
        (
            "hand case: the 3×3 image [[1, 2, 3], [4, 5, 6], [7, 8, 9]] at shifts (4, 4), (3, 4), (5, 5), (0, 0)",
            hand,
            torch.tensor([[4, 4], [3, 4], [5, 5], [0, 0]]),
        ),
        (
            "a random (8, 3, 32, 32) uint8 batch",
            random_images(8, 32, seed=2),
            torch.randint(0, 9, (8, 2), generator=generator(3)),
        ),
    ]
    for case, images, shifts in cases:
        rolled = torch.stack(
            [image.roll((4 - int(r), 4 - int(c)), dims=(-2, -1)) for image, (r, c) in zip(images, shifts)]
        )
        mistakes = {
            "your output equals the input: the shifts were ignored ((4, 4) is the identity, (0, 0) shows "
            "4 rows and columns of padding at the top left).": images,
            "rows and columns are swapped: shifts[b] is (δr, δc), the row first.": data.random_crop(
                images, shifts.flip(1)
            ),
            "the window moves the wrong way: shifts[b] is the window's top-left corner in the padded image, "
            "so (0, 0) shows the padding above and left of the image.": data.random_crop(images, 8 - shifts),
            "every image got the first image's shift: index with each image's own row of `shifts`.": data.random_crop(
                images, shifts[:1].expand_as(shifts)
            ),
            "pixels wrap around to the other side (torch.roll?): where the window leaves the image it must "
            "show the zero padding.": rolled,
        }
        got = call(random_crop_student, case, images, shifts)
        if isinstance(got, torch.Tensor) and got.shape[-2:] == (images.shape[-2] + 8, images.shape[-1] + 8):
            return False, (
                f"{case}: your output has shape {tuple(got.shape)}, the padded size: cut a window of "
                f"the input's size H × W = {tuple(images.shape[-2:])}."
            )
        wrong = compare(got, data.random_crop(images, shifts), case, mistakes)
        if wrong:
            return False, wrong
    return True, "every image is cropped at its own shift, with zero padding, as uint8."


def check_stem(cifar_stem_layer: Callable) -> tuple[bool, str]:
    """01_stem: ``cifar_stem_layer(width)`` returns the CIFAR stem, ``nn.Conv2d(3, width, 3, stride=1, padding=1,
    bias=False)``.

    Compares the layer built for widths 16, 24 and one drawn from 8 … 96 with ``nclab.models.resnet18(...).conv1``
    field by field (channels, kernel, stride, padding, dilation, groups, bias) and checks that a 32×32 input
    keeps its 32×32 map: H_out = ⌊(H + 2p − k)/s⌋ + 1.
    """
    if is_module(cifar_stem_layer):
        return False, (
            "`cifar_stem_layer` is a layer; define a function `cifar_stem_layer(width)` that returns the layer."
        )
    drawn = draw_int(70, 8, 97, avoid=(16, 24))  # a secret width while grading
    for width in (16, 24, drawn):
        stem = call(cifar_stem_layer, f"cifar_stem_layer({width})", width)
        if not isinstance(stem, nn.Conv2d):
            return False, (
                f"cifar_stem_layer({width}) returned {show(stem)}; expected one nn.Conv2d (BatchNorm and "
                f"ReLU follow it in the network, they are not part of the answer)."
            )
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
                return False, (
                    f"cifar_stem_layer({width}).{field} is {getattr(stem, field)}, expected "
                    f"{getattr(reference, field)}: {why}."
                )
        if stem.bias is not None:
            return False, (
                f"cifar_stem_layer({width}) has a bias: BatchNorm follows and subtracts the mean, so the "
                f"bias would be useless. Use bias=False."
            )
        if stem.padding_mode != "zeros":
            return False, (
                f"cifar_stem_layer({width}) pads with padding_mode={stem.padding_mode!r}: the stem pads with zeros "
                f"(the default; 'circular' wraps the image's left edge onto its right)."
            )
        if tuple(stem.weight.shape) != (width, 3, 3, 3):
            return False, (
                f"cifar_stem_layer({width}).weight has shape {tuple(stem.weight.shape)}, expected ({width}, 3, 3, 3): "
                f"build the layer with the right arguments rather than changing its attributes afterwards."
            )
        x = torch.randn(2, 3, 32, 32, generator=generator(71 + width))
        out = stem(x)
        shape = tuple(out.shape)
        if shape != (2, width, 32, 32):
            return False, (
                f"cifar_stem_layer({width}) maps a (2, 3, 32, 32) batch to {shape}, expected (2, {width}, 32, 32)."
            )
        with torch.no_grad():
            expected = F.conv2d(x, stem.weight, None, stride=1, padding=1)
            if not torch.allclose(out.detach(), expected, atol=1e-5):
                return False, (
                    f"cifar_stem_layer({width})(x) is not the 3×3 convolution of its own weights with stride 1 and "
                    f"padding 1: return a plain nn.Conv2d, not one whose forward or attributes were changed."
                )
    return True, "3 → width channels, 3×3, stride 1, padding 1, no bias: the map stays 32 × 32."


def check_schedule(multistep_factor: Callable) -> tuple[bool, str]:
    """01_schedule: ``multistep_factor(step, total_steps, gamma)`` = γ^([t ≥ ⌊T/3⌋] + [t ≥ ⌊2T/3⌋]).

    Compared with ``nclab.train.lr_factor`` for a multi-step TrainConfig (one step per epoch) at every
    step t = 0 … T−1 of T = 30, 31 and 299 steps with γ = 0.1, of T = 30 with γ = 0.5, and of a random T
    in 12 … 400 with a random γ in 0.051 … 0.899 (three decimals; while grading, ones the student cannot
    know in advance); reports a non-number, f(0) ≠ 1, where the factor changes against where it should (the
    boundaries ⌊T/3⌋ and ⌊2T/3⌋ themselves included), or the levels when γ is not used.
    """
    fixed = [(30, 0.1), (31, 0.1), (299, 0.1), (30, 0.5)]
    rng = generator(71)
    drawn = int(torch.randint(12, 401, (), generator=rng)), int(torch.randint(51, 900, (), generator=rng)) / 1000
    while drawn in fixed:  # never one of the notebook's cases: an answer that only knows those must fail
        drawn = drawn[0] + 1, drawn[1]
    for total, gamma in [*fixed, drawn]:
        reference = train.lr_factor(train.TrainConfig(epochs=total, schedule="multistep", gamma=gamma), 1)
        expected = [reference(t) for t in range(total)]
        calls = [(t, total, gamma) for t in range(total)]
        values = call_each(multistep_factor, f"T = {total} steps, γ = {gamma}", calls)  # one round trip
        for (t, _, _), value in zip(calls, values):
            if as_number(value) is None:
                return False, f"multistep_factor({t}, {total}, {gamma}) returned {show(value)}; return a number."
        got = [as_number(value) for value in values]
        if all(math.isclose(g, e, rel_tol=1e-6) for g, e in zip(got, expected)):
            continue
        if not math.isclose(got[0], 1.0):
            return False, (
                f"multistep_factor(0, {total}, {gamma}) is {got[0]:g}: training starts at the full rate, f(0) = 1."
            )
        changes = [t for t in range(1, total) if not math.isclose(got[t], got[t - 1])]
        should = [t for t in range(1, total) if expected[t] != expected[t - 1]]
        if changes != should:
            return False, (
                f"with T = {total} steps your factor changes at steps {changes}; it should drop at "
                f"steps {should} = ⌊T/3⌋, ⌊2T/3⌋ (the milestone step itself already has the smaller rate)."
            )
        levels = sorted({round(g, 12) for g in got}, reverse=True)
        return False, (
            f"with γ = {gamma} your factor takes the values {levels}; expected 1, γ = {gamma:g} and "
            f"γ² = {gamma**2:g}: use the `gamma` argument."
        )
    return True, "f(t) drops by γ at ⌊T/3⌋ and again at ⌊2T/3⌋, exactly as train.lr_factor."


EXERCISES = {
    "01_flip": Exercise("random_flip_student", check_flip, points=1, references=("nclab.data.random_flip",)),
    "01_crop": Exercise("random_crop_student", check_crop, points=2, references=("nclab.data.random_crop",)),
    "01_stem": Exercise(
        "cifar_stem_layer", check_stem, points=2, references=("nclab.models.resnet18", "nclab.models.CifarResNet")
    ),
    "01_schedule": Exercise("multistep_factor", check_schedule, points=2, references=("nclab.train.lr_factor",)),
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "01_q_normalise_inside": Question("8ee953bc", points=1),
    "01_q_flip_labels": Question("ex-flip-question", points=3),
    "01_q_crop_padding": Question("ex-crop-question", points=3),
    "01_q_stem_map": Question("ex-stem-question", points=2),
    "01_q_cosine_schedule": Question("ex-schedule-question", points=3),
    "01_q_training_curves": Question("1448f400", points=3),
}
