"""A live tour of who shares memory and who copies, with dlbridge in the middle.

    python -m dlbridge.tour

The article that motivated dlbridge walks through TensorFlow <-> NumPy and PyTorch <-> NumPy:
torch.from_numpy shares, torch.tensor() copies, .numpy() shares, float64 stays float64. This tour
runs those rules live, then puts dlbridge between the frameworks. Every step prints the one line
of code it runs, then writes through one side and reads the other; the verdict ("shares memory"
or "copies") is computed from what was read back, never written down. PyTorch, TensorFlow and JAX
are optional: a missing one is skipped with a note. The tour ends by checking that dlbridge holds
no memory any more (exit status 1 otherwise).
"""

from __future__ import annotations

import faulthandler
import importlib
import sys
from typing import Any, Optional

import dlbridge
from dlbridge._demo import quiet_frameworks, released

quiet_frameworks()

try:
    import numpy as np
except ImportError:  # pragma: no cover - the tour is about NumPy
    sys.exit("the dlbridge tour needs NumPy (pip install numpy)")


def optional(module: str) -> Optional[Any]:
    """The framework, or None when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def plain(value: Any) -> Any:
    """A value read back from any framework, as a plain Python number."""
    if not hasattr(value, "item") and hasattr(value, "numpy"):  # a tf.Tensor
        value = value.numpy()
    return value.item() if hasattr(value, "item") else value


def dtype_name(dtype: Any) -> str:
    """'float64' for np.float64, torch.float64, tf.float64, jnp.float64 and dlbridge's 'float64'."""
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", None) or str(dtype)
    return name[len("torch."):] if name.startswith("torch.") else name


