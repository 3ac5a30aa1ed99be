#!/usr/bin/env bash
# Runs the service on this machine: dependencies up, release build, serve.
# Configuration comes from COMMERCE__* variables (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release -p commerce-server
exec "${CARGO_TARGET_DIR:-target}/release/commerce-server" "$@"
