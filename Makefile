# dlbridge: the two commands users run are `make demo` and `make test`. Both install what they
# need (cbindgen at a pinned version, the nightly Miri component, the official DLPack header the
# ABI test compares against) and work on a fresh clone.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
CBINDGEN_VERSION := 0.29.4
TORCH_WHEEL_VERSION := 2.15.0
TOOLS := build/tools
CBINDGEN := $(TOOLS)/bin/cbindgen
OFFICIAL_DLPACK := build/official-dlpack/dlpack/dlpack.h
LIB := target/release/libdlbridge.so

.PHONY: all build header check-header lint demo test test-rust test-miri test-c test-examples bench clean

all: build

build:
	$(CARGO) build --release

# cbindgen, pinned, installed into build/tools (not the user's ~/.cargo).
$(CBINDGEN):
	$(CARGO) install cbindgen --version $(CBINDGEN_VERSION) --locked --root $(TOOLS)

header: $(CBINDGEN)
	$(CBINDGEN) --config cbindgen.toml --crate dlbridge --output include/dlbridge.h

check-header: $(CBINDGEN)
	@$(CBINDGEN) --config cbindgen.toml --crate dlbridge --output include/dlbridge.h --verify \
	  || { echo "include/dlbridge.h is stale: run 'make header' and commit it"; exit 1; }
	@echo "include/dlbridge.h is up to date"

# The official dlpack.h, as the PyTorch wheel ships it (downloaded, never committed).
$(OFFICIAL_DLPACK):
	mkdir -p build/wheels $(dir $@)
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: \
	  --python-version 3.11 --platform manylinux_2_28_x86_64 \
	  torch==$(TORCH_WHEEL_VERSION) -d build/wheels
	$(PYTHON) -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('build/wheels/torch-$(TORCH_WHEEL_VERSION)-*.whl')[0]); open('$@', 'wb').write(z.read('torch/include/ATen/dlpack.h'))"

VENV := .venv
NUMPY_VERSION := 2.4.6

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet numpy==$(NUMPY_VERSION)

bench: build $(VENV)/bin/python
	$(VENV)/bin/python bench/copy_bench.py

demo: build
	bash examples/c/run.sh

# Formatting and clippy, warnings as errors.
lint:
	rustup component add clippy rustfmt
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: check-header lint test-rust test-miri test-c test-examples
	@echo "make test: every suite passed"

test-rust:
	$(CARGO) test --release

# Miri checks the unsafe code (the core's unit tests and the C-style integration tests).
test-miri:
	rustup component add --toolchain nightly miri rust-src
	MIRIFLAGS="-Zmiri-strict-provenance" $(CARGO) +nightly miri test --lib --test ffi

test-c: build $(OFFICIAL_DLPACK)
	bash tests/c/run.sh

test-examples: build
	bash examples/c/run.sh > /dev/null
	bash tests/readme_check.sh

clean:
	$(CARGO) clean
	rm -rf build
