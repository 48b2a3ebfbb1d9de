#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the persistence contract on both
# backends, and the integration tests that drive the real binary over real WebSockets
# and HTTP against PostgreSQL, SQLite, RabbitMQ and Redis.
#
# It makes sure PostgreSQL answers on 127.0.0.1:5432, RabbitMQ on 127.0.0.1:5672 and
# Redis on 127.0.0.1:6379 first, starting them (and on a bare Debian machine, as root,
# installing them) when they do not. It fails, never skips, when it cannot.
# The MongoDB adapter (the cloud profile's station mirror) is tested against SecantusDB,
# a MongoDB-wire-compatible server (GPL; a test tool, never shipped), which this script
# installs from PyPI when missing and starts on 127.0.0.1:27018 with its data in a
# temporary directory; with MONGODB_URL set, the MongoDB contract also runs against that
# real MongoDB.
# It also checks the dependencies' licences, bans and sources with cargo-deny, and
# fuzzes each parser the network reaches for FUZZ_SECS seconds (default 60) with cargo
# fuzz from its committed corpus; both tools are installed from crates.io when missing.
# JUCR_TEST_DATABASE_URL points the tests at another PostgreSQL server, and
# JUCR_TEST_REDIS_URL at another Redis (each test uses its own key prefix); the RabbitMQ
# tests make their own vhosts with rabbitmqctl (JUCR_TEST_AMQP_URL, default
# amqp://guest:guest@127.0.0.1:5672).
set -euo pipefail
cd "$(dirname "$0")/.."

export JUCR_TEST_DATABASE_URL="${JUCR_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export JUCR_TEST_REDIS_URL="${JUCR_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
SECANTUS_PORT=27018
export JUCR_TEST_MONGODB_URL="mongodb://127.0.0.1:${SECANTUS_PORT}/?directConnection=true"
FUZZ_SECS="${FUZZ_SECS:-60}"
say() { printf 'test: %s\n' "$*"; }
fail() { printf 'test: FAILED: %s\n' "$*" >&2; exit 1; }

# A cargo subcommand (cargo-$1), installed from crates.io (crate $2) when missing.
ensure_cargo_tool() {
  command -v "cargo-$1" >/dev/null 2>&1 && return 0
  say "installing $2 from crates.io"
  cargo install --locked "$2" >/tmp/jucr-install-$1.log 2>&1 \
    || { tail -n 30 "/tmp/jucr-install-$1.log" >&2; fail "could not install $2 (cargo install --locked $2)"; }
  command -v "cargo-$1" >/dev/null 2>&1 || fail "$2 installed but cargo-$1 is not on PATH"
}

pg_answers() {
  command -v psql >/dev/null 2>&1 && psql "$JUCR_TEST_DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1
}

ensure_postgres() {
  pg_answers && return 0
  say "PostgreSQL does not answer at $JUCR_TEST_DATABASE_URL; starting it"
  local installed_now=no
  if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || fail "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
    say "installing PostgreSQL from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    installed_now=yes
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ "$installed_now" = yes ]; then
    # A fresh cluster asks for passwords on TCP; the tests connect as postgres over
    # loopback without one, as on the development machines.
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  for _ in $(seq 1 60); do
    pg_answers && return 0
    sleep 0.5
  done
  fail "PostgreSQL did not come up at $JUCR_TEST_DATABASE_URL"
}

rabbit_answers() {
  command -v rabbitmqctl >/dev/null 2>&1 && timeout 30 rabbitmqctl -q status >/dev/null 2>&1
}

ensure_rabbitmq() {
  rabbit_answers && return 0
  say "RabbitMQ does not answer; starting it"
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || fail "RabbitMQ is not installed and cannot be installed here (needs root and apt-get)"
    say "installing RabbitMQ from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  rabbitmq-server -detached 2>/dev/null || true
  timeout 120 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  rabbit_answers || fail "RabbitMQ did not come up"
}

redis_answers() {
  command -v redis-cli >/dev/null 2>&1 && redis-cli -u "$JUCR_TEST_REDIS_URL" ping 2>/dev/null | grep -q PONG
}

