"""The supported hand-over between Python and C: get_include / get_library and `python -m dlbridge
--includes --libs`, a Tensor passed to ctypes as its `dlb_tensor *`, Tensor.from_handle taking
ownership of a handle made in C, and a C extension compiled with those flags that shares the
package's one copy of libdlbridge."""

import ctypes
import os
import re
import shutil
import subprocess
import sys
from ctypes import POINTER, c_bool, c_int32, c_int64, c_void_p

import numpy as np
import pytest

import dlbridge
from support import DLDataType, DLDevice, DLTensor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def c_api():
    """The package's library opened again by path: dlopen gives the copy already loaded."""
    lib = ctypes.CDLL(dlbridge.get_library())
    lib.dlb_tensor_zeros.restype = c_int32
    lib.dlb_tensor_zeros.argtypes = [POINTER(c_int64), c_int32, DLDataType, DLDevice, POINTER(c_void_p)]
    lib.dlb_tensor_alias.restype = c_int32
    lib.dlb_tensor_alias.argtypes = [c_void_p, POINTER(c_void_p)]
    lib.dlb_tensor_dltensor.restype = POINTER(DLTensor)
    lib.dlb_tensor_dltensor.argtypes = [c_void_p]
    lib.dlb_tensor_is_read_only.restype = c_bool
    lib.dlb_tensor_is_read_only.argtypes = [c_void_p]
    return lib


def mapped_libdlbridge():
    with open("/proc/self/maps") as maps:
        paths = {line.split(maxsplit=5)[5].strip() for line in maps if len(line.split(maxsplit=5)) == 6}
    return {p for p in paths if "libdlbridge" in os.path.basename(p)}


# -- where the library and the headers are ------------------------------------------------------


def test_get_library_is_the_loaded_file():
    path = dlbridge.get_library()
    assert os.path.isabs(path) and os.path.isfile(path)
    assert {os.path.realpath(p) for p in mapped_libdlbridge()} == {os.path.realpath(path)}


def test_get_include_holds_the_headers_of_this_version():
    folder = dlbridge.get_include()
    assert os.path.isfile(os.path.join(folder, "dlbridge.h"))
    assert os.path.isfile(os.path.join(folder, "dlbridge.hpp"))
    with open(os.path.join(folder, "dlbridge.h")) as f:
        macros = dict(re.findall(r"#define DLBRIDGE_VERSION_(MAJOR|MINOR|PATCH) (\d+)", f.read()))
    assert f"{macros['MAJOR']}.{macros['MINOR']}.{macros['PATCH']}" == dlbridge.__version__


def run_module(*args):
    return subprocess.run([sys.executable, "-m", "dlbridge", *args], capture_output=True, text=True)


def test_python_m_dlbridge_prints_the_flags():
    lib_dir, name = os.path.split(dlbridge.get_library())
    includes = f"-I{dlbridge.get_include()}"
    libs = f"-L{lib_dir} -l:{name} -Wl,-rpath,{lib_dir}"
    assert run_module("--includes").stdout == includes + "\n"
    assert run_module("--libs").stdout == libs + "\n"
    assert run_module("--includes", "--libs").stdout == f"{includes} {libs}\n"
    assert run_module("--version").stdout.strip() == dlbridge.__version__
    bare = run_module()
    assert bare.returncode == 2 and "--includes" in bare.stdout


# -- a Tensor as a ctypes argument ----------------------------------------------------------------


def test_a_tensor_passes_as_its_handle(c_api):
    t = dlbridge.from_dlpack(np.arange(6.0).reshape(2, 3))
    dl = c_api.dlb_tensor_dltensor(t).contents
    assert dl.ndim == 2 and [dl.shape[0], dl.shape[1]] == [2, 3] and dl.data == t.data_ptr()
    assert c_api.dlb_tensor_is_read_only(t) is False
    assert isinstance(t._as_parameter_, c_void_p) and t._as_parameter_.value


