"""dlbridge: hand tensor buffers between NumPy, PyTorch, TensorFlow, JAX and native code through
DLPack, saying every time whether memory is shared or copied.

    import dlbridge, numpy as np, torch
    a = np.arange(6.0)
    t = dlbridge.from_dlpack(a)        # shares a's memory
    u = torch.from_dlpack(t)           # shares it too
    c = t.copy()                       # new memory

The guide (names, semantics, exceptions) is docs/python.md in the repository;
the library underneath is libdlbridge (Rust, C ABI), loaded through ctypes; the Tensor type's
base and the hot functions (from_dlpack, empty, zeros) are built by the library itself from
CPython's C functions, so the common calls cost what NumPy's do. Set DLBRIDGE_LIBRARY to use
another build of it.

Errors: BufferError for data that cannot be exchanged, ValueError for bad arguments, TypeError
for wrong types, MemoryError when allocation fails, RuntimeError otherwise (each carrying the
library's message).

Native code: dlbridge.get_include() and dlbridge.get_library() (or `python -m dlbridge --includes
--libs`) give what a C extension compiles and links with; a Tensor passes to ctypes as its
`dlb_tensor *` and Tensor.from_handle takes one back. docs/python.md, "C extensions", has the
one-copy rule.
"""

from ._handover import get_include, get_library
from ._lib import version as __version__
from ._tensor import DTYPES, Tensor, cuda_device_count, empty, from_dlpack, live_allocations, zeros

__all__ = [
    "__version__",
    "DTYPES",
    "Tensor",
    "cuda_device_count",
    "empty",
    "from_dlpack",
    "get_include",
    "get_library",
    "live_allocations",
    "zeros",
]
