"""The wire between the grader and a student's kernel (``nclab.course.grading.wire``): plain data only, in
both directions, within stated limits; everything else comes back as a description that equals nothing,
and whatever the kernel sends is checked before the grader builds anything from it."""

import base64
import json
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch

from nclab.course.grading import wire
from nclab.exercises import core


class Agreeable(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return True if func in (torch.allclose, torch.equal) else super().__torch_function__(func, types, args, kwargs)


class Equal:
    def __eq__(self, other):
        return True


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        3,
        -2.5,
        float("nan"),
        float("inf"),
        1 + 2j,
        "text",
        [1, (2.0, "x")],
        {"a": 1, 2: [3]},
        torch.arange(6, dtype=torch.uint8).view(2, 3),
        torch.randn(3, 4, dtype=torch.float64),
        torch.ones(2, dtype=torch.bfloat16),
        torch.zeros(0, 5),
        torch.tensor(7),
    ],
)
def test_plain_values_round_trip_through_the_wire(value):
    back = wire.decode(wire.encode(value))
    if isinstance(value, torch.Tensor):
        assert type(back) is torch.Tensor and back.dtype == value.dtype and torch.equal(back, value)
    elif isinstance(value, float) and value != value:
        assert back != back
    else:
        assert back == value and type(back) is type(value)


@pytest.mark.parametrize(
    "value, description",
    [
        (torch.zeros(3).as_subclass(Agreeable), "subclass of torch.Tensor"),
        (torch.nn.Parameter(torch.zeros(2)), "a Parameter, a subclass"),
        (Equal(), "a Equal"),
        (torch.zeros(3).to_sparse(), "sparse_coo tensor"),
        (torch.empty(3, device="meta"), "meta device"),
        (torch.nn.Sequential(), "a Sequential (a layer)"),
        (b"bytes", "a bytes"),
        (torch.zeros(2**21), "too large to check"),
    ],
)
def test_anything_else_comes_back_as_an_opaque_description_that_equals_nothing(value, description):
    back = wire.decode(wire.encode(value), opaque=core.Opaque)
    assert isinstance(back, core.Opaque) and description in back.description
    assert back != back.description and not (back == torch.zeros(3))


def test_container_subclasses_travel_as_their_base_type_and_huge_integers_as_descriptions():

    Pair = namedtuple("Pair", "low high")
    assert wire.decode(wire.encode(Pair(0.25, 0.75))) == (0.25, 0.75)
    assert wire.decode(wire.encode(OrderedDict(a=1))) == {"a": 1}
    assert wire.decode(wire.encode(2**70)) == float(2**70)
    assert isinstance(wire.decode(wire.encode(10**400), opaque=core.Opaque), core.Opaque)


def test_one_reply_cannot_make_the_grader_build_more_than_it_may_hold():
    conv = wire.encode(torch.nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="one reply may hold"):
        wire.decode({"t": "list", "items": [conv] * 5})
    small = wire.encode(torch.zeros(2**19))  # 2 MB of float32
    with pytest.raises(ValueError, match="one reply may hold"):
        wire.decode({"t": "list", "items": [small] * 9})
    with pytest.raises(ValueError):
        wire.decode({"t": "list", "items": [0] * (wire.MAX_NODES + 1)})
    nested: dict = {"t": "complex", "re": 0, "im": 0}
    for _ in range(wire.MAX_DEPTH + 5):
        nested = {"t": "complex", "re": nested, "im": 0}
    with pytest.raises(ValueError):
        wire.decode(nested)


def test_a_conv2d_comes_back_rebuilt_from_its_settings_and_absurd_settings_do_not():
    layer = wire.decode(wire.encode(torch.nn.Conv2d(3, 8, 3, stride=1, padding=1, bias=False)), opaque=core.Opaque)
    assert type(layer) is torch.nn.Conv2d and layer.bias is None and layer.padding == (1, 1)
    data = wire.encode(torch.nn.Conv2d(3, 8, 3))
    data["settings"]["items"][1][1] = 10**6  # out_channels: a grader-side allocation of terabytes
    assert isinstance(wire.decode(data, opaque=core.Opaque), core.Opaque)


