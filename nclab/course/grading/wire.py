"""The grader's wire to the student's kernel: plain data as JSON (no pickle), and the kernel's side of a call.

While grading, every comparison happens in the grader's process (:mod:`nclab.course.grading.remote`); the
student's kernel only calls the student's function on the inputs the grader sends and hands back what it
returned, as plain data: ``None``, booleans, numbers (NaN and ±inf included), text, lists, tuples, dicts,
plain dense tensors and NumPy arrays (their raw bytes in base64, with dtype and shape), and one kind of
layer, a plain ``nn.Conv2d`` (its settings). Anything else — an object of the student's own class, a
subclass of ``torch.Tensor``, a sparse tensor, a value too large — travels as a description only
(``{"t": "opaque"}``), which never equals anything in the grader.

The grader sends this file's source into the kernel (it never imports the kernel's copy of nclab, which
the student's code may have changed) and runs :func:`serve` there once per call. Whatever comes back is
untrusted: :func:`decode` rebuilds only the types above, checks sizes and shapes, and raises ValueError on
anything else. A kernel that lies can only claim outputs; the expected values never leave the grader.

This module imports only the standard library, NumPy and torch, so that it runs as is in the kernel.
"""

from __future__ import annotations

import base64
import json
import math
import sys

import numpy as np
import torch
import torch.nn as nn

MAX_BYTES = 4 * 2**20  # of one tensor or array's data
MAX_NODES = 200_000  # values in one message
MAX_DEPTH = 16
MAX_TEXT = 10_000  # characters of one string
TENSOR_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    )
}
ARRAY_DTYPES = {"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"}
ARRAY_DTYPES |= {"complex64", "complex128", "uint16", "uint32", "uint64"}
CONV2D_FIELDS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _opaque(description: str) -> dict:
    return {"t": "opaque", "description": description[:300]}


def _type_name(value) -> str:
    return type(value).__name__[:60]


def encode(value, *, _depth: int = 0, _count: list | None = None):
    """``value`` as JSON-able plain data (see the module's docstring); a tensor keeps ``requires_grad``."""
    count = _count if _count is not None else [0]
    count[0] += 1
    if count[0] > MAX_NODES or _depth > MAX_DEPTH:
        return _opaque("a value too large or too deeply nested to send")
    kind = type(value)
    if value is None or kind is bool or kind is str and len(value) <= MAX_TEXT:
        return value
    if kind is int:
        if abs(value) < 2**63:
            return value
        return {"t": "float", "v": repr(float(value))} if value.bit_length() <= 1000 else _opaque("a huge integer")
    if kind is float:
        return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
    if kind is complex:
        return {"t": "complex", "re": encode(value.real), "im": encode(value.imag)}
    if kind is str:
        return _opaque(f"a text of {len(value):,} characters (too long)")
    if isinstance(value, (list, tuple)):  # a namedtuple as a tuple: its items, read as the base type's
        base = tuple if isinstance(value, tuple) else list
        items = [encode(item, _depth=_depth + 1, _count=count) for item in base.__iter__(value)]
        return {"t": base.__name__, "items": items}
    if isinstance(value, dict):  # an OrderedDict or a defaultdict as a dict
        pairs = list(dict.items(value))
        if not all(type(key) in (str, int, bool, float) or key is None for key, _ in pairs):
            return _opaque("a dict with keys that are not plain text or numbers")
        return {"t": "dict", "items": [[encode(k), encode(v, _depth=_depth + 1, _count=count)] for k, v in pairs]}
    if isinstance(value, torch.Tensor):
        return _encode_tensor(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return _encode_array(value)
    if kind is nn.Conv2d:
        settings = {field: getattr(value, field) for field in CONV2D_FIELDS}
        settings.update(bias=value.bias is not None, padding_mode=value.padding_mode)
        settings.update(weight_shape=tuple(value.weight.shape))  # attributes changed after building show here
        return {"t": "conv2d", "settings": encode(settings)}
    if isinstance(value, nn.Module):
        return _opaque(f"a {_type_name(value)} (a layer)")
    return _opaque(f"a {_type_name(value)}")


def _encode_tensor(value: torch.Tensor) -> dict:
    if type(value) is not torch.Tensor:
        return _opaque(
            f"a {_type_name(value)}, a subclass of torch.Tensor: return a plain torch.Tensor (a subclass can "
            "change how tensors compare)"
        )
    if value.layout != torch.strided or value.is_quantized or value.device.type == "meta":
        layout = str(value.layout).removeprefix("torch.")
        return _opaque(f"a {layout} tensor on the {value.device.type} device: return an ordinary dense tensor")
    dtype = str(value.dtype).removeprefix("torch.")
    if dtype not in TENSOR_DTYPES:
        return _opaque(f"a {dtype} tensor")
    if value.numel() * value.element_size() > MAX_BYTES:
        return _opaque(f"a {tuple(value.shape)} {dtype} tensor (too large to check: over {MAX_BYTES:,} bytes)")
    data = value.detach().to("cpu").contiguous().reshape(-1)
    raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
    return {
        "t": "tensor",
        "dtype": dtype,
        "shape": list(value.shape),
        "data": base64.b64encode(raw).decode("ascii"),
        "requires_grad": bool(value.requires_grad),
    }


def _encode_array(value) -> dict:
    array = np.asarray(value)
    if array.dtype.name not in ARRAY_DTYPES:
        return _opaque(f"a NumPy {'array' if isinstance(value, np.ndarray) else 'scalar'} of {array.dtype.name}")
    if array.nbytes > MAX_BYTES:
        return _opaque(f"a {array.shape} NumPy array (too large to check)")
    return {
        "t": "ndarray" if isinstance(value, np.ndarray) else "npscalar",
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "data": base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).decode(),
    }


