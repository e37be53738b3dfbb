"""DLPack capsules: an unconsumed capsule frees its export when dropped, a consumed one is
renamed "used_…" and its deleter runs exactly once (after the consumer is done), a second
consumption fails cleanly with ValueError, non-DLPack capsules are TypeError, NumPy's capsules of
both kinds are imported, and a failed import still runs the producer's deleter."""

import datetime
import sys

import numpy as np
import pytest

import dlbridge
from support import capsule_name, data_ptr, relabel

KINDS = {
    "legacy": ({}, "dltensor"),
    "versioned": ({"max_version": (1, 3)}, "dltensor_versioned"),
}


@pytest.fixture(params=list(KINDS), ids=list(KINDS))
def kind(request):
    """(keyword arguments for __dlpack__, the capsule's name)."""
    return KINDS[request.param]


def filled(n=8):
    t = dlbridge.zeros((n,), "float32")
    t.numpy()[:] = np.arange(n)
    return t


@pytest.mark.parametrize("copy", [False, True])
def test_unconsumed_capsule_releases_its_export(kind, copy, live_base):
    kwargs, name = kind
    t = filled()
    c = t.__dlpack__(copy=copy, **kwargs)
    assert capsule_name(c) == name
    assert dlbridge.live_allocations() == live_base + (2 if copy else 1)
    del t
    assert dlbridge.live_allocations() == live_base + 1, "the capsule holds its export"
    del c
    assert dlbridge.live_allocations() == live_base


def test_unconsumed_capsule_of_an_import_releases_the_producer(kind, live_base):
    kwargs, _ = kind
    a = np.arange(4.0)
    refs = sys.getrefcount(a)
    t = dlbridge.from_dlpack(a)
    c = t.__dlpack__(**kwargs)
    del t
    assert dlbridge.live_allocations() == live_base + 1
    assert sys.getrefcount(a) == refs + 1, "NumPy's export still holds the array"
    del c
    assert dlbridge.live_allocations() == live_base
    assert sys.getrefcount(a) == refs, "NumPy's deleter ran once"


def test_capsule_consumed_by_torch(kind, live_base):
    torch = pytest.importorskip("torch")
    kwargs, name = kind
    t = filled()
    c = t.__dlpack__(**kwargs)
    x = torch.from_dlpack(c)
    assert capsule_name(c) == "used_" + name
    assert x.data_ptr() == data_ptr(t)
    del t, c  # the consumed capsule must not free the export
    assert dlbridge.live_allocations() == live_base + 1
    assert x.tolist() == list(range(8))
    x.mul_(2)
    del x  # torch runs the deleter, once
    assert dlbridge.live_allocations() == live_base


def test_capsule_consumed_by_dlbridge(kind, live_base):
    kwargs, name = kind
    t = filled()
    c = t.__dlpack__(**kwargs)
    u = dlbridge.from_dlpack(c)
    assert capsule_name(c) == "used_" + name
    assert u.shares_memory(t) and data_ptr(u) == data_ptr(t)
    del t, c
    assert u.numpy().tolist() == list(range(8))
    assert dlbridge.live_allocations() == live_base + 1
    del u


def consume_with_torch(c):
    torch = pytest.importorskip("torch")
    return torch.from_dlpack(c)


@pytest.mark.parametrize("first", [dlbridge.from_dlpack, consume_with_torch], ids=["dlbridge-first", "torch-first"])
def test_capsule_consumed_twice_is_a_value_error(kind, first, live_base):
    kwargs, name = kind
    t = filled()
    c = t.__dlpack__(**kwargs)
    held = first(c)
    with pytest.raises(ValueError) as e:
        dlbridge.from_dlpack(c)
    assert str(e.value).startswith("from_dlpack:") and "consumed" in str(e.value)
    with pytest.raises(ValueError):
        dlbridge.from_dlpack(c, copy=True)
    assert capsule_name(c) == "used_" + name
    del t, c
    assert dlbridge.live_allocations() == live_base + 1, "the first consumer still holds the export"
    assert held.numpy().tolist() == list(range(8))  # a dlbridge or a torch tensor
    del held


def test_torch_refuses_a_capsule_dlbridge_consumed(kind):
    torch = pytest.importorskip("torch")
    kwargs, _ = kind
    c = filled().__dlpack__(**kwargs)
    u = dlbridge.from_dlpack(c)
    with pytest.raises(Exception):  # torch's own error; it must not take the export again
        torch.from_dlpack(c)
    assert u.numpy().tolist() == list(range(8))


def test_foreign_capsules_are_type_errors():
    with pytest.raises(TypeError) as e:
        dlbridge.from_dlpack(datetime.datetime_CAPI)
    assert str(e.value).startswith("from_dlpack:")
    assert capsule_name(datetime.datetime_CAPI) == "datetime.datetime_CAPI", "not renamed"
    torch = sys.modules.get("torch")
    table = getattr(getattr(torch, "Tensor", None), "__dlpack_c_exchange_api__", None)
    if table is not None:  # a capsule of the DLPack family that is not a tensor
        with pytest.raises(TypeError):
            dlbridge.from_dlpack(table)


def test_producer_returning_a_non_dlpack_capsule_is_a_type_error():
    class Impostor:
        def __dlpack__(self, **kwargs):
            return datetime.datetime_CAPI

        def __dlpack_device__(self):
            return (1, 0)

    with pytest.raises(TypeError):
        dlbridge.from_dlpack(Impostor())


@pytest.mark.parametrize(
    "kind, read_only",
    # NumPy itself refuses a legacy export of read-only data
    [(KINDS["legacy"], False), (KINDS["versioned"], False), (KINDS["versioned"], True)],
    ids=["legacy", "versioned", "versioned-read-only"],
)
def test_numpy_capsules_of_both_kinds(kind, read_only, live_base):
    kwargs, name = kind
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    a.flags.writeable = not read_only
    refs = sys.getrefcount(a)
    c = a.__dlpack__(**kwargs)
    assert capsule_name(c) == name
    t = dlbridge.from_dlpack(c)
    assert capsule_name(c) == "used_" + name
    del c
    assert data_ptr(t) == a.ctypes.data
    assert (t.shape, t.strides, t.dtype, t.read_only) == ((2, 3), (3, 1), "int16", read_only)
    assert t.numpy().tolist() == a.tolist()
    assert dlbridge.live_allocations() == live_base + 1
    del t
    assert dlbridge.live_allocations() == live_base
    assert sys.getrefcount(a) == refs, "NumPy's deleter ran exactly once"


@pytest.mark.parametrize(
    "edit, error",
    [
        ({"code": 3, "bits": 64}, BufferError),  # opaque handle: cannot be held
        ({"code": 99}, ValueError),  # a type code newer than any table
        ({"lanes": 0}, ValueError),
        ({"major": 2}, BufferError),  # DLPack major version 2
    ],
    ids=["opaque-handle", "unknown-code", "zero-lanes", "major-2"],
)
def test_failed_import_still_runs_the_producer_deleter(edit, error, live_base):
    kwargs = {"max_version": (1, 0)} if "major" in edit else {}
    a = np.arange(4.0)
    refs = sys.getrefcount(a)
    c = a.__dlpack__(**kwargs)
    relabel(c, **edit)
    with pytest.raises(error) as e:
        dlbridge.from_dlpack(c)
    assert str(e.value).startswith("from_dlpack:")
    assert capsule_name(c).startswith("used_"), "the import took the capsule"
    del c, e
    assert sys.getrefcount(a) == refs, "the producer's deleter ran exactly once"
    assert dlbridge.live_allocations() == live_base
