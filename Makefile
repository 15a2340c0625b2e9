# Quiver's two everyday commands:  `make serve`  and  `make test`.
# Each creates .venv with python3 and installs what it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint bench bench-quick bench-foundation clean browser

# setup.py builds the C modules engine/_hnsw_walk.c, gpu/_rows.c and engine/_records.c
# (optional: without a C compiler the same searches run through faiss, numpy and Python)
BUILD_INPUTS := pyproject.toml setup.py engine/_hnsw_walk.c gpu/_rows.c engine/_records.c

$(VENV)/.runtime: $(BUILD_INPUTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(BUILD_INPUTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(VENV)/.runtime $@

# The JS client test needs Node.js; without npm it is skipped (and says so).
tests/js/node_modules/.installed: tests/js/package.json
	@if command -v npm >/dev/null 2>&1; then \
	  (cd tests/js && npm install --silent --no-audit --no-fund && touch node_modules/.installed) \
	  || echo "npm install failed: the JS client test will be skipped"; \
	else echo "npm not found: the JS client test will be skipped"; fi

serve: $(VENV)/.runtime  ## start the server on the embedded defaults (./storage, port 6333)
	$(BIN)/quiver serve $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy engine gpu snapshots api

# The dashboard's browser tests drive Debian's chromium (never a downloaded browser); where it
# cannot be installed (no apt-get, not root, no network) they are skipped, and say so.
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  >/dev/null 2>&1; } || echo "chromium not installed: the dashboard's browser tests will be skipped"

test: lint tests/js/node_modules/.installed browser  ## run the whole test suite
	$(BIN)/python -m pytest -q $(ARGS)

# The benchmark suite (bench/suite.py): every section and peer in one run, JSON + Markdown
# report + plots in bench/results/. Full <= 30 min on 2 cores, quick <= 2 min.
$(VENV)/.bench: $(VENV)/.dev
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(VENV)/.bench
	$(BIN)/python -m bench --quick $(ARGS)

bench-foundation: $(VENV)/.dev
	$(BIN)/python -m bench.foundation $(ARGS)

clean:
	rm -rf $(VENV) storage snapshots_data .pytest_cache .ruff_cache
