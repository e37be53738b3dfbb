"""python -m dlbridge --includes --libs: the compiler and linker flags for a C or C++ extension
that uses the package's own libdlbridge (as `python -m pybind11 --includes` prints pybind11's).

    gcc -shared -fPIC ext.c -o ext.so $(python -m dlbridge --includes --libs)
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import __version__
from ._handover import include_flags, library_flags


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlbridge",
        description="Compiler and linker flags for native code that uses this package's libdlbridge.",
    )
    parser.add_argument("--includes", action="store_true", help="the compiler flags: -I<folder of dlbridge.h>")
    parser.add_argument(
        "--libs", action="store_true", help="the linker flags: -L<dir> -l:<library file> -Wl,-rpath,<dir>"
    )
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    if not (args.includes or args.libs):
        parser.print_help()
        return 2
    flags: List[str] = []
    if args.includes:
        flags += include_flags()
    if args.libs:
        flags += library_flags()
    print(" ".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
