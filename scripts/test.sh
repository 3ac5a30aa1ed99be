#!/usr/bin/env bash
# Runs every test against real PostgreSQL and Redis (started if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# Leftover per-test databases from an interrupted run.
psql -h 127.0.0.1 -U postgres -d postgres -tAc \
  "SELECT 'DROP DATABASE IF EXISTS \"' || datname || '\" WITH (FORCE);' FROM pg_database WHERE datname LIKE 'test\_%' OR datname LIKE 'empty\_%'" \
  | psql -h 127.0.0.1 -U postgres -d postgres -q >/dev/null 2>&1 || true
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
