"""Writes the seed corpus of the atheris target, fuzz/python/corpus/dlpack_kwargs/<name>.

Each seed is the list of choices the target's decoder makes (dlpack_kwargs.decode), one byte per
choice, stored in reverse: the decoder reads its choices from the end of the input. The seeds use
only choices (no raw ints, bytes or text), so nothing comes from the front. Every seed is decoded
again and compared with the call it was meant to make before it is written. Run with the .venv's
Python (it imports the target, so atheris, NumPy and dlbridge):

    .venv/bin/python fuzz/python/make_seeds.py

It replaces the seed files it names and leaves other files alone.
"""

from __future__ import annotations

import enum
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dlpack_kwargs as T  # noqa: E402

OUT = os.path.join(HERE, "corpus", "dlpack_kwargs")


def index(table, value) -> int:
    """The position of value in table: by identity for enum members (an IntEnum member equals
    other members and ints of its value), by type and equality (or both NaN) otherwise."""
    for i, v in enumerate(table):
        if isinstance(value, enum.Enum) or isinstance(v, enum.Enum):
            if v is value:
                return i
        elif type(v) is type(value) and (v == value or (isinstance(v, float) and math.isnan(v) and math.isnan(value))):
            return i
    raise ValueError(f"{value!r} is not in {table!r}")


def int_like(v) -> list:
    if isinstance(v, bool):
        return [T.INT_LIKE.index("bool"), int(v)]
    if isinstance(v, enum.Enum):
        return [T.INT_LIKE.index("int-enum"), index(T.INT_ENUMS, v)]
    if type(v) is T.MyInt:
        return [T.INT_LIKE.index("int-subclass"), index(T.EDGE_INTS, int(v))]
    assert type(v) is int, v
    if T.SMALL_INT_MIN <= v < T.SMALL_INT_MIN + T.SMALL_INT_COUNT:
        return [T.INT_LIKE.index("small-int"), v - T.SMALL_INT_MIN]
    return [T.INT_LIKE.index("edge-int"), index(T.EDGE_INTS, v)]


def device_type_like(v) -> list:
    if type(v) is int and v in T.DEVICE_TYPE_INTS:
        return [0, T.DEVICE_TYPE_INTS.index(v)]
    if isinstance(v, T.DLDeviceType):
        return [1, index(list(T.DLDeviceType), v)]
    if isinstance(v, T.PlainDevice):
        return [2, index(list(T.PlainDevice), v)]
    return [3] + int_like(v)


class Thunk:
    """A value the decoder makes from a table of constructors: (table name, position)."""

    def __init__(self, table: str, i: int) -> None:
        self.table, self.i = table, i

    def value(self):
        return getattr(T, self.table)[self.i]()


def any_value(v) -> list:
    cat = T.CATEGORIES.index
    if isinstance(v, Thunk):
        return [cat({"NUMPY_VALUES": "numpy", "OBJECTS": "object"}[v.table]), v.i]
    if v is None:
        return [cat("none")]
    if v is True or v is False:
        return [cat("true" if v else "false")]
    if isinstance(v, enum.Enum):
        return [cat("enum"), index(T.ENUM_MEMBERS, v)]
    if type(v) is T.MyInt:
        return [cat("int-subclass"), index(T.EDGE_INTS, int(v))]
    if type(v) is int:
        if T.SMALL_INT_MIN <= v < T.SMALL_INT_MIN + T.SMALL_INT_COUNT:
            return [cat("small-int"), v - T.SMALL_INT_MIN]
        return [cat("edge-int"), index(T.EDGE_INTS, v)]
    if type(v) is float:
        return [cat("float"), index(T.FLOATS, v)]
    if type(v) is str:
        return [cat("string"), index(T.STRINGS, v)]
    if type(v) is T.Version:
        return [cat("namedtuple")] + int_like(v[0]) + int_like(v[1])
    if type(v) in (tuple, list, T.MyTuple):
        name = {tuple: "tuple", list: "list", T.MyTuple: "tuple-subclass"}[type(v)]
        return [cat(name), len(v)] + [b for item in v for b in any_value(item)]
    raise ValueError(f"no encoding for {v!r}")


class P:
    """A plausible value for its keyword (the decoder's `plausible`)."""

    def __init__(self, value, form: str = "tuple") -> None:
        self.value, self.form = value, form


class A:
    """Any value (the decoder's `any_value`)."""

    def __init__(self, value) -> None:
        self.value = value


NONE = object()


def keyword(name: str, spec) -> list:
    if spec is None:
        return [T.PRESENCE.index("absent")]
    if spec is NONE:
        return [T.PRESENCE.index("none")]
    if isinstance(spec, A):
        return [T.PRESENCE.index("any")] + any_value(spec.value)
    assert isinstance(spec, P)
    out = [T.PRESENCE.index("plausible")]
    v = spec.value
    if name == "stream":
        return out + int_like(v)
    if name == "copy":
        return out + [spec.form]  # the position in COPY_VALUES
    first = int_like if name == "max_version" else device_type_like
    out.append(T.PAIR_FORMS.index(spec.form))
    if spec.form in ("tuple", "list", "namedtuple"):
        return out + first(v[0]) + int_like(v[1])
    if spec.form == "tuple-of-any-length":
        return out + [len(v)] + [b for item in v for b in first(item)]
    return out + first(v[0]) + any_value(v[1])


