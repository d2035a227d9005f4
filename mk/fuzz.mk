# Fuzzing the decoders that read outside input (issue #17): cargo-fuzz targets in fuzz/, a crate
# and workspace of its own built on nightly (fuzz/src/lib.rs lists the targets and what each
# reads; fuzz/run.sh runs them).
#
#   make fuzz-smoke  the core's targets for FUZZ_SMOKE_SECONDS each after one build; part of
#                    `make test` (~3-4 min on 2 cores). Fails on a panic, a leak, a hang or an
#                    allocation over the limit; the input is left in fuzz/artifacts/<target>/.
#   make fuzz        every core target for FUZZ_SECONDS each; FUZZ_CLI=1 adds the CLI's readers
#                    (checkpoint, dlq), which link the whole CLI: a long first build.
#   make fuzz-seeds  writes the committed seed corpus fuzz/corpus/ again, from Ferry's encoders
#                    and the stream fixtures.
#
# Every crash becomes a test in shared/core/tests/fuzz_regressions.rs, then gets fixed. What
# the runs find goes to fuzz/work/ (ignored), never into the committed corpus.
# cargo-fuzz and the nightly toolchain are installed on first use.

FUZZ_TARGETS := unpack item_codec classify
FUZZ_CLI_TARGETS := checkpoint dlq
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_SECONDS ?= 600
FUZZ_CLI ?=
CARGO_FUZZ := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin/cargo-fuzz

.PHONY: fuzz-tools fuzz-smoke fuzz fuzz-seeds

$(CARGO_FUZZ):
	cargo install cargo-fuzz --locked --version 0.13.2

fuzz-tools: $(CARGO_FUZZ)
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal

fuzz-smoke: fuzz-tools
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

fuzz: fuzz-tools
	FUZZ_FEATURES=$(if $(FUZZ_CLI),cli) fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS) $(if $(FUZZ_CLI),$(FUZZ_CLI_TARGETS))

fuzz-seeds: fuzz-tools
	cd fuzz && cargo +nightly run -q --example seeds
