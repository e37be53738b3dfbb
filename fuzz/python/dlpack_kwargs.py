"""atheris target: `dlbridge.Tensor.__dlpack__(stream=, max_version=, dl_device=, copy=)` with values
the fuzzer invents, against the rules in tests/python/dlpack_rules.py.

    .venv/bin/python fuzz/python/dlpack_kwargs.py -max_total_time=60 CORPUS_DIR   (libFuzzer flags)
    FUZZ_TRACE=1 .venv/bin/python fuzz/python/dlpack_kwargs.py INPUT_FILE       (replay one input)

Each input picks a tensor (writable, dlbridge-owned, read-only, strided, broadcast, 0-d,
zero-size, read-only zero-size; on CUDA too where dlbridge.cuda_device_count() > 0) and a dtype,
and for each keyword: absent, None, a value of the kind the keyword expects (int-likes, version
and device pairs, copy flags) or anything at all (bools, ints of any size, floats, strings, bytes,
tuples and lists of any length and nesting, namedtuples, enum members, NumPy scalars and arrays,
dlbridge tensors and capsules, other objects); sometimes a positional argument or an unknown
keyword. It calls `t.__dlpack__`, and raises (so that atheris reports the input) when:
- the call raises where the rules say it returns, returns where they say it raises, or raises
  another exception type, or an exception without a message;
- the capsule is not the one the rules describe: legacy or versioned (version 1.3), sharing the
  tensor's memory or not, READ_ONLY and IS_COPIED flags, device; or not the tensor's shape,
  dtype and strides (row-major for a copy), byte_offset 0;
- consuming it goes wrong: the input decides between dlbridge.from_dlpack (read back: device,
  read-only bit, values), dropping it unconsumed (its deleter must run), np.from_dlpack (values,
  writeable flag: False for a legacy capsule with elements, NumPy's choice) and
  dlbridge.from_dlpack(copy=True); a consumed capsule must be renamed used_*;
- the tensor's values or read-only bit changed;
- dlbridge.live_allocations() is not back to its value before the input, after every input (a
  garbage collection is allowed first, so only a real leak counts).

The current dlbridge departs from the rules in the ways dlpack_rules.KNOWN_DEVIATIONS lists; the
target expects those departures exactly (and says on stderr when it first meets each), so that it
runs clean while they are open and fails once one is fixed. DLB_FUZZ_STRICT=1 expects the rules
alone. The input format (fuzz/README.md has it too): every choice is one byte read from the end
of the input (value modulo the number of choices; 0 once the input is used up), raw ints, bytes
and text come from the front; fuzz/python/make_seeds.py writes the seeds in that format.
"""

from __future__ import annotations

import collections
import enum
import gc
import math
import os
import reprlib
import sys

import numpy as np

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "python"))

with atheris.instrument_imports(include=["dlbridge", "dlpack_rules"]):
    import dlbridge
    import dlpack_rules

from support import IS_COPIED, READ_ONLY, capsule_name, managed_info  # noqa: E402

CUDA = dlpack_rules.CUDA_DEVICES > 0
STRICT = os.environ.get("DLB_FUZZ_STRICT") == "1"
TRACE = os.environ.get("FUZZ_TRACE") == "1"
QUIRKS = () if STRICT else tuple(dlpack_rules.KNOWN_DEVIATIONS)


class Finding(AssertionError):
    """The rules and dlbridge disagree (or something leaked): atheris reports the input."""


# ---------------------------------------------------------------------------------------------
# The input
# ---------------------------------------------------------------------------------------------


class Source:
    """Choices from the fuzz input. choice(n), n <= 256, reads one byte from the end (atheris'
    FuzzedDataProvider.ConsumeIntInRange: the byte modulo n, 0 when the input is used up); raw
    ints, bytes and text are read from the front."""

    def __init__(self, data: bytes) -> None:
        self.fdp = atheris.FuzzedDataProvider(data)

    def choice(self, n: int) -> int:
        assert 1 <= n <= 256
        return self.fdp.ConsumeIntInRange(0, n - 1) if n > 1 else 0

    def pick(self, table):
        return table[self.choice(len(table))]

    def raw_int(self) -> int:
        return self.fdp.ConsumeInt(self.choice(20) + 1)  # signed, up to 160 bits

    def raw_bytes(self) -> bytes:
        return self.fdp.ConsumeBytes(self.choice(17))

    def raw_text(self) -> str:
        return self.fdp.ConsumeUnicodeNoSurrogates(self.choice(17))


