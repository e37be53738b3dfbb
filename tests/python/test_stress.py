"""Stress (issue 6), the Python side of tests/stress.rs: 8 threads x DLB_PY_STRESS_OPS (default
20,000) seeded random operations each on a few shared dlbridge, PyTorch and NumPy tensors:
aliases, strided views, torch.from_dlpack of dlbridge tensors, dlbridge.from_dlpack of torch and
NumPy tensors, NumPy round trips, exports left unconsumed, copies, writes through shared aliases,
imports from a DLPack producer written here with ctypes, and torch refusing negative strides. Most
objects made go into a pool from which the other threads take them, check them, re-share or
consume them, and drop them, so deleters run on threads other than the one that made them.

Values: row k of every shared tensor belongs to thread k (only it writes there, and it remembers
what it wrote); the other rows hold a fixed pattern. Every object is checked against this model
when made and again when taken from the pool, and every shared tensor at the end.

Exactly once, counted five ways at the end: dlbridge.live_allocations() is back where it was; the
shared NumPy array's reference count (each NumPy export holds one) and the shared torch tensors'
storage use counts (each dlbridge import of a torch slice holds one) are back where they were, so
a missing release and a second one both show; each capsule of the ctypes producer had its deleter
called once (a ledger per capsule, which also says on which thread); and the NumPy buffer under
each torch tensor imported into dlbridge was freed (a finalizer, which also says on which thread).

`make test-python-stress` runs 8 x 1,000,000 operations."""

import collections
import ctypes
import datetime
import gc
import itertools
import os
import random
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from ctypes import c_char_p, c_int64, c_void_p

import numpy as np
import pytest

import dlbridge
from support import DLManagedTensor, DLManagedTensorVersioned

torch = pytest.importorskip("torch")

THREADS = 8
OPS_PER_THREAD = int(os.environ.get("DLB_PY_STRESS_OPS", "20000"))
SEED = 6  # the number; thread k draws from SEED + k
ROWS, COLS = THREADS + 8, 64
FIXED = slice(THREADS, ROWS)  # rows nobody writes; row k < THREADS is thread k's
INDEX = np.arange(ROWS * COLS, dtype=np.int64).reshape(ROWS, COLS)
POOL_CAP = 256
CAPSULE = type(datetime.datetime_CAPI)
# A short switch interval makes threads interleave inside the mix, not only between long runs of it.
SWITCH_INTERVAL = 0.001


def pattern(tag: int, dtype) -> np.ndarray:
    """A shared tensor's initial values: distinct per tensor and element, exact in float32."""
    return (INDEX + tag * 100_000).astype(dtype)


def check(got, want, what: str) -> None:
    if not np.array_equal(got, want):
        raise AssertionError(f"{what}: got\n{got!r}\nwant\n{want!r}")


def values_of(obj) -> np.ndarray:
    """The elements of a dlbridge tensor, a torch tensor or a NumPy array, without copying."""
    return obj if isinstance(obj, np.ndarray) else obj.numpy()


def torch_storage_refs(x) -> int:
    """How many tensors (C++ TensorImpls, each dlbridge import of a torch slice holding one) share
    x's storage."""
    return torch._C._storage_Use_Count(x.untyped_storage()._cdata)


# ---------------------------------------------------------------------------------------------
# A producer that counts its releases


_DELETER = ctypes.CFUNCTYPE(None, c_void_p)
# Our own prototypes, on raw pointers: a capsule destructor runs while its capsule is being freed.
_capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, c_void_p, c_char_p, c_void_p)(("PyCapsule_New", ctypes.pythonapi))
_raw_capsule_name = ctypes.PYFUNCTYPE(c_char_p, c_void_p)(("PyCapsule_GetName", ctypes.pythonapi))
_raw_capsule_pointer = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_char_p)(("PyCapsule_GetPointer", ctypes.pythonapi))
# The names must outlive the capsules (PyCapsule_New keeps the pointer): module constants do.
_VERSIONED, _LEGACY = b"dltensor_versioned", b"dltensor"
_KEEP_LEDGERS = []  # a deleter called after its ledger was freed would jump into freed code