# ----------------------------------------------------------------------------------------------------
# Decoding: only what encode makes, checked


class _Budget:
    """What one decoded message may hold: values, bytes of tensor data, layers (a reply line of a few
    kilobytes must not make the grader build gigabytes)."""

    def __init__(self):
        self.nodes, self.bytes, self.layers = MAX_NODES, 4 * MAX_BYTES, 4

    def spend(self, nodes: int = 1, size: int = 0, layers: int = 0) -> None:
        self.nodes, self.bytes, self.layers = self.nodes - nodes, self.bytes - size, self.layers - layers
        if self.nodes < 0 or self.bytes < 0 or self.layers < 0:
            raise ValueError("more values, data or layers than one reply may hold")


def decode(data, *, opaque=None, _depth: int = 0, _budget: _Budget | None = None):
    """The value ``data`` (made by :func:`encode`) stands for; an opaque one becomes ``opaque(description)``
    (its description by default). ValueError for anything that encode would not have made, or for more
    than one message may hold."""
    budget = _budget or _Budget()
    budget.spend()
    if _depth > MAX_DEPTH + 2:
        raise ValueError("nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not dict or not isinstance(data.get("t"), str):
        raise ValueError("not a value of the wire format")
    kind = data["t"]
    if kind == "float":
        text = data.get("v")
        if text not in ("nan", "inf", "-inf") and not _is_float_text(text):
            raise ValueError("not a float")
        return float(text)
    inner = {"opaque": opaque, "_depth": _depth + 1, "_budget": budget}
    if kind == "complex":
        return complex(_number(decode(data.get("re"), **inner)), _number(decode(data.get("im"), **inner)))
    if kind in ("list", "tuple"):
        items = [decode(item, **inner) for item in _list(data.get("items"))]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        pairs = [_list(pair) for pair in _list(data.get("items"))]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("a dict entry is not a pair")
        return {_key(decode(key, **inner)): decode(item, **inner) for key, item in pairs}
    if kind == "tensor":
        return _decode_tensor(data, budget)
    if kind in ("ndarray", "npscalar"):
        return _decode_array(data, budget)
    if kind == "conv2d":
        budget.spend(layers=1)
        return _decode_conv2d(decode(data.get("settings"), **inner), opaque)
    if kind == "opaque":
        description = data.get("description")
        if not isinstance(description, str):
            raise ValueError("an opaque value without its description")
        return (opaque or str)(description[:300])
    raise ValueError("unknown kind of value")


def _is_float_text(text) -> bool:
    try:
        return isinstance(text, str) and len(text) < 40 and math.isfinite(float(text))
    except ValueError:
        return False


def _number(value) -> float:
    if type(value) not in (int, float):
        raise ValueError("not a number")
    return float(value)


def _list(value) -> list:
    if type(value) is not list:
        raise ValueError("not a list")
    return value


def _key(value):
    if value is not None and type(value) not in (str, int, bool, float):
        raise ValueError("not a plain dict key")
    return value


def _shape(data) -> tuple[int, ...]:
    shape = _list(data.get("shape"))
    if len(shape) > 8 or not all(type(n) is int and 0 <= n <= MAX_BYTES for n in shape):
        raise ValueError("not a tensor shape")
    return tuple(shape)


def _raw(data, expected: int) -> bytes:
    text = data.get("data")
    if not isinstance(text, str) or len(text) > 2 * MAX_BYTES:
        raise ValueError("no tensor data")
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != expected:
        raise ValueError("tensor data of the wrong length")
    return raw


def _decode_tensor(data, budget: _Budget) -> torch.Tensor:
    dtype = TENSOR_DTYPES.get(data.get("dtype"))
    if dtype is None:
        raise ValueError("not a tensor dtype")
    shape = _shape(data)
    numel = math.prod(shape)
    size = numel * torch.empty((), dtype=dtype).element_size()
    if size > MAX_BYTES:
        raise ValueError("tensor too large")
    budget.spend(size=size)
    raw = _raw(data, size)
    if numel == 0:
        tensor = torch.empty(shape, dtype=dtype)
    else:
        tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape).clone()
    if data.get("requires_grad") is True and (tensor.is_floating_point() or tensor.is_complex()):
        tensor.requires_grad_(True)
    return tensor


