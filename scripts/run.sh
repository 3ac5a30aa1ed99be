#!/usr/bin/env bash
# Runs the service on this machine: dependencies up, release build, serve.
# Usage: bash scripts/run.sh [--no-deps] [serve|migrate]
# Configuration comes from COMMERCE__* variables (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
deps=true
if [ "${1:-}" = "--no-deps" ]; then deps=false; shift; fi
addr="${COMMERCE__HTTP__ADDR:-127.0.0.1:8080}"
db="${COMMERCE__DATABASE__URL:-postgres://postgres@127.0.0.1:5432/commerce}"
admin="the development key dev-admin-key (public: set COMMERCE__AUTH__ADMIN_KEY for anything shared)"
[ -n "${COMMERCE__AUTH__ADMIN_KEY:-}" ] && admin="COMMERCE__AUTH__ADMIN_KEY"
echo "[run] what this does to this machine:"
if $deps; then
  echo "[run]   1. PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379: if missing, installs them"
  echo "[run]      with apt-get (root or sudo) and starts them; changes nothing when both already answer"
  echo "[run]      (skip this step with --no-deps)"
else
  echo "[run]   1. (skipped: --no-deps) PostgreSQL and Redis must already answer"
fi
echo "[run]   2. cargo build --release -p commerce-server (a few minutes the first time)"
echo "[run]   3. serves on http://$addr against $db"
echo "[run]      (the database is created if missing and migrated) and Redis"
echo "[run]      ${COMMERCE__REDIS__URL:-redis://127.0.0.1:6379}; admin routes take $admin"
echo "[run]   then, in another shell: bash scripts/demo.sh (demo data and tokens), or the README's quick start"
if $deps; then bash scripts/deps.sh --for-service; fi
cargo build --release -p commerce-server
exec "${CARGO_TARGET_DIR:-target}/release/commerce-server" "$@"
