#!/usr/bin/env bash
# Runs every test against real PostgreSQL and Redis (started if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# The Kafka-compatible broker the event tests start (built once, ~13 min).
if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  echo "[test] installing tansu (once)"
  cargo install --locked tansu --version 0.6.0 --no-default-features --features libsql
fi
export TANSU_BIN="${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}"
# Leftover per-test databases from an interrupted run.
psql -h 127.0.0.1 -U postgres -d postgres -tAc \
  "SELECT 'DROP DATABASE IF EXISTS \"' || datname || '\" WITH (FORCE);' FROM pg_database WHERE datname LIKE 'test\_%' OR datname LIKE 'empty\_%' OR datname LIKE 'res\_test\_%'" \
  | psql -h 127.0.0.1 -U postgres -d postgres -q >/dev/null 2>&1 || true
if command -v cargo-nextest >/dev/null 2>&1; then
  # The broker tests kill and restart tansu under a timed workload: they run
  # after the rest, alone, so the rest of the suite does not starve them.
  rc=0
  cargo nextest run --workspace --no-fail-fast -E 'not test(/kafka/)' "$@" || rc=$?
  cargo nextest run --workspace --no-fail-fast -E 'test(/kafka/)' "$@" || rc=$?
  exit "$rc"
else
  cargo test --workspace --no-fail-fast "$@"
fi
