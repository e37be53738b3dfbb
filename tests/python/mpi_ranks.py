"""Run by test_shared_engines.py under `mpiexec -n 2`: rank 0 sends dlbridge tensors to rank 1,
which receives into dlbridge tensors, through mpi4py's DLPack buffer support (Send/Recv read
``__dlpack__``) and by pickle (send/recv). Prints one line per check on rank 1; exits non-zero on
any mismatch."""

import sys

import numpy as np
from mpi4py import MPI

import dlbridge


def main() -> int:
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    assert comm.Get_size() == 2
    n = 1000
    if rank == 0:
        t = dlbridge.zeros((n,), "float64")
        np.asarray(t)[:] = np.arange(n)
        comm.Send(t, dest=1, tag=1)  # the buffer: mpi4py reads t.__dlpack__()
        s = dlbridge.zeros((4, 5), "int32", shared=True)
        np.asarray(s)[:] = np.arange(20).reshape(4, 5)
        comm.send(s, dest=1, tag=2)  # pickled by value
        back = dlbridge.zeros((n,), "float64")
        comm.Recv(back, source=1, tag=3)  # received into a dlbridge tensor
        ok = bool((np.asarray(back) == np.arange(n) * 2).all())
        comm.send(ok, dest=1, tag=4)
        return 0 if ok else 1
    r = dlbridge.empty((n,), "float64")
    comm.Recv(r, source=0, tag=1)  # mpi4py writes through r's DLPack export
    ok1 = bool((np.asarray(r) == np.arange(n)).all())
    print("recv-into-dlbridge", ok1)
    s = comm.recv(source=0, tag=2)
    ok2 = isinstance(s, dlbridge.Tensor) and s.dtype == "int32" and np.asarray(s).tolist()[3] == [15, 16, 17, 18, 19]
    print("pickled-tensor", ok2)
    np.asarray(r)[:] *= 2
    comm.Send(r, dest=0, tag=3)
    ok3 = comm.recv(source=0, tag=4)
    print("send-from-dlbridge", ok3)
    return 0 if (ok1 and ok2 and ok3) else 1


if __name__ == "__main__":
    sys.exit(main())
