# Two commands on a fresh machine: `make demo` and `make test`. Each builds the local virtualenv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo demo-exact test test-all lint clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,plots]'
	touch $@

# Train the VP toy (2-D mixture, MLP) on the CPU, then sample it and measure its likelihood against the exact
# density. Rerunning resumes: a finished run prints its saved evaluation (delete runs/demo/eval to redo it).
# One thread: the toy network is too small for more to help, and they contend on a shared CPU.
demo: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) main.py --mode train --config vp_toy --workdir runs/demo
	OMP_NUM_THREADS=1 $(PY) main.py --mode eval --config vp_toy --workdir runs/demo \
		--config.eval.enable_sampling=True --config.eval.enable_bpd=True

# The same mixture with its exact score instead of a network: the samplers and the likelihood alone.
demo-exact: $(VENV)/.installed
	$(PY) -m score_sde.demo --workdir runs/demo-exact

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

test-all: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(PY) -m ruff check score_sde tests benchmarks configs run_lib.py main.py preflight.py

clean:
	rm -rf $(VENV) runs
