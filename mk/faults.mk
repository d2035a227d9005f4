# The fault scenarios of issue #17, run longer than `make test` runs them, with a summary.
#
#   make faults   the kill harness (handlers aborted at random await points, and the drain as a
#                 process killed with SIGKILL) for each seed of FAULT_SEEDS at FAULT_KILL_ROUNDS
#                 rounds, then the clock jumps and the SQS fault scenarios. Each run prints one
#                 line (writes, kills, lost, divergent, DLQ); the lines are gathered at the end.
#                 ~1 min per seed at the defaults on 2 cores.
#
# `make test` runs the same tests once, with seed 17 and 12 (8 SIGKILL) rounds.

FAULT_SEEDS ?= 1 2 3 4 5
FAULT_KILL_ROUNDS ?= 40
FAULTS_LOG ?= $(or $(CARGO_TARGET_DIR),target)/faults.log

.PHONY: faults

faults:
	@mkdir -p $(dir $(FAULTS_LOG)); : > $(FAULTS_LOG)
	cargo test -p ferry-e2e --test kills --test clock_jumps --no-run
	set -e; for seed in $(FAULT_SEEDS); do \
	  FERRY_KILL_SEED=$$seed FERRY_KILL_ROUNDS=$(FAULT_KILL_ROUNDS) \
	  FERRY_SIGKILL_ROUNDS=$(FAULT_KILL_ROUNDS) RUST_LOG=error \
	    cargo test -q -p ferry-e2e --test kills -- --nocapture --test-threads 1 2>&1 \
	    | tee -a $(FAULTS_LOG); \
	done
	RUST_LOG=error cargo test -q -p ferry-e2e --test clock_jumps -- --nocapture 2>&1 | tee -a $(FAULTS_LOG)
	RUST_LOG=error cargo test -q -p ferry-drain --test sqs_faults --test hostile -- --nocapture 2>&1 \
	  | tee -a $(FAULTS_LOG)
	@echo "== faults: one line per run ($(FAULTS_LOG))"
	@grep -E '^(kills|sigkill|-60 s|\+1 day)' $(FAULTS_LOG) || true
	@! grep -qE 'test result: FAILED|panicked' $(FAULTS_LOG)
