#!/usr/bin/env bash
# The API contract against a running instance (issue 27): the OpenAPI
# description is valid 3.1; schemathesis (every check, stateful phase on,
# authenticated through the declared schemes, then without credentials)
# finds nothing; a client generated from the description pages products.
# Bounded: about two minutes. Exceptions: scripts/contract/schemathesis.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/commerce-target}"
fuzz_secs="${CONTRACT_FUZZ_SECS:-70}"
anon_secs="${CONTRACT_ANON_SECS:-20}"
for tool in openapi-spec-validator schemathesis openapi-python-client; do
  python3 -m pip show -q "$tool" >/dev/null 2>&1 || python3 -m pip install -q "$tool"
done
reports="${CONTRACT_REPORT_DIR:-$CARGO_TARGET_DIR/contract-report}"
rm -rf "$reports"
admin_key="contract-admin-$$-$RANDOM"
# Kept for a look after the run: outputs, junit reports, the server log.
instance_keep() {
  mkdir -p "$reports" && cp -r "$work"/*.txt "$work"/*.log "$work"/auth "$work"/anon "$reports"/ 2>/dev/null
}
# shellcheck source=scripts/lib/instance.sh
. scripts/lib/instance.sh
instance_start contract \
  COMMERCE__AUTH__ADMIN_KEY="$admin_key" \
  COMMERCE__AUTH__TOKEN_SECRET="contract-token-secret-$$-$RANDOM" \
  COMMERCE__LOG__LEVEL=error

echo "== openapi-spec-validator"
python3 scripts/contract/validate_spec.py "$base/openapi.json"

# A user for bearer operations, and something for the links to reach.
token=$(curl -sf -X POST "$base/api/v1/users" -H 'Content-Type: application/json' -d '{"name":"fuzzer"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
for i in 1 2 3; do
  curl -sf -X POST "$base/admin/products" -H "X-Admin-Key: $admin_key" -H 'Content-Type: application/json' \
    -d "{\"name\":\"seed $i\",\"price\":100,\"stock\":1000}" >/dev/null
done
curl -sf -X POST "$base/admin/coupons" -H "X-Admin-Key: $admin_key" -H 'Content-Type: application/json' \
  -d '{"name":"seed","discount_amount":10,"quantity":100000,"opens_at":"2020-01-01T00:00:00Z"}' >/dev/null
curl -sf -X POST "$base/api/v1/me/balance/charge" -H "Authorization: Bearer $token" -H "Idempotency-Key: seed-charge-$$" -H 'Content-Type: application/json' \
  -d '{"amount":100000000}' >/dev/null

requests() {
  curl -sf "$base/metrics" | awk '/^http_requests_total/ { n += $NF } END { printf "%d\n", n }'
}
before=$(requests)
rc=0
echo "== schemathesis, authenticated (all checks, stateful phase; ${fuzz_secs}s)"
# schemathesis keeps a cache in its working directory: the run's own.
cd "$work"
COMMERCE_FUZZ_TOKEN="$token" COMMERCE_FUZZ_ADMIN_KEY="$admin_key" \
  st --config-file "$here/scripts/contract/schemathesis.toml" run "$base/openapi.json" \
  --checks all --phases examples,coverage,fuzzing,stateful --max-time "$fuzz_secs" \
  --report junit --report-dir "$work/auth" >"$work/auth.txt" 2>&1 || rc=1
tail -n 25 "$work/auth.txt"
echo "== schemathesis, no credentials (${anon_secs}s)"
sed '/^\[auth/,/^$/d' "$here/scripts/contract/schemathesis.toml" >"$work/anon.toml"
st --config-file "$work/anon.toml" run "$base/openapi.json" \
  --checks all --phases examples,coverage,fuzzing,stateful --max-time "$anon_secs" \
  --report junit --report-dir "$work/anon" >"$work/anon.txt" 2>&1 || rc=1
tail -n 12 "$work/anon.txt"
after=$(requests)
ops=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(len(v) for v in d["paths"].values()))' <(curl -sf "$base/openapi.json"))
cd "$here"
echo "== schemathesis: $((after - before)) requests to the server, $ops operations described"
if [ "$rc" -ne 0 ]; then
  echo "schemathesis found failures (full output above and in the junit reports)"
  sed -n '/FAILURES\|ERRORS/,/SUMMARY/p' "$work/auth.txt" "$work/anon.txt" | head -n 200
  exit 1
fi

echo "== generated client (openapi-python-client) pages products"
curl -sf "$base/openapi.json" >"$work/openapi.json"
printf '{"project_name_override": "commerce-client", "package_name_override": "commerce_client"}\n' >"$work/client.json"
(cd "$work" && openapi-python-client generate --path openapi.json --output-path client --config client.json >/dev/null)
python3 "$here/scripts/contract/client_pages.py" "$base" "$work/client" "$admin_key"