def value_of(name: str, spec):
    if spec is NONE:
        return None
    v = spec.value
    if isinstance(spec, P) and name == "copy":
        return T.COPY_VALUES[spec.form]()
    if isinstance(v, Thunk):
        return v.value()
    if isinstance(spec, P) and spec.form == "list":
        return list(v)
    if isinstance(spec, P) and spec.form == "namedtuple":
        return (T.Version if name == "max_version" else T.Device)(*v)
    return v


def seed(kind="writable", dtype="float32", call="keywords", extra=None, consume="from_dlpack", **kw):
    """The input for one call, and the call it must decode to."""
    draws = [T.KIND_NAMES.index(kind), T.DTYPES.index(dtype), T.CALLS.index(call)]
    for name in T.KEYWORDS:
        draws += keyword(name, kw.get(name))
    args, kwargs = [], {n: value_of(n, kw[n]) for n in T.KEYWORDS if kw.get(n) is not None}
    if call == "positional":
        draws += any_value(extra)
        args.append(extra)
    elif call == "unknown-keyword":
        draws += [T.EXTRA_KEYWORDS.index(extra[0])] + any_value(extra[1])
        kwargs[extra[0]] = extra[1]
    draws.append(T.CONSUME.index(consume))
    assert all(0 <= d < 256 for d in draws)
    return bytes(reversed(draws)), T.Case(kind, dtype, None, args, kwargs, consume).call()


D = T.DLDeviceType
SEEDS = {
    "legacy": seed(),
    "all-none": seed(stream=NONE, max_version=NONE, dl_device=NONE, copy=NONE),
    "versioned": seed(max_version=P((1, 3))),
    "versioned-drop": seed(kind="own", max_version=P((1, 3)), consume="drop"),
    "versioned-numpy": seed(kind="broadcast", max_version=P((1, 0)), consume="numpy"),
    "max_version-0.9-read-only": seed(kind="read-only", max_version=P((0, 9))),
    "max_version-2.0-read-only": seed(kind="read-only", max_version=P((2, 0)), consume="numpy"),
    "max_version-huge-major": seed(max_version=P((1 << 100, 0))),
    "max_version-list": seed(max_version=P((1, 3), "list")),
    "max_version-namedtuple": seed(max_version=P((1, 3), "namedtuple")),
    "max_version-string": seed(max_version=A("1.3")),
    "max_version-three": seed(max_version=P((1, 3, 0), "tuple-of-any-length")),
    "max_version-minor-any": seed(max_version=P((1, "1.3"), "tuple-with-any-second")),
    "copy-true": seed(kind="strided", max_version=P((1, 3)), copy=P(True, 0)),
    "copy-true-legacy-read-only": seed(kind="read-only", copy=P(True, 0), consume="from_dlpack-copy"),
    "copy-false-read-only": seed(kind="read-only strided", max_version=P((1, 3)), copy=P(False, 1)),
    "copy-int": seed(copy=P(1, 3)),
    "copy-numpy-bool": seed(copy=P(True, 5)),
    "stream-1": seed(stream=P(1)),
    "stream-minus-one": seed(kind="0-d", dtype="bool", stream=P(-1)),
    "stream-string": seed(stream=A("default")),
    "dl_device-cpu": seed(max_version=P((1, 3)), dl_device=P((1, 0))),
    "dl_device-cpu-other-id": seed(kind="strided", dtype="int8", dl_device=P((1, 1))),
    "dl_device-cuda": seed(dl_device=P((2, 0))),
    "dl_device-cuda-copy-false": seed(dl_device=P((2, 0)), copy=P(False, 1)),
    "dl_device-cuda-host": seed(kind="zero-size", max_version=P((1, 3)), dl_device=P((3, 0))),
    "dl_device-vulkan": seed(dl_device=P((7, 0))),
    "dl_device-unknown-type": seed(dl_device=P((99, 0))),
    "dl_device-intenum-cpu": seed(max_version=P((1, 3)), dl_device=P((D.kDLCPU, 0))),
    "dl_device-plain-enum": seed(dl_device=P((T.PlainDevice.CPU, 0))),
    "dl_device-wraps-to-cpu": seed(dl_device=P((1 + (1 << 32), 0)), consume="numpy"),
    "dl_device-string": seed(dl_device=A("cpu")),
    "dl_device-float-type": seed(dl_device=A((1.0, 0))),
    "dl_device-nested": seed(dl_device=A(((1, 0), 0))),
    "read-only-zero-size-versioned": seed(kind="read-only zero-size", dtype="complex64", max_version=P((1, 3))),
    "zero-size-copy": seed(kind="zero-size", dtype="float16", max_version=P((1, 3)), copy=P(True, 0)),
    "positional": seed(call="positional", extra=(1, 3)),
    "unknown-keyword": seed(call="unknown-keyword", extra=("device", "cpu")),
    "cuda-stream-2": seed(kind="cuda", max_version=P((1, 3)), stream=P(2)),
    "cuda-to-cpu": seed(kind="cuda strided", dl_device=P((1, 0)), consume="numpy"),
}


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for name, (data, call) in SEEDS.items():
        case = T.decode(data)
        if case is None:  # a CUDA seed here without CUDA: check what decodes before the tensor
            assert T.KINDS[call.split(" ")[0]][1] and not T.CUDA, name
        else:
            got = case.call()
            assert got == call, f"{name}: decodes to {got}, meant {call}"
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name:34} {len(data):3} bytes  {call}")


if __name__ == "__main__":
    main()
