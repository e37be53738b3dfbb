"""Host<->GPU transfer throughput of dlbridge next to PyTorch, in the same process and run.

Run with `make bench` (or directly with the .venv Python). Needs a CUDA GPU and PyTorch with CUDA;
without them it says so and exits 0. Every dlbridge call allocates its destination, so each
PyTorch peer allocates one too (from its caching allocators, which dlbridge does not have):

  pinned host -> GPU   dlbridge pinned.to("cuda")        torch pinned.to("cuda")
  GPU -> pinned host   dlbridge g.to("cuda_host")        torch empty(pin_memory=True).copy_(x)
  pageable -> GPU      dlbridge cpu.to("cuda")           torch cpu.cuda()
  GPU -> pageable      dlbridge g.cpu()                  torch x.cpu()

Prints GB/s (bytes moved once) and the ratio dlbridge / PyTorch; best of N interleaved rounds.
The issue's targets: pinned at >= 0.9x PyTorch, pageable at >= 1.0x.
"""

import sys
import time

import numpy as np

import dlbridge

ROUNDS = 7
SIZES_MIB = (1, 16, 256)


def best(fn, rounds=ROUNDS):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    if dlbridge.cuda_device_count() == 0:
        print("gpu_bench: no CUDA device (dlbridge.cuda_device_count() is 0): skipped")
        return 0
    try:
        import torch
    except ImportError:
        print("gpu_bench: PyTorch is not installed: skipped")
        return 0
    if not torch.cuda.is_available():
        print("gpu_bench: PyTorch sees no GPU: skipped")
        return 0
    print(f"gpu_bench: {torch.cuda.get_device_name(0)}, best of {ROUNDS}")
    print(f"{'case':<22}{'MiB':>6}{'dlbridge GB/s':>15}{'torch GB/s':>12}{'ratio':>8}")
    for mib in SIZES_MIB:
        n = mib << 18  # float32 elements
        host = np.arange(n, dtype=np.float32)
        cpu_t = dlbridge.from_dlpack(host)
        pinned_t = cpu_t.to("cuda_host")
        g = cpu_t.to("cuda")
        x_cpu = torch.from_numpy(host)
        x_pinned = x_cpu.pin_memory()
        x = x_cpu.cuda()
        sync = torch.cuda.synchronize

        def torch_to_pinned():
            torch.empty(n, dtype=torch.float32, pin_memory=True).copy_(x)
            sync()

        cases = [
            ("pinned -> GPU", lambda: pinned_t.to("cuda"), lambda: (x_pinned.to("cuda"), sync())),
            ("GPU -> pinned", lambda: g.to("cuda_host"), torch_to_pinned),
            ("pageable -> GPU", lambda: cpu_t.to("cuda"), lambda: (x_cpu.cuda(), sync())),
            ("GPU -> pageable", lambda: g.cpu(), lambda: x.cpu()),
        ]
        for name, ours, theirs in cases:
            ours(), theirs()  # warm up: first allocations, page faults
            t_ours, t_theirs = best(ours), best(theirs)
            gb = n * 4 / 1e9
            print(f"{name:<22}{mib:>6}{gb / t_ours:>15.2f}{gb / t_theirs:>12.2f}{t_theirs / t_ours:>8.2f}")
        # Correctness of what was timed.
        assert np.array_equal(g.cpu().numpy(), host)
        del cpu_t, pinned_t, g, x_cpu, x_pinned, x
    return 0


if __name__ == "__main__":
    sys.exit(main())