class DLDeviceType(enum.IntEnum):
    """Like torch.utils.dlpack.DLDeviceType (what torch.Tensor.__dlpack_device__ returns)."""

    kDLCPU = 1
    kDLCUDA = 2
    kDLCUDAHost = 3
    kDLOpenCL = 4
    kDLVulkan = 7
    kDLROCM = 10
    kDLExtDev = 12
    kDLOneAPI = 14
    kDLTrn = 18


class PlainDevice(enum.Enum):
    """The standard types the device type as enum.Enum: a plain Enum with DLPack values."""

    CPU = 1
    CUDA = 2
    CUDA_HOST = 3
    NAMED = "cpu"
    PAIR = (1, 0)


class Bits(enum.IntFlag):
    A = 1
    B = 2


class MyInt(int):
    pass


class MyTuple(tuple):
    pass


Version = collections.namedtuple("Version", "major minor")
Device = collections.namedtuple("Device", "device_type device_id")

SMALL_INT_MIN, SMALL_INT_COUNT = -8, 40  # small ints: -8..31
EDGE_INTS = [
    0, 1, -1, 2, 3, -2, 0x7F00DEAD0000, (1 << 31) - 1, 1 << 31, -(1 << 31), -(1 << 31) - 1, 1 << 32,
    1 + (1 << 32), 2 + (1 << 32), 1 - (1 << 32), (1 << 63) - 1, 1 << 63, -(1 << 63), -(1 << 63) - 1,
    (1 << 64) - 1, 1 << 64, 1 + (1 << 64), 1 << 100, -(1 << 100), 10**30,
]
DEVICE_TYPE_INTS = [1, 2, 3, 4, 7, 10, 13, 14, 18, 0, 5, 6, 19, 99, -1, 1 + (1 << 32), 2 + (1 << 32),
                    1 - (1 << 32), 1 << 31, 1 << 100]
FLOATS = [0.0, -0.0, 1.0, 1.5, 2.0, -1.0, math.nan, math.inf, -math.inf, 1e300, 2.0**64, 5e-324]
STRINGS = ["", "cpu", "cuda", "cuda:0", "1.3", "(1, 3)", "1", "0", "-1", "default", "True", "None",
           "kDLCPU", "\x00", "\u00e9", "x" * 1000]
INT_ENUMS = list(DLDeviceType) + [Bits.A, Bits.B]
NUMPY_INTS = [np.int64, np.int32, np.uint8, np.int8]
ENUM_MEMBERS = list(DLDeviceType) + list(PlainDevice) + [Bits.A, Bits.B, Bits.A | Bits.B]
NUMPY_VALUES = [
    lambda: np.int64(1), lambda: np.int32(0), lambda: np.int64(-1), lambda: np.uint64((1 << 64) - 1),
    lambda: np.int8(2), lambda: np.bool_(True), lambda: np.bool_(False), lambda: np.float64(1.0),
    lambda: np.float64(math.nan), lambda: np.array(1), lambda: np.array([1, 0]), lambda: np.array([]),
    lambda: np.zeros((2, 2)), lambda: np.dtype("float32"), lambda: np.float32(1.0),
]
OBJECTS = [
    object, lambda: Ellipsis, lambda: NotImplemented, lambda: int, lambda: tuple, lambda: 1 + 0j,
    lambda: {}, lambda: {"max_version": (1, 3)}, lambda: set(), lambda: frozenset({1, 0}),
    lambda: range(2), lambda: slice(1, 0), lambda: bytearray(b"\x01\x00"),
    lambda: memoryview(b"\x01\x00"), lambda: iter((1, 0)), lambda: (x for x in (1, 0)),
]
# dlbridge's own objects (t: the tensor being exported).
DLBRIDGE_VALUES = [
    lambda t: t, lambda t: dlbridge.zeros(()), lambda t: dlbridge, lambda t: dlbridge.Tensor,
    lambda t: t.__dlpack__(max_version=(1, 3)), lambda t: dlbridge.zeros((2,)).__dlpack__(),
    lambda t: t.__dlpack_device__(), lambda t: dlbridge.from_dlpack,
]
COPY_VALUES = [
    lambda: True, lambda: False, lambda: None, lambda: 1, lambda: 0, lambda: np.bool_(True),
    lambda: np.bool_(False), lambda: "True", lambda: "", lambda: MyInt(1), lambda: 1.0,
    lambda: [True],
]
EXTRA_KEYWORDS = ["stream_ptr", "device", "max_versions", "dl_device_id", "copy_"]

