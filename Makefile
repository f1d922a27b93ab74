# audiopipe: two commands do all set-up on a fresh machine.
#   make run   - venv + install + offline demo data + `dvc repro` of the whole DAG + where to look
#   make test  - venv + install + the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export DVC_NO_ANALYTICS := 1
export DVC_STUDIO_OFFLINE := 1
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export PYTHONUNBUFFERED := 1

.PHONY: install run claims test lint repro browser help

help:
	@echo "make run    - install, build the offline demo data set and run the whole DVC pipeline"
	@echo "make claims - install, then train the compared variants with 3 seeds (needs make run first);"
	@echo "              table of test metrics, mean ± std, in data/claims/claims.md"
	@echo "make test   - install and run the test suite"
	@echo "make lint   - ruff + mypy"
	@echo "make mlflow-ui / make prefect-ui - local UIs on 127.0.0.1"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The report test renders a report.html (as data/evaluate/report/ holds it) in Debian's headless chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium (report rendering test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; }

test: install browser postgres
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src stages flows tests benchmarks
	$(BIN)/mypy --ignore-missing-imports --disallow-untyped-defs src

repro: install
	@test -d .dvc || $(BIN)/dvc init --quiet $$(git rev-parse --git-dir >/dev/null 2>&1 || echo --no-scm)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

run: repro
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m audiopipe.summary

# Seeded comparisons (EAT pre-trained vs random init, KD vs no KD, ATST-SED stage 2 vs 1) on the DVC outputs;
# resumable: finished runs under data/claims/ are skipped. Options: make claims CLAIMS_ARGS="--seeds 0 1 2 3".
claims: install
	$(BIN)/audiopipe claims $(CLAIMS_ARGS)

-include mk/*.mk