def _decode_array(data, budget: _Budget):
    name = data.get("dtype")
    if name not in ARRAY_DTYPES:
        raise ValueError("not an array dtype")
    dtype = np.dtype(name).newbyteorder("<")
    shape = _shape(data)
    if math.prod(shape) * dtype.itemsize > MAX_BYTES:
        raise ValueError("array too large")
    budget.spend(size=math.prod(shape) * dtype.itemsize)
    array = np.frombuffer(_raw(data, math.prod(shape) * dtype.itemsize), dtype=dtype).reshape(shape)
    array = array.astype(np.dtype(name))  # native byte order, writable
    return array[()] if data["t"] == "npscalar" else array


def _decode_conv2d(settings, opaque):
    """A fresh ``nn.Conv2d`` with the student's settings (its weights are not needed), when they are ones
    nn.Conv2d accepts and small enough to build; else opaque."""
    unusable = (opaque or str)("an nn.Conv2d with settings the grader cannot rebuild")
    if type(settings) is not dict or set(settings) != {*CONV2D_FIELDS, "bias", "padding_mode", "weight_shape"}:
        return unusable

    def pair(value, low, high):
        ok = type(value) is tuple and len(value) == 2 and all(type(n) is int and low <= n <= high for n in value)
        return value if ok else None

    channels = [settings[name] for name in ("in_channels", "out_channels", "groups")]
    if not all(type(n) is int and 1 <= n <= 4096 for n in channels):
        return unusable
    kernel, stride, dilation = (pair(settings[name], 1, 64) for name in ("kernel_size", "stride", "dilation"))
    padding = settings["padding"] if settings["padding"] in ("same", "valid") else pair(settings["padding"], 0, 64)
    if None in (kernel, stride, dilation, padding) or type(settings["bias"]) is not bool:
        return unusable
    if settings["padding_mode"] not in PADDING_MODES or channels[0] % channels[2] or channels[1] % channels[2]:
        return unusable
    if channels[0] * channels[1] // channels[2] * kernel[0] * kernel[1] > 2**20:  # 4 MB of weights
        return unusable
    try:
        layer = nn.Conv2d(
            *channels[:2],
            kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=channels[2],
            bias=settings["bias"],
            padding_mode=settings["padding_mode"],
        )
    except (ValueError, RuntimeError):  # e.g. padding="same" with a stride
        return unusable
    if settings["weight_shape"] != tuple(layer.weight.shape):
        changed = "an nn.Conv2d whose weights do not match its settings (attributes changed after it was built)"
        return (opaque or str)(changed)
    return layer


