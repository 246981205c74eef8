# sessiontrace: every target works on a fresh machine (Python 3.11 and Go installed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: install collector run test bench clean

install: $(VENV)/.installed collector

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

collector: bin/otelcol

bin/otelcol: collector/builder-config.yaml scripts/build-collector.sh
	bash scripts/build-collector.sh

run: install
	$(PY) -m devstack.run

test: install
	$(PY) -m pytest

# Benchmarks run in their own venv: the packages they compare against are never the service's.
BENCH_VENV := .venv-bench
BENCH_PY   := $(BENCH_VENV)/bin/python
BENCH_ARGS ?=

bench: $(BENCH_VENV)/.installed
	$(BENCH_PY) bench/processor_overhead.py $(BENCH_ARGS)

$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	echo '*' > $(BENCH_VENV)/.gitignore
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q -e . -r bench/requirements.txt
	$(BENCH_PY) -m pip check
	touch $@

clean:
	rm -rf $(VENV) bin build var
