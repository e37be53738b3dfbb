"""Who shares and who copies, measured live for every installed pair of frameworks.

    python -m dlbridge.matrix          # a table
    python -m dlbridge.matrix --json   # the same measurements as JSON

Every producer (NumPy, PyTorch, TensorFlow, JAX, dlbridge) makes a small 2x3 array for each case
(float32, float64, bool, read-only, transposed view, negative-stride view) that it can make, and
every consumer imports it through DLPack. Nothing here is written down: the verdicts come from
data pointers, dtypes and flags read after the import, so the table changes when a framework
does. A framework that is not installed is skipped with a note.

JSON: a list of records {producer, consumer, case, shares, dtype_kept, read_only_kept, refused,
producer_dtype, consumer_dtype, consumer_read_only, producer_alignment}, one per measured pair and
case (cases a producer cannot make are left out). shares and dtype_kept are bool, or null when
refused; read_only_kept is bool for read-only inputs, "n/a" when the consumer cannot mark data
read-only, null for writable inputs; refused is "<ExceptionType>: <first line of message>" or
null; producer_alignment is the largest power of two (up to 256) dividing the producer's address.
Notes (skipped frameworks, the allocation check) go to stderr with --json.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import dlbridge
from dlbridge._demo import quiet_frameworks, released

quiet_frameworks()

CASES = ("float32", "float64", "bool", "read-only", "transposed", "neg-stride")

# ---------------------------------------------------------------------------------------------
# pointers: the address of the first element, however a framework exposes it
# ---------------------------------------------------------------------------------------------


def dlbridge_pointer(t: dlbridge.Tensor) -> int:
    """The first element of a dlbridge tensor."""
    return t.data_ptr()


def pointer_via_dlpack(capsule: Any) -> int:
    """For data reachable only through DLPack (TensorFlow): import the producer's export into
    dlbridge, which shares it, read the first element's address, and let the import go."""
    return dlbridge_pointer(dlbridge.from_dlpack(capsule))  # the temporary import is freed at once


# ---------------------------------------------------------------------------------------------
# the frameworks: name -> producer factories per case, and consumer functions
# ---------------------------------------------------------------------------------------------


@dataclass
class Producer:
    make: dict[str, Callable[[], Any]]  # case -> factory
    pointer: Callable[[Any], int]
    dtype: Callable[[Any], str]
    cannot: dict[str, str] = field(default_factory=dict)  # case -> why the producer cannot make it


@dataclass
class Consumer:
    take: Callable[[Any], Any]  # the import under test
    pointer: Callable[[Any], int]
    dtype: Callable[[Any], str]
    read_only: Optional[Callable[[Any], bool]]  # None: the consumer cannot mark data read-only


def cases_from(f32: Callable[[], Any], f64: Any, boolean: Any, read_only: Any, t: Any, neg: Any) -> dict:
    """Factories for the six cases; None where the producer cannot make one."""
    made = dict(zip(CASES, (f32, f64, boolean, read_only, t, neg)))
    return {case: fn for case, fn in made.items() if fn is not None}


def numpy_frameworks(np: Any) -> tuple[Producer, Consumer]:
    def f32() -> Any:
        return np.arange(6, dtype=np.float32).reshape(2, 3)

    def read_only() -> Any:
        a = f32()
        a.flags.writeable = False
        return a

    def pointer(a: Any) -> int:
        return a.__array_interface__["data"][0]  # the first element, even for negative strides

    producer = Producer(
        cases_from(f32, lambda: np.arange(6.0).reshape(2, 3), lambda: np.arange(6).reshape(2, 3) % 2 == 0,
                   read_only, lambda: f32().T, lambda: f32()[:, ::-1]),
        pointer, lambda a: a.dtype.name)
    consumer = Consumer(np.from_dlpack, pointer, lambda a: a.dtype.name, lambda a: not a.flags.writeable)
    return producer, consumer


