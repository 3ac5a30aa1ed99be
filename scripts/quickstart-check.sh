#!/usr/bin/env bash
# Keeps the README's quick start true: starts a fresh instance with no
# configuration of its own but a port, database and Redis prefix (so the
# development admin key is what the README says), runs the README's block
# as written, checks what it promises (a paid order, a replayed retry, the
# balance charged once and paid once), then loads the demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/commerce-target}"
command -v jq >/dev/null 2>&1 || { $( [ "$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq jq >/dev/null; }
bin="${COMMERCE_SERVER_BIN:-}"
if [ -z "$bin" ]; then
  cargo build -q --release --locked -p commerce-server
  bin="$CARGO_TARGET_DIR/release/commerce-server"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
db="quickstart_$$"
prefix="quickstart:$$:"
work=$(mktemp -d)
base="http://127.0.0.1:$port"
cleanup() {
  if [ -n "${server:-}" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "$prefix*" 2>/dev/null | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "quickstart: $*"; echo "--- output"; cat "$work/out.txt" 2>/dev/null || true; echo "--- server log (tail)"; tail -20 "$work/server.log"; exit 1; }

COMMERCE__HTTP__ADDR="127.0.0.1:$port" \
COMMERCE__HTTP__WORKERS=2 \
COMMERCE__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db" \
COMMERCE__REDIS__KEY_PREFIX="$prefix" \
  env -u COMMERCE__AUTH__ADMIN_KEY -u COMMERCE__AUTH__TOKEN_SECRET "$bin" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
  curl -sf "$base/health/ready" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -sf "$base/health/ready" >/dev/null || fail "server did not become ready"
grep -q 'X-Admin-Key: dev-admin-key' "$work/server.log" || fail "the start-up warning does not print the development admin key"

# The block between the markers, pointed at this instance.
awk '/<!-- quickstart:begin -->/ {on=1; next} /<!-- quickstart:end -->/ {on=0} on && !/^```/' README.md \
  | sed "s|^H=http://127.0.0.1:8080;|H=$base;|" > "$work/quickstart.sh"
grep -q "^H=$base;" "$work/quickstart.sh" || fail "README quick start block not found or its first line changed"
echo "== README quick start ($(wc -l < "$work/quickstart.sh") lines) against $base"
bash -euo pipefail "$work/quickstart.sh" > "$work/out.txt" 2>&1 || fail "a quick-start line failed"
cat "$work/out.txt"
grep -q '"status":"paid"' "$work/out.txt" || fail "no paid order"
grep -qi '^idempotent-replayed: true' "$work/out.txt" || fail "the retried payment was not a replay"
[ "$(grep -c '"paid_amount":22000' "$work/out.txt")" = 2 ] || fail "the payment and its replay should both say 22000"
tail -1 "$work/out.txt" | grep -q '"balance":28000' || fail "balance should be 50000 - 22000 = 28000"
echo "== quick start: ok"

echo "== scripts/demo.sh"
bash scripts/demo.sh "$base" > "$work/out.txt" 2>&1 || fail "demo.sh failed"
cat "$work/out.txt"
[ "$(grep -c '^    export TOKEN_[A-Z]*=ey' "$work/out.txt")" = 3 ] || fail "demo.sh should print three tokens"
token=$(grep '^    export TOKEN_ADA=' "$work/out.txt" | cut -d= -f2)
[ "$(curl -sf "$base/api/v1/me/balance" -H "Authorization: Bearer $token" | jq .balance)" = 100000 ] \
  || fail "a demo user's token should read a balance of 100000"
echo "== demo: ok"
