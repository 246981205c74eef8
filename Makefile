# sessiontrace: every target works on a fresh machine (Python 3.11 and Go installed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: install collector temporal run test typecheck lock bench clean

install: $(VENV)/.installed collector

# requirements.lock pins every transitive package (regenerate with `make lock`).
$(VENV)/.installed: pyproject.toml telemetry/pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e ./telemetry -e '.[test]'
	touch $@

collector: bin/otelcol

bin/otelcol: collector/builder-config.yaml scripts/build-collector.sh
	bash scripts/build-collector.sh

# The Temporal CLI and its dev server (Temporal schedules; tests/integration/test_temporal*.py).
# The script reuses bin/temporal while it reports the pinned version.
temporal: scripts/build-temporal.sh
	bash scripts/build-temporal.sh

run: install
	$(PY) -m devstack.run

test: install temporal
	$(PY) -m pytest

# One mypy run per folder: the test folders each have a conftest.py.
typecheck: install
	for d in telemetry/sessiontrace service devstack tests/conftest.py tests/unit tests/api tests/integration; do \
		$(PY) -m mypy --strict $$d || exit 1; done

lock: $(VENV)/.installed
	$(PY) -m pip freeze --exclude-editable | sort > requirements.lock

# Benchmarks run in their own venv: the packages they compare against are never the service's.
BENCH_VENV := .venv-bench
BENCH_PY   := $(BENCH_VENV)/bin/python
BENCH_ARGS ?=

bench: $(BENCH_VENV)/.installed collector bin/telemetrygen
	$(BENCH_PY) bench/processor_overhead.py $(BENCH_ARGS)
	$(BENCH_PY) bench/encoder_overhead.py $(BENCH_ARGS)
	$(BENCH_PY) bench/trace_bytes.py $(BENCH_ARGS)
	$(BENCH_PY) bench/instrumentation_overhead.py $(BENCH_ARGS)
	$(BENCH_PY) bench/service_overhead.py $(BENCH_ARGS)
	$(BENCH_PY) bench/service_peers.py $(BENCH_ARGS)
	$(BENCH_PY) bench/pipeline_throughput.py $(BENCH_ARGS)
	$(BENCH_PY) bench/pipeline_load.py $(BENCH_ARGS)
	$(BENCH_PY) bench/pipeline_soak.py $(BENCH_ARGS)

# The pipeline benchmarks' load generator (Go, from the Go module proxy; the collector's release).
bin/telemetrygen: scripts/build-telemetrygen.sh
	bash scripts/build-telemetrygen.sh

$(BENCH_VENV)/.installed: pyproject.toml telemetry/pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	echo '*' > $(BENCH_VENV)/.gitignore
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q -e ./telemetry -e . -r bench/requirements.txt
	$(BENCH_PY) -m pip check
	touch $@

clean:
	rm -rf $(VENV) bin build var
