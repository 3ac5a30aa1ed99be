#!/usr/bin/env bash
# The k6 side of coupon-peak's ratio: the scenario's script and the ceiling's
# against the same static nginx answer (no server, no database), alternately.
# Their p95 ratio is what the script itself (a POST with a bearer token, the
# checks and counters, 10 000 tokens loaded) costs over `GET /health/live`.
#
#   bash loadtests/experiments/k6-floor.sh [pairs, default 6]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
pairs=${1:-6}
source "$root/loadtests/experiments/stub-lib.sh"
stub_start "" "location / { return 409 '{\"code\":\"sold_out\",\"message\":\"sold out\"}'; }"
echo '{"coupon":{"id":1,"quantity":250}}' > "$dir/data.json"
for i in $(seq 1 "$pairs"); do
  setsid -w ${pin[@]+"${pin[@]}"} k6 run -q --summary-export "$dir/c.json" -e BASE_URLS="$base" \
    -e CEILING_SCENARIO='{"executor":"per-vu-iterations","vus":500,"iterations":1,"maxDuration":"2m","exec":"default"}' \
    "$root/loadtests/k6/ceiling.js" >/dev/null 2>&1 || true
  setsid -w ${pin[@]+"${pin[@]}"} k6 run -q --summary-export "$dir/s.json" -e BASE_URLS="$base" \
    -e TOKENS_FILE="$dir/tokens.json" -e DATA_FILE="$dir/data.json" \
    "$root/loadtests/k6/coupon-peak.js" >/dev/null 2>&1 || true
  python3 - "$dir" "$i" <<'PY'
import json, sys
d, i = sys.argv[1], sys.argv[2]
c = json.load(open(f"{d}/c.json"))["metrics"]["live_duration"]["p(95)"]
s = json.load(open(f"{d}/s.json"))["metrics"]["issue_duration"]["p(95)"]
print(f"pair {i}: ceiling script p95 {c:.1f} ms, coupon-peak script p95 {s:.1f} ms, ratio {s / c:.2f}")
PY
done
