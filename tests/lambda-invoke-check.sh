#!/usr/bin/env bash
# Both Lambda functions, locally, the way a developer runs them: `cargo lambda watch` serves each
# one, `cargo lambda invoke --data-file tests/fixtures/...` invokes it, and the effects are read
# back from the emulators (tests/examples/lambda_stack.rs):
#
#   1. emulators on loopback: moto (SQS) and two dynoxide servers (us-east-1 = source,
#      eu-west-1 = destination), table ferry-demo in both, the buffer and its DLQ;
#   2. `cargo lambda watch -p ferry-enqueue` and `-p ferry-drain`, each on its own loopback port
#      with the env file `lambda_stack up` wrote (endpoints, FERRY_* settings);
#   3. enqueue invoked with stream-event fixtures: every answer is {"batchItemFailures":[]}, the
#      forwarded records (version and image) are on the buffer, the replicated-in one is not;
#   4. drain invoked with tests/fixtures/scheduled-event.json: its report says everything was
#      applied and deleted, the destination table holds each fixture's NewImage, the buffer and
#      the DLQ are empty.
#
# Run it through `make lambda-invoke-check` (part of `make test`): that installs cargo-lambda
# into the venv first. Every process it starts runs in a session of its own and is stopped on
# exit, whatever the exit. Logs are kept under $LOG_DIR when a step fails.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# cargo-lambda (and the zig it brings) live in the venv.
export PATH="$PWD/$VENV/bin:$PATH"
command -v cargo-lambda >/dev/null || {
  echo "cargo-lambda is not in $VENV/bin: run \`make lambda-invoke-check\`" >&2
  exit 2
}
# Never let a developer's AWS settings reach the functions: they talk to the emulators only.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_REGION AWS_ENDPOINT_URL \
  AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_SQS AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

TARGET_DIR=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferry-lambda-invoke.XXXXXX")
LOG_DIR=${LOG_DIR:-$TARGET_DIR/lambda-invoke-check}
FIXTURES=tests/fixtures
started=$(date +%s)
sessions=()

say() { echo "[lambda-invoke-check +$(($(date +%s) - started))s] $*"; }

# Starts "$@" in a new session (its pid is the session id) with output to $WORK/<name>.log.
start() {
  local name=$1
  shift
  setsid "$@" >"$WORK/$name.log" 2>&1 </dev/null &
  sessions+=("$!")
}

