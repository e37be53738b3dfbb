import numpy as np
import torch

import dlbridge

a = np.arange(6, dtype=np.float64)
t = dlbridge.from_dlpack(a)  # shares a's memory: no copy
u = torch.from_dlpack(t)  # shares it too: one buffer, three objects
u[0] = 42.0
assert a[0] == 42.0 and t.dtype == "float64" and u.dtype == torch.float64

c = dlbridge.from_dlpack(a, copy=True)  # new memory
c.numpy()[1] = -1.0
assert a[1] == 1.0 and not c.shares_memory(t)

r = np.zeros(3)
r.flags.writeable = False
rt = dlbridge.from_dlpack(r)  # read-only stays read-only
assert rt.read_only and not rt.numpy().flags.writeable
try:
    rt.__dlpack__()  # the legacy capsule cannot say "read-only"
except BufferError as e:
    print("refused:", e)

del t, u, c, rt
assert dlbridge.live_allocations() == 0  # every buffer dlbridge held is released
print("ok")
