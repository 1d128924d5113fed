# Two commands do everything on a fresh machine with only Python and make:
#   make serve   virtualenv + `spl init` if there is no home yet + daemon on 127.0.0.1:9100
#   make test    virtualenv + ruff + mypy --strict + pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := core store runtime actors transport daemon soak cli
PORT ?= 9100

.PHONY: serve test lint types pytest bench clean venv browser

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

# The browser test (tests/e2e/test_ui_browser.py) needs Debian's chromium and chromedriver. Installing them takes
# ~25 s, so it runs in the background while lint and types run, and pytest starts once all three are done.
test: $(STAMP)
	@mkdir -p build
	@$(MAKE) --no-print-directory browser > build/browser-install.log 2>&1 & installing=$$!; \
	$(MAKE) --no-print-directory lint types; checked=$$?; \
	wait $$installing; cat build/browser-install.log; exit $$checked
	@$(MAKE) --no-print-directory pytest

# Installs chromium + chromedriver with apt-get when they are missing and we are root; never fails the build:
# without them the browser test skips and says why.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@mkdir -p build; if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
	  echo "browser: /usr/bin/chromium and /usr/bin/chromedriver are installed"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: no /usr/bin/chromium and no apt-get: the browser test will skip"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "browser: no /usr/bin/chromium and not root: the browser test will skip" \
	       "(install it yourself: sudo apt-get install -y $(BROWSER_PACKAGES))"; \
	else \
	  echo "browser: apt-get install -y $(BROWSER_PACKAGES)"; \
	  if DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PACKAGES) >build/apt-get.log 2>&1 || \
	     { echo "browser: apt-get update, then again"; apt-get update -q >>build/apt-get.log 2>&1; \
	       DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PACKAGES) >>build/apt-get.log 2>&1; }; then \
	    echo "browser: installed"; \
	  else \
	    echo "browser: apt-get failed (see build/apt-get.log): the browser test will skip"; \
	  fi; \
	fi

bench: $(STAMP)
	$(BIN)/python -m spl.soak.emit_bench

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