class Ledger:
    """Hands out buffers whose every release is recorded: DLPack capsules made here with ctypes
    (our own deleter, called by whoever consumed the capsule, or by the capsule's destructor when
    nobody did) and torch tensors over NumPy buffers (a finalizer on the buffer, which runs when
    torch frees the storage). Each buffer has a serial; a release of a serial that is not
    outstanding (a second release) is recorded as an error."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.serials = itertools.count(1)
        self.outstanding = {}  # serial -> (kind, creating thread, what keeps the buffer alive)
        # Released buffers stay allocated a while, so that a second call of a deleter reads its
        # struct's serial, not freed memory.
        self.graveyard = collections.deque(maxlen=4096)
        self.made = collections.Counter()
        self.released = collections.Counter()
        self.released_elsewhere = collections.Counter()  # on a thread other than the creator
        self.errors = []
        self.deleters = {True: _DELETER(self._versioned_deleter), False: _DELETER(self._legacy_deleter)}
        self.destructor = _DELETER(self._capsule_destructor)
        _KEEP_LEDGERS.append(self)

    def _versioned_deleter(self, address: int) -> None:
        self.release(DLManagedTensorVersioned.from_address(address).manager_ctx)

    def _legacy_deleter(self, address: int) -> None:
        self.release(DLManagedTensor.from_address(address).manager_ctx)

    def _capsule_destructor(self, capsule: int) -> None:
        name = _raw_capsule_name(capsule)
        if name in (_VERSIONED, _LEGACY):  # never consumed: the producer cleans up
            (self._versioned_deleter if name == _VERSIONED else self._legacy_deleter)(
                _raw_capsule_pointer(capsule, name)
            )

    def _register(self, kind: str, keep) -> int:
        serial = next(self.serials)
        with self.lock:
            self.outstanding[serial] = (kind, threading.get_ident(), keep)
            self.made[kind] += 1
        return serial

    def release(self, serial) -> None:
        me = threading.get_ident()
        with self.lock:
            record = self.outstanding.pop(serial, None)
            if record is None:
                self.errors.append(f"release of buffer {serial} on thread {me}, which is not outstanding")
                return
            kind, creator, _ = record
            self.released[kind] += 1
            if creator != me:
                self.released_elsewhere[kind] += 1
            self.graveyard.append(record)

    def capsule(self, values: np.ndarray, versioned: bool):
        """An unconsumed DLPack capsule of a 1-D int64 array, released through our deleter."""
        shape, strides = (c_int64 * 1)(values.size), (c_int64 * 1)(1)
        m = DLManagedTensorVersioned() if versioned else DLManagedTensor()
        if versioned:
            m.major, m.minor = 1, 0
        dl = m.dl_tensor
        dl.data = values.ctypes.data
        dl.device.device_type, dl.device.device_id = 1, 0
        dl.ndim = 1
        dl.dtype.code, dl.dtype.bits, dl.dtype.lanes = 0, 64, 1
        dl.shape, dl.strides = shape, strides
        m.manager_ctx = self._register("producer", (m, shape, strides, values))
        m.deleter = ctypes.cast(self.deleters[versioned], c_void_p).value
        return _capsule_new(
            ctypes.addressof(m), _VERSIONED if versioned else _LEGACY, ctypes.cast(self.destructor, c_void_p).value
        )

    def torch_tensor(self, values: np.ndarray):
        """A torch tensor over `values` (the caller must drop its own references to it): its
        finalizer runs when torch frees the storage."""
        serial = self._register("torch", None)
        weakref.finalize(values, self.release, serial)
        return torch.from_numpy(values)

    def summary(self) -> str:
        return ", ".join(
            f"{kind}: {self.made[kind]} made, {self.released[kind]} released "
            f"({self.released_elsewhere[kind]} on another thread)"
            for kind in sorted(self.made)
        )


def test_the_ledger_counts_each_release_once_and_sees_a_second_one(live_base):
    ledger = Ledger()
    for versioned in (True, False):
        t = dlbridge.from_dlpack(ledger.capsule(np.arange(5), versioned))
        assert t.numpy().tolist() == [0, 1, 2, 3, 4]
        assert len(ledger.outstanding) == 1
        del t
        assert not ledger.outstanding
    capsule = ledger.capsule(np.arange(3), True)
    del capsule  # unconsumed: its destructor releases it
    x = ledger.torch_tensor(np.arange(4.0))
    t = dlbridge.from_dlpack(x)
    del x
    assert ledger.outstanding, "dlbridge holds torch's tensor, which holds the NumPy buffer"
    box = [t]
    del t
    other = threading.Thread(target=box.clear)  # the last reference goes on that thread
    other.start()
    other.join()
    assert ledger.released == {"producer": 3, "torch": 1} and not ledger.outstanding
    assert ledger.released_elsewhere == {"torch": 1}
    assert not ledger.errors
    ledger.release(1)  # what a second call of a deleter does
    assert len(ledger.errors) == 1


# ---------------------------------------------------------------------------------------------
# The shared tensors and the model


class Shared:
    """One shared tensor: its owner ("dlbridge", "torch" or "numpy"), the object, its pattern."""

    def __init__(self, owner: str, tag: int, dtype: str) -> None:
        self.owner, self.pattern = owner, pattern(tag, dtype)
        if owner == "dlbridge":
            self.obj = dlbridge.empty((ROWS, COLS), dtype)
            self.obj.numpy()[...] = self.pattern
        elif owner == "torch":
            self.obj = torch.from_numpy(self.pattern.copy())
        else:
            self.obj = self.pattern.copy()
        self.flat = self.pattern.reshape(-1)

    def values(self) -> np.ndarray:
        return values_of(self.obj)


def random_window(rng: random.Random, negative: bool) -> list:
    """A random window of the fixed rows, as steps that apply alike to NumPy arrays (the model's
    INDEX) and torch tensors: a strided 2-D slice, then maybe a transpose, a row, a 0-d element,
    a broadcast (stride 0) or, when negative, a reversal."""
    r0 = rng.randrange(THREADS, ROWS)
    c0 = rng.randrange(COLS)
    rows = slice(r0, rng.randrange(r0 + 1, ROWS + 1), rng.choice((1, 1, 2, 3)))
    cols = slice(c0, rng.randrange(c0 + 1, COLS + 1), rng.choice((1, 1, 2, 5)))
    steps = [("index", (rows, cols))]
    form = rng.randrange(7 if negative else 5)
    if form == 1:
        steps.append(("transpose",))
    elif form == 2:
        steps.append(("index", (0,)))
    elif form == 3:
        steps.append(("index", (0, 0, Ellipsis)))
    elif form == 4:
        steps.append(("broadcast", 3))
    elif form == 5:
        steps.append(("index", (slice(None, None, -1),)))
    elif form == 6:
        steps.append(("index", (slice(None), slice(None, None, -1))))
    return steps


def apply(steps: list, a):
    for step in steps:
        if step[0] == "index":
            a = a[step[1]]
        elif step[0] == "transpose":
            a = a.T
        elif isinstance(a, np.ndarray):
            a = np.broadcast_to(a, (step[1],) + a.shape)
        else:
            a = a.expand(step[1], *a.shape)
    return a


def view_arguments(index: np.ndarray) -> tuple:
    """dlbridge.Tensor.view's (shape, strides, offset), in elements, for a window of INDEX."""
    return index.shape, tuple(s // INDEX.itemsize for s in index.strides), int(index.flat[0])


class Item:
    """Something in the pool: the object, what its values must be (only its fixed rows', for a
    whole shared tensor), who made it, and whether torch may take it (no negative strides)."""

    __slots__ = ("obj", "want", "fixed_only", "creator", "torch_ok")

    def __init__(self, obj, want, fixed_only: bool, creator: int, torch_ok: bool) -> None:
        self.obj, self.want, self.fixed_only, self.creator, self.torch_ok = obj, want, fixed_only, creator, torch_ok


class World:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.shared = [
            Shared("dlbridge", 1, "int64"),
            Shared("dlbridge", 2, "float32"),
            Shared("dlbridge", 3, "float64"),
            Shared("torch", 4, "int32"),
            Shared("torch", 5, "float64"),
            Shared("numpy", 6, "int64"),
        ]
        self.pool = collections.deque()
        self.start = threading.Barrier(THREADS, timeout=120)
        self.failed = threading.Event()


# (operation, weight)
OPERATIONS = (
    ("alias", 2),
    ("view", 3),
    ("to_torch", 3),
    ("from_torch", 2),
    ("numpy_round_trip", 2),
    ("export", 3),
    ("copy", 2),
    ("write", 3),
    ("produce", 1),
    ("torch_owned", 1),
    ("take", 7),
)
MIX = [name for name, weight in OPERATIONS for _ in range(weight)]


class Worker:
    def __init__(self, k: int, world: World) -> None:
        self.k, self.w = k, world
        self.rng = random.Random(SEED + k)
        self.values_rng = np.random.default_rng(SEED + k)
        self.me = 0
        # What this thread wrote into its row of each shared tensor.
        self.mine = [s.pattern[k].copy() for s in world.shared]
        self.done = collections.Counter()
        self.taken = self.taken_from_others = 0

    def run(self) -> "Worker":
        self.me = threading.get_ident()
        self.w.start.wait()
        try:
            for _ in range(OPS_PER_THREAD):
                if self.w.failed.is_set():
                    break
                name = self.rng.choice(MIX)
                getattr(self, name)()
                self.done[name] += 1
        except BaseException:
            self.w.failed.set()
            raise
        return self

    # -- helpers ------------------------------------------------------------------------------

    def put(self, obj, want, torch_ok: bool = True, fixed_only: bool = False) -> None:
        self.w.pool.append(Item(obj, want, fixed_only, self.me, torch_ok))
        if len(self.w.pool) > POOL_CAP:
            self.take()

    def window(self, i: int, negative: bool) -> tuple:
        """A dlbridge tensor over a random window of shared tensor i, its expected values and
        whether torch can take it. A torch or NumPy window is imported, so dlbridge holds it."""
        s = self.w.shared[i]
        steps = random_window(self.rng, negative and s.owner != "torch")
        index = apply(steps, INDEX)
        if s.owner == "dlbridge":
            base = s.obj if self.rng.random() < 0.5 else s.obj.alias()
            t = base.view(*view_arguments(index))
        else:
            t = dlbridge.from_dlpack(apply(steps, s.obj))
        torch_ok = all(stride >= 0 or n == 1 for n, stride in zip(index.shape, index.strides))
        return t, s.flat[index], torch_ok

    def row(self, i: int) -> tuple:
        """A random strided piece of this thread's row of shared tensor i: the columns, and a
        writable dlbridge tensor over them."""
        s = self.w.shared[i]
        c0 = self.rng.randrange(COLS)
        cols = slice(c0, self.rng.randrange(c0 + 1, COLS + 1), self.rng.choice((1, 2, 3)))
        if s.owner == "dlbridge":
            index = INDEX[self.k, cols]
            return cols, s.obj.view(*view_arguments(index))
        return cols, dlbridge.from_dlpack(s.obj[self.k, cols])

    def check_row(self, i: int, what: str) -> None:
        s = self.w.shared[i]
        check(s.values()[self.k], self.mine[i], f"{what}: thread {self.k}'s row of shared tensor {i}")

    # -- operations ---------------------------------------------------------------------------

    def alias(self) -> None:
        i = self.rng.randrange(3)
        a = self.w.shared[i].obj.alias()
        check(a.numpy()[self.k], self.mine[i], "an alias sees this thread's writes")
        check(a.numpy()[FIXED], self.w.shared[i].pattern[FIXED], "an alias's fixed rows")
        if self.rng.random() < 0.5:
            self.put(a, self.w.shared[i].pattern[FIXED], fixed_only=True)

    def view(self) -> None:
        t, want, torch_ok = self.window(self.rng.randrange(len(self.w.shared)), negative=True)
        check(t.numpy(), want, "a view")
        if self.rng.random() < 0.6:
            self.put(t, want, torch_ok)

    def to_torch(self) -> None:
        """dlbridge -> torch; torch holds the export and another thread drops it. Now and then a
        view with negative strides, which torch refuses (and the export must still be released)."""
        t, want, torch_ok = self.window(self.rng.randrange(len(self.w.shared)), negative=self.rng.random() < 0.1)
        how = self.rng.randrange(3)
        src = t if how == 0 else t.__dlpack__(max_version=(1, 3) if how == 2 or t.read_only else None)
        if not torch_ok:
            with pytest.raises(RuntimeError):
                torch.from_dlpack(src)
            return
        x = torch.from_dlpack(src)
        del t, src
        check(x.numpy(), want, "torch.from_dlpack of a dlbridge tensor")
        self.put(x, want)

    def from_torch(self) -> None:
        """torch -> dlbridge, from the object or from a capsule torch made."""
        i = self.rng.choice((3, 4))
        steps = random_window(self.rng, negative=False)
        x = apply(steps, self.w.shared[i].obj)
        t = dlbridge.from_dlpack(x if self.rng.random() < 0.7 else x.__dlpack__(max_version=(1, 3)))
        del x
        want = self.w.shared[i].flat[apply(steps, INDEX)]
        check(t.numpy(), want, "dlbridge.from_dlpack of a torch tensor")
        self.put(t, want)

    def numpy_round_trip(self) -> None:
        t, want, torch_ok = self.window(self.rng.randrange(len(self.w.shared)), negative=True)
        a = np.from_dlpack(t)
        check(a, want, "np.from_dlpack of a dlbridge tensor")
        b = dlbridge.from_dlpack(a)
        assert b.shares_memory(t), "NumPy -> dlbridge of a NumPy view of dlbridge memory shares it"
        check(b.numpy(), want, "dlbridge.from_dlpack of that NumPy array")
        del t
        self.put(a if self.rng.random() < 0.5 else b, want, torch_ok)

    def export(self) -> None:
        """An unconsumed capsule, consumed or dropped by another thread."""
        t, want, torch_ok = self.window(self.rng.randrange(len(self.w.shared)), negative=True)
        versioned = t.read_only or self.rng.random() < 0.5  # a legacy export cannot be read-only
        capsule = t.__dlpack__(max_version=(1, 3) if versioned else None, copy=self.rng.random() < 0.2)
        del t
        self.put(capsule, want, torch_ok)

    def copy(self) -> None:
        t, want, _ = self.window(self.rng.randrange(len(self.w.shared)), negative=True)
        how = self.rng.randrange(3)
        if how == 0:
            c = t.copy()
        elif how == 1:
            c = dlbridge.from_dlpack(t, copy=True)
        else:
            c = dlbridge.from_dlpack(t.__dlpack__(max_version=(1, 3), copy=True))
        assert not c.shares_memory(t)
        check(c.numpy(), want, "a copy")
        c.numpy()[...] = -7  # a copy is independent of its source
        check(t.numpy(), want, "the source of a copy written to")
        mark = np.full(np.shape(want), -7, dtype=np.asarray(want).dtype)
        del t
        if self.rng.random() < 0.5:
            self.put(c, mark)

    def write(self) -> None:
        """Writes this thread's row through a shared alias (dlbridge, torch or NumPy over the same
        memory), then reads it back through another handle on that memory."""
        i = self.rng.randrange(len(self.w.shared))
        cols, t = self.row(i)
        vals = self.values_rng.integers(0, 1 << 20, size=self.mine[i][cols].size)
        how = self.rng.randrange(3)
        if how == 0:
            t.numpy()[...] = vals
        elif how == 1:
            torch.from_dlpack(t).copy_(torch.from_numpy(vals))
        else:
            np.from_dlpack(t.alias())[...] = vals
        self.mine[i][cols] = vals
        self.check_row(i, "a write through a shared alias")
        if self.w.shared[i].owner == "dlbridge":
            seen = torch.from_dlpack(self.w.shared[i].obj)[self.k].numpy()
            check(seen, self.mine[i], "the write, seen by torch")

    def produce(self) -> None:
        """An import from the ctypes producer: its deleter must run once, whoever drops it."""
        n = self.rng.randrange(1, 40)
        vals = np.arange(n, dtype=np.int64) + self.rng.randrange(1 << 40)
        t = dlbridge.from_dlpack(self.w.ledger.capsule(vals.copy(), versioned=self.rng.random() < 0.5))
        check(t.numpy(), vals, "an import from the ctypes producer")
        self.put_through(t, vals)

    def torch_owned(self) -> None:
        """A torch tensor only dlbridge holds: torch must free its storage once, whoever drops it."""
        n = self.rng.randrange(1, 40)
        vals = np.arange(n, dtype=np.float64) * self.rng.randrange(1, 1000)
        t = dlbridge.from_dlpack(self.w.ledger.torch_tensor(vals.copy()))
        check(t.numpy(), vals, "an import of a torch tensor only dlbridge holds")
        self.put_through(t, vals)

    def put_through(self, t, vals: np.ndarray) -> None:
        """Puts an import in the pool as itself, a view, torch's import of it or an export."""
        how = self.rng.randrange(4)
        if how == 1 and vals.size > 1:
            self.put(t.view((vals.size // 2,), (2,), 1), vals[1::2][: vals.size // 2])
        elif how == 2:
            self.put(torch.from_dlpack(t), vals)
        elif how == 3:
            self.put(t.__dlpack__(max_version=self.rng.choice((None, (1, 3)))), vals)
        else:
            self.put(t, vals)

    def take(self) -> None:
        """Takes the oldest pool item (most often another thread's), checks it, and drops it; a
        capsule is consumed by dlbridge or torch or dropped unconsumed; a tensor is sometimes
        handed on through the other framework instead."""
        try:
            item = self.w.pool.popleft()
        except IndexError:
            return
        self.taken += 1
        self.taken_from_others += item.creator != self.me
        obj, want = item.obj, item.want
        if type(obj) is CAPSULE:
            how = self.rng.randrange(3)
            if how == 0:
                obj = dlbridge.from_dlpack(obj)
            elif how == 1 and item.torch_ok:
                obj = torch.from_dlpack(obj)
            else:
                return
        got = values_of(obj)
        check(got[FIXED] if item.fixed_only else got, want, f"a pooled {type(obj).__module__}.{type(obj).__name__}")
        del got
        if self.rng.random() < 0.25:
            if isinstance(obj, dlbridge.Tensor) and item.torch_ok:
                self.put(torch.from_dlpack(obj), want, fixed_only=item.fixed_only)
            elif isinstance(obj, torch.Tensor):
                self.put(dlbridge.from_dlpack(obj), want, fixed_only=item.fixed_only)


# ---------------------------------------------------------------------------------------------
# The stress test


def check_shared(world: World, workers: list) -> None:
    """The fixed rows are untouched and each thread's row holds what that thread last wrote."""
    for i, s in enumerate(world.shared):
        got = s.values()
        check(got[FIXED], s.pattern[FIXED], f"shared tensor {i}'s fixed rows")
        for w in workers:
            check(got[w.k], w.mine[i], f"thread {w.k}'s row of shared tensor {i}")


def test_eight_threads_of_mixed_exchanges_release_everything_exactly_once(live_base):
    ledger = Ledger()
    world = World(ledger)
    numpy_shared = world.shared[5].obj
    numpy_refs = sys.getrefcount(numpy_shared)
    torch_refs = [torch_storage_refs(s.obj) for s in world.shared if s.owner == "torch"]
    assert dlbridge.live_allocations() == live_base + 3, "the three shared dlbridge tensors"

    workers = [Worker(k, world) for k in range(THREADS)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            finished = list(pool.map(Worker.run, workers))  # raises the first worker's failure
    finally:
        sys.setswitchinterval(switch)
    seconds = time.perf_counter() - started
    assert [w.done.total() for w in finished] == [OPS_PER_THREAD] * THREADS

    # What is left in the pool: checked and dropped here, on a thread that made none of it.
    drainer = Worker(THREADS, world)
    drainer.me = threading.get_ident()
    while world.pool:
        drainer.take()
    del drainer
    gc.collect()

    check_shared(world, workers)
    assert dlbridge.live_allocations() == live_base + 3, "only the shared dlbridge tensors are left"
    assert sys.getrefcount(numpy_shared) == numpy_refs, "NumPy's exports were each released once"
    assert [torch_storage_refs(s.obj) for s in world.shared if s.owner == "torch"] == torch_refs, (
        "each dlbridge import of a torch tensor released it once"
    )
    assert not ledger.errors, ledger.errors[:5]
    assert not ledger.outstanding, f"{len(ledger.outstanding)} buffers never released: {ledger.summary()}"
    assert ledger.released == ledger.made

    done = sum((w.done for w in workers), collections.Counter())
    taken = sum(w.taken for w in workers)
    handed = sum(w.taken_from_others for w in workers)
    print(
        f"\n{THREADS} threads x {OPS_PER_THREAD} = {done.total()} operations in {seconds:.1f} s "
        f"({', '.join(f'{name} {done[name]}' for name, _ in OPERATIONS)}); "
        f"{taken} pool items taken by the threads, {handed} of them made by another thread; "
        f"deleters counted: {ledger.summary()}; "
        f"{sum(ledger.released_elsewhere.values())} ran on a thread other than the creating one"
    )
    del world, workers, finished, numpy_shared
    gc.collect()
    assert dlbridge.live_allocations() == live_base
