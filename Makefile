# dlbridge: the two commands users run are `make demo` and `make test`; `make check` is the
# complete gate (make test, then Miri, ThreadSanitizer and the fuzzers) that .ci/run runs. Each
# installs what it needs (cbindgen at a pinned version, the nightly Miri component, a virtual
# environment .venv with pinned NumPy, PyTorch, TensorFlow (CPU), JAX, ml_dtypes, CMake and
# pkgconf, and the Python package built from this tree) and works on a fresh clone.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
CBINDGEN_VERSION := 0.29.4
TOOLS := build/tools
CBINDGEN := $(TOOLS)/bin/cbindgen
OFFICIAL_DLPACK := build/official-dlpack/dlpack/dlpack.h

.PHONY: all build header check-header lint demo test check test-rust test-miri test-c test-cpp test-python test-examples \
	test-python-extension test-dependent test-cuda-fake test-gpu test-stress test-tsan test-fuzz python-package bench clean

all: build

# The version, read from Cargo.toml (the only place it is written; the header's
# DLBRIDGE_VERSION_* constants are checked against it when the crate compiles).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
VERSION_MAJOR := $(word 1,$(subst ., ,$(VERSION)))
VERSION_MINOR := $(word 2,$(subst ., ,$(VERSION)))
VERSION_PATCH := $(word 3,$(subst ., ,$(VERSION)))
# SONAME policy (cargo-c's convention): the SONAME carries the part of the version whose change
# may break the ABI. From 1.0 on that is the major version (libdlbridge.so.1); for 0.y with y > 0
# it is 0.y (libdlbridge.so.0.1: every 0.y minor release may break the ABI, 0.y.z patch releases
# must not); for 0.0.z it is 0.0.z. The real file is libdlbridge.so.$(VERSION), with the links
# libdlbridge.so.$(SOVERSION) (found at run time) and libdlbridge.so (found by -ldlbridge).
SOVERSION := $(if $(filter-out 0,$(VERSION_MAJOR)),$(VERSION_MAJOR),$(if $(filter-out 0,$(VERSION_MINOR)),0.$(VERSION_MINOR),0.0.$(VERSION_PATCH)))
SONAME := libdlbridge.so.$(SOVERSION)

# The C libraries, target/release/libdlbridge.so (SONAME $(SONAME)) and libdlbridge.a. The crate
# itself is a plain Rust library (no crate-type in Cargo.toml), so a crate that depends on
# dlbridge builds only the rlib; the cdylib and the staticlib are built from it here, by cargo
# rustc --crate-type. (The Python package builds its own cdylib through setuptools-rust, with the
# same SONAME, computed by bindings/python/setup.py.) Programs linked with
# -ldlbridge record NEEDED $(SONAME), so the link target/release/$(SONAME) -> libdlbridge.so
# lets the tests and examples run from target/release with -rpath.
build:
	$(CARGO) rustc --release --lib --crate-type cdylib,staticlib -- -C link-arg=-Wl,-soname,$(SONAME)
	ln -sfn libdlbridge.so target/release/$(SONAME)

# cbindgen, pinned, installed into build/tools (not the user's ~/.cargo).
$(CBINDGEN):
	$(CARGO) install cbindgen --version $(CBINDGEN_VERSION) --locked --root $(TOOLS)

header: $(CBINDGEN)
	$(CBINDGEN) --config cbindgen.toml --crate dlbridge --output include/dlbridge.h

check-header: $(CBINDGEN)
	@$(CBINDGEN) --config cbindgen.toml --crate dlbridge --output include/dlbridge.h --verify \
	  || { echo "include/dlbridge.h is stale: run 'make header' and commit it"; exit 1; }
	@echo "include/dlbridge.h is up to date"

VENV := .venv
VENV_PY := $(VENV)/bin/python
PY_REQUIREMENTS := bindings/python/requirements-dev.txt
VENV_STAMP := $(VENV)/.requirements-installed

