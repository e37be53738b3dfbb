"""Tensors across processes: shared memory, pickling, and multiprocessing.

- ``dlbridge.empty/zeros(..., shared=True)`` and ``Tensor.share_memory()`` make host tensors in
  shared memory: an anonymous memory file (memfd), sealed at its size, that another process maps
  once it has the file descriptor. Nothing is left in /dev/shm; the kernel frees the memory when
  no process maps it any more.
- ``pickle`` takes any CPU tensor by value (dtype, shape and values), with protocol 5 out-of-band
  buffers: the pickler reads the tensor's memory in place instead of copying it into the stream,
  and the unpickler's writable buffer becomes the new tensor's memory (no copy either side).
- Through ``multiprocessing`` (its ForkingPickler, under spawn, fork and forkserver) a shared
  tensor, or a dlbridge CUDA tensor, travels as a 256-byte handle plus the segment's descriptor
  (``multiprocessing.reduction.DupFd``, as torch.multiprocessing's file_descriptor strategy
  does): the receiver's tensor is the same memory. Any other tensor is pickled by value.

The C library is reached only through ``_lib``; a tensor only through ``_as_parameter_`` (its
borrowed ``dlb_tensor *``) and ``Tensor.from_handle`` (which takes a new handle over).
"""

from __future__ import annotations

import ctypes
import os
import pickle
from ctypes import byref, c_int32, c_void_p
from typing import Any, Optional, Sequence

from ._lib import lib

__all__ = ["empty_shared", "is_shared", "share_memory", "reduce_ex", "register"]

#: The size of a handle (DLB_IPC_HANDLE_SIZE).
HANDLE_SIZE = 256

# The Tensor class, given by _tensor.register (importing _tensor here would be a cycle).
_Tensor: Any = None


def _tensor_module() -> Any:
    from . import _tensor

    return _tensor


def _new(fn: Any, *args: Any) -> Any:
    """Calls a C function whose last parameter is ``dlb_tensor **out``; wraps the new handle."""
    out = c_void_p()
    fn(*args, byref(out))  # errcheck raises on failure
    return _Tensor.from_handle(out.value)


def empty_shared(shape: Sequence[int], dtype: Any, device: Any, zero: bool) -> Any:
    """A new row-major host tensor in shared memory (always zero-filled in fact: memory files
    start zeroed; `zero` picks the C function that promises it)."""
    t = _tensor_module()
    dev = t._device(device)
    if (dev.device_type, dev.device_id) != (1, 0):
        raise ValueError(f"shared=True makes host memory other processes can map: device must be 'cpu', not {device!r}")
    arr, n = t._dims(shape, "shape")
    fn = lib.dlb_tensor_zeros_shared if zero else lib.dlb_tensor_empty_shared
    return _new(fn, arr, n, t._dtype(dtype))


def is_shared(self: Any) -> bool:
    """Whether the tensor's memory is shared memory other processes can map (a view or alias of
    a shared tensor is shared too)."""
    return bool(lib.dlb_tensor_is_shared(self))


def share_memory(self: Any) -> Any:
    """The tensor itself (a new alias) when other processes can already receive its memory (shared
    memory, or dlbridge's own CUDA memory), else a row-major copy of it in new shared memory.
    Pinned host memory and CUDA memory dlbridge did not allocate raise BufferError."""
    return _new(lib.dlb_tensor_share, self)


# -- pickling by value ------------------------------------------------------------------------


def _raw_bytes(self: Any) -> memoryview:
    """The tensor's bytes in row-major order, as a flat unsigned-byte buffer: its own memory
    when it is compact (no copy), else a compact copy's. The buffer keeps that memory alive."""
    if not self.device.startswith("cpu") and self.device != "cuda_host":
        raise TypeError(
            f"a {self.device} tensor cannot be pickled by value: copy it to the host first (.cpu()); "
            "through multiprocessing, dlbridge's own CUDA tensors travel as CUDA IPC handles"
        )
    src = self if self.is_contiguous() else self.copy()
    n = src.nbytes
    if n == 0:
        return memoryview(b"")
    raw = (ctypes.c_char * n).from_address(src.data_ptr())
    raw._dlbridge_owner = src  # the memory lives while the buffer does
    view = memoryview(raw).cast("B")
    return view.toreadonly() if self.read_only else view


# dtypes NumPy holds natively (bfloat16 and float8 need ml_dtypes: those are copied instead).
_NUMPY_DTYPES = frozenset(
    "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 complex64 complex128".split()
)


