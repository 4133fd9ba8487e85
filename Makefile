# Every target sets itself up on a fresh machine: only Python 3.11 and pip are assumed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?= --durations=30

.PHONY: install system-deps run test test-fast lint chaos soak bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages some tests need (docker-compose to validate the compose file, chromium for the
# dashboard test). Installed only when missing; skipped without root or apt.
system-deps:
	@sh scripts/system-deps.sh

run: install
	$(BIN)/twoway dev

# The API fuzz test alone (its schemathesis cases share one node id, and xdist would run one of them),
# then the rest on two pytest-xdist workers (tests marked heavy take turns on one; tests/conftest.py).
FUZZ := tests/integration/test_fuzz_api.py

test: install system-deps
	$(BIN)/pytest -q -p no:cacheprovider $(FUZZ)
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadgroup --ignore=$(FUZZ) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

chaos: install
	$(BIN)/python -m bench.chaos --duration 120

# Steady changes on every side with a fault every 3 minutes, sampled each minute (bench/README.md, "Soak").
SOAK_MINUTES ?= 30
soak: install
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES)

bench: install
	$(BIN)/python -m bench.run --out bench/results.json

clean:
	rm -rf $(VENV) .twoway
