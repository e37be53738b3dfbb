"""JAX <-> dlbridge. jnp.from_dlpack shares a dlbridge tensor's memory (same buffer pointer)
because dlbridge allocations are 256-byte aligned and JAX shares only 64-byte aligned data
(it silently copies anything else); dlbridge.from_dlpack(jax_array) shares JAX's buffer. JAX
takes dense layouts (any permutation of the axes) and refuses other strides cleanly."""

import numpy as np
import pytest

import dlbridge
from support import ALL_DTYPES, assert_same_bytes, data_ptr, sample

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def jax_keeps(dtype: str) -> bool:
    """Whether JAX (64-bit types off by default) holds this dtype as itself."""
    if dtype == "bfloat16":
        return True
    return jax.dtypes.canonicalize_dtype(np.dtype(dtype)) == np.dtype(dtype)


JAX_DTYPES = [d for d in ALL_DTYPES if jax_keeps(d)]


def filled(dtype: str) -> dlbridge.Tensor:
    values = sample(dtype)
    t = dlbridge.zeros(values.shape, dtype)
    t.numpy()[...] = values
    return t


def raw_bytes(a) -> bytes:
    return np.ascontiguousarray(np.asarray(a)).tobytes()


@pytest.mark.parametrize("offset", [0, 16], ids=["start", "64-byte-offset"])
def test_jax_shares_an_aligned_dlbridge_tensor(offset):
    t = dlbridge.zeros((64,), "float32")
    t.numpy()[:] = np.arange(64)
    v = t.view((32,), offset=offset)
    j = jnp.from_dlpack(v)
    assert j.unsafe_buffer_pointer() == data_ptr(v) == v.numpy().ctypes.data
    assert np.asarray(j).tolist() == list(range(offset, offset + 32))
    t.numpy()[offset] = -1  # written through dlbridge, read through JAX: shared
    assert float(np.asarray(j)[0]) == -1


def test_jax_copies_a_misaligned_view_with_the_right_values():
    t = dlbridge.zeros((64,), "float32")
    t.numpy()[:] = np.arange(64)
    j = jnp.from_dlpack(t.view((8,), offset=1))  # 4 bytes past a 256-byte boundary
    assert np.asarray(j).tolist() == list(range(1, 9))


@pytest.mark.parametrize("dtype", JAX_DTYPES)
def test_every_dtype_jax_keeps_round_trips(dtype):
    t = filled(dtype)
    j = jnp.from_dlpack(t)  # dlbridge -> JAX
    assert j.dtype.name == dtype
    assert j.unsafe_buffer_pointer() == data_ptr(t)
    assert raw_bytes(j) == raw_bytes(t.numpy())
    back = dlbridge.from_dlpack(jnp.array(np.asarray(j)))  # JAX's own memory -> dlbridge
    assert back.dtype == dtype
    assert_same_bytes(back.numpy(), t.numpy())


def test_dlbridge_shares_a_jax_array(live_base):
    j = jnp.arange(12, dtype=jnp.float32).reshape(3, 4)
    t = dlbridge.from_dlpack(j)
    assert dlbridge.live_allocations() == live_base + 1
    assert (t.shape, t.strides, t.dtype) == ((3, 4), (4, 1), "float32")
    assert data_ptr(t) == j.unsafe_buffer_pointer()
    assert t.numpy().tolist() == np.arange(12).reshape(3, 4).tolist()
    del j
    assert t.numpy()[2, 3] == 11, "the import keeps JAX's buffer alive"


def test_copy_true_from_jax_is_independent():
    j = jnp.arange(4, dtype=jnp.int32)
    c = dlbridge.from_dlpack(j, copy=True)
    assert data_ptr(c) != j.unsafe_buffer_pointer()
    c.numpy()[0] = 100
    assert np.asarray(j).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("shape", [(), (0,), (2, 0)])
def test_zero_dim_and_zero_size_through_jax(shape):
    j = jnp.from_dlpack(dlbridge.zeros(shape, "float32"))
    assert j.shape == shape
    assert dlbridge.from_dlpack(jnp.ones(shape)).shape == shape


def test_jax_takes_a_transposed_view():
    t = dlbridge.zeros((12,), "float32")
    t.numpy()[:] = np.arange(12)
    v = t.view((4, 3), strides=(1, 4))
    assert np.array_equal(np.asarray(jnp.from_dlpack(v)), v.numpy())


@pytest.mark.parametrize(
    "shape, strides, offset",
    [((6,), (2,), 0), ((12,), (-1,), 11), ((3, 4), (0, 1), 0)],
    ids=["step", "negative", "zero-stride"],
)
def test_jax_refuses_other_strides_cleanly(shape, strides, offset):
    t = dlbridge.zeros((12,), "float32")
    v = t.view(shape, strides, offset)
    with pytest.raises(Exception):  # JAX's own error type (JaxRuntimeError)
        jnp.from_dlpack(v)
    assert jnp.from_dlpack(v.copy()).shape == shape  # and works with a compact copy