def _numel(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _adopt(src: memoryview, dtype: str, shape: tuple) -> Any:
    """The unpickler's own writable buffer (an out-of-band buffer, or the bytearray protocol 5
    makes in band), taken over without a copy through NumPy's DLPack export; None when that is
    not possible (no NumPy, a dtype it lacks, a read-only or misaligned buffer)."""
    if src.readonly or not src.nbytes or dtype not in _NUMPY_DTYPES:
        return None
    try:
        import numpy as np
    except ImportError:
        return None
    if src.nbytes % np.dtype(dtype).itemsize:
        return None  # the copying path says what is wrong
    arr = np.frombuffer(src, dtype=dtype)
    if arr.size != _numel(shape) or arr.ctypes.data % arr.itemsize:
        return None
    from . import _tensor

    return _tensor.from_dlpack(arr.reshape(shape))


def _rebuild_by_value(data: Any, dtype: str, shape: tuple) -> Any:
    """A writable CPU tensor holding the pickled bytes: the unpickler's buffer itself when it is
    writable (protocol 5), else a copy of it."""
    from . import _tensor

    src = memoryview(data).cast("B")
    adopted = _adopt(src, dtype, tuple(shape))
    if adopted is not None:
        return adopted
    out = _tensor.empty(shape, dtype)
    if src.nbytes != out.nbytes:
        raise ValueError(f"the pickled data holds {src.nbytes} bytes; a {dtype} tensor of shape {shape} needs {out.nbytes}")
    if out.nbytes:
        dst = (ctypes.c_char * out.nbytes).from_address(out.data_ptr())
        memoryview(dst).cast("B")[:] = src
    return out


def reduce_ex(self: Any, protocol: Any) -> Any:
    """Pickles the tensor by value (dtype, shape, values; the copy is always a writable CPU
    tensor). With protocol 5 the data is a ``pickle.PickleBuffer`` over the tensor's memory, so
    picklers that take buffers out of band (``buffer_callback``; Dask, Ray) read it in place."""
    data = _raw_bytes(self)
    payload: Any = pickle.PickleBuffer(data) if isinstance(protocol, int) and protocol >= 5 else bytes(data)
    return (_rebuild_by_value, (payload, self.dtype, self.shape))


# -- multiprocessing --------------------------------------------------------------------------


def _to_ipc(self: Any) -> tuple[bytes, int]:
    """The handle and a new descriptor of the segment (-1 for CUDA memory), which the caller
    closes."""
    handle = ctypes.create_string_buffer(HANDLE_SIZE)
    fd = c_int32(-1)
    lib.dlb_tensor_to_ipc(self, byref(handle), byref(fd))
    return handle.raw, fd.value


def from_ipc(handle: bytes, fd: int) -> Any:
    """The tensor a handle describes, on the same memory (fd: the segment's descriptor, kept by
    the caller; -1 for CUDA handles)."""
    if not isinstance(handle, (bytes, bytearray)):
        raise TypeError(f"a dlbridge IPC handle is bytes, not {type(handle).__name__}")
    return _new(lib.dlb_tensor_from_ipc, bytes(handle), len(handle), fd)


def _rebuild_shared(handle: bytes, dupfd: Optional[Any]) -> Any:
    if dupfd is None:
        return from_ipc(handle, -1)
    fd = dupfd.detach()
    try:
        return from_ipc(handle, fd)
    finally:
        os.close(fd)  # the tensor keeps its own duplicate


def _reduce_for_process(self: Any) -> Any:
    """ForkingPickler's reducer: a handle for memory other processes can map, else by value."""
    if not (self.is_shared or self.device.startswith("cuda:")):
        return (_rebuild_by_value, (bytes(_raw_bytes(self)), self.dtype, self.shape))
    handle, fd = _to_ipc(self)
    if fd < 0:
        return (_rebuild_shared, (handle, None))
    from multiprocessing import context, reduction

    popen = context.get_spawning_popen()
    if popen is None:
        # A queue or a pipe: the resource sharer keeps its own duplicate until the receiver
        # fetches it (SCM_RIGHTS over a Unix socket).
        try:
            dupfd = reduction.DupFd(fd)
        finally:
            os.close(fd)
    else:
        # Arguments of a process being started (spawn, forkserver): the descriptor is passed by
        # number when the child is launched, after pickling, so it stays open while the Popen
        # object lives.
        import weakref

        dupfd = reduction.DupFd(fd)
        weakref.finalize(popen, os.close, fd)
    return (_rebuild_shared, (handle, dupfd))


def register(tensor_class: Any) -> None:
    """Called once by _tensor with the Tensor class: remembers it and registers the reducer with
    multiprocessing's pickler (lazily imported there: a dispatch table entry, no processes)."""
    global _Tensor
    _Tensor = tensor_class
    from multiprocessing.reduction import ForkingPickler

    ForkingPickler.register(tensor_class, _reduce_for_process)