# The categories of any_value(), in the order of the input's choice byte.
CATEGORIES = ["none", "true", "false", "small-int", "edge-int", "raw-int", "float", "string", "text",
              "bytes", "tuple", "list", "pair", "enum", "numpy", "object", "dlbridge", "namedtuple",
              "int-subclass", "tuple-subclass"]
# The categories of int_like().
INT_LIKE = ["small-int", "edge-int", "raw-int", "int-enum", "int-subclass", "numpy-int", "bool"]
# The forms of a plausible max_version / dl_device.
PAIR_FORMS = ["tuple", "tuple", "tuple", "tuple", "list", "namedtuple", "tuple-of-any-length",
              "tuple-with-any-second"]
PRESENCE = ["absent", "none", "plausible", "any"]
CALLS = ["keywords", "keywords", "keywords", "keywords", "keywords", "keywords", "positional",
         "unknown-keyword"]
CONSUME = ["from_dlpack", "drop", "numpy", "from_dlpack-copy"]
KEYWORDS = ["stream", "max_version", "dl_device", "copy"]
MAX_DEPTH = 3


@atheris.instrument_func
def plain_int(src: Source, kind: str) -> int:
    """A "small-int", "edge-int" or "raw-int" (kinds that int_like and any_value both draw)."""
    if kind == "small-int":
        return SMALL_INT_MIN + src.choice(SMALL_INT_COUNT)
    if kind == "edge-int":
        return src.pick(EDGE_INTS)
    return src.raw_int()


@atheris.instrument_func
def int_like(src: Source, t) -> object:
    kind = src.pick(INT_LIKE)
    if kind in ("small-int", "edge-int", "raw-int"):
        return plain_int(src, kind)
    if kind == "int-enum":
        return src.pick(INT_ENUMS)
    if kind == "int-subclass":
        return MyInt(src.pick(EDGE_INTS))
    if kind == "numpy-int":
        return src.pick(NUMPY_INTS)(src.choice(128))
    return bool(src.choice(2))


@atheris.instrument_func
def device_type_like(src: Source, t) -> object:
    form = src.choice(4)
    if form == 0:
        return src.pick(DEVICE_TYPE_INTS)
    if form == 1:
        return src.pick(list(DLDeviceType))
    if form == 2:
        return src.pick(list(PlainDevice))
    return int_like(src, t)


@atheris.instrument_func
def any_value(src: Source, t, depth: int = 0) -> object:
    cat = src.pick(CATEGORIES)
    if depth >= MAX_DEPTH and cat in ("tuple", "list", "pair", "namedtuple", "tuple-subclass"):
        return None
    if cat == "none":
        return None
    if cat == "true":
        return True
    if cat == "false":
        return False
    if cat in ("small-int", "edge-int", "raw-int"):
        return plain_int(src, cat)
    if cat == "float":
        return src.pick(FLOATS)
    if cat == "string":
        return src.pick(STRINGS)
    if cat == "text":
        return src.raw_text()
    if cat == "bytes":
        return src.raw_bytes()
    if cat in ("tuple", "list", "tuple-subclass"):
        n = src.choice(6)
        items = [any_value(src, t, depth + 1) for _ in range(n)]
        return {"tuple": tuple, "list": list, "tuple-subclass": MyTuple}[cat](items)
    if cat == "pair":
        return (int_like(src, t), int_like(src, t))
    if cat == "enum":
        return src.pick(ENUM_MEMBERS)
    if cat == "numpy":
        return src.pick(NUMPY_VALUES)()
    if cat == "object":
        return src.pick(OBJECTS)()
    if cat == "dlbridge":
        return src.pick(DLBRIDGE_VALUES)(t)
    if cat == "namedtuple":
        return Version(int_like(src, t), int_like(src, t))
    assert cat == "int-subclass"
    return MyInt(src.pick(EDGE_INTS))


