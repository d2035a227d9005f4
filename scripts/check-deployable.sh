#!/usr/bin/env bash
# What `sam build` deploys is what `make lambda-build` builds and BENCHMARKS.md measures.
#
# SAM runs `cargo lambda build --release --bin <function>` from the workspace root, where cargo
# resolves features over the default members; `make lambda-build` names the three functions
# with -p. Both must resolve to the same packages with the same features for the arm64 target,
# with rustls on ring and no aws-lc-rs (the CLI's, the sandbox's and the tests' TLS stack).
# When bootstraps were built (`make lambda-build`, `make sam-build`), each must be within 8 MiB.
# Needs no build: `cargo tree` reads Cargo.lock (~2 s).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
MAX_BYTES=8388608
FUNCTIONS=(-p ferry-enqueue -p ferry-drain -p ferry-heartbeat)

resolve() {
  cargo tree --locked -e normal,build --target "$TARGET" --prefix none -f '{p} {f}' "$@" \
    | sed 's/ (\*)$//' | sort -u
}

fail() { echo "check-deployable: $*" >&2; exit 1; }

sam=$(resolve)
measured=$(resolve "${FUNCTIONS[@]}")
if [ "$sam" != "$measured" ]; then
  diff <(echo "$measured") <(echo "$sam") | sed 's/^/  /' >&2 || true
  fail "a bare build from the workspace root (what sam build runs) resolves other features than
  make lambda-build (< lambda-build, > sam build): keep Cargo.toml's default-members to the functions"
fi
if grep -Eq '^aws-lc-(rs|sys) ' <<<"$sam"; then
  fail "the Lambda bootstraps link aws-lc-rs: $(grep -E '^aws-lc-' <<<"$sam" | head -1)"
fi
grep -Eq '^rustls .*\bring\b' <<<"$sam" || fail "the Lambda bootstraps' rustls is not on ring"

shopt -s nullglob
for f in "${CARGO_TARGET_DIR:-target}"/lambda/*/bootstrap .aws-sam/build/*/bootstrap; do
  size=$(stat -c %s "$f")
  [ "$size" -le "$MAX_BYTES" ] || fail "$f: $size bytes, over the 8 MiB the functions are held to"
done
echo "check-deployable: sam build and make lambda-build resolve the same $(wc -l <<<"$sam") packages (rustls on ring, no aws-lc-rs)"
