"""The rules `Tensor.__dlpack__(stream=, max_version=, dl_device=, copy=)` follows: for any values
of the four keywords, which exception the call must raise, or which capsule it must return.

Shared by tests/python/test_dlpack_kwargs.py (every combination of a fixed set of values) and the
atheris target fuzz/python/dlpack_kwargs.py (values the fuzzer invents). The rules are the array
API standard's for `array.__dlpack__`, and dlbridge's own where the standard leaves a choice:

- copy: None, True or False; anything else (1, numpy.bool_) is TypeError.
- max_version: None (legacy capsule) or a tuple of two ints, major first; a major >= 1 gets the
  versioned capsule. The standard types it `tuple[int, int]`, so a tuple subclass (a namedtuple)
  and an int subclass (an IntEnum member) are as good as a tuple and an int; a bool is not an int
  here, nor is a NumPy integer. A list, another length or a major that is not an int is
  TypeError. The minor is not looked at (a producer only needs the major to choose; NumPy and
  PyTorch do the same), so (1, "x") is a versioned export.
- stream: checked against the tensor's own device. A CPU tensor takes only None (BufferError
  otherwise). A CUDA tensor takes None or an int >= -1 other than 0 (TypeError for another type,
  ValueError for 0 or below -1); nothing needs synchronising, so any such int will do.
- dl_device: a 2-tuple following `__dlpack_device__()`'s format, which the standard types
  `tuple[Enum, int]`: the device type is an int or an enum member whose value is one (an IntEnum
  such as PyTorch's DLDeviceType, or a plain Enum), the id an int; anything else is TypeError.
  Every kDLCPU id is the same memory, so (1, n) is no move for a CPU tensor, whatever n. Another
  device needs a copy there: BufferError with copy=False, and BufferError where dlbridge cannot
  go (no CUDA, a type it does not handle, an id that does not exist or does not fit DLPack's
  int32 fields).
- The checks run in that order (copy, max_version, stream, dl_device), so a call with several
  faults raises the first one's exception.
- A legacy capsule cannot say read-only: a shared legacy export of read-only data is BufferError.

`expected()` also takes `quirks`: names from KNOWN_DEVIATIONS, each one a way the current dlbridge
departs from these rules, modelled exactly. The fuzz target expects them (and says when it first
meets one), so that it runs clean while they are open, and fails once one is fixed, so that the
entry gets removed; DLB_FUZZ_STRICT=1 makes it expect the rules alone.
"""

from __future__ import annotations

import enum
from typing import Any, Union

import dlbridge

CPU, CUDA, CUDA_HOST = 1, 2, 3
CUDA_DEVICES = dlbridge.cuda_device_count()

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1

# Each a departure of the current dlbridge from the rules above, reported, with its reproducer.
KNOWN_DEVIATIONS: dict = {
    # None open. Fixed: "exact-types" (namedtuples, IntEnum ints and enum device types were
    # TypeError) and "device-wraps" (a dl_device beyond int32 wrapped silently in ctypes).
}


def is_int(x: Any) -> bool:
    """An int for the standard's `int`: int and its subclasses (IntEnum members), not bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def device_type(x: Any) -> Union[int, None]:
    """The device type a dl_device entry names (an int, or an enum member whose value is one), or
    None when it names none."""
    if isinstance(x, enum.Enum):
        x = x.value
    return int(x) if is_int(x) else None


def reachable(dev: tuple) -> bool:
    """Whether dlbridge can copy a tensor to the device (device_type, device_id)."""
    t, i = dev
    if not (_INT32_MIN <= t <= _INT32_MAX and 0 <= i <= _INT32_MAX):
        return False  # not a DLDevice at all
    if t == CPU:
        return True
    return t in (CUDA, CUDA_HOST) and i < CUDA_DEVICES


def expected(stream: Any, max_version: Any, dl_device: Any, copy: Any, *, read_only: bool = False,
             device: tuple = (CPU, 0), quirks: Any = ()) -> Any:
    """The exception type the call must raise, or a dict describing the capsule it must return:
    versioned, shares (the tensor's memory), read_only, copied (the flags a versioned capsule
    carries) and device (the device its DLTensor names). read_only and device describe the
    tensor; an absent keyword is None."""
    unknown = set(quirks) - set(KNOWN_DEVIATIONS)
    assert not unknown, f"unknown quirks {unknown}"

    def int_ok(x: Any) -> bool:
        return is_int(x)

    def tuple_ok(x: Any) -> bool:
        return isinstance(x, tuple)

    if copy is not None and copy is not True and copy is not False:
        return TypeError
    versioned = False
    if max_version is not None:
        if not (tuple_ok(max_version) and len(max_version) == 2 and int_ok(max_version[0])):
            return TypeError
        versioned = max_version[0] >= 1
    if stream is not None:
        if device[0] == CPU:
            return BufferError  # a CPU tensor takes no stream
        if not int_ok(stream):
            return TypeError
        if stream == 0 or stream < -1:
            return ValueError
    target, moved = device, False
    if dl_device is not None:
        if not (tuple_ok(dl_device) and len(dl_device) == 2):
            return TypeError
        dev_type, dev_id = device_type(dl_device[0]), dl_device[1]
        if dev_type is None or not int_ok(dev_id):
            return TypeError
        dev = (dev_type, int(dev_id))
        if dev != device and not dev_type == device[0] == CPU:  # every kDLCPU id is the same memory
            # Another device: only a copy can get there.
            if copy is False:
                return BufferError
            if not reachable(dev):
                return BufferError
            target, moved = dev, True
    copied = copy is True or moved
    ro = read_only and not copied
    if ro and not versioned:
        return BufferError  # the legacy struct cannot say read-only
    return {"versioned": versioned, "shares": not copied, "read_only": ro, "copied": copied, "device": target}