ensure_redis() {
  redis_answers && return 0
  say "Redis does not answer at $JUCR_TEST_REDIS_URL; starting it"
  if ! command -v redis-server >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || fail "Redis is not installed and cannot be installed here (needs root and apt-get)"
    say "installing Redis from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" >/dev/null 2>&1 || true
  for _ in $(seq 1 40); do
    redis_answers && return 0
    sleep 0.25
  done
  fail "Redis did not come up at $JUCR_TEST_REDIS_URL"
}

mongo_answers() {
  python3 - "$SECANTUS_PORT" <<'PY' 2>/dev/null
import socket, struct, sys
# An OP_MSG "ping" on the MongoDB wire protocol; a server answers ok: 1.0.
body = b"\x00" + (lambda d: struct.pack("<i", len(d) + 4) + d)(
    b"\x10ping\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00")
header = struct.pack("<iiii", 16 + 4 + len(body), 1, 0, 2013)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(header + b"\x00\x00\x00\x00" + body)
reply = s.recv(4096)
sys.exit(0 if b"ok" in reply else 1)
PY
}

ensure_secantus() {
  mongo_answers && return 0
  if ! command -v secantusd-py >/dev/null 2>&1; then
    command -v pip >/dev/null 2>&1 || command -v pip3 >/dev/null 2>&1 || fail "pip is needed to install SecantusDB (the MongoDB-compatible test server)"
    say "installing SecantusDB from PyPI (the MongoDB-compatible test server)"
    "$(command -v pip || command -v pip3)" install -q SecantusDB >/dev/null || fail "could not install SecantusDB from PyPI"
    hash -r
  fi
  command -v secantusd-py >/dev/null 2>&1 || fail "SecantusDB installed but secantusd-py is not on PATH"
  secantus_dir=$(mktemp -d)
  say "starting SecantusDB on 127.0.0.1:$SECANTUS_PORT"
  nohup secantusd-py --host 127.0.0.1 --port "$SECANTUS_PORT" --storage-path "$secantus_dir" >"$secantus_dir.log" 2>&1 &
  secantus_pid=$!
  for _ in $(seq 1 80); do
    mongo_answers && return 0
    sleep 0.25
  done
  cat "$secantus_dir.log" >&2 || true
  fail "SecantusDB did not come up on 127.0.0.1:$SECANTUS_PORT"
}

secantus_pid=""
secantus_dir=""
cleanup() {
  rm -f "${log:-}"
  if [ -n "$secantus_pid" ]; then kill "$secantus_pid" 2>/dev/null || true; fi
  if [ -n "$secantus_dir" ]; then rm -rf "$secantus_dir" "$secantus_dir.log"; fi
}
trap cleanup EXIT

ensure_postgres
say "PostgreSQL answers at $JUCR_TEST_DATABASE_URL"
ensure_rabbitmq
say "RabbitMQ answers"
ensure_redis
say "Redis answers at $JUCR_TEST_REDIS_URL"
ensure_secantus
say "SecantusDB answers at $JUCR_TEST_MONGODB_URL"

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy --all-targets -D warnings"
cargo clippy --all-targets --locked -- -D warnings
say "imports run the right way between the layers"
scripts/check-layers.sh
# Licences from an allow-list, one TLS provider, crates.io only (deny.toml). The
# advisory database cannot be fetched here: docs/security.md says how deployments check.
ensure_cargo_tool deny cargo-deny
say "cargo deny check licenses bans sources"
cargo deny --locked check licenses bans sources

log=$(mktemp)
say "cargo test"
set +e
cargo test --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || { say "cargo test exited with $status"; }

# The benches, in the tests' build profile: each criterion bench once, and the fleet
# load generator's smoke run (a few hundred chargers on both profiles, zero errors and
# every meter value persisted, or it fails).
say "cargo test --benches (smoke)"
set +e
cargo test --locked --benches 2>&1 | tee -a "$log"
bench_status=${PIPESTATUS[0]}
set -e
[ "$bench_status" = 0 ] || fail "the benches' smoke run failed ($bench_status)"