@atheris.instrument_func
def pair_like(src: Source, t, first) -> object:
    form = src.pick(PAIR_FORMS)
    if form == "tuple":
        return (first(src, t), int_like(src, t))
    if form == "list":
        return [first(src, t), int_like(src, t)]
    if form == "namedtuple":
        return (Version if first is int_like else Device)(first(src, t), int_like(src, t))
    if form == "tuple-of-any-length":
        return tuple(first(src, t) for _ in range(src.choice(5)))
    return (first(src, t), any_value(src, t, 1))


def plausible(name: str, src: Source, t) -> object:
    if name == "stream":
        return int_like(src, t)
    if name == "max_version":
        return pair_like(src, t, int_like)
    if name == "dl_device":
        return pair_like(src, t, device_type_like)
    return src.pick(COPY_VALUES)()


# ---------------------------------------------------------------------------------------------
# The tensors
# ---------------------------------------------------------------------------------------------

DTYPES = ["float32", "int8", "float64", "bool", "complex64", "uint16", "float16", "int64"]
_bases: dict = {}


def base(dtype: str, read_only: bool = False, empty: bool = False) -> np.ndarray:
    """4x6 (or 0x3) sample values, cached; the read-only ones are shared between inputs."""
    key = (dtype, read_only, empty)
    a = _bases.get(key)
    if a is None:
        a = np.arange(0 if empty else 24)
        a = (a % 2 == 1) if dtype == "bool" else a.astype(dtype)
        a = a.reshape((0, 3) if empty else (4, 6))
        a.flags.writeable = not read_only
        _bases[key] = a
    return a


STRIDED = dict(shape=(3, 2), strides=(-6, 2), offset=20)
# name -> (read-only, needs CUDA, make(dtype))
KINDS = {
    "writable": (False, False, lambda d: dlbridge.from_dlpack(base(d).copy())),
    "own": (False, False, lambda d: dlbridge.from_dlpack(base(d), copy=True)),
    "read-only": (True, False, lambda d: dlbridge.from_dlpack(base(d, read_only=True))),
    "strided": (False, False, lambda d: dlbridge.from_dlpack(base(d).copy()).view(**STRIDED)),
    "read-only strided": (True, False, lambda d: dlbridge.from_dlpack(base(d, read_only=True)).view(**STRIDED)),
    "broadcast": (False, False, lambda d: dlbridge.from_dlpack(base(d).copy()).view((3, 6), (0, 1))),
    "0-d": (False, False, lambda d: dlbridge.zeros((), d)),
    "zero-size": (False, False, lambda d: dlbridge.zeros((0, 3), d)),
    "read-only zero-size": (True, False, lambda d: dlbridge.from_dlpack(base(d, read_only=True, empty=True))),
    "cuda": (False, True, lambda d: dlbridge.from_dlpack(base(d), device="cuda:0")),
    "cuda strided": (False, True, lambda d: dlbridge.from_dlpack(base(d), device="cuda:0").view(**STRIDED)),
}
KIND_NAMES = list(KINDS)


def host_values(t) -> np.ndarray:
    return (t if t.device == "cpu" else t.cpu()).numpy().copy()


# ---------------------------------------------------------------------------------------------
# One input
# ---------------------------------------------------------------------------------------------

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxtuple = _short.maxlist = 6
_short.maxlevel = 4


