# colajax: `make demo` (train the tiny model on the bundled corpus) and `make test` (the CPU test suite).
PY      := .venv/bin/python
VENV_OK := .venv/.installed
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
export PYTHONHASHSEED := 0

.PHONY: venv test test-slow test-all demo sweep-demo lint fmt clean

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

SWEEP := experiments/sweep_cpu.py
sweep-demo: $(VENV_OK)  # three families x 4 budgets + a 3 x 3 Cola IsoFLOP grid (CPU, < 30 min)
	$(PY) -m colajax.main sweep plan $(SWEEP)
	$(PY) -m colajax.main sweep run $(SWEEP) --local
	$(PY) -m colajax.main sweep eval $(SWEEP) --limit 48 --max-new-tokens 12 --no-progress
	$(PY) -m colajax.main sweep report $(SWEEP)

lint: $(VENV_OK)
	$(PY) -m ruff check colajax experiments launch tests
	$(PY) -m ruff format --check colajax experiments launch tests

fmt: $(VENV_OK)
	$(PY) -m ruff check --fix colajax experiments launch tests
	$(PY) -m ruff format colajax experiments launch tests

clean:
	rm -rf .venv runs .pytest_cache
