# colajax: `make demo` (train the tiny model on the bundled corpus) and `make test` (the CPU test suite).
PY      := .venv/bin/python
VENV_OK := .venv/.installed
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
export PYTHONHASHSEED := 0

.PHONY: venv test test-slow test-all demo lint fmt clean

$(VENV_OK): requirements-cpu.lock setup.py
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -r requirements-cpu.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(VENV_OK)

venv: $(VENV_OK)

test: $(VENV_OK)
	$(PY) -m pytest -q

test-slow: $(VENV_OK)
	$(PY) -m pytest -q -m slow

test-all: $(VENV_OK)
	$(PY) -m pytest -q -m ''

demo: $(VENV_OK)
	$(PY) -m colajax.main demo --workdir runs/demo

lint: $(VENV_OK)
	$(PY) -m ruff check colajax experiments launch tests
	$(PY) -m ruff format --check colajax experiments launch tests

fmt: $(VENV_OK)
	$(PY) -m ruff check --fix colajax experiments launch tests
	$(PY) -m ruff format colajax experiments launch tests

clean:
	rm -rf .venv runs .pytest_cache