# The persistence contract runs once per backend; say that both ran.
sqlite=$(grep -cE '^test contract::sqlite::[a-z_]+ \.\.\. ok$' "$log" || true)
postgres=$(grep -cE '^test contract::postgres::[a-z_]+ \.\.\. ok$' "$log" || true)
say "persistence contract: sqlite $sqlite passed, postgres $postgres passed"
[ "$status" = 0 ] || fail "cargo test exited with $status"
[ "$sqlite" -gt 0 ] && [ "$postgres" -gt 0 ] || fail "the persistence contract did not run on both backends"
[ "$sqlite" = "$postgres" ] || fail "the persistence contract ran unevenly on the two backends"
# The station store contract: SQLite, PostgreSQL and MongoDB (SecantusDB) alike.
st_sqlite=$(grep -cE '^test contract::stations::sqlite::[a-z_]+ \.\.\. ok$' "$log" || true)
st_postgres=$(grep -cE '^test contract::stations::postgres::[a-z_]+ \.\.\. ok$' "$log" || true)
st_mongodb=$(grep -cE '^test contract::stations::mongodb::[a-z_]+ \.\.\. ok$' "$log" || true)
say "station store contract: sqlite $st_sqlite, postgres $st_postgres, mongodb (SecantusDB) $st_mongodb passed"
[ "$st_sqlite" -gt 0 ] && [ "$st_sqlite" = "$st_postgres" ] && [ "$st_sqlite" = "$st_mongodb" ] \
  || fail "the station store contract did not run alike on SQLite, PostgreSQL and MongoDB"
if [ -n "${MONGODB_URL:-}" ]; then
  say "MONGODB_URL is set: the MongoDB contract and the cloud station tests against that real MongoDB"
  JUCR_TEST_MONGODB_URL="$MONGODB_URL" cargo test --locked --test api -- contract::stations::mongodb ocm_sync::cloud \
    || fail "the MongoDB adapter failed against the real MongoDB at MONGODB_URL"
fi
# Each parser the network reaches, fuzzed for FUZZ_SECS from its committed corpus (new
# inputs go to a scratch directory; a crash, a 10 s input or 2 GiB fails the run and is
# printed). Built in the fuzz crate's dev profile (optimised, without a sanitizer:
# stable Rust); libFuzzer needs a C++ compiler. FUZZ_SECS=0 leaves fuzzing out.
[[ "$FUZZ_SECS" =~ ^[0-9]+$ ]] || fail "FUZZ_SECS must be a number of seconds, not $FUZZ_SECS"
if [ "$FUZZ_SECS" -gt 0 ]; then
  ensure_cargo_tool fuzz cargo-fuzz
  if ! command -v c++ >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || fail "libFuzzer needs a C++ compiler (c++), and it cannot be installed here"
    say "installing g++ from Debian's packages (libFuzzer is C++)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
  fi
  # cargo fuzz has no --locked: check that fuzz/Cargo.lock needs no change first.
  cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null \
    || fail "fuzz/Cargo.lock is out of date (cargo update --manifest-path fuzz/Cargo.toml, then commit it)"
  say "cargo fuzz build (fuzz/)"
  cargo fuzz build --dev --sanitizer none || fail "the fuzz targets did not build"
  for target in ocpp_frame graphql_document ocm_import; do
    scratch=$(mktemp -d)
    say "cargo fuzz run $target for ${FUZZ_SECS}s"
    if ! cargo fuzz run --dev --sanitizer none "$target" "$scratch" "fuzz/corpus/$target" -- \
      -max_total_time="$FUZZ_SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="$scratch/" -print_final_stats=1 >"$scratch.log" 2>&1; then
      tail -n 40 "$scratch.log" >&2
      ls "$scratch"/crash-* "$scratch"/timeout-* "$scratch"/oom-* "$scratch"/slow-unit-* 2>/dev/null >&2 || true
      fail "fuzzing $target found a failure (above; the input is in $scratch)"
    fi
    grep -E '^stat::number_of_executed_units' "$scratch.log" | sed "s/^/test: $target: /" || true
    rm -rf "$scratch" "$scratch.log"
  done
fi
say "all passed"