class Case:
    """A decoded input: the tensor, the call's arguments and how to consume the capsule."""

    def __init__(self, kind: str, dtype: str, t, args: list, kwargs: dict, consume: str) -> None:
        self.kind, self.dtype, self.t, self.args, self.kwargs, self.consume = kind, dtype, t, args, kwargs, consume

    def call(self) -> str:
        parts = [_short.repr(a) for a in self.args] + [f"{k}={_short.repr(v)}" for k, v in self.kwargs.items()]
        return f"{self.kind} {self.dtype} tensor: t.__dlpack__({', '.join(parts)}), then {self.consume}"


@atheris.instrument_func
def decode(data: bytes):
    """The Case an input describes (None for a CUDA tensor where there is no CUDA device)."""
    src = Source(data)
    kind = src.pick(KIND_NAMES)
    dtype = src.pick(DTYPES)
    call = src.pick(CALLS)
    read_only, needs_cuda, make = KINDS[kind]
    if needs_cuda and not CUDA:
        return None
    t = make(dtype)
    kwargs = {}
    for name in KEYWORDS:
        presence = src.pick(PRESENCE)
        if presence == "none":
            kwargs[name] = None
        elif presence == "plausible":
            kwargs[name] = plausible(name, src, t)
        elif presence == "any":
            kwargs[name] = any_value(src, t)
    args = []
    if call == "positional":
        args.append(any_value(src, t))
    elif call == "unknown-keyword":
        name = src.pick(EXTRA_KEYWORDS)
        kwargs[name] = any_value(src, t)
    return Case(kind, dtype, t, args, kwargs, src.pick(CONSUME))


def expectation(case: Case, quirks) -> object:
    if case.args or set(case.kwargs) - set(KEYWORDS):
        return TypeError  # keyword-only, and only these four
    read_only, _, _ = KINDS[case.kind]
    kw = case.kwargs
    return dlpack_rules.expected(kw.get("stream"), kw.get("max_version"), kw.get("dl_device"), kw.get("copy"),
                                 read_only=read_only, device=case.t.__dlpack_device__(), quirks=quirks)


def row_major(shape) -> tuple:
    strides, n = [], 1
    for d in reversed(shape):
        strides.append(n)
        n *= d
    return tuple(reversed(strides))


_met: set = set()


def note_deviation(case: Case, spec, want) -> None:
    for q in dlpack_rules.KNOWN_DEVIATIONS:
        if q not in _met and expectation(case, (q,)) != spec:
            _met.add(q)
            print(f"dlpack_kwargs: known deviation '{q}' met (not a finding while it is listed in "
                  f"dlpack_rules.KNOWN_DEVIATIONS): {case.call()}: the rules say {show(spec)}, dlbridge "
                  f"gives {show(want)}", file=sys.stderr, flush=True)


def show(outcome) -> str:
    return outcome.__name__ if isinstance(outcome, type) else repr(outcome)