class Tour:
    """Runs the lines of one section in a namespace of its own, printing each before it runs."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {}
        self.count = 0

    def section(self, title: str, **modules: Any) -> None:
        self.ns = {"np": np, "dlbridge": dlbridge, **modules}  # drops the last section's objects
        self.count += 1
        print(f"\n{self.count}. {title}")

    def note(self, text: str) -> None:
        print(f"   # {text}")

    def run(self, code: str) -> None:
        print(f"   >>> {code}")
        exec(code, self.ns)

    def value(self, expr: str) -> Any:
        return plain(eval(expr, self.ns))

    def show(self, expr: str) -> None:
        print(f"       {expr} -> {eval(expr, self.ns)!r}")

    def shares(self, code: str, write: str, read: str) -> None:
        """Runs `code`, then `write` on one side, and reads `read` on the other side: if the read
        sees the write, the two sides share memory."""
        self.run(code)
        before = self.value(read)
        try:
            exec(write, self.ns)
        except Exception as e:  # e.g. a read-only result: then the write tells nothing
            print(f"       then {write}  ->  raised {type(e).__name__}: {e}")
            print("       => cannot tell: the write was refused")
            return
        after = self.value(read)
        print(f"       then {write}  ->  {read} reads {after!r} (was {before!r})")
        print(f"       => {'shares memory' if after != before else 'copies'}")

    def dtypes(self, source: str, result: str) -> None:
        """Compares the dtype of a source with the dtype of what was made from it."""
        a, b = dtype_name(eval(source, self.ns)), dtype_name(eval(result, self.ns))
        print(f"       {source} -> {a}, {result} -> {b}")
        print(f"       => {'dtype kept' if a == b else f'dtype changed: {a} became {b}'}")

    def raises(self, code: str) -> None:
        print(f"   >>> {code}")
        try:
            exec(code, self.ns)
        except Exception as e:  # the point of the step: show what is refused, and how
            print(f"       raised {type(e).__name__}: {e}")
        else:
            print("       (no exception)")

    def end(self) -> None:
        self.ns = {}


def main() -> int:
    faulthandler.enable()  # a crash inside a framework or dlbridge prints where it happened
    torch, tf, jnp = optional("torch"), optional("tensorflow"), optional("jax.numpy")
    versions = [f"dlbridge {dlbridge.__version__}", f"NumPy {np.__version__}"]
    for label, mod, name in (("PyTorch", torch, "torch"), ("TensorFlow", tf, "tensorflow"), ("JAX", jnp, "jax")):
        versions.append(f"{label} {sys.modules[name].__version__}" if mod else f"{label} not installed")
    print("dlbridge tour: " + ", ".join(versions))
    print("Each step runs one line, writes through one side, reads the other: the verdict is what was read.")
    tour = Tour()

    if torch is None:
        print("\n(PyTorch is not installed: its steps are skipped)")
    else:
        tour.section("NumPy <-> PyTorch, the article's rules (no dlbridge yet)", torch=torch)
        tour.run("a = np.arange(3.0)")
        tour.shares("u = torch.from_numpy(a)", write="u[0] = 100", read="a[0]")
        tour.shares("v = torch.tensor(a)", write="v[1] = 200", read="a[1]")
        tour.shares("b = u.numpy()", write="b[2] = 300", read="u[2]")
        tour.note("dtypes: from_numpy keeps float64; torch.tensor(list of Python floats) makes float32")
        tour.dtypes("a.dtype", "u.dtype")
        tour.run("lst = [1.0, 2.0]  # Python floats are C doubles, NumPy reads them as float64")
        tour.dtypes("np.asarray(lst).dtype", "torch.tensor(lst).dtype")

        tour.section("NumPy -> dlbridge -> PyTorch: one buffer, three views of it", torch=torch)
        tour.run("a = np.arange(3, dtype=np.float32)")
        tour.shares("t = dlbridge.from_dlpack(a)", write="t.numpy()[0] = 100", read="a[0]")
        tour.shares("u = torch.from_dlpack(t)", write="u[1] = 200", read="a[1]")
        tour.show("t.shares_memory(dlbridge.from_dlpack(u))")
        tour.shares("c = dlbridge.from_dlpack(a, copy=True)", write="c.numpy()[2] = 300", read="a[2]")
        tour.show("c.shares_memory(t)")
        tour.note("float64 stays float64 all the way (DLPack carries the dtype exactly)")
        tour.run("a64 = np.arange(3.0); t64 = dlbridge.from_dlpack(a64); u64 = torch.from_dlpack(t64)")
        tour.dtypes("a64.dtype", "t64.dtype")
        tour.dtypes("a64.dtype", "u64.dtype")

    tour.section("Read-only NumPy data stays read-only through dlbridge", torch=torch)
    tour.run("r = np.arange(3.0); r.flags.writeable = False")
    tour.run("t = dlbridge.from_dlpack(r)")
    tour.show("t.read_only")
    tour.show("t.numpy().flags.writeable")
    tour.raises("t.numpy()[0] = 1")
    tour.note("the legacy DLPack struct (no max_version) has no read-only flag, so it is refused:")
    tour.raises("t.__dlpack__()")
    if torch is not None:
        tour.note("PyTorch has no read-only tensors: it ignores the flag, so take care")
        tour.shares("u = torch.from_dlpack(t)", write="u[0] = -1", read="r[0]")

    if tf is None:
        print("\n(TensorFlow is not installed: its steps are skipped)")
    else:
        tour.section("TensorFlow <-> NumPy and dlbridge", tf=tf)
        tour.run("x = tf.constant([1.0, 2.0, 3.0])")
        tour.note("the article says .numpy() shares; TensorFlow 2.21 copies (tf.Tensor is immutable)")
        tour.shares("n = x.numpy()", write="n[0] = 100", read="x[0]")
        tour.note("TF tensors cannot be written from Python; writing through dlbridge shows sharing")
        tour.shares("t = dlbridge.from_dlpack(x)", write="t.numpy()[1] = 200", read="x[1]")
        tour.run("t2 = dlbridge.zeros((3,))")
        tour.shares("y = tf.experimental.dlpack.from_dlpack(t2.__dlpack__())",
                    write="t2.numpy()[0] = 7", read="y[0]")
        tour.note("dtypes: tf.constant(list) makes float32, like torch.tensor; from NumPy it keeps float64")
        tour.run("lst = [1.0, 2.0]")
        tour.dtypes("np.asarray(lst).dtype", "tf.constant(lst).dtype")
        tour.run("x64 = tf.constant(np.arange(3.0))")
        tour.dtypes("x64.dtype", "dlbridge.from_dlpack(x64).dtype")

    if jnp is None:
        print("\n(JAX is not installed: its steps are skipped)")
    else:
        tour.section("JAX (bonus): it shares only 64-byte aligned buffers", jnp=jnp)
        tour.run("t = dlbridge.zeros((4,))  # dlbridge aligns every allocation to 256 bytes")
        tour.shares("j = jnp.from_dlpack(t)", write="t.numpy()[0] = 5", read="j[0]")
        tour.show("j.unsafe_buffer_pointer() == t.numpy().ctypes.data")
        tour.run("a = np.zeros(5, dtype=np.float32)[1:]  # 4 bytes past a malloc'd start")
        tour.show("a.ctypes.data % 64")
        tour.shares("k = jnp.from_dlpack(a)", write="a[0] = 5", read="k[0]")

    tour.section("GPU: a GPU tensor reaches NumPy only through a copy to the CPU")
    if dlbridge.cuda_device_count() == 0:
        print("   no CUDA device here (dlbridge.cuda_device_count() is 0): nothing to show")
    else:
        tour.run("a = np.arange(4.0)")
        tour.shares("g = dlbridge.from_dlpack(a).to('cuda')  # to another device: a copy",
                    write="a[0] = 7", read="g.cpu().numpy()[0]")
        tour.raises("g.numpy()")
        tour.shares("h = g.cpu()  # .cpu() of a GPU tensor: a copy",
                    write="h.numpy()[1] = 9", read="g.cpu().numpy()[1]")
        tour.run("p = g.to('cuda_host')  # pinned host memory, a copy")
        tour.shares("n = p.numpy()  # pinned memory is host memory: .numpy() shares it",
                    write="n[2] = 5", read="p.cpu().numpy()[2]")
        torch = optional("torch")
        if torch is not None and torch.cuda.is_available():
            tour.ns["torch"] = torch
            tour.shares("x = torch.from_dlpack(g)  # PyTorch takes the GPU memory itself",
                        write="x[3] = 8; torch.cuda.synchronize()", read="g.cpu().numpy()[3]")
            tour.show("x.data_ptr() == g.data_ptr()")

    tour.end()
    return released("Everything deleted")


if __name__ == "__main__":
    sys.exit(main())
