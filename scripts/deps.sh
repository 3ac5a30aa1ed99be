#!/usr/bin/env bash
# Makes sure what the service and its tests need is installed and running:
# PostgreSQL and Redis on 127.0.0.1, the Rust components. Idempotent; safe to
# run on a machine that already has everything.
set -euo pipefail
# --for-service: only what one service instance needs (no max_connections
# raise: that is for the test suite's many instances).
for_service=false
[ "${1:-}" = "--for-service" ] && for_service=true

log() { echo "[deps] $*"; }
have() { command -v "$1" >/dev/null 2>&1; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

apt_install() {
  log "installing $*"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL
if ! have pg_ctlcluster && ! have pg_isready; then
  apt_install postgresql postgresql-client
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "starting PostgreSQL"
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { log "PostgreSQL is not reachable on 127.0.0.1:5432"; exit 1; }
# Trust auth for the postgres user on loopback is what the defaults assume.
psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null || {
  log "cannot connect as postgres@127.0.0.1 (trust auth expected)"; exit 1; }

# Integration tests run many server instances at once, each with a pool.
max_conn=$(psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SHOW max_connections')
if ! $for_service && [ "${max_conn:-0}" -lt 500 ]; then
  log "raising PostgreSQL max_connections from $max_conn to 500 (restart)"
  psql -h 127.0.0.1 -U postgres -d postgres -qc 'ALTER SYSTEM SET max_connections = 500'
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

# Redis
if ! have redis-server; then
  apt_install redis-server
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { log "Redis is not reachable on 127.0.0.1:6379"; exit 1; }

# `ss` (the listener test reads the accept-queue bound with it).
if ! $for_service && ! have ss; then
  apt_install iproute2
fi

# Rust components used by CI.
if ! $for_service && have rustup; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi
log "PostgreSQL and Redis are up"
