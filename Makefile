# spark-ext: every set-up step lives here, so a fresh machine needs only `make test`
# or `make demo`. Targets are idempotent and quiet when already done.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: all venv test unit integration demo bench bench-engine bench-server typecheck clean jar publish-local

all: venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[test,bench,zookeeper]'
	@touch $(STAMP)

venv: $(STAMP)

unit: venv
	$(PY) -m pytest -q tests

integration: venv
	@if ls integration/test_*.py >/dev/null 2>&1; then $(PY) -m pytest -q integration; \
	 else echo "integration: no integration tests yet"; fi

test: jar typecheck unit integration

jar: venv
	@bash jvm_bridge/build.sh

publish-local: jar
	@bash jvm_bridge/publish_local.sh

typecheck: venv
	$(PY) -m mypy spark_ext

demo: venv jar
	$(PY) -m spark_ext.demo

bench-engine: venv
	$(PY) -m bench.engine_bench

bench-server: venv
	@command -v redis-server >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	 $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	$(PY) -m bench.server_bench

bench-spark: venv jar
	$(PY) -m bench.spark_bench

bench: bench-engine bench-server bench-spark

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache
