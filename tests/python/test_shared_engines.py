"""dlbridge tensors through real engines on small local clusters: MPI (mpi4py and MPICH from
PyPI, two ranks under mpiexec) and Dask distributed (a LocalCluster of two worker processes).

Dask rather than Ray: its wheels are pure Python (Ray's are ~70 MB with a C++ core and a Redis-like
GCS to start), and a two-worker LocalCluster starts in about a second on a 2-core machine.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import dlbridge

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)


def test_two_mpi_ranks_send_and_receive_dlbridge_tensors():
    mpiexec = os.path.join(BIN, "mpiexec")
    if not os.path.exists(mpiexec):
        pytest.fail("mpiexec is missing: the mpich package from requirements-dev.txt is not installed")
    env = dict(os.environ, HYDRA_LAUNCHER="fork")
    r = subprocess.run(
        [mpiexec, "-n", "2", sys.executable, os.path.join(HERE, "mpi_ranks.py")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = set(r.stdout.split("\n"))
    assert {"recv-into-dlbridge True", "pickled-tensor True", "send-from-dlbridge True"} <= lines, r.stdout


@pytest.fixture(scope="module")
def dask_client():
    import distributed
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _make(n, dtype):
    import dlbridge

    t = dlbridge.zeros((n,), dtype)
    np.asarray(t)[:] = np.arange(n)
    return t


def _total(t):
    import dlbridge

    assert isinstance(t, dlbridge.Tensor)
    return (t.dtype, t.shape, float(np.asarray(t).sum()))


def test_dask_tasks_pass_dlbridge_tensors_between_worker_processes(dask_client):
    workers = sorted(dask_client.scheduler_info()["workers"])
    assert len(workers) == 2
    made = dask_client.submit(_make, 10_000, "float32", workers=[workers[0]])
    # The consumer runs on the other worker: the tensor is serialized there and back.
    got = dask_client.submit(_total, made, workers=[workers[1]]).result(timeout=60)
    assert got == ("float32", (10_000,), float(np.arange(10_000).sum()))
    back = made.result(timeout=60)  # and to the client
    assert isinstance(back, dlbridge.Tensor) and np.asarray(back)[-1] == 9999
    scattered = dask_client.scatter(_make(300, "int16"), workers=[workers[1]])
    assert dask_client.submit(_total, scattered, workers=[workers[0]]).result(timeout=60)[2] == float(sum(range(300)))


def test_dask_serializes_a_tensor_zero_copy():
    from distributed.protocol import deserialize, serialize

    t = _make(1 << 16, "float64")
    header, frames = serialize(t)
    # The data frame is the tensor's own memory (a protocol 5 out-of-band buffer), not a copy.
    data = [f for f in frames if memoryview(f).nbytes == t.nbytes]
    assert len(data) == 1
    assert np.frombuffer(data[0], np.uint8).ctypes.data == t.data_ptr()
    u = deserialize(header, frames)
    np.testing.assert_array_equal(np.asarray(u), np.asarray(t))
