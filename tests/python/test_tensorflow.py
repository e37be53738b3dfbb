"""TensorFlow <-> dlbridge. TF takes only legacy "dltensor" capsules of compact row-major data
(tf.experimental.dlpack.from_dlpack). dlbridge.from_dlpack takes a tf.Tensor or the capsule of
tf.experimental.dlpack.to_dlpack. In TF 2.21 a tf.Tensor also has __dlpack__ itself: it ignores
max_version (always a legacy capsule) and refuses copy=True with RuntimeError.

Finding (TensorFlow 2.21, CPU): TF *shares* a dlbridge export instead of copying it: a write
through dlbridge after the hand-over is seen by the TF tensor, and re-importing the TF tensor into
dlbridge gives back the original address. test_tf_shares_a_dlbridge_export pins this down."""

import numpy as np
import pytest

import dlbridge
from support import ALL_DTYPES, assert_same_bytes, capsule_name, data_ptr, sample

tf = pytest.importorskip("tensorflow")
tf_from_dlpack = tf.experimental.dlpack.from_dlpack


def raw_bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_tf_imports_every_dtype_from_dlbridge(dtype):
    values = sample(dtype).reshape(1, -1)
    t = dlbridge.zeros(values.shape, dtype)
    t.numpy()[...] = values
    x = tf_from_dlpack(t.__dlpack__())
    assert x.dtype.name == dtype
    assert tuple(x.shape) == values.shape
    assert_same_bytes(raw_bytes(x.numpy()), raw_bytes(values))


def test_tf_shares_a_dlbridge_export(live_base):
    t = dlbridge.zeros((2, 3), "float32")
    t.numpy()[...] = [[1, 2, 3], [4, 5, 6]]
    x = tf_from_dlpack(t.__dlpack__())
    t.numpy()[0, 0] = 99  # written after the hand-over...
    assert x.numpy()[0, 0] == 99  # ...and seen by TF: shared, not copied
    assert data_ptr(dlbridge.from_dlpack(x)) == data_ptr(t)
    del t
    assert dlbridge.live_allocations() == live_base + 1, "TF holds the export"
    assert x.numpy().tolist() == [[99, 2, 3], [4, 5, 6]]
    del x


@pytest.mark.parametrize("shape", [(), (0,), (3, 0)])
def test_tf_zero_dim_and_zero_size(shape):
    x = tf_from_dlpack(dlbridge.zeros(shape, "int32").__dlpack__())
    assert tuple(x.shape) == shape
    t = dlbridge.from_dlpack(tf.zeros(shape, tf.int32))
    assert t.shape == shape and t.dtype == "int32"


def test_tf_refuses_a_versioned_capsule_which_stays_ours(live_base):
    t = dlbridge.zeros((3,), "float32")
    c = t.__dlpack__(max_version=(1, 3))
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf_from_dlpack(c)
    assert capsule_name(c) == "dltensor_versioned", "not consumed: its destructor frees the export"
    del t, c


NON_CONTIGUOUS = {
    "transpose": ((4, 3), (1, 4), 0),
    "step": ((6,), (2,), 0),
    "negative": ((12,), (-1,), 11),
    "zero-stride": ((3, 4), (0, 1), 0),
}


@pytest.mark.parametrize("shape, strides, offset", NON_CONTIGUOUS.values(), ids=NON_CONTIGUOUS.keys())
def test_tf_refuses_non_contiguous_exports_cleanly(shape, strides, offset):
    t = dlbridge.zeros((12,), "float32")
    t.numpy()[:] = np.arange(12)
    v = t.view(shape, strides, offset)
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf_from_dlpack(v.__dlpack__())
    # no crash, nothing freed early (the fixture checks nothing leaked); a compact copy goes in
    x = tf_from_dlpack(v.copy().__dlpack__())
    assert np.array_equal(x.numpy(), v.numpy())


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_dlbridge_imports_every_dtype_from_tf(dtype, live_base):
    values = sample(dtype).reshape(2, -1) if sample(dtype).size % 2 == 0 else sample(dtype)
    x = tf.constant(values)
    t = dlbridge.from_dlpack(x)
    assert t.dtype == dtype and t.shape == values.shape
    assert t.strides == tuple(int(np.prod(values.shape[i + 1:])) for i in range(values.ndim))
    assert_same_bytes(raw_bytes(t.numpy()), raw_bytes(values))
    assert dlbridge.live_allocations() == live_base + 1, "the TF buffer is counted while held"


@pytest.mark.parametrize("copy", [None, False])
def test_dlbridge_shares_a_tf_tensor(copy):
    x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    first, second = dlbridge.from_dlpack(x, copy=copy), dlbridge.from_dlpack(x, copy=copy)
    assert data_ptr(first) == data_ptr(second), "both imports share TF's one buffer"
    capsule = dlbridge.from_dlpack(tf.experimental.dlpack.to_dlpack(x), copy=copy)
    assert data_ptr(capsule) == data_ptr(first)
    assert first.numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_copy_true_from_a_tf_tensor_is_independent():
    """copy=True always gives independent memory, whatever the producer: TF 2.21's
    tf.Tensor.__dlpack__ raises RuntimeError for copy=True, so dlbridge has to copy itself."""
    x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    first = dlbridge.from_dlpack(x)
    copied = dlbridge.from_dlpack(x, copy=True)
    assert data_ptr(copied) != data_ptr(first)
    copied.numpy()[0, 0] = -1
    assert x.numpy()[0, 0] == 1.0 and first.numpy()[0, 0] == 1.0


def test_round_trip_dlbridge_tf_dlbridge_is_zero_copy():
    t = dlbridge.zeros((5,), "int64")
    t.numpy()[:] = [5, 4, 3, 2, 1]
    back = dlbridge.from_dlpack(tf_from_dlpack(t.__dlpack__()))
    assert back.numpy().tolist() == [5, 4, 3, 2, 1]
    assert data_ptr(back) == data_ptr(t)
