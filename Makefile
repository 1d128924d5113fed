# Two commands do everything on a fresh machine with only Python and make:
#   make serve   virtualenv + `spl init` if there is no home yet + daemon on 127.0.0.1:9100
#   make test    virtualenv + ruff + mypy --strict + pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := core store runtime actors transport daemon soak cli
PORT ?= 9100

.PHONY: serve test lint types pytest bench clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	@$(BIN)/spl init --if-missing
	$(BIN)/spl serve --port $(PORT) --insecure-localhost

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES) tests
	$(BIN)/ruff format --check $(SOURCES) tests

# mypy cannot follow setuptools' editable finder, so it checks a tree of links that
# spells the `spl.*` import names (build/typecheck/spl/<folder> -> <folder>).
types: $(STAMP)
	@mkdir -p build/typecheck/spl
	@for d in $(SOURCES); do ln -sfn "$(CURDIR)/$$d" build/typecheck/spl/$$d; done
	MYPYPATH=build/typecheck $(BIN)/mypy -p spl

# Most tests wait on daemons (subprocesses) rather than compute, so four workers keep two cores busy. Whole files
# go to one worker (module-scoped daemons rely on test order), except those tests/conftest.py schedules per test.
pytest: $(STAMP)
	$(BIN)/pytest -q -n 4 --dist loadfile --durations=10

test: lint types pytest

bench: $(STAMP)
	$(BIN)/python -m spl.soak.emit_bench

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