def torch_frameworks(torch: Any) -> tuple[Producer, Consumer]:
    def f32() -> Any:
        return torch.arange(6, dtype=torch.float32).reshape(2, 3)

    def dtype(u: Any) -> str:
        return str(u.dtype).replace("torch.", "")

    producer = Producer(
        cases_from(f32, lambda: torch.arange(6, dtype=torch.float64).reshape(2, 3),
                   lambda: torch.arange(6).reshape(2, 3) % 2 == 0, None, lambda: f32().t(), None),
        lambda u: u.data_ptr(), dtype,
        {"read-only": "PyTorch has no read-only tensors", "neg-stride": "PyTorch has no negative strides"})
    consumer = Consumer(torch.from_dlpack, lambda u: u.data_ptr(), dtype, None)
    return producer, consumer


def tensorflow_frameworks(tf: Any) -> tuple[Producer, Consumer]:
    to_dlpack = tf.experimental.dlpack.to_dlpack

    def f32() -> Any:
        return tf.reshape(tf.range(6, dtype=tf.float32), (2, 3))

    def take(x: Any) -> Any:
        # TF imports only legacy capsules: its own export for tf.Tensor, __dlpack__() (no
        # max_version, hence legacy) for everything else.
        if not isinstance(x, tf.Tensor) and x.__dlpack_device__()[0] != 1:
            # Measured with TF 2.21 (CPU build): from_dlpack of a GPU capsule raises, but only
            # after running the tensor's deleter, and leaves the capsule unconsumed, so its
            # destructor runs the deleter again (a double free that crashes the process).
            raise BufferError("not tried: TensorFlow 2.21 double-frees GPU data it cannot take")
        return tf.experimental.dlpack.from_dlpack(to_dlpack(x) if isinstance(x, tf.Tensor) else x.__dlpack__())

    no_views = "TensorFlow has no views (tf.transpose, tf.reverse copy)"
    producer = Producer(
        cases_from(f32, lambda: tf.reshape(tf.range(6, dtype=tf.float64), (2, 3)),
                   lambda: tf.reshape(tf.range(6) % 2 == 0, (2, 3)), None, None, None),
        lambda x: pointer_via_dlpack(to_dlpack(x)), lambda x: x.dtype.name,
        {"read-only": "TensorFlow's export cannot mark data read-only",
         "transposed": no_views, "neg-stride": no_views})
    consumer = Consumer(take, lambda x: pointer_via_dlpack(to_dlpack(x)), lambda x: x.dtype.name, None)
    return producer, consumer


def jax_frameworks(jax: Any) -> tuple[Producer, Consumer]:
    jnp = jax.numpy

    def f32() -> Any:
        return jnp.arange(6, dtype=jnp.float32).reshape(2, 3)

    no_views = "JAX has no views (.T and [:, ::-1] copy)"
    f64 = None
    if jax.config.read("jax_enable_x64"):
        def f64() -> Any:  # noqa: F811 - only with x64 enabled can JAX hold float64
            return jnp.arange(6, dtype=jnp.float64).reshape(2, 3)
    producer = Producer(
        cases_from(f32, f64, lambda: jnp.arange(6).reshape(2, 3) % 2 == 0, None, None, None),
        lambda j: j.unsafe_buffer_pointer(), lambda j: j.dtype.name,
        {"float64": "JAX makes float32 instead unless jax_enable_x64 is set",
         "read-only": "JAX's export cannot mark data read-only", "transposed": no_views, "neg-stride": no_views})
    consumer = Consumer(jnp.from_dlpack, lambda j: j.unsafe_buffer_pointer(), lambda j: j.dtype.name, None)
    return producer, consumer


def dlbridge_frameworks(np: Optional[Any]) -> tuple[Producer, Consumer]:
    def f32() -> dlbridge.Tensor:
        return dlbridge.zeros((2, 3), "float32")

    read_only = None
    if np is not None:
        def read_only() -> dlbridge.Tensor:  # noqa: F811 - dlbridge keeps NumPy's read-only flag
            a = np.arange(6, dtype=np.float32).reshape(2, 3)
            a.flags.writeable = False
            return dlbridge.from_dlpack(a)
    producer = Producer(
        cases_from(f32, lambda: dlbridge.zeros((2, 3), "float64"), lambda: dlbridge.zeros((2, 3), "bool"),
                   read_only, lambda: f32().view((3, 2), (1, 3)), lambda: f32().view((2, 3), (3, -1), offset=2)),
        dlbridge_pointer, lambda t: t.dtype, {"read-only": "needs NumPy to make read-only data"})
    consumer = Consumer(dlbridge.from_dlpack, dlbridge_pointer, lambda t: t.dtype, lambda t: t.read_only)
    return producer, consumer


