# Two commands on a fresh machine: `make run` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench docs clean chaos load faultsim

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/reconguard run

test: $(STAMP)
	./scripts/system-deps.sh
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench

# Seeded faults over the separate-process topology at load; CHAOS_ARGS="--seed 2 --rounds 8" to vary.
chaos: $(STAMP)
	$(BIN)/python -m chaos $(CHAOS_ARGS)

# Seeded virtual-time runs with faults (simulation/faults.py); FAULTSIM_ARGS="--runs 100 --seed 7" to vary.
faultsim: $(STAMP)
	$(BIN)/reconguard faultsim $(FAULTSIM_ARGS)

# The whole pipeline at N accounts (bench/load.py); LOAD_ARGS="--accounts 200 500 --seconds 120" to vary.
load: $(STAMP)
	$(BIN)/python -m bench load $(LOAD_ARGS)

docs: $(STAMP)
	$(BIN)/reconguard docs

clean:
	rm -rf $(VENV) .reconguard
