# A throwaway commerce-server for a script's checks: a free port, a database
# and Redis key prefix of its own, all removed when the script exits.
# Source it, then `instance_start NAME [env arguments...]`: the arguments go
# to env(1) before the instance's own settings (`-u VAR` to unset one,
# `VAR=value` to add one). It sets $base (the URL), $work (a temporary
# directory holding server.log) and $server (the pid). A script that wants
# files from $work before they go defines `instance_keep`.
# The binary: $COMMERCE_SERVER_BIN, else a release build.

instance_cleanup() {
  if [ -n "${server:-}" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$instance_db\" WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "$instance_prefix*" 2>/dev/null | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
  if declare -F instance_keep >/dev/null; then instance_keep || true; fi
  rm -rf "$work"
}

instance_start() {
  local name=$1 bin="${COMMERCE_SERVER_BIN:-}" port
  shift
  if [ -z "$bin" ]; then
    cargo build -q --release --locked -p commerce-server
    bin="${CARGO_TARGET_DIR:-target}/release/commerce-server"
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  instance_db="${name}_$$"
  instance_prefix="$name:$$:"
  work=$(mktemp -d)
  base="http://127.0.0.1:$port"
  trap instance_cleanup EXIT
  env "$@" \
    COMMERCE__HTTP__ADDR="127.0.0.1:$port" \
    COMMERCE__HTTP__WORKERS=2 \
    COMMERCE__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$instance_db" \
    COMMERCE__REDIS__KEY_PREFIX="$instance_prefix" \
    "$bin" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 120); do
    curl -sf "$base/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "$name: the server did not become ready"; tail -n 30 "$work/server.log"
  return 1
}