stop_all() {
  local sid pids
  for sid in "${sessions[@]}"; do
    # Everything still in that session: the tool and whatever it started (cargo, the function,
    # moto), whatever process groups they made.
    pids=$(ps -o pid= --sid "$sid" 2>/dev/null | tr -s ' \n' ' ' || true)
    [ -n "${pids// /}" ] && kill -TERM $pids 2>/dev/null || true
  done
  for sid in "${sessions[@]}"; do
    for _ in $(seq 50); do
      [ -z "$(ps -o pid= --sid "$sid" 2>/dev/null)" ] && break
      sleep 0.1
    done
    pids=$(ps -o pid= --sid "$sid" 2>/dev/null | tr -s ' \n' ' ' || true)
    [ -n "${pids// /}" ] && kill -KILL $pids 2>/dev/null || true
    wait "$sid" 2>/dev/null || true
  done
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM HUP
  stop_all
  if [ "$rc" -ne 0 ]; then
    rm -rf "$LOG_DIR" && mkdir -p "$LOG_DIR" && cp -r "$WORK"/. "$LOG_DIR"/ 2>/dev/null || true
    echo "lambda-invoke-check FAILED (exit $rc); logs and answers kept in $LOG_DIR:" >&2
    for f in "$WORK"/*.log; do
      [ -f "$f" ] || continue
      echo "---- $(basename "$f") (last 25 lines)" >&2
      tail -n 25 "$f" >&2
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$(($(date +%s) + $1)) what=$2
  shift 2
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

# up PORT SESSION: the port accepts connections; fails the whole run if the process is gone.
up() {
  if ! kill -0 "$2" 2>/dev/null; then
    echo "the process of session $2 exited" >&2
    exit 1
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The helper and both functions, in the dev profile in the shared target dir: after `make unit`
# (cargo test --workspace) this is a no-op, and the watches find the binaries built.
say "building the helper and the functions (dev profile)"
cargo build --quiet -p ferry-e2e --example lambda_stack
cargo build --quiet -p ferry-enqueue --bin enqueue
cargo build --quiet -p ferry-drain --bin drain

start stack "$TARGET_DIR/debug/examples/lambda_stack" up "$WORK/stack"
stack_sid=$!
ready() {
  kill -0 "$stack_sid" 2>/dev/null || { echo "lambda_stack up exited" >&2; exit 1; }
  test -f "$WORK/stack/ready"
}
wait_for 60 "the emulators (lambda_stack up)" ready
say "emulators up:"
cat "$WORK/stack.log"

ENQUEUE_PORT=$(free_port)
DRAIN_PORT=$(free_port)
# --ignore-changes: no rebuild-and-restart when someone edits the checkout mid-run.
start watch-enqueue cargo lambda watch --quiet --ignore-changes -p ferry-enqueue --bin enqueue \
  --invoke-address 127.0.0.1 --invoke-port "$ENQUEUE_PORT" --env-file "$WORK/stack/enqueue.env"
enqueue_sid=$!
start watch-drain cargo lambda watch --quiet --ignore-changes -p ferry-drain --bin drain \
  --invoke-address 127.0.0.1 --invoke-port "$DRAIN_PORT" --env-file "$WORK/stack/drain.env"
drain_sid=$!
wait_for 60 "cargo lambda watch (enqueue) on 127.0.0.1:$ENQUEUE_PORT" up "$ENQUEUE_PORT" "$enqueue_sid"
wait_for 60 "cargo lambda watch (drain) on 127.0.0.1:$DRAIN_PORT" up "$DRAIN_PORT" "$drain_sid"
say "both watches listening"

invoke() { # invoke FUNCTION PORT FIXTURE OUT
  if ! cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port "$2" --output-format json \
    --data-file "$FIXTURES/$3" "$1" >"$4" 2>"$4.err"; then
    echo "cargo lambda invoke $1 --data-file $FIXTURES/$3 failed:" >&2
    cat "$4" "$4.err" >&2
    return 1
  fi
  echo "  $1 $3 -> $(tr -s ' \n' ' ' <"$4" | head -c 200)"
}

# Forwarded: stamped local writes (an insert, a newer modify of the same key, 38-digit numbers,
# binary and sets, nested documents; two good records around three poison ones). Not forwarded:
# a record that came in from another region's drain.
ENQUEUE_FIXTURES=(insert.json modify.json number-38-digits.json binary-and-sets.json nested.json
  malformed.json replicated-in.json)
EXPECT=(
  --expect "order#1001=$FIXTURES/insert.json"
  --expect "order#1001=$FIXTURES/modify.json"
  --expect "ledger#7=$FIXTURES/number-38-digits.json"
  --expect "blob#1=$FIXTURES/binary-and-sets.json"
  --expect "doc#1=$FIXTURES/nested.json"
  --expect "item#m1=$FIXTURES/malformed.json"
  --expect "item#m2=$FIXTURES/malformed.json"
  --absent "order#2002"
)

say "invoking enqueue (cargo lambda watch on 127.0.0.1:$ENQUEUE_PORT)"
responses=()
for f in "${ENQUEUE_FIXTURES[@]}"; do
  invoke enqueue "$ENQUEUE_PORT" "$f" "$WORK/enqueue-$f.out"
  responses+=(--response "$WORK/enqueue-$f.out")
done
"$TARGET_DIR/debug/examples/lambda_stack" check-enqueue "$WORK/stack" "${responses[@]}" "${EXPECT[@]}"

say "invoking drain (cargo lambda watch on 127.0.0.1:$DRAIN_PORT)"
invoke drain "$DRAIN_PORT" scheduled-event.json "$WORK/drain.out"
"$TARGET_DIR/debug/examples/lambda_stack" check-drain "$WORK/stack" --response "$WORK/drain.out" "${EXPECT[@]}"

say "ok"
