#!/usr/bin/env bash
# The k6 side of contention's ratio: the contention script (product page,
# order, and for about half the VUs a payment) and the ceiling's
# `GET /health/live`, both against static nginx answers (no server, no
# database), alternately. Their order p95 / ceiling p95 is what the
# scenario's own requests cost k6 and the proxy over the ceiling's one GET:
# the floor under contention's ratio on this machine.
#
#   bash loadtests/experiments/contention-floor.sh [pairs, default 5]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
pairs=${1:-5}
source "$root/loadtests/experiments/stub-lib.sh"
# Half the orders win, as in the race for the last unit.
stub_start 'split_clients "${request_id}" $won { 50% 1; * 0; }' "
    location ~ ^/api/v1/products/ { return 200 '{\"id\":1,\"name\":\"p\",\"price\":100,\"stock\":1,\"description\":\"d\"}'; }
    location ~ ^/api/v1/orders/[0-9]+/payment\$ { return 200 '{\"order_id\":1,\"status\":\"paid\",\"paid_amount\":100,\"balance\":1}'; }
    location = /api/v1/orders {
      if (\$won) { return 201 '{\"id\":1,\"status\":\"pending\",\"total\":100}'; }
      return 409 '{\"code\":\"out_of_stock\",\"message\":\"not enough stock\"}';
    }"
python3 -c "import json; print(json.dumps({'contention_products': list(range(1, 501)), 'products': list(range(1, 501))}))" > "$dir/data.json"
for i in $(seq 1 "$pairs"); do
  setsid -w ${pin[@]+"${pin[@]}"} k6 run -q --summary-export "$dir/c.json" -e BASE_URLS="$base" \
    -e CEILING_SCENARIO='{"executor":"per-vu-iterations","vus":1000,"iterations":1,"maxDuration":"2m","exec":"default"}' \
    "$root/loadtests/k6/ceiling.js" >/dev/null 2>&1 || true
  setsid -w ${pin[@]+"${pin[@]}"} k6 run -q --summary-export "$dir/s.json" -e BASE_URLS="$base" \
    -e TOKENS_FILE="$dir/tokens.json" -e DATA_FILE="$dir/data.json" \
    "$root/loadtests/k6/contention.js" >/dev/null 2>&1 || true
  python3 - "$dir" "$i" <<'PY'
import json, sys
d, i = sys.argv[1], sys.argv[2]
c = json.load(open(f"{d}/c.json"))["metrics"]["live_duration"]["p(95)"]
m = json.load(open(f"{d}/s.json"))["metrics"]
s = m["order_duration"]["p(95)"]
won = m.get("order_won", {}).get("count", 0)
print(f"pair {i}: ceiling p95 {c:.1f} ms, contention order p95 {s:.1f} ms, ratio {s / c:.2f} ({won} won)")
PY
done
