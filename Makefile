# hostlife — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run demo test lint typecheck pytest bench bytecode clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@pkg-config --exists libvirt 2>/dev/null || { \
	  command -v apt-get >/dev/null || { echo "error: libvirt-dev and pkg-config are needed (libvirt-python)" >&2; exit 1; }; \
	  SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libvirt-dev pkg-config >/dev/null; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Start the Temporal dev server (SQLite under .data/, Web UI on :8233) and the worker.
run: $(STAMP) bytecode
	$(BIN)/hostlife run

## The same, with four demo services on a compressed clock (one day = 10 s).
demo: $(STAMP) bytecode
	$(BIN)/hostlife run --demo

## Benchmarks (docs/BENCHMARKS.md): each starts its own dev server and writes bench/results/.
bench: $(STAMP) bytecode
	$(BIN)/python -m bench

## Compile the project once (some machines set PYTHONDONTWRITEBYTECODE, so imports never would).
## The worker compiles the workflow modules the sandbox re-imports itself (worker.ensure_workflow_bytecode).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q policy workflows activities starter worker.py

## Lint, type-check and run the whole test suite.
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy policy workflows activities starter worker.py

pytest: $(STAMP) bytecode
	@sh scripts/install-chromium.sh
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