# ----------------------------------------------------------------------------------------------------
# In the kernel


def describe(namespace: dict, names: list[str]) -> dict:
    """{name: what the kernel's global ``name`` is}: "missing", "none", "ellipsis", "stand_in" (the library's
    computation lent by ``nclab.exercises.stand_in``), "module" (a layer, where a function is asked for) or
    "object", with its type's name."""
    described = {}
    for name in names:
        if name not in namespace:
            described[name] = {"kind": "missing"}
            continue
        value = namespace[name]
        kind = (
            "none"
            if value is None
            else "ellipsis"
            if value is Ellipsis
            else "stand_in"  # nclab.exercises.stand_in's loan, copied into the answer's name: not an answer
            if getattr(value, "__nclab_stand_in__", False) is True
            else "module"
            if isinstance(value, nn.Module)
            else "object"
        )
        described[name] = {"kind": kind, "type": _type_name(value)}
    return described


def serve(namespace: dict, tag: str, name: str, request: str) -> None:
    """Run one request of the grader (base64 JSON: ``{"calls": [[argument, …], …]}``) on the kernel's
    global ``name`` and print one line: ``tag`` and the JSON reply, per call either ``{"output", "arguments",
    "gradients"}`` (the tensor arguments as they are after the call, the gradients of the output's sum with
    respect to the arguments that require them) or ``{"raised": type name, "message", "not_implemented"}``;
    a reply the kernel could not encode says ``{"failed": …}``."""
    calls = decode(json.loads(base64.b64decode(request)))["calls"]
    function = namespace.get(name)
    replies = []
    for arguments in calls:
        replies.append(_call(function, arguments))
        if "raised" in replies[-1]:
            break  # the grader stops at the first crash, as call() does
    try:
        line = json.dumps({"replies": replies}, allow_nan=True)
    except (TypeError, ValueError) as error:
        line = json.dumps({"failed": f"{type(error).__name__}"})
    sys.stdout.write(f"\n{tag} {line}\n")  # on a line of its own, after a print(..., end="") of the answer
    sys.stdout.flush()


def announce(namespace: dict, tag: str, names: list[str]) -> None:
    """Print one line: ``tag`` and what each answer's global name holds (:func:`describe`)."""
    sys.stdout.write(f"\n{tag} {json.dumps(describe(namespace, names))}\n")
    sys.stdout.flush()


def _call(function, arguments: list) -> dict:
    leaves = list(arguments)
    passed = [arg.clone() if isinstance(arg, torch.Tensor) and arg.requires_grad else arg for arg in leaves]
    try:
        output = function(*passed)
    except BaseException as error:  # KeyboardInterrupt too: the grader knows when it interrupted
        return {
            "raised": _type_name(error),
            "message": str(error)[:500],
            "not_implemented": isinstance(error, NotImplementedError),
        }
    try:
        reply = {"output": encode(output), "arguments": [], "gradients": {}}
        for arg in passed:
            reply["arguments"].append(encode(arg.detach()) if isinstance(arg, torch.Tensor) else None)
    except Exception as error:  # the output's own code (a property, __iter__) raised: the answer's fault
        return {"raised": _type_name(error), "message": f"while sending its output: {error}"[:500]}
    wanted = [(p, leaf) for p, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor) and leaf.requires_grad]
    if wanted and type(output) is torch.Tensor and output.requires_grad:
        try:
            grads = torch.autograd.grad(output.sum(), [leaf for _, leaf in wanted], allow_unused=True)
            reply["gradients"] = {str(p): None if g is None else encode(g) for (p, _), g in zip(wanted, grads)}
        except Exception as error:  # a freed graph (.backward() inside the answer), a backward that raises
            reply["gradients"] = {str(p): {"error": f"{type(error).__name__}: {error}"[:300]} for p, _ in wanted}
    return reply
