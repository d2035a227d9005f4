#!/usr/bin/env bash
# Runs fuzz targets for a bounded time each, after one build: `fuzz/run.sh SECONDS TARGET...`
# (mk/fuzz.mk: `make fuzz-smoke`, `make fuzz`). Needs cargo-fuzz and a nightly toolchain
# (`make fuzz-tools` installs both). FUZZ_FEATURES=cli builds the CLI's targets too.
#
# Each target starts from the committed seeds (fuzz/corpus/<target>, only read) and what earlier
# runs on this machine found (fuzz/work/corpus/<target>, where new inputs go). A panic, a leak,
# an input taking over FUZZ_TIMEOUT seconds, or one allocation over FUZZ_MALLOC_MB stops it
# and fails the run, the input left in fuzz/artifacts/<target>/ (reproduce:
# `cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/<file>`).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:?usage: run.sh SECONDS TARGET...}
shift
timeout_s=${FUZZ_TIMEOUT:-10}
malloc_mb=${FUZZ_MALLOC_MB:-64}
build=(--codegen-units 16)
if [[ -n "${FUZZ_FEATURES:-}" ]]; then
  build+=(--features "$FUZZ_FEATURES")
fi

# libFuzzer itself is C++ that libfuzzer-sys compiles in every clean build (~80 s on 2 cores):
# kept from the first build, per libfuzzer-sys version, and linked from there afterwards.
version=$(awk '/^name = "libfuzzer-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ferry-fuzz/libfuzzer-sys-$version"
if [[ -f "$cache/libfuzzer.a" ]]; then
  export CUSTOM_LIBFUZZER_PATH="$cache/libfuzzer.a"
fi

# Per target: the largest input (a body's bomb needs tens of KB), and a dictionary.
options() {
  case $1 in
    unpack) echo "-max_len=65536" ;;
    item_codec) echo "-max_len=4096" ;;
    classify) echo "-max_len=16384 -dict=dicts/classify.dict" ;;
    checkpoint) echo "-max_len=8192" ;;
    dlq) echo "-max_len=65536" ;;
    *) echo "run.sh: unknown target $1" >&2; return 1 ;;
  esac
}

start=$SECONDS
cargo +nightly fuzz build "${build[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

if [[ -z "${CUSTOM_LIBFUZZER_PATH:-}" ]]; then
  target_dir=${CARGO_TARGET_DIR:-target}
  built=$(ls -t "$target_dir"/*/release/build/libfuzzer-sys-*/out/libfuzzer.a 2>/dev/null | head -1 || true)
  if [[ -n "$built" ]]; then
    mkdir -p "$cache" && cp "$built" "$cache/libfuzzer.a"
  fi
fi

mkdir -p work
for target in "$@"; do
  opts=$(options "$target")
  mkdir -p "work/corpus/$target"
  log="work/$target.log"
  # shellcheck disable=SC2086 # the options are words
  if ! cargo +nightly fuzz run "${build[@]}" "$target" "work/corpus/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout="$timeout_s" -malloc_limit_mb="$malloc_mb" \
    -print_final_stats=1 $opts >"$log" 2>&1; then
    tail -n 150 "$log"
    echo "fuzz: $target FAILED (whole log: fuzz/$log; input: fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  echo "fuzz: $target: ${runs:-?} inputs in ${seconds} s (${rate:-?}/s), no crash"
done
echo "fuzz: done in $((SECONDS - start)) s"
