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
fail() { echo "quickstart: $*"; echo "--- output"; cat "$work/out.txt" 2>/dev/null || true; echo "--- server log (tail)"; tail -20 "$work/server.log"; exit 1; }
# shellcheck source=scripts/lib/instance.sh
. scripts/lib/instance.sh
# No credentials of its own: the development key the README names.
instance_start quickstart -u COMMERCE__AUTH__ADMIN_KEY -u COMMERCE__AUTH__TOKEN_SECRET
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
