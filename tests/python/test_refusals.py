"""Tensors a producer's DLPack C exchange table refuses (PyTorch: quantized, `meta`, bits8)
become a one-line BufferError from dlbridge.from_dlpack, as np.from_dlpack refuses what it cannot
import, never PyTorch's RuntimeError with its C++ backtrace."""

import warnings

import numpy as np
import pytest

import dlbridge

torch = pytest.importorskip("torch")


def quantized():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch 2.15 deprecates quantized tensors
        return torch.quantize_per_tensor(torch.tensor([1.0, 2.0]), 0.1, 0, torch.quint8)


CASES = {
    "quantized": (quantized, "QUInt/QInt types are not supported"),
    "meta": (lambda: torch.empty(3, device="meta"), "meta"),
    "bits8": (lambda: torch.zeros(3, dtype=torch.uint8).view(torch.bits8), "Bit types"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_refused_by_the_exchange_table_is_a_one_line_buffer_error(kind):
    make, reason = CASES[kind]
    x = make()
    # The route under test: PyTorch's table, which these tensors pass the guard for.
    assert dlbridge._tensor._exchange_route(type(x)) is not None
    with pytest.raises(BufferError) as info:
        dlbridge.from_dlpack(x)
    message = str(info.value)
    assert "\n" not in message, message
    assert "Exception raised from" not in message and "frame #" not in message
    assert message.startswith("from_dlpack: the producer refused") and reason in message, message
    # The same tensor again (the route is cached): the same refusal, nothing leaked.
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(x)


def test_numpy_refuses_them_too():
    # The contract followed: NumPy's own import refuses these with BufferError or RuntimeError;
    # dlbridge's refusal is the BufferError the array-API standard names.
    for kind, (make, _) in CASES.items():
        with pytest.raises((BufferError, RuntimeError, TypeError)):
            np.from_dlpack(make())


def test_accepted_tensors_still_import_after_a_refusal():
    with pytest.raises(BufferError):
        dlbridge.from_dlpack(torch.empty(2, device="meta"))
    x = torch.arange(3.0)
    t = dlbridge.from_dlpack(x)
    assert t.data_ptr() == x.data_ptr()
