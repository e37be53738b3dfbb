"""The Python face of dlbridge: Tensor, creation and from_dlpack, on top of _lib."""

from __future__ import annotations

import enum
import operator
import sys
from ctypes import _Pointer as _CPointer, byref, c_int64, c_void_p, cast, sizeof
from typing import Any, Optional, Sequence, Tuple, Union

from . import _lib, _shared  # _shared: tensors across processes (issue 18)
from ._lib import DLDataType, DLDevice, lib, pylib

__all__ = ["Tensor", "empty", "zeros", "from_dlpack", "live_allocations", "cuda_device_count", "DTYPES"]

# ---------------------------------------------------------------------------------------------
# dtypes and devices
# ---------------------------------------------------------------------------------------------

#: The dtypes of the contract: name -> (DLPack type code, bits).
DTYPES: dict[str, Tuple[int, int]] = {
    "bool": (6, 8),
    "int8": (0, 8),
    "int16": (0, 16),
    "int32": (0, 32),
    "int64": (0, 64),
    "uint8": (1, 8),
    "uint16": (1, 16),
    "uint32": (1, 32),
    "uint64": (1, 64),
    "float16": (2, 16),
    "bfloat16": (4, 16),
    "float32": (2, 32),
    "float64": (2, 64),
    "complex64": (5, 64),
    "complex128": (5, 128),
}
# Types dlbridge can hold and exchange but not convert (DLPack's float8 codes).
_EXCHANGE_ONLY = {
    (7, 8): "float8_e3m4",
    (8, 8): "float8_e4m3",
    (9, 8): "float8_e4m3b11fnuz",
    (10, 8): "float8_e4m3fn",
    (11, 8): "float8_e4m3fnuz",
    (12, 8): "float8_e5m2",
    (13, 8): "float8_e5m2fnuz",
    (14, 8): "float8_e8m0fnu",
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()} | _EXCHANGE_ONLY

CPU, CUDA, CUDA_HOST = 1, 2, 3

DeviceLike = Union[str, Tuple[int, int]]


# Python's own scalar types, as NumPy and PyTorch read them.
_BUILTIN_DTYPES = {bool: "bool", int: "int64", float: "float64", complex: "complex128"}


def _dtype_name(dtype: Any) -> str:
    """The dlbridge name of a dtype given as a name ("float32"), a NumPy dtype or scalar type
    (np.dtype("f4"), np.float64, ml_dtypes.bfloat16), a PyTorch dtype (torch.float32), Python's
    bool, int, float or complex, or anything whose .name is a name (tf.float32). Neither NumPy
    nor PyTorch is imported: a dtype of theirs exists only when the user imported them."""
    if isinstance(dtype, str):
        return dtype
    tp = type(dtype)
    if tp.__module__ == "torch":  # torch.dtype: str() is "torch.float32"
        name = str(dtype)
        if name.startswith("torch."):
            return name[len("torch."):]
    np = sys.modules.get("numpy")
    if np is not None and (
        isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic))
    ):
        dt = np.dtype(dtype)
        if dt.byteorder not in "=|":
            raise ValueError(f"dtype {dt.str!r} is not in native byte order; dlbridge holds native data only")
        return dt.name
    if isinstance(dtype, type) and dtype in _BUILTIN_DTYPES:
        return _BUILTIN_DTYPES[dtype]
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    what = repr(dtype) if isinstance(dtype, type) else tp.__name__
    raise TypeError(
        "dtype must be a dtype name such as 'float32', a NumPy dtype or scalar type or a PyTorch "
        f"dtype, not {what}"
    )


def _dtype(dtype: Any) -> DLDataType:
    """The DLDataType of a dtype in any spelling _dtype_name takes: TypeError for something that
    is no dtype, ValueError for a dtype dlbridge does not convert."""
    name = _dtype_name(dtype)
    try:
        code, bits = DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; dlbridge knows {', '.join(DTYPES)}") from None
    return DLDataType(code, bits, 1)


