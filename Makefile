# Swarmlab: `make demo` and `make test` set everything up from nothing (a venv in .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-sim-soak lint protos protos-check bench clean

# setup.py builds the data path's optional C extension (datapath/userspace/_speedups.c);
# without a compiler the install goes on and the data path runs pure Python (logged once).
$(STAMP): pyproject.toml setup.py controlplane/datapath/userspace/_speedups.c
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/swarmlab demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q tests

# Thousands of simulated seeds (not part of `make test`).
test-sim-soak: $(STAMP)
	SWARMLAB_SIM_SEEDS=3000 $(BIN)/python -m pytest -n 2 -q tests/sim

LINT_PATHS := controlplane tests $(wildcard bench)

lint: $(STAMP) protos-check
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy --strict controlplane

protos: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH PYTHON=$(BIN)/python tools/gen_protos.sh controlplane/pb

# Fails when the committed generated code does not match protos/.
protos-check: $(STAMP)
	@rm -rf .protos-check && mkdir -p .protos-check
	@PATH=$(abspath $(BIN)):$$PATH PYTHON=$(BIN)/python tools/gen_protos.sh .protos-check > /dev/null
	@cp controlplane/pb/__init__.py .protos-check/__init__.py
	@diff -r -x __pycache__ controlplane/pb .protos-check > /dev/null || \
		{ echo "controlplane/pb is stale: run 'make protos' and commit"; rm -rf .protos-check; exit 1; }
	@rm -rf .protos-check

# The references (etcd, Debian's docker.io) are installed when missing and we may use apt-get.
bench: $(STAMP)
	command -v etcd >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server; } || \
		echo "etcd is not installed: the benchmark runs without its reference"
	$(BIN)/python bench/raft.py
	command -v dockerd >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io; } || \
		echo "dockerd is not installed: the cluster benchmark runs without its reference"
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/gossip.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .protos-check