# The virtual environment, with every package pinned (about 7 GB: PyPI's torch is the CUDA build).
# --no-cache-dir: pip would otherwise keep another 4 GB of wheels in ~/.cache.
$(VENV_STAMP): $(PY_REQUIREMENTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-cache-dir -r $(PY_REQUIREMENTS)
	touch $@

# The package, built and installed the way users install it (pip builds the Rust library with
# setuptools-rust and ships it inside). Reinstalled every time, so it matches the tree.
python-package: $(VENV_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./bindings/python

# The distributions (build/wheelhouse): the sdist (a copy of the crate inside, see
# bindings/python/setup.py), then the wheel built from the unpacked sdist (python -m build does
# both, with .venv's pinned setuptools and setuptools-rust), tagged py3-none (one wheel for every
# CPython 3.9+) and made manylinux_<glibc>_x86_64 by auditwheel repair. make test-wheel installs
# it into a fresh venv without cargo (tests/wheel/run.sh).
WHEELHOUSE := build/wheelhouse
.PHONY: wheel test-wheel print-soname
wheel: $(VENV_STAMP)
	rm -rf build/dist $(WHEELHOUSE)
	$(VENV_PY) -m build --no-isolation --outdir build/dist bindings/python
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/auditwheel repair --wheel-dir $(WHEELHOUSE) build/dist/dlbridge-*.whl
	cp build/dist/dlbridge-*.tar.gz $(WHEELHOUSE)/
	$(VENV)/bin/auditwheel show $(WHEELHOUSE)/dlbridge-*.whl

test-wheel: wheel
	bash tests/wheel/run.sh

print-soname:
	@echo $(SONAME)

# The official dlpack.h the ABI test compares against, as the PyTorch wheel in .venv ships it
# (never committed).
$(OFFICIAL_DLPACK): $(VENV_STAMP)
	mkdir -p $(dir $@)
	cp "$$($(VENV_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch/include/ATen/dlpack.h" $@

# The benchmark suite (several minutes): the C API's fixed costs (criterion), copies and casts
# against memcpy, NumPy and PyTorch, and Python DLPack exchange; bench/report.py gathers them into
# bench/results.json and bench/results.png. BENCH_FLAGS=--max-mib=1024 adds 1 GiB copies.
BENCH_FLAGS ?=
bench: build python-package
	@mkdir -p build
	for pass in 1 2 3; do $(CARGO) bench --bench exchange -- --save-baseline pass$$pass || exit 1; done
	$(VENV_PY) bench/copy_bench.py $(BENCH_FLAGS) --json build/bench-copy.json
	$(VENV_PY) bench/exchange_bench.py --json build/bench-exchange.json
	$(VENV_PY) bench/report.py --copy build/bench-copy.json --exchange build/bench-exchange.json
	$(VENV_PY) bench/gpu_bench.py
	$(VENV_PY) bench/process_bench.py --json build/bench-process.json

# The C tour, the Python tour and the interop matrix.
demo: build python-package
	$(CARGO) run --release --features ndarray --example tour
	bash examples/c/run.sh
	$(VENV_PY) -m dlbridge.tour
	$(VENV_PY) -m dlbridge.matrix

# Formatting and clippy, warnings as errors.
lint:
	rustup component add clippy rustfmt
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	$(CARGO) clippy --lib -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --no-deps --all-features

# make test: every functional suite, the README's test command (about 8 minutes on 2 cores once
# .venv exists). make check: the complete gate that .ci/run runs, make test and then Miri,
# ThreadSanitizer and the fuzzers (about 20 minutes more).
test: check-header lint test-rust test-stress test-c test-cpp test-install test-python test-python-extension test-wheel test-cuda-fake test-examples test-dependent
	@echo "make test: every suite passed"

check: test test-miri test-tsan test-fuzz
	@echo "make check: the complete gate passed"

# Unit, integration and doc tests, with and without the ndarray feature.
test-rust:
	$(CARGO) test --release --all-features
	$(CARGO) test --release --lib

# Miri checks the unsafe code (the core's unit tests and the C-style integration tests).
test-miri:
	rustup component add --toolchain nightly miri rust-src
	MIRIFLAGS="-Zmiri-strict-provenance" $(CARGO) +nightly miri test --features ndarray --lib --test ffi --test stress --test oom

# 8 threads x 1,000,000 mixed operations on shared tensors, deleters on other threads (tests/stress.rs).
test-stress:
	DLB_STRESS_ITERATIONS=100000 $(CARGO) test --release --test stress -- --nocapture

# The fuzz targets (fuzz/: cargo-fuzz for imports, views and copies, exports; atheris for the
# Python __dlpack__ keywords), 20 seconds each from the committed seeds; `bash fuzz/run.sh 600`
# is the 10-minute run.
test-fuzz: python-package
	bash fuzz/run.sh 20

# The stress test and the C-style integration tests under ThreadSanitizer: the library and Rust's
# standard library are rebuilt instrumented (nightly, -Zbuild-std) in a target directory of their own.
TSAN_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
test-tsan:
	rustup component add --toolchain nightly rust-src
	RUSTFLAGS="-Zsanitizer=thread" CARGO_TARGET_DIR=target/tsan DLB_STRESS_ITERATIONS=5000 \
	  TSAN_OPTIONS="allocator_may_return_null=1 halt_on_error=1" \
	  $(CARGO) +nightly test -Zbuild-std --target $(TSAN_TARGET) --release --test stress --test ffi

test-c: build $(OFFICIAL_DLPACK)
	bash tests/c/run.sh
	bash tests/c/run_ipc.sh

# include/dlbridge.hpp, the header-only C++17 wrapper: tests/cpp/run.sh builds its tests with
# -Wall -Wextra -Werror -pedantic and runs them plain, under valgrind and with ASan+UBSan.
test-cpp: build $(OFFICIAL_DLPACK)
	bash tests/cpp/run.sh

# pytest against the installed package and the real frameworks.
test-python: python-package
	$(VENV_PY) -m pytest -q tests/python

# A C extension built against the package's own library (python -m dlbridge --includes --libs),
# called from Python on NumPy and PyTorch data; one libdlbridge in the process, nothing leaked.
test-python-extension: python-package
	$(VENV_PY) examples/python_extension/run.py

# tests/python/test_stress.py at the issue's size, 8 threads x 1,000,000 operations (about 20
# minutes on 2 cores; not part of `make test`, whose test-python runs it at 8 x 20,000).
.PHONY: test-python-stress
test-python-stress: python-package
	DLB_PY_STRESS_OPS=1000000 $(VENV_PY) -m pytest -q -s tests/python/test_stress.py

# The CUDA code paths without a GPU: a fake driver (tests/fake_cuda: host memory behind the driver
# entry points dlbridge calls, strict about contexts, synchronisation and leaks) stands in for
# libcuda. It proves dlbridge's logic (ownership, staging, chunking, errors, deleters), not the
# GPU. Small staging buffers make every transfer of more than 4 KiB a chunked one.
FAKE_CUDA_ENV := LD_LIBRARY_PATH=$(CURDIR)/build/fake-cuda$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} \
	DLBRIDGE_CUDA_STAGING_BYTES=4096
test-cuda-fake: python-package
	bash tests/fake_cuda/run.sh
	$(FAKE_CUDA_ENV) $(CARGO) test --release --test cuda
	$(FAKE_CUDA_ENV) $(VENV_PY) -m pytest -q tests/python/test_cuda.py
	$(FAKE_CUDA_ENV) $(CARGO) test --release --test ipc
	$(FAKE_CUDA_ENV) $(VENV_PY) -m pytest -q tests/python/test_shared_cuda.py

# The real thing, for a machine with an NVIDIA GPU and driver: the Rust CUDA tests, the C tests
# and the whole Python suite (PyTorch CUDA interop included) against the hardware.
test-gpu: build python-package $(OFFICIAL_DLPACK)
	@$(VENV_PY) -c 'import dlbridge, sys; n = dlbridge.cuda_device_count(); print(f"CUDA devices: {n}"); sys.exit(n == 0)' \
	  || { echo "make test-gpu: no CUDA device here (dlbridge.cuda_device_count() is 0)"; exit 1; }
	$(CARGO) test --release --test cuda
	bash tests/c/run.sh
	$(VENV_PY) -m pytest -q tests/python

test-examples: build python-package
	$(CARGO) run --release --features ndarray --example tour > /dev/null
	$(CARGO) run --release --example readme_example > /dev/null
	bash examples/c/run.sh > /dev/null
	$(VENV_PY) examples/python/readme_example.py > /dev/null
	bash tests/readme_check.sh

# A crate that depends on dlbridge (tests/dependent) builds and runs, and no libdlbridge.so or
# libdlbridge.a appears in its target directory (target/dependent).
test-dependent:
	bash tests/dependent/run.sh

# Installation: make install [PREFIX=/usr/local] [LIBDIR=$(PREFIX)/lib]
# [INCLUDEDIR=$(PREFIX)/include] [DESTDIR=staging root]. It installs the headers, the shared library
# as libdlbridge.so.$(VERSION) with the links $(SONAME) and libdlbridge.so, libdlbridge.a,
# LIBDIR/pkgconfig/dlbridge.pc and the CMake package LIBDIR/cmake/dlbridge (find_package(dlbridge):
# dlbridge::dlbridge and dlbridge::dlbridge_static). The .pc and CMake files locate everything
# relative to themselves (${pcfiledir}, CMAKE_CURRENT_LIST_DIR), so an installed tree can be moved.
# make uninstall (same variables) removes exactly those files.
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DESTDIR ?=
# What libdlbridge.a needs from the system when linked statically: the output of
# `cargo rustc --release --lib --crate-type staticlib -- --print native-static-libs`
# (make test-install links a program with it).
NATIVE_STATIC_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
# Relative paths (GNU realpath), computed from the final locations, not from DESTDIR.
relpath = $(shell realpath -m --relative-to='$(1)' '$(2)')
INSTALL_SED = sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@VERSION_MAJOR@|$(VERSION_MAJOR)|g' \
	-e 's|@VERSION_MINOR@|$(VERSION_MINOR)|g' -e 's|@SONAME@|$(SONAME)|g' \
	-e 's|@NATIVE_STATIC_LIBS@|$(NATIVE_STATIC_LIBS)|g' \
	-e 's|@CMAKE_NATIVE_STATIC_LIBS@|$(subst $(eval) ,;,$(patsubst -l%,%,$(NATIVE_STATIC_LIBS)))|g' \
	-e 's|@PC_PREFIX@|$(call relpath,$(LIBDIR)/pkgconfig,$(PREFIX))|g' \
	-e 's|@PC_LIBDIR@|$(call relpath,$(LIBDIR)/pkgconfig,$(LIBDIR))|g' \
	-e 's|@PC_INCLUDEDIR@|$(call relpath,$(LIBDIR)/pkgconfig,$(INCLUDEDIR))|g' \
	-e 's|@CMAKE_LIBDIR@|$(call relpath,$(LIBDIR)/cmake/dlbridge,$(LIBDIR))|g' \
	-e 's|@CMAKE_INCLUDEDIR@|$(call relpath,$(LIBDIR)/cmake/dlbridge,$(INCLUDEDIR))|g'
INSTALLED_HEADERS := dlbridge.h dlbridge.hpp

.PHONY: install uninstall test-install
install: build
	install -d '$(DESTDIR)$(INCLUDEDIR)' '$(DESTDIR)$(LIBDIR)/pkgconfig' '$(DESTDIR)$(LIBDIR)/cmake/dlbridge'
	install -m 644 include/dlbridge.h '$(DESTDIR)$(INCLUDEDIR)/dlbridge.h'
	if [ -f include/dlbridge.hpp ]; then install -m 644 include/dlbridge.hpp '$(DESTDIR)$(INCLUDEDIR)/dlbridge.hpp'; fi
	install -m 755 target/release/libdlbridge.so '$(DESTDIR)$(LIBDIR)/libdlbridge.so.$(VERSION)'
	$(if $(filter-out $(VERSION),$(SOVERSION)),ln -sfn libdlbridge.so.$(VERSION) '$(DESTDIR)$(LIBDIR)/$(SONAME)')
	ln -sfn $(SONAME) '$(DESTDIR)$(LIBDIR)/libdlbridge.so'
	install -m 644 target/release/libdlbridge.a '$(DESTDIR)$(LIBDIR)/libdlbridge.a'
	$(INSTALL_SED) install/dlbridge.pc.in > '$(DESTDIR)$(LIBDIR)/pkgconfig/dlbridge.pc'
	$(INSTALL_SED) install/dlbridgeConfig.cmake.in > '$(DESTDIR)$(LIBDIR)/cmake/dlbridge/dlbridgeConfig.cmake'
	$(INSTALL_SED) install/dlbridgeConfigVersion.cmake.in \
	  > '$(DESTDIR)$(LIBDIR)/cmake/dlbridge/dlbridgeConfigVersion.cmake'

uninstall:
	rm -f $(foreach h,$(INSTALLED_HEADERS),'$(DESTDIR)$(INCLUDEDIR)/$(h)')
	rm -f '$(DESTDIR)$(LIBDIR)/libdlbridge.so.$(VERSION)' '$(DESTDIR)$(LIBDIR)/$(SONAME)' \
	  '$(DESTDIR)$(LIBDIR)/libdlbridge.so' '$(DESTDIR)$(LIBDIR)/libdlbridge.a' \
	  '$(DESTDIR)$(LIBDIR)/pkgconfig/dlbridge.pc' \
	  '$(DESTDIR)$(LIBDIR)/cmake/dlbridge/dlbridgeConfig.cmake' \
	  '$(DESTDIR)$(LIBDIR)/cmake/dlbridge/dlbridgeConfigVersion.cmake'
	rmdir '$(DESTDIR)$(LIBDIR)/cmake/dlbridge' 2>/dev/null || true

# Programs built from an installed tree (tests/install/run.sh): a staged make install, a C program
# through pkg-config (shared and static) and a C++ program through CMake's find_package, run, then
# run again and rebuilt after the installed tree has moved. pkg-config and CMake come from .venv.
test-install: build $(VENV_STAMP)
	bash tests/install/run.sh

clean:
	$(CARGO) clean
	rm -rf build bindings/python/build bindings/python/*.egg-info