def dlbridge_cuda_producer() -> Producer:
    """dlbridge tensors in GPU memory (the rows only a machine with CUDA shows)."""
    def f32() -> dlbridge.Tensor:
        return dlbridge.zeros((2, 3), "float32", device="cuda")

    return Producer(
        cases_from(f32, lambda: dlbridge.zeros((2, 3), "float64", device="cuda"),
                   lambda: dlbridge.zeros((2, 3), "bool", device="cuda"), None,
                   lambda: f32().view((3, 2), (1, 3)), lambda: f32().view((2, 3), (3, -1), offset=2)),
        dlbridge_pointer, lambda t: t.dtype, {"read-only": "only imports are read-only"})


def torch_cuda_producer(torch: Any) -> Producer:
    def f32() -> Any:
        return torch.arange(6, dtype=torch.float32, device="cuda").reshape(2, 3)

    return Producer(
        cases_from(f32, lambda: torch.arange(6, dtype=torch.float64, device="cuda").reshape(2, 3),
                   lambda: torch.arange(6, device="cuda").reshape(2, 3) % 2 == 0, None, lambda: f32().t(), None),
        lambda u: u.data_ptr(), lambda u: str(u.dtype).replace("torch.", ""),
        {"read-only": "PyTorch has no read-only tensors", "neg-stride": "PyTorch has no negative strides"})


# display name -> (module to import, the function making its producer and consumer)
FRAMEWORKS: dict[str, tuple[str, Callable[[Any], tuple[Producer, Consumer]]]] = {
    "numpy": ("numpy", numpy_frameworks),
    "torch": ("torch", torch_frameworks),
    "tf": ("tensorflow", tensorflow_frameworks),
    "jax": ("jax", jax_frameworks),
    "dlbridge": ("numpy", dlbridge_frameworks),  # NumPy is optional for it
}


def load() -> tuple[dict[str, tuple[Producer, Consumer]], list[str], list[str]]:
    """Imports what is installed. Returns the frameworks, their versions and notes on the rest."""
    found, versions, notes = {}, [], []
    for name, (module, build) in FRAMEWORKS.items():
        try:
            mod = importlib.import_module(module)
            if module == "jax":
                importlib.import_module("jax.numpy")
        except ImportError as e:
            if name != "dlbridge":
                notes.append(f"{name} skipped: {module} is not installed ({e})")
                continue
            mod = None
        found[name] = build(mod)
        version = dlbridge.__version__ if name == "dlbridge" else getattr(mod, "__version__", "?")
        versions.append(f"{name} {version}")
    # GPU producers (consumers are the same functions), when there is a GPU.
    if dlbridge.cuda_device_count() > 0:
        found["dlbridge@cuda"] = (dlbridge_cuda_producer(), None)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            found["torch@cuda"] = (torch_cuda_producer(torch), None)
    else:
        notes.append("no CUDA device: the GPU rows (dlbridge@cuda, torch@cuda) are skipped")
    return found, versions, notes


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------


def first_line(e: BaseException, limit: int = 60) -> str:
    """'<ExceptionType>: <first line of the message, at most `limit` characters>'."""
    text = (str(e).strip().splitlines() or [""])[0]
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}"


def alignment(pointer: int) -> int:
    """The largest power of two, up to 256, that divides the address."""
    return min(pointer & -pointer, 256) if pointer else 256


def measure(producer: Producer, consumer: Consumer, case: str) -> dict[str, Any]:
    """Makes the case's array, imports it, and compares the first element's address, the dtype
    and the read-only flag of the two sides."""
    x = producer.make[case]()
    src_pointer, src_dtype = producer.pointer(x), producer.dtype(x)
    record: dict[str, Any] = dict(shares=None, dtype_kept=None, read_only_kept=None, refused=None,
                                  producer_dtype=src_dtype, consumer_dtype=None, consumer_read_only=None,
                                  producer_alignment=alignment(src_pointer))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. JAX truncating float64: the record says so
            y = consumer.take(x)
    except Exception as e:  # a refusal is a result
        record["refused"] = first_line(e)
        return record
    record["shares"] = consumer.pointer(y) == src_pointer
    record["consumer_dtype"] = consumer.dtype(y)
    record["dtype_kept"] = record["consumer_dtype"] == src_dtype
    if consumer.read_only is not None:
        record["consumer_read_only"] = bool(consumer.read_only(y))
    if case == "read-only":
        record["read_only_kept"] = "n/a" if consumer.read_only is None else record["consumer_read_only"]
    return record


