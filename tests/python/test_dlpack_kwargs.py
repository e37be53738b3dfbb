"""Every combination of `Tensor.__dlpack__`'s keywords, against a model of the DLPack rules.

stream x max_version x dl_device x copy, for writable, read-only, strided and 0-d tensors:
about five thousand calls. The model (dlpack_rules.py) says, for each, whether the call must raise
(and what), or which capsule must come back (legacy or versioned), whether it shares the tensor's
memory, and which flags it carries. The C operations behind these calls are fuzzed by fuzz/
(target `export`); the atheris target fuzz/python/dlpack_kwargs.py checks the same model against
values the fuzzer invents.
"""

import itertools

import numpy as np
import pytest

import dlbridge

from dlpack_rules import expected
from support import managed_info

STREAMS = [None, -1, 0, 1, 2, 0x7F00DEAD0000, "default", 1.5]
MAX_VERSIONS = [None, (0, 9), (1, 0), (1, 3), (2, 0), "1.3", 5]
DL_DEVICES = [None, (1, 0), (1, 1), (2, 0), (3, 0), (7, 0), (99, 0), (1, -1), "cpu"]
COPIES = [None, True, False, 1, "yes"]


def tensors():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    ro = base.copy()
    ro.flags.writeable = False
    return {
        "writable": lambda: dlbridge.from_dlpack(base.copy()),
        "read-only": lambda: dlbridge.from_dlpack(ro),
        "strided": lambda: dlbridge.from_dlpack(base.copy()).view((3, 2), (-6, 2), offset=20),
        "0-d": lambda: dlbridge.zeros(()),
    }


CASES = list(itertools.product(STREAMS, MAX_VERSIONS, DL_DEVICES, COPIES))


@pytest.mark.parametrize("kind", list(tensors()))
def test_every_keyword_combination_follows_the_rules(kind):
    make = tensors()[kind]
    t = make()
    first = managed_info(t.__dlpack__(max_version=(1, 3)))["data"]
    want_values = t.copy()
    failures = []
    for stream, max_version, dl_device, copy in CASES:
        call = f"__dlpack__(stream={stream!r}, max_version={max_version!r}, dl_device={dl_device!r}, copy={copy!r})"
        want = expected(stream, max_version, dl_device, copy, read_only=kind == "read-only")
        try:
            capsule = t.__dlpack__(stream=stream, max_version=max_version, dl_device=dl_device, copy=copy)
        except Exception as e:  # the model says which exception, if any
            if not (isinstance(want, type) and type(e) is want):
                failures.append(f"{call}: raised {type(e).__name__}: {e}; expected {want}")
            continue
        if isinstance(want, type):
            failures.append(f"{call}: returned a capsule; expected {want.__name__}")
            continue
        device = want.pop("device")
        info = managed_info(capsule)
        got = {
            "versioned": info["versioned"],
            "shares": info["data"] == first,
            "read_only": bool(info["flags"] & 1) if info["versioned"] else False,
            "copied": bool(info["flags"] & 2) if info["versioned"] else want["copied"],
        }
        if info["versioned"] and info["version"] != (1, 3):
            failures.append(f"{call}: version {info['version']}")
        if got != want:
            failures.append(f"{call}: got {got}, expected {want}")
            continue
        # The capsule imports to the same values, on the device asked for.
        back = dlbridge.from_dlpack(capsule)
        if back.__dlpack_device__() != device:
            failures.append(f"{call}: imported on {back.device}")
        elif back.device == "cpu" and not np.array_equal(back.numpy(), want_values.numpy()):
            failures.append(f"{call}: values differ")
    assert not failures, f"{len(failures)} of {len(CASES)} calls broke the rules:\n" + "\n".join(failures[:20])
