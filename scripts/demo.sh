#!/usr/bin/env bash
# Loads demo data into a running instance through its own API, then prints
# what to try: products, an open first-come coupon, a flash-sale product,
# three users with money on their balance and their bearer tokens.
# Usage: bash scripts/demo.sh [base-url]   (default http://127.0.0.1:8080)
# The admin key comes from COMMERCE__AUTH__ADMIN_KEY, else the development
# key the binary uses when none is set (dev-admin-key). Needs curl and jq.
set -euo pipefail
H="${1:-${COMMERCE_URL:-http://127.0.0.1:8080}}"
ADMIN="X-Admin-Key: ${COMMERCE__AUTH__ADMIN_KEY:-dev-admin-key}"
JSON='Content-Type: application/json'
command -v jq >/dev/null || { echo "demo: needs jq (apt-get install jq)"; exit 1; }
curl -sf "$H/health/live" >/dev/null || { echo "demo: no server answers at $H (start it: bash scripts/run.sh)"; exit 1; }
run=$(date +%s)

post() { # path, header, body: prints the answer, fails loudly on a non-2xx
  local out status extra=()
  [ -n "${4:-}" ] && extra=(-H "$4")
  out=$(curl -s -w '\n%{http_code}' -X POST "$H$1" -H "$2" -H "$JSON" "${extra[@]}" -d "$3")
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  [[ $status == 2* ]] || { echo "demo: POST $1 answered $status $out" >&2; exit 1; }
  echo "$out"
}

echo "Products:"
for p in 'Mechanical keyboard|Tenkeyless, brown switches|12000|100' \
         'Wireless mouse|Two buttons and a wheel|4500|250' \
         'USB-C hub|Seven ports|8900|80' \
         'Flash-sale headphones|Limited: 50 units at this price|9900|50'; do
  IFS='|' read -r name description price stock <<<"$p"
  body=$(jq -nc --arg n "$name" --arg d "$description" --argjson p "$price" --argjson s "$stock" \
    '{name: $n, description: $d, price: $p, stock: $s}')
  post /admin/products "$ADMIN" "$body" | jq -r '"  #\(.id) \(.name): price \(.price), stock \(.stock)"'
done

echo "Coupon (open now, first come, 100 of them):"
opens=$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:%SZ)
coupon=$(post /admin/coupons "$ADMIN" \
  "{\"name\": \"Welcome 2000 off\", \"discount_amount\": 2000, \"quantity\": 100, \"opens_at\": \"$opens\"}")
coupon_id=$(jq -r .id <<<"$coupon")
jq -r '"  #\(.id) \(.name): \(.discount_amount) off, \(.quantity) of them"' <<<"$coupon"

echo "Users (balance 100000 each):"
for name in ada grace linus; do
  user=$(post /api/v1/users "$JSON" "{\"name\": \"$name-$run\"}")
  token=$(jq -r .token <<<"$user")
  post /api/v1/me/balance/charge "Authorization: Bearer $token" '{"amount": 100000}' \
    "Idempotency-Key: demo-charge-$run" >/dev/null
  echo "  #$(jq -r .id <<<"$user") $name-$run"
  echo "    export TOKEN_${name^^}=$token"
done
cat <<MSG

Paste the export lines above into your shell, then try, as ada (admin key: ${ADMIN#X-Admin-Key: }):
  curl -s -X POST $H/api/v1/coupons/$coupon_id/issue -H "Authorization: Bearer \$TOKEN_ADA"
  curl -s $H/api/v1/me/coupons -H "Authorization: Bearer \$TOKEN_ADA"
  curl -s -X POST $H/api/v1/orders -H "Authorization: Bearer \$TOKEN_ADA" -H '$JSON' \\
    -H "Idempotency-Key: \$(date +%s%N)" -d '{"items": [{"product_id": <id>, "quantity": 1}], "user_coupon_id": <user_coupon_id>}'
The API page: $H/docs
MSG