def measure_all(found: dict[str, tuple[Producer, Optional[Consumer]]]) -> list[dict[str, Any]]:
    records = []
    for pname, (producer, _) in found.items():
        for cname, (_, consumer) in found.items():
            if consumer is None:  # a producer-only (GPU) entry
                continue
            for case in CASES:
                if case in producer.make:
                    records.append(dict(producer=pname, consumer=cname, case=case,
                                        **measure(producer, consumer, case)))
    return records


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

LEGEND = """\
Each producer makes a 2x3 array per case (a transposed and a [:, ::-1] view for the last two);
each consumer imports it through DLPack. Measured live:
  shares    the consumer's first element has the producer's address (pointer equality)
  copies    it has another address
  a16, a32  on a copy: the producer's data was only 16- or 32-byte aligned (JAX shares only
            64-byte aligned data; NumPy's small arrays are 64-byte aligned only by chance)
  >uint8    the dtype changed (to the one named)
  ro / RW!  read-only column: the result is read-only (kept) / writable (lost)
  ro n/a    read-only column: the consumer cannot mark data read-only (torch, tf, jax)
  +ro       the result is read-only although the input was writable
  refused   the exchange raised; [n] below gives the exception
  -         the producer cannot make this case (reasons below)"""


def cell(r: dict[str, Any], refusals: dict[str, int]) -> str:
    if r["refused"]:
        n = refusals.setdefault(r["refused"], len(refusals) + 1)
        return f"refused [{n}]"
    text = "shares" if r["shares"] else "copies"
    if not r["shares"] and r["dtype_kept"] and r["producer_alignment"] < 64:
        text += f" a{r['producer_alignment']}"
    if not r["dtype_kept"]:
        text += f" >{r['consumer_dtype']}"
    if r["case"] == "read-only":
        kept = r["read_only_kept"]
        text += " ro n/a" if kept == "n/a" else " ro" if kept else " RW!"
    elif r["consumer_read_only"]:
        text += " +ro"
    return text


def table(found: dict[str, tuple[Producer, Optional[Consumer]]], records: list[dict[str, Any]]) -> str:
    by_key = {(r["producer"], r["consumer"], r["case"]): r for r in records}
    refusals: dict[str, int] = {}
    rows = [["producer", "consumer", *CASES]]
    for pname, (producer, _) in found.items():
        rows.append([])  # a rule between producers
        for cname in (c for c, (_, consumer) in found.items() if consumer is not None):
            rows.append([pname, cname] + [cell(by_key[pname, cname, case], refusals)
                                          if case in producer.make else "-" for case in CASES])
    widths = [max(len(row[i]) for row in rows if row) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        if not row:
            lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
        else:
            lines.append("  ".join(text.ljust(w) for text, w in zip(row, widths)).rstrip())
    if refusals:
        lines.append("")
        lines += [f"[{n}] {reason}" for reason, n in refusals.items()]
    cannot = [f"  {p}, {case}: {why}" for p, (producer, _) in found.items()
              for case, why in producer.cannot.items() if case not in producer.make]
    if cannot:
        lines += ["", "Cases a producer cannot make (-):"] + cannot
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlbridge.matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args(argv)
    faulthandler.enable()  # a crash (a bug in dlbridge or a framework) prints where it happened
    notes_out = sys.stderr if args.json else sys.stdout

    found, versions, notes = load()
    if not args.json:
        print("DLPack exchange matrix: " + ", ".join(versions))
    for note in notes:
        print(f"note: {note}", file=notes_out)
    records = measure_all(found)
    if args.json:
        json.dump(records, sys.stdout, indent=1)
        print()
    else:
        print(LEGEND + "\n")
        print(table(found, records))

    del found, records
    return released("after cleanup", notes_out)


if __name__ == "__main__":
    sys.exit(main())
