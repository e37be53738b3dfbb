"""What a C or C++ extension needs to use the package's own copy of libdlbridge: the folder of
the headers, the library file, and the compiler and linker flags for both (`python -m dlbridge
--includes --libs`)."""

from __future__ import annotations

import functools
import os
import re
from typing import List

from . import _lib

__all__ = ["get_include", "get_library", "include_flags", "library_flags"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_VERSION_MACRO = re.compile(r"^#define DLBRIDGE_VERSION_(MAJOR|MINOR|PATCH) (\d+)", re.M)


def get_library() -> str:
    """The absolute path of the libdlbridge file this package loaded (the one inside the package,
    or DLBRIDGE_LIBRARY's). An extension must link against this file and no other copy."""
    return os.path.abspath(_lib.path)


def _header_version(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, "dlbridge.h"), encoding="utf-8") as f:
            found = dict(_VERSION_MACRO.findall(f.read()))
    except OSError:
        return None
    try:
        return f"{found['MAJOR']}.{found['MINOR']}.{found['PATCH']}"
    except KeyError:
        return None


def _candidates() -> List[str]:
    # The package's own copy first. Then, for a package without headers (DLBRIDGE_LIBRARY
    # pointing at a build, or a package built before the headers were shipped), an include/
    # folder above the library or the package: the repository's include/ for
    # target/release/libdlbridge.so, a source tree or an install prefix.
    found = [os.path.join(_HERE, "include")]
    for start in (os.path.dirname(os.path.realpath(get_library())), _HERE):
        d = start
        for _ in range(8):
            found.append(os.path.join(d, "include"))
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return found


@functools.lru_cache(maxsize=None)
def get_include() -> str:
    """The folder holding dlbridge.h and dlbridge.hpp for the library this package loaded (a
    header counts only when its DLBRIDGE_VERSION_* match the library's version)."""
    for folder in _candidates():
        if _header_version(folder) == _lib.version:
            return folder
    raise FileNotFoundError(
        f"no dlbridge.h of version {_lib.version} found in the package ({_HERE}/include) or above "
        f"the library ({get_library()})"
    )


def include_flags() -> List[str]:
    """The compiler flags: -I<get_include()>."""
    return [f"-I{get_include()}"]


def library_flags() -> List[str]:
    """The linker flags for exactly this library file: -L<dir> -l:<file name> -Wl,-rpath,<dir>.
    With -l:<file name> the linker takes that file itself, never another libdlbridge on the
    search path; the rpath lets the loader find it, though a process that imported dlbridge
    first already has it loaded (see docs/python.md, "C extensions")."""
    path = get_library()
    folder, name = os.path.split(path)
    return [f"-L{folder}", f"-l:{name}", f"-Wl,-rpath,{folder}"]
