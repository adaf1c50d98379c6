# weightzoo: `make demo` runs the main job, `make test` runs the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,distributed]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m weightzoo demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/imports.py --quick
	$(PY) benchmarks/store.py --quick
	$(PY) benchmarks/train.py --quick
	$(PY) benchmarks/metanets.py --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check weightzoo tests benchmarks

clean:
	rm -rf demo-out .pytest_cache
