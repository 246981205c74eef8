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

clean:
	rm -rf $(VENV) bin build var