def test_a_tensor_passes_without_declared_argtypes():
    lib = ctypes.CDLL(dlbridge.get_library())
    fn = lib.dlb_tensor_is_contiguous  # a fresh function object: no argtypes, restype int
    fn.restype = c_bool
    assert fn(dlbridge.zeros((2, 3))) is True  # a c_void_p: the full 64-bit pointer is passed
    assert fn(dlbridge.zeros((4, 4)).view((2,), (5,))) is False


# -- Tensor.from_handle ---------------------------------------------------------------------------


def make_zeros(c_api, shape, dtype=(2, 32)):
    out = c_void_p()
    status = c_api.dlb_tensor_zeros(
        (c_int64 * len(shape))(*shape), len(shape), DLDataType(dtype[0], dtype[1], 1), DLDevice(1, 0), out
    )
    assert status == 0
    return out


def test_from_handle_takes_ownership(c_api, live_base):
    out = make_zeros(c_api, (2, 2))
    assert dlbridge.live_allocations() == live_base + 1
    t = dlbridge.Tensor.from_handle(out.value)
    assert (t.shape, t.dtype, t.device) == ((2, 2), "float32", "cpu")
    np.asarray(t)[1, 1] = 3
    assert np.from_dlpack(t).tolist() == [[0, 0], [0, 3]]
    del t  # freed with dlb_tensor_free: the fixture sees the count back at live_base


@pytest.mark.parametrize("form", [lambda h: h, c_void_p, lambda h: ctypes.cast(h, POINTER(ctypes.c_char))],
                         ids=["int", "c_void_p", "pointer"])
def test_from_handle_takes_ints_and_ctypes_pointers(c_api, form):
    base = dlbridge.from_dlpack(np.arange(4.0))
    alias = c_void_p()
    assert c_api.dlb_tensor_alias(base, alias) == 0
    t = dlbridge.Tensor.from_handle(form(alias.value))
    assert t.shares_memory(base) and t.numpy().tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("null", [0, None, c_void_p(), c_void_p(0)])
def test_from_handle_refuses_null(null):
    with pytest.raises(ValueError, match="NULL"):
        dlbridge.Tensor.from_handle(null)


@pytest.mark.parametrize("wrong", ["0x1234", 1.5, True, object()])
def test_from_handle_refuses_what_is_no_pointer(wrong):
    with pytest.raises(TypeError, match="from_handle"):
        dlbridge.Tensor.from_handle(wrong)


def test_from_handle_refuses_impossible_addresses():
    for value in (-1, 1 << 64):
        with pytest.raises(ValueError, match="address"):
            dlbridge.Tensor.from_handle(value)


# -- a C extension built with the package's flags -------------------------------------------------


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "gcc")) is None, reason="needs a C compiler")
def test_a_c_extension_shares_the_package_library(tmp_path):
    flags = run_module("--includes", "--libs").stdout.split()
    so = tmp_path / "normalize.so"
    subprocess.run(
        [os.environ.get("CC", "gcc"), "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
         os.path.join(REPO, "examples", "python_extension", "normalize.c"), "-o", str(so), *flags, "-lm"],
        check=True,
    )
    ext = ctypes.CDLL(str(so))
    ext.normalize_unit_max.restype = c_int32
    ext.normalize_unit_max.argtypes = [c_void_p, POINTER(c_void_p)]
    assert len(mapped_libdlbridge()) == 1, mapped_libdlbridge()

    a = np.array([[2, -8], [4, 0]], dtype=np.int64)
    out = c_void_p()
    assert ext.normalize_unit_max(dlbridge.from_dlpack(a), out) == 0
    r = dlbridge.Tensor.from_handle(out.value)
    assert r.dtype == "float64" and np.asarray(r).tolist() == [[0.25, -1.0], [0.5, 0.0]]
    out = c_void_p()
    assert ext.normalize_unit_max(dlbridge.zeros((2,), "complex64"), out) == 2  # DLB_ERR_UNSUPPORTED
    assert out.value is None
