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
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/cb; proxy_temp_path $dir/p; fastcgi_temp_path $dir/f;
  uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;
  # Half the orders win, as in the race for the last unit.
  split_clients "\${request_id}" \$won { 50% 1; * 0; }
  server {
    listen 127.0.0.1:$port backlog=8192;
    default_type application/json;
    location /health/live { return 200 '{"status":"ok"}'; }
    location ~ ^/api/v1/products/ { return 200 '{"id":1,"name":"p","price":100,"stock":1,"description":"d"}'; }
    location ~ ^/api/v1/orders/[0-9]+/payment$ { return 200 '{"order_id":1,"status":"paid","paid_amount":100,"balance":1}'; }
    location = /api/v1/orders {
      if (\$won) { return 201 '{"id":1,"status":"pending","total":100}'; }
      return 409 '{"code":"out_of_stock","message":"not enough stock"}';
    }
  }
}
CONF
nginx -c "$dir/nginx.conf"
trap 'kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
python3 -c "import json; print(json.dumps([{'user_id': i, 'token': 'x' * 180} for i in range(1, 10001)]))" > "$dir/tokens.json"
python3 -c "import json; print(json.dumps({'contention_products': list(range(1, 501)), 'products': list(range(1, 501))}))" > "$dir/data.json"
source "$root/loadtests/k6-cpus.sh"
export GOGC=off K6_SYSTEM_TAGS=status,method,name,group,check,scenario,expected_response
base="http://127.0.0.1:$port"
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
