# `make demo` and `make test` work on a fresh machine: each creates .venv with Python 3.12 when
# missing, installs the project with its dev extra, then runs.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The first Python 3.12 that really runs (a pyenv shim named python3.12 may exist but fail).
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 \
	/root/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 \
	&& { echo "$$p"; break; }; done)
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON312)" || { echo "error: Python 3.12 not found (set PYTHON312=/path/to/python3.12)"; exit 1; }
	@test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.induction_heads --config=configs/induction_heads.py --workdir=workdirs/induction_heads

# Two passes: the tests that build 8-device meshes in-process (marked `mesh`), then the rest on
# one CPU device (cheaper to compile and run; see tests/conftest.py). Each pass fails on no tests.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile --durations=10 -m mesh $(PYTEST_ARGS)
	JAXINTERP_TEST_CPU_DEVICES=1 $(PY) -m pytest -n 2 --dist loadfile --durations=25 \
		-m "not mesh" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check jaxinterp experiments tests configs

bench: $(STAMP)
	$(PY) -m experiments.benchmarks.intervention_overhead
	$(PY) -m experiments.benchmarks.train_throughput
	$(PY) -m experiments.benchmarks.patching_speed
	$(PY) -m experiments.benchmarks.generation_speed
	$(PY) -m experiments.benchmarks.kan_speed
	$(PY) -m experiments.benchmarks.sae_topk_speed
	$(PY) -m experiments.benchmarks.sae_sweep_speed

clean:
	rm -rf $(VENV) .pytest_cache
