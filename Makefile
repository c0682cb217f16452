# Hydra: the two commands are `make demo` and `make test`. Both create the venv and install first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hydra-installed
PYTEST_ARGS ?=
# TEST_PROCESSES=2 runs the suite on 2 processes (pytest-xdist): each test file stays on one, and the
# fault and cluster tests run one after another on one (tests/conftest.py). About 40% faster, but tests
# that compare workers' measured speeds can fail when the other process loads the CPU (2 of 952 did in
# one of three runs on 2026-12-04), so the default, and CI, run it in one process.
TEST_PROCESSES ?= 0
XDIST := $(if $(filter 0,$(TEST_PROCESSES)),,-n $(TEST_PROCESSES) --dist loadfile)

.PHONY: install demo up test test-fast bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Editable install: builds the Cython kernels from kernels/ in place (rebuilt when a .pyx changes).
$(STAMP): $(PY) pyproject.toml setup.cfg $(wildcard kernels/*.pyx kernels/*.pxd kernels/*.pxi kernels/*.h)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/hydra demo

up: install
	$(VENV)/bin/hydra up

test: install
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest $(XDIST) -m "not integration and not fault" $(PYTEST_ARGS)

bench: install
	$(PY) -m pip install -q -e '.[bench]'
	# each prints its targets and exits 1 when one is missed; run them all either way
	-$(PY) benchmarks/kernels.py
	-$(PY) benchmarks/overhead.py
	-$(PY) benchmarks/carbon.py

clean:
	rm -rf $(VENV) build *.egg-info hydra_tasks/*.so kernels/*.c
