"""Build hooks for the dlbridge package (the metadata is in pyproject.toml).

The package is pure Python plus one Rust cdylib that it loads with ctypes, so it needs no CPython
ABI. Four things here that pyproject.toml cannot say:

- The crate: in the repository it is ../../Cargo.toml; an sdist carries a copy of it in rust/
  (made by `sdist` below), and a build from the unpacked sdist uses that copy.
- The library: installed as dlbridge/_libdlbridge.so (not ..cpython-311-x86_64-linux-gnu.so),
  stripped of debug info, with the C library's SONAME libdlbridge.so.<SOVERSION>, so that a C
  extension linked against it records NEEDED libdlbridge.so.<SOVERSION> and, once the package has
  loaded its library by path, the dynamic loader reuses that copy instead of looking for another.
- The wheel tag: py3-none-<platform>, one wheel for every CPython 3.9+ on a platform.
- The headers: include/dlbridge.h and include/dlbridge.hpp ship as dlbridge/include/.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist
from setuptools_rust import Binding, RustExtension, Strip
from setuptools_rust.build import build_rust as _build_rust

try:
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
SDIST_CRATE = os.path.join(HERE, "rust")
CRATE = SDIST_CRATE if os.path.isfile(os.path.join(SDIST_CRATE, "Cargo.toml")) else REPO
HEADERS = ("dlbridge.h", "dlbridge.hpp")


def _cargo_version() -> tuple[str, ...]:
    with open(os.path.join(CRATE, "Cargo.toml"), encoding="utf-8") as f:
        match = re.search(r'^version = "(\d+)\.(\d+)\.(\d+)[^"]*"', f.read(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"no version in {CRATE}/Cargo.toml")
    return match.groups()


def _soname() -> str:
    # The Makefile's SOVERSION rule (cargo-c's convention): MAJOR from 1.0 on, 0.MINOR for 0.y
    # with y > 0, 0.0.PATCH for 0.0.z.
    major, minor, patch = _cargo_version()
    if major != "0":
        soversion = major
    elif minor != "0":
        soversion = f"0.{minor}"
    else:
        soversion = f"0.0.{patch}"
    return f"libdlbridge.so.{soversion}"


class build_rust(_build_rust):
    """Installs the library as dlbridge/_libdlbridge.so: no Python version in the file name."""

    def get_dylib_ext_path(self, ext, target_fname):
        path = super().get_dylib_ext_path(ext, target_fname)
        path = os.path.join(os.path.dirname(path), target_fname.rsplit(".", 1)[-1] + ".so")
        # A build folder left by an older build may hold _libdlbridge.cpython-*.so, which the
        # package's glob would find first: only the library built now may be installed.
        for old in glob.glob(path[: -len(".so")] + "*.so"):
            if old != path:
                os.remove(old)
        return path


class bdist_wheel(_bdist_wheel):
    """py3-none-<platform>: the library is loaded with ctypes, so no CPython ABI is involved."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


class build_py(_build_py):
    """Copies the C and C++ headers into the package, as dlbridge/include/."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        dest = os.path.join(self.build_lib, "dlbridge", "include")
        os.makedirs(dest, exist_ok=True)
        for name in HEADERS:
            self.copy_file(os.path.join(CRATE, "include", name), os.path.join(dest, name))


def _crate_files(root: str) -> list[str]:
    """What cargo needs to build the library from a copy of the crate: the manifest, the lock
    file, src/, the headers (package data), the license, cbindgen.toml, and the file of every
    target that Cargo.toml declares (cargo refuses a manifest whose [[example]] or [[bench]] file
    is missing, even to build only the library)."""
    files = ["Cargo.toml", "Cargo.lock", "LICENSE", "cbindgen.toml"]
    files += [os.path.join("include", name) for name in HEADERS]
    for base, _, names in os.walk(os.path.join(root, "src")):
        files += [os.path.relpath(os.path.join(base, n), root) for n in names]
    if os.path.isfile(os.path.join(root, "build.rs")):
        files.append("build.rs")
    import tomllib  # only the sdist needs it (Python 3.11+); building from an sdist does not

    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        manifest = tomllib.load(f)
    defaults = {"example": "examples", "bench": "benches", "test": "tests", "bin": "src/bin"}
    for kind, folder in defaults.items():
        for target in manifest.get(kind, []):
            files.append(target.get("path") or f"{folder}/{target['name']}.rs")
    return sorted(set(files))


class sdist(_sdist):
    """Puts a copy of the crate in the sdist, as rust/, so that the sdist builds on its own."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        for rel in _crate_files(CRATE):  # CRATE is rust/ itself when making an sdist of an sdist
            dest = os.path.join(base_dir, "rust", rel)
            self.mkpath(os.path.dirname(dest))
            self.copy_file(os.path.join(CRATE, rel), dest)


setup(
    rust_extensions=[
        RustExtension(
            "dlbridge._libdlbridge",
            path=os.path.relpath(os.path.join(CRATE, "Cargo.toml"), HERE),
            binding=Binding.NoBinding,
            strip=Strip.Debug,
            cargo_manifest_args=["--locked"],
            rustc_flags=["-C", f"link-arg=-Wl,-soname,{_soname()}"],
        )
    ],
    cmdclass={"build_rust": build_rust, "bdist_wheel": bdist_wheel, "build_py": build_py, "sdist": sdist},
)