def _is_int(x: Any) -> bool:
    """An int as the array-API standard means it: int or a subclass (an IntEnum), not bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def _device_pair(device: Any) -> Optional[Tuple[int, int]]:
    """A DLPack (device_type, device_id) pair as two ints, or None when `device` is not one. The
    type may be an enum member whose value is an int (what `__dlpack_device__` returns in
    PyTorch and NumPy); tuple subclasses (namedtuples) count as tuples."""
    if not (isinstance(device, tuple) and len(device) == 2):
        return None
    kind, index = device
    if isinstance(kind, enum.Enum):
        kind = kind.value
    if not (_is_int(kind) and _is_int(index)):
        return None
    return int(kind), int(index)


_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _device(device: DeviceLike) -> DLDevice:
    """"cpu", "cuda" (= "cuda:0"), "cuda:N", "cuda_host" (= "cuda_host:0"), "cuda_host:N", a
    torch.device, or a DLPack (device_type, device_id) pair."""
    pair = _device_pair(device)
    if pair is not None:
        if not all(_INT32_MIN <= v <= _INT32_MAX for v in pair):
            # ctypes would wrap them silently into DLDevice's 32-bit fields.
            raise ValueError(f"device {device!r} does not fit DLPack's 32-bit device type and id")
        return DLDevice(*pair)
    if not isinstance(device, str):
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(device, torch.device):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', not {type(device).__name__}")
        device = str(device)
    if device == "cpu":
        return DLDevice(CPU, 0)
    kind, colon, index = device.partition(":")
    if kind in ("cuda", "cuda_host") and (index.isdigit() if colon else True):
        return DLDevice(CUDA if kind == "cuda" else CUDA_HOST, int(index) if index else 0)
    raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N', 'cuda_host' or 'cuda_host:N'")


def _device_name(device_type: int, device_id: int) -> str:
    if device_type == CPU:
        return "cpu"
    if device_type == CUDA:
        return f"cuda:{device_id}"
    if device_type == CUDA_HOST:
        return "cuda_host" if device_id == 0 else f"cuda_host:{device_id}"
    return f"dlpack_device({device_type}, {device_id})"


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _int64(value: Any, what: str) -> int:
    """An int that fits the C int64_t it is passed as (ctypes would silently wrap it)."""
    try:
        v = operator.index(value)  # ints, numpy integers, torch.Size entries; not floats
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"{what} is {v}, which does not fit in a 64-bit signed integer")
    return v


def _dims(values: Any, what: str) -> Tuple[Any, int]:
    """A shape or strides (a sequence of ints, or one int) as a C int64 array (NULL when empty)
    and its length."""
    if hasattr(values, "__index__"):
        values = (values,)
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of ints, not {type(values).__name__}") from None
    items = [_int64(v, f"{what}[{i}]") for i, v in enumerate(values)]
    n = len(items)
    return ((c_int64 * n)(*items) if n else None), n


# ---------------------------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------------------------

_to_capsule = _lib.helpers.to_capsule
_from_capsule = _lib.helpers.from_capsule
_from_exchange_api = _lib.helpers.from_exchange_api
_native = _lib.native
_wrap = _native.wrap  # (handle) -> Tensor owning it; 0 raises ValueError
_new_handle = c_void_p
# Stands for an argument not given, when the native functions hand a call to a fallback below.
_MISSING = object()


def _produce(fn: Any, *args: Any) -> "Tensor":
    """Calls a C function whose last parameter is `dlb_tensor **out` and wraps the result (the
    slow paths only: the common calls are native)."""
    out = _new_handle()
    fn(*args, byref(out))  # errcheck raises on failure
    return _wrap(out.value)


class Tensor(_lib.TensorBase):
    """A tensor handle owned by this object. Memory is shared between aliases, views and DLPack
    exports; it is released when the last of them is gone.

    The hot attributes and methods (shape, strides, ndim, dtype, device, itemsize, nbytes,
    read_only, data_ptr, is_contiguous, alias, copy, view, astype, to, cpu, numpy, __dlpack__,
    __dlpack_device__, shares_memory) are C functions of libdlbridge, on the native base class;
    the rest is Python, here."""

    # No __dict__: the instance is the native {header, handle} plus a weak-reference slot.
    __slots__ = ("__weakref__",)

    # -- inspection ---------------------------------------------------------------------------

    # A copy of the object would copy the handle, and both copies would free it.
    def __copy__(self) -> "Tensor":
        return self.alias()

    def __deepcopy__(self, memo: Any) -> "Tensor":
        return self.copy()

    # -- across processes (issue 18: the logic is in _shared.py) --
    # pickle: CPU tensors by value (protocol 5: out-of-band buffers); multiprocessing: shared
    # tensors as handles (registered with its ForkingPickler below the class).
    __reduce_ex__ = _shared.reduce_ex
    is_shared = property(_shared.is_shared)
    share_memory = _shared.share_memory
    # -- end of issue 18's lines --

    def __repr__(self) -> str:
        if not self._h:
            return "dlbridge.Tensor(<freed>)"
        flags = ", read_only=True" if self.read_only else ""
        return f"dlbridge.Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device}{flags})"

    def _require_host(self, what: str) -> None:
        """TypeError unless the memory is host memory (the CPU's or pinned), as PyTorch does."""
        device = self.device
        if device != "cpu" and not device.startswith("cuda_host"):
            raise TypeError(
                f"can't convert a {device} tensor to {what}: its memory is not on the host; "
                "call .cpu() first to copy it to host memory"
            )

    # -- NumPy's and Python's conventions -----------------------------------------------------

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> Any:
        """NumPy's array protocol (NumPy 2): np.asarray(t) and np.array(t, copy=False) share the
        memory (host memory only: a GPU tensor raises TypeError), read-only stays read-only;
        copy=True gives new memory; copy=False raises ValueError when a copy would be needed
        (a dtype conversion)."""
        import numpy as np

        if copy is not None and copy is not True and copy is not False:
            raise TypeError(f"copy must be None, True or False, not {copy!r}")
        self._require_host("numpy")
        arr = self.numpy()
        if dtype is not None:
            target = np.dtype(dtype)
            if target != arr.dtype:
                if copy is False:
                    raise ValueError(
                        f"converting a {self.dtype} tensor to {target} needs a copy, which copy=False forbids"
                    )
                return arr.astype(target)
        return arr.copy() if copy else arr

    def __buffer__(self, flags: int) -> memoryview:
        """Python's buffer protocol (PEP 688; Python 3.12 calls it for memoryview(t), bytes(t)
        and NumPy's buffer import): a memoryview of the host memory, shared, made through NumPy
        (which describes any strides). A GPU tensor raises TypeError; a writable buffer of
        read-only data, BufferError."""
        self._require_host("numpy")
        arr = self.numpy()
        if flags & 1 and not arr.flags.writeable:  # inspect.BufferFlags.WRITABLE
            raise BufferError("a writable buffer was requested but the tensor is read-only")
        return memoryview(arr)

    # -- native code ---------------------------------------------------------------------------

    @property
    def _as_parameter_(self) -> c_void_p:
        """The `dlb_tensor *` handle, borrowed (valid while this Tensor lives), so that a ctypes
        function taking a pointer (c_void_p) takes the Tensor itself: `lib.fn(t)`. The handle
        belongs to this package's copy of libdlbridge (see dlbridge.get_library())."""
        h = self._h
        if not h:
            raise ValueError("the tensor has been freed")
        return c_void_p(h)

    @classmethod
    def from_handle(cls, handle: Any) -> "Tensor":
        """Wraps a `dlb_tensor *` made by native code (an int or a ctypes pointer) and takes
        ownership: it is freed with dlb_tensor_free when the Tensor goes, so the caller must not
        free it. It must come from the library this package loaded (dlbridge.get_library()).
        NULL raises ValueError (and nothing is owned)."""
        if handle is None:
            value = None
        elif isinstance(handle, (c_void_p, _CPointer)):
            value = cast(handle, c_void_p).value
        elif _is_int(handle):
            if not 0 <= handle < (1 << (8 * sizeof(c_void_p))):
                raise ValueError(f"{handle} is not an address")
            value = handle
        else:
            raise TypeError(f"from_handle expects a dlb_tensor pointer (an int or a ctypes pointer), not {type(handle).__name__}")
        if not value:
            raise ValueError("from_handle: the handle is NULL")
        return _wrap(value)

    # -- DLPack -------------------------------------------------------------------------------

    def _check_stream(self, stream: Any) -> None:
        """The stream rules of the array-API standard. Nothing needs synchronising: every
        dlbridge operation is complete when it returns, so the data is ready on any stream."""
        device_type = self.__dlpack_device__()[0]
        if device_type == CPU:
            raise BufferError(f"stream must be None for a CPU tensor, got {stream!r}")
        if not _is_int(stream):
            raise TypeError(f"stream must be None or an int (a CUDA stream handle), not {type(stream).__name__}")
        if stream == 0:
            raise ValueError("stream=0 is ambiguous and disallowed by DLPack: use 1 (legacy default), 2 (per-thread default) or a stream pointer")
        if stream < -1:
            raise ValueError(f"stream={stream} is not a CUDA stream: use None, -1, 1, 2 or a stream pointer")

    def _export_to(self, dl_device: Tuple[int, int], versioned: bool, copy: Optional[bool]) -> Any:
        """The export for another device: a copy there, exported as the copy it is (IS_COPIED)."""
        if copy is False:
            raise BufferError(
                f"dl_device={dl_device} differs from the tensor's device {self.device}, and "
                "copy=False forbids the copy a move would need"
            )
        try:
            moved = _produce(lib.dlb_tensor_to_device, self._h, _device(dl_device))
        except (RuntimeError, ValueError, TypeError) as e:
            raise BufferError(f"cannot export to dl_device={dl_device}: {e}") from e
        return _to_capsule(moved._h, versioned | 4)


# DLPack 1.3's C exchange table: consumers that read it (tvm-ffi, PyTorch where it does) import a
# dlbridge Tensor without any Python-level call.
Tensor.__dlpack_c_exchange_api__ = _native.exchange_api()


# -- the slow paths of the native methods: whatever the C code does not take itself ----------


def _dlpack_slow(self: Tensor, stream: Any, max_version: Any, dl_device: Any, copy: Any) -> Any:
    """Tensor.__dlpack__ for the arguments the native path leaves: every check, in order (copy,
    max_version, stream, dl_device), and exports to another device."""
    stream = None if stream is _MISSING else stream
    max_version = None if max_version is _MISSING else max_version
    dl_device = None if dl_device is _MISSING else dl_device
    copy = None if copy is _MISSING else copy
    if copy is not None and copy is not True and copy is not False:
        raise TypeError(f"copy must be None, True or False, not {copy!r}")
    if max_version is None:
        versioned = False
    elif isinstance(max_version, tuple) and len(max_version) == 2 and _is_int(max_version[0]):
        versioned = max_version[0] >= 1
    else:
        raise TypeError(f"max_version must be None or a (major, minor) tuple, not {max_version!r}")
    if stream is not None:
        self._check_stream(stream)
    if dl_device is not None:
        pair = _device_pair(dl_device)
        if pair is None:
            raise TypeError(f"dl_device must be None or a (device_type, device_id) tuple, not {dl_device!r}")
        own = self.__dlpack_device__()
        if pair != own and not (pair[0] == own[0] == CPU):
            return self._export_to(pair, versioned, copy)
    return _to_capsule(self._h, versioned | (copy is True) << 1)


def _view_slow(self: Tensor, shape: Any, strides: Any, offset: Any) -> Tensor:
    strides = None if strides is _MISSING else strides
    offset = 0 if offset is _MISSING else offset
    shape_arr, n = _dims(shape, "shape")
    strides_arr = None
    if strides is not None:
        strides_arr, m = _dims(strides, "strides")
        if m != n:
            raise ValueError(f"strides has {m} entries but shape has {n}")
    return _produce(pylib.dlb_tensor_view, self._h, shape_arr, strides_arr, n, _int64(offset, "offset"))


def _astype_slow(self: Tensor, dtype: Any) -> Tensor:
    try:
        return _produce(lib.dlb_tensor_cast, self._h, _dtype(dtype))
    except BufferError as e:  # DLB_ERR_UNSUPPORTED: a conversion dlbridge does not do
        raise TypeError(str(e)) from None


def _to_slow(self: Tensor, device: Any) -> Tensor:
    target = _device(device)
    if (target.device_type, target.device_id) == self.__dlpack_device__():
        return self.alias()
    return _produce(lib.dlb_tensor_to_device, self._h, target)


def _numpy_slow(self: Tensor) -> Any:
    """Tensor.numpy for the first call (NumPy is imported, and its from_dlpack handed to the
    native method) and for what it leaves: device memory (TypeError) and bfloat16."""
    import numpy as np

    _native.set_numpy(np.from_dlpack)
    self._require_host("numpy")
    if self.dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise BufferError("a bfloat16 tensor needs the ml_dtypes package to become a NumPy array") from None
        return np.from_dlpack(_Reinterpret(self, DLDataType(1, 16, 1))).view(ml_dtypes.bfloat16)
    return np.from_dlpack(self)


def _empty_shared(shape: Any, dtype: Any, device: Any, zero: bool) -> Tensor:
    """empty/zeros(shared=True): host memory other processes can map (see _shared.py)."""
    return _shared.empty_shared(shape, dtype, device, zero)


def _create_slow(shape: Any, dtype: Any, device: Any, zero: bool, shared: Any) -> Tensor:
    dtype = "float32" if dtype is _MISSING else dtype
    device = "cpu" if device is _MISSING else device
    if shared is not _MISSING and shared:
        return _empty_shared(shape, dtype, device, zero)
    arr, n = _dims(shape, "shape")
    fn = lib.dlb_tensor_zeros if zero else lib.dlb_tensor_empty
    return _produce(fn, arr, n, _dtype(dtype), _device(device))


_shared.register(Tensor)  # issue 18: the class for _shared, and multiprocessing's reducer


class _Reinterpret:
    """Exports a tensor's memory under another dtype of the same size (bfloat16 as uint16 for
    NumPy, which cannot import bfloat16). The export is our own struct, not yet handed out, so
    changing its dtype field is ours to do."""

    def __init__(self, t: Tensor, dtype: DLDataType) -> None:
        self._t, self._dtype = t, dtype

    def __dlpack_device__(self) -> Tuple[int, int]:
        return self._t.__dlpack_device__()

    def __dlpack__(self, **kwargs: Any) -> Any:
        capsule = self._t.__dlpack__(**kwargs)
        name = _lib.capsule_name(capsule)  # which struct __dlpack__ chose
        managed = _lib.capsule_pointer(capsule, name)
        offset = 32 if name == b"dltensor_versioned" else 0  # where dl_tensor sits (DLPack ABI)
        _lib.DLTensor.from_address(managed + offset).dtype = self._dtype
        return capsule


# ---------------------------------------------------------------------------------------------
# creation and import
# ---------------------------------------------------------------------------------------------

#: empty(shape, dtype="float32", device="cpu", *, shared=False): a new tensor with uninitialised
#: memory (256-byte aligned). Native.
empty = _native.empty
#: zeros(shape, dtype="float32", device="cpu", *, shared=False): a new zero-filled tensor.
zeros = _native.zeros


def live_allocations() -> int:
    """Data buffers dlbridge keeps alive now (its own, wrapped and imported ones)."""
    return int(pylib.dlb_live_allocations())


def cuda_device_count() -> int:
    """CUDA devices usable now: 0 without a driver library or a GPU. Never raises."""
    return int(pylib.dlb_cuda_device_count())


_CapsuleType = _lib.CapsuleType
# What the native from_dlpack reads for each producer type it has seen: True (ask __dlpack__
# directly, no __dlpack_device__ call) or an exchange-table capsule (read it, host tensors only).
# Types not in it (and PyTorch, whose table needs the guard below) take _from_dlpack_slow.
_ROUTES: dict[type, Any] = {}
_EXCHANGE_ROUTES: dict[type, Any] = {}


def _torch_exchange_safe(x: Any) -> bool:
    """Whether PyTorch's C exchange table gives the same tensor its __dlpack__ would.

    It does not for everything: the table exports tensors whose conjugate bit is set without
    applying it (the values read back are wrong), tensors that require grad and sparse layouts,
    all of which __dlpack__ refuses with BufferError. Those take the __dlpack__ path, so dlbridge
    refuses them the way NumPy does. Tensors with the negative bit set are exported wrongly by
    both (PyTorch 2.15: np.from_dlpack(t) returns the un-negated values), so they are refused
    here, as Tensor.numpy() refuses them."""
    if x.is_neg():
        raise BufferError(
            "from_dlpack: the PyTorch tensor has its negative bit set, which DLPack cannot carry "
            "(PyTorch would export the un-negated values); call .resolve_neg() first"
        )
    return not (x.requires_grad or x.is_conj() or x.is_cuda) and x.layout is sys.modules["torch"].strided


def _exchange_route(tp: type) -> Any:
    """(table, guard) when objects of type tp can be imported through their type's DLPack C
    exchange table (`__dlpack_c_exchange_api__`) without any Python-level call, else None.
    PyTorch's table is read behind the guard above; any other producer's table as it is (the
    native code then reads it directly, host tensors only). A table that refuses a tensor gives a
    one-line BufferError."""
    route = _EXCHANGE_ROUTES.get(tp, _MISSING)
    if route is _MISSING:
        route = None
        table = getattr(tp, "__dlpack_c_exchange_api__", None)
        if type(table) is _CapsuleType and _lib.capsule_name(table) == b"dlpack_exchange_api":
            torch = sys.modules.get("torch")
            if torch is not None and issubclass(tp, torch.Tensor):
                route = (table, _torch_exchange_safe)
            else:
                route = (table, None)
                _ROUTES[tp] = table
        _EXCHANGE_ROUTES[tp] = route
    return route


def _tf_capsule(obj: Any) -> Any:
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(obj, tf.Tensor):
        return tf.experimental.dlpack.to_dlpack(obj)
    return None


def _call_dunder(obj: Any, dunder: Any, copy: Optional[bool]) -> Tuple[Any, bool]:
    """Asks a producer for a capsule, newest protocol first, falling back on TypeError as the
    array-API standard describes. copy=False is passed on (the producer must refuse to copy);
    copy=True is not: dlbridge imports the shared data and copies it itself, because some
    producers cannot copy (TensorFlow 2.21 raises RuntimeError for copy=True).

    CUDA producers are asked for stream=1, the legacy default stream: they make their pending
    work on the data visible there, and dlbridge's own work (on each thread's default stream,
    which waits for the legacy stream) comes after it.

    Returns the capsule and whether the call was the plain `__dlpack__(max_version=(1, 3))`
    that the native from_dlpack makes (it may then take this producer type over)."""
    kwargs: dict[str, Any] = {"max_version": (1, 3)}
    if copy is False:
        kwargs["copy"] = False
    device = getattr(obj, "__dlpack_device__", None)
    if device is not None and device()[0] == CUDA:
        kwargs["stream"] = 1
    plain = len(kwargs) == 1
    try:
        return dunder(**kwargs), plain
    except TypeError:
        pass
    del kwargs["max_version"]
    try:
        return dunder(**kwargs), False
    except TypeError:
        if not kwargs:
            raise
    return dunder(), False


def _from_dlpack_slow(obj: Any, copy: Any = _MISSING, device: Any = _MISSING) -> Tensor:
    """from_dlpack for what the native function leaves: copy= and device=, producer types seen
    for the first time, PyTorch (its exchange table behind a guard), TensorFlow and producers
    that need the older protocol."""
    copy = None if copy is _MISSING else copy
    device = None if device is _MISSING else device
    if copy is not None and not isinstance(copy, bool):
        raise TypeError(f"copy must be None, True or False, not {copy!r}")
    target = None if device is None else _device(device)
    tp = type(obj)
    if isinstance(obj, Tensor):
        t = obj.alias()
    elif tp is _CapsuleType:
        t = _wrap(_from_capsule(obj))
    else:
        route = _exchange_route(tp)
        h = None
        if route is not None and (route[1] is None or route[1](obj)):
            h = _from_exchange_api(route[0], obj)
        if h:
            t = _wrap(h)
        else:
            dunder = getattr(obj, "__dlpack__", None)
            plain = False
            if dunder is not None:
                capsule, plain = _call_dunder(obj, dunder, copy)
            else:
                capsule = _tf_capsule(obj)
                if capsule is None:
                    raise TypeError(
                        f"from_dlpack needs an object with __dlpack__, a DLPack capsule or a tf.Tensor, "
                        f"not {tp.__name__}"
                    )
            t = _wrap(_from_capsule(capsule))
            # A producer that answered the plain call with host memory: from now on the native
            # from_dlpack asks it directly, without the __dlpack_device__ call. (Should a later
            # object of the type be a CUDA tensor, stream=None asks for the legacy default
            # stream, the same as the stream=1 asked for here.)
            if plain and route is None and t.__dlpack_device__()[0] == CPU:
                _ROUTES[tp] = True
    if target is not None and (target.device_type, target.device_id) != t.__dlpack_device__():
        if copy is False:
            raise BufferError(
                f"the data is on {t.device}; moving it to {_device_name(target.device_type, target.device_id)} "
                "needs a copy, which copy=False forbids"
            )
        return _produce(lib.dlb_tensor_to_device, t._h, target)
    if copy is True:
        return t.copy()
    return t


#: from_dlpack(obj, *, copy=None, device=None): imports anything that speaks DLPack: an object
#: with __dlpack__ (NumPy, PyTorch, JAX, CuPy, tvm-ffi, pyarrow, dlbridge), a DLPack capsule
#: (legacy or versioned, consumed here) or a tf.Tensor. Shares memory whenever the producer
#: allows; copy=True always copies; copy=False shares or raises BufferError. device moves the
#: result there (a copy, so not with copy=False). Native; the uncommon cases run
#: _from_dlpack_slow.
from_dlpack = _native.from_dlpack

_native.setup(
    Tensor,
    _ROUTES,
    (_from_dlpack_slow, _dlpack_slow, _view_slow, _astype_slow, _to_slow, _numpy_slow, _create_slow, _MISSING),
)