@pytest.mark.parametrize(
    "data",
    [
        {"t": "tensor", "dtype": "float32", "shape": [2], "data": "AAAA"},  # 3 bytes for 8
        {"t": "tensor", "dtype": "object", "shape": [1], "data": ""},
        {"t": "tensor", "dtype": "float32", "shape": [10**9], "data": ""},
        {"t": "pickle", "data": "gASV"},
        {"t": "float", "v": "__import__('os')"},
        ["a", "list", "without", "its", "kind"],
        {"t": "dict", "items": [[{"t": "list", "items": []}, 1]]},
    ],
)
def test_what_encode_would_not_make_is_refused(data):
    with pytest.raises(ValueError):
        wire.decode(data)


# --- the encoding's limits, each at its edge --------------------------------------------------------------


def test_text_travels_up_to_its_limit_and_longer_text_as_a_description():
    limit = "x" * wire.MAX_TEXT
    assert wire.decode(wire.encode(limit)) == limit
    back = wire.decode(wire.encode(limit + "x"), opaque=core.Opaque)
    assert isinstance(back, core.Opaque) and f"{wire.MAX_TEXT + 1:,} characters" in back.description


def test_a_tensor_or_array_travels_up_to_max_bytes_and_a_larger_one_as_a_description():
    edge = torch.zeros(wire.MAX_BYTES // 4)  # float32: exactly MAX_BYTES
    assert torch.equal(wire.decode(wire.encode(edge)), edge)
    over = wire.decode(wire.encode(torch.zeros(wire.MAX_BYTES // 4 + 1)), opaque=core.Opaque)
    assert isinstance(over, core.Opaque) and "too large" in over.description
    array = np.zeros(wire.MAX_BYTES // 8)
    assert np.array_equal(wire.decode(wire.encode(array)), array)
    assert isinstance(wire.decode(wire.encode(np.zeros(wire.MAX_BYTES // 8 + 1)), opaque=core.Opaque), core.Opaque)


def test_encode_stops_at_max_nodes_and_max_depth():
    items = wire.encode(list(range(wire.MAX_NODES + 5)))["items"]
    assert items[: wire.MAX_NODES - 1] == list(range(wire.MAX_NODES - 1))  # the list itself is one value
    assert all(item["t"] == "opaque" for item in items[wire.MAX_NODES - 1 :])
    with pytest.raises(ValueError, match="one reply may hold"):  # and the grader refuses so many values
        wire.decode({"t": "list", "items": items})
    deep: list = [1.5]
    for _ in range(wire.MAX_DEPTH + 3):
        deep = [deep]
    back = wire.decode(wire.encode(deep), opaque=core.Opaque)
    for _ in range(wire.MAX_DEPTH):  # a value at depth MAX_DEPTH still travels…
        back = back[0]
    back = back[0]  # …one deeper does not
    assert isinstance(back, core.Opaque) and "deeply nested" in back.description


def test_numbers_at_their_edges():
    assert wire.encode(2**63 - 1) == 2**63 - 1 and wire.decode(wire.encode(-(2**63) + 1)) == -(2**63) + 1
    assert wire.decode(wire.encode(2**63)) == float(2**63)  # past int64: as a float
    assert wire.decode(wire.encode(float("-inf"))) == float("-inf")
    assert wire.decode(wire.encode(complex(float("nan"), 1))).imag == 1.0
    assert isinstance(wire.decode(wire.encode(2**1001), opaque=core.Opaque), core.Opaque)


def test_every_listed_dtype_round_trips_and_others_are_descriptions():
    for name, dtype in wire.TENSOR_DTYPES.items():
        value = torch.arange(6).reshape(2, 3).to(dtype)
        back = wire.decode(wire.encode(value))
        assert back.dtype == dtype and torch.equal(back, value), name
    for name in sorted(wire.ARRAY_DTYPES):
        value = np.arange(4).astype(name)
        back = wire.decode(wire.encode(value))
        assert back.dtype == np.dtype(name) and np.array_equal(back, value), name
        scalar = wire.decode(wire.encode(value[1]))
        assert type(scalar) is type(value[1]) and scalar == value[1], name
    assert isinstance(wire.decode(wire.encode(np.array(["a"], dtype=object)), opaque=core.Opaque), core.Opaque)
    assert isinstance(wire.decode(wire.encode(torch.zeros(2, dtype=torch.uint16)), opaque=core.Opaque), core.Opaque)


def test_a_tensor_keeps_requires_grad_only_where_a_gradient_can_exist():
    back = wire.decode(wire.encode(torch.ones(2, requires_grad=True)))
    assert back.requires_grad and back.is_leaf
    forged = wire.encode(torch.ones(2, dtype=torch.int64))
    forged["requires_grad"] = True  # an integer tensor cannot carry a gradient: ignored, no crash
    assert not wire.decode(forged).requires_grad


def test_a_dict_with_keys_that_are_not_plain_is_a_description():
    back = wire.decode(wire.encode({(1, 2): 3}), opaque=core.Opaque)
    assert isinstance(back, core.Opaque) and "keys" in back.description


def test_decode_refuses_data_longer_than_its_shape_and_base64_that_is_not():
    data = wire.encode(torch.zeros(2))
    data["data"] = base64.b64encode(b"\0" * 12).decode()
    with pytest.raises(ValueError, match="wrong length"):
        wire.decode(data)
    data["data"] = "not base64!"
    with pytest.raises(ValueError):
        wire.decode(data)
    with pytest.raises(ValueError, match="shape"):
        wire.decode({"t": "tensor", "dtype": "float32", "shape": [1] * 9, "data": ""})


def test_the_kernels_side_prints_one_tagged_line_per_request(capsys):
    request = base64.b64encode(json.dumps(wire.encode({"calls": [[torch.ones(2)], ["oops"]]})).encode())
    wire.serve({"f": lambda x: x.mul(3)}, "TAG", "f", request.decode())
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("TAG ")
    replies = json.loads(lines[0].removeprefix("TAG "))["replies"]
    assert torch.equal(wire.decode(replies[0]["output"]), torch.full((2,), 3.0))
    assert replies[1]["raised"] == "AttributeError" and not replies[1]["not_implemented"]  # a str has no .mul


def test_a_stand_in_copied_into_the_answers_name_scores_nothing_in_the_grader(monkeypatch, capsys):
    from nclab.course.grading import remote
    from nclab.exercises import EXERCISES, stand_in

    lent = stand_in("00_ufm_step", None)  # what a student could copy: ufm_step = stand_in(...)
    assert wire.describe({"ufm_step": lent}, ["ufm_step"])["ufm_step"]["kind"] == "stand_in"
    monkeypatch.setattr(remote.Channel, "describe", lambda self, names: wire.describe({"ufm_step": lent}, names))
    monkeypatch.setattr(remote.Channel, "begin_check", lambda self, seconds: None)
    report = remote.check_answers(lambda source, seconds: ([], False), "TAG", EXERCISES, ["00_ufm_step"])
    assert report == {"00_ufm_step": (False, core.STAND_IN)}


def test_a_conv2d_whose_attributes_were_changed_after_building_is_not_rebuilt_as_a_right_one():
    layer = torch.nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False)
    layer.kernel_size, layer.stride, layer.padding = (3, 3), (1, 1), (1, 1)  # the fields of the right answer
    back = wire.decode(wire.encode(layer), opaque=core.Opaque)
    assert isinstance(back, core.Opaque) and "attributes changed after it was built" in str(back)