@atheris.instrument_func
def check(case: Case) -> None:
    t = case.t
    spec = expectation(case, ())
    want = expectation(case, QUIRKS)
    read_only, _, _ = KINDS[case.kind]
    if t.read_only != read_only:
        raise Finding(f"{case.kind} tensor has read_only={t.read_only}")
    before = host_values(t)
    ptr = t.data_ptr()
    numel = math.prod(t.shape)
    if TRACE:
        print(f"dlpack_kwargs: {case.call()}: expecting {show(want)}", file=sys.stderr, flush=True)

    raised = None
    try:
        capsule = t.__dlpack__(*case.args, **case.kwargs)
    except Exception as e:  # noqa: BLE001 - the rules say which exception, if any
        raised, message = type(e), str(e)
    if raised is not None:
        got = raised
        if got is not want:
            if got is spec:
                raise Finding(fixed(case, spec, want))
            raise Finding(f"{case.call()}: raised {got.__name__}: {message}; the rules say {show(want)}")
        if not message:
            raise Finding(f"{case.call()}: raised {got.__name__} without a message")
        if want is not spec:
            note_deviation(case, spec, want)
        return

    info = managed_info(capsule)
    versioned = info["versioned"]
    flags = info["flags"] or 0
    if ptr and numel:
        shares = info["data"] == ptr
    elif versioned:  # dlbridge exports no data pointer for a tensor without elements
        shares = not flags & IS_COPIED
    else:
        shares = not isinstance(want, dict) or want["shares"]  # no memory to compare: cannot tell
    got = {
        "versioned": versioned,
        "shares": shares,
        "read_only": bool(flags & READ_ONLY),
        "copied": bool(flags & IS_COPIED) if versioned else not shares,
        "device": info["device"],
    }
    if got != want:
        if got == spec:
            raise Finding(fixed(case, spec, want))
        raise Finding(f"{case.call()}: returned {got}; the rules say {show(want)}")
    if want != spec:
        note_deviation(case, spec, want)
    name = capsule_name(capsule)
    if name != ("dltensor_versioned" if versioned else "dltensor"):
        raise Finding(f"{case.call()}: capsule named {name!r}")
    if versioned and info["version"] != (1, 3):
        raise Finding(f"{case.call()}: version {info['version']}")
    code, bits = dlbridge.DTYPES[case.dtype]
    strides = t.strides if shares else row_major(t.shape)
    layout = (info["shape"] or (), info["strides"] or (), info["dtype"], info["byte_offset"])
    if layout != (t.shape, strides if t.ndim else (), (code, bits, 1), 0):
        raise Finding(f"{case.call()}: shape, strides, dtype, byte_offset {layout}; the tensor has "
                      f"{(t.shape, t.strides, (code, bits, 1), 0)}")

    consume = case.consume
    on_cpu = want["device"] == (1, 0)
    if consume == "numpy" and not on_cpu:
        consume = "from_dlpack"
    if consume == "drop":
        del capsule  # unconsumed: the capsule's destructor calls the deleter
    elif consume == "numpy":
        a = np.from_dlpack(_Holder(capsule, info["device"]))
        # NumPy makes every legacy import read-only (the legacy struct cannot say it is writable),
        # except one without elements (no data to protect).
        writeable = versioned and not want["read_only"] or not numel
        if a.flags.writeable != writeable or not np.array_equal(a, before):
            raise Finding(f"{case.call()}: np.from_dlpack gave writeable={a.flags.writeable} {a!r}")
        del a
    else:
        back = dlbridge.from_dlpack(capsule, copy=True if consume == "from_dlpack-copy" else None)
        dev = back.__dlpack_device__()
        ro = back.read_only
        want_ro = want["read_only"] and consume == "from_dlpack"
        if dev != want["device"] or ro != want_ro or not np.array_equal(host_values(back), before):
            raise Finding(f"{case.call()}: {consume} gave {back!r} on {dev}, read_only={ro}, "
                          f"values {host_values(back)!r}")
        del back
    if consume != "drop":
        name = capsule_name(capsule)
        if name != ("used_dltensor_versioned" if versioned else "used_dltensor"):
            raise Finding(f"{case.call()}: the consumed capsule is named {name!r}")
        del capsule
    if t.read_only != read_only or not np.array_equal(host_values(t), before):
        raise Finding(f"{case.call()}: the tensor changed")


def fixed(case: Case, spec, want) -> str:
    quirks = [q for q in dlpack_rules.KNOWN_DEVIATIONS if expectation(case, (q,)) != spec]
    return (f"{case.call()}: dlbridge now follows the rules here ({show(spec)}) instead of the known "
            f"deviation {quirks} ({show(want)}): remove it from dlpack_rules.KNOWN_DEVIATIONS")


class _Holder:
    """Hands NumPy a capsule made already, whatever it asks for."""

    def __init__(self, capsule, device) -> None:
        self._capsule, self._device = capsule, device

    def __dlpack__(self, **kwargs):
        c, self._capsule = self._capsule, None
        return c

    def __dlpack_device__(self):
        return self._device


def test_one_input(data: bytes) -> None:
    start = dlbridge.live_allocations()
    case = decode(data)
    if case is not None:
        check(case)
        del case
    after = dlbridge.live_allocations()
    if after != start:
        gc.collect()  # a reference cycle is not a leak
        after = dlbridge.live_allocations()
        if after != start:
            raise Finding(f"dlbridge.live_allocations() is {after} after the input, {start} before: a leak")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
