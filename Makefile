# dlbridge: the two commands users run are `make demo` and `make test`. Both install what they
# need (cbindgen at a pinned version, the nightly Miri component, a virtual environment .venv
# with pinned NumPy, PyTorch, TensorFlow (CPU), JAX and ml_dtypes, and the Python package built
# from this tree) and work on a fresh clone.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
CBINDGEN_VERSION := 0.29.4
TOOLS := build/tools
CBINDGEN := $(TOOLS)/bin/cbindgen
OFFICIAL_DLPACK := build/official-dlpack/dlpack/dlpack.h

.PHONY: all build header check-header lint demo test test-rust test-miri test-c test-python test-examples \
	python-package bench clean

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
	$(CARGO) bench --bench exchange
	$(VENV_PY) bench/copy_bench.py $(BENCH_FLAGS) --json build/bench-copy.json
	$(VENV_PY) bench/exchange_bench.py --json build/bench-exchange.json
	$(VENV_PY) bench/report.py --copy build/bench-copy.json --exchange build/bench-exchange.json

# The C tour, the Python tour and the interop matrix.
demo: build python-package
	bash examples/c/run.sh
	$(VENV_PY) -m dlbridge.tour
	$(VENV_PY) -m dlbridge.matrix

# Formatting and clippy, warnings as errors.
lint:
	rustup component add clippy rustfmt
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: check-header lint test-rust test-miri test-c test-python test-examples
	@echo "make test: every suite passed"

test-rust:
	$(CARGO) test --release

# Miri checks the unsafe code (the core's unit tests and the C-style integration tests).
test-miri:
	rustup component add --toolchain nightly miri rust-src
	MIRIFLAGS="-Zmiri-strict-provenance" $(CARGO) +nightly miri test --lib --test ffi

test-c: build $(OFFICIAL_DLPACK)
	bash tests/c/run.sh

# pytest against the installed package and the real frameworks.
test-python: python-package
	$(VENV_PY) -m pytest -q tests/python

test-examples: build python-package
	bash examples/c/run.sh > /dev/null
	$(VENV_PY) examples/python/readme_example.py > /dev/null
	bash tests/readme_check.sh

clean:
	$(CARGO) clean
	rm -rf build bindings/python/build bindings/python/*.egg-info
