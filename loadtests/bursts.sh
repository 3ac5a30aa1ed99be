#!/usr/bin/env bash
# Repeated coupon-peak bursts against a running deployment, each right after
# a ceiling burst, for A/B comparisons whose noise a single run hides.
#
#   cargo run -p loadtest --release -- coupon-peak --keep-running [--set ...] &
#   bash loadtests/bursts.sh <run dir printed by the runner> [bursts, default 5]
#
# Each burst gets a fresh 250-unit coupon (admin API). Prints, per burst, the
# ceiling p95, the issue p95, their ratio, the issued count, and the CPU each
# process group used during the scenario's k6 run, its start-up included
# (10 ms ticks).
set -euo pipefail
run_dir=$(cd "${1:?usage: bursts.sh <run dir> [bursts]}" && pwd)
bursts=${2:-5}
k6_dir="$(cd "$(dirname "$0")" && pwd)/k6"
# The admin key of this run's servers (another deployment may run beside it).
upstream=$(sed -n 's/.*server \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$run_dir/nginx/nginx.conf" 2>/dev/null | head -1)
key=""
db_url=""
for pid in $(pgrep -x commerce-server); do
  env=$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null) || continue
  if grep -qx "COMMERCE__HTTP__ADDR=$upstream" <<<"$env"; then
    key=$(sed -n 's/^COMMERCE__AUTH__ADMIN_KEY=//p' <<<"$env")
    db_url=$(sed -n 's/^COMMERCE__DATABASE__URL=//p' <<<"$env")
    break
  fi
done
[ -n "$key" ] || { echo "no commerce-server of $run_dir running" >&2; exit 1; }
front=$(sed -n 's/.*listen \(127\.0\.0\.1:[0-9]*\).*/http:\/\/\1/p' "$run_dir/nginx/nginx.conf" 2>/dev/null | head -1)
[ -n "$front" ] || { echo "no nginx.conf in $run_dir/nginx" >&2; exit 1; }
# k6 as the runner tunes it (crates/loadtest/src/k6.rs): no GC mid-burst, few
# tags, and a session (CPU scheduling group) of its own.
export GOGC="${GOGC:-off}" GOMEMLIMIT="${GOMEMLIMIT:-4GiB}"
export K6_SYSTEM_TAGS="${K6_SYSTEM_TAGS:-status,method,name,group,check,scenario,expected_response}"
# k6 where the runner puts it (`pin`).
source "$(dirname "$0")/k6-cpus.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

ticks() { # utime + stime of every process whose command line matches $1
  local t=0 p a
  for p in $(pgrep -f "$1"); do
    read -r -a a < "/proc/$p/stat" 2>/dev/null || continue
    t=$((t + a[13] + a[14]))
  done
  echo "$t"
}
snap() { echo "$(ticks commerce-server) $(ticks nginx) $(ticks postgres) $(ticks redis-server)"; }

for i in $(seq 1 "$bursts"); do
  # What autovacuum would have done after the previous burst (it is off on
  # some CI machines): without it, statistics from the empty seeded tables
  # keep cached plans scanning whole tables, and each burst is slower than
  # the one before.
  if [ -n "$db_url" ]; then
    psql "$db_url" -qc 'VACUUM (ANALYZE)' >/dev/null 2>&1 || echo "VACUUM (ANALYZE) failed; going on" >&2
  fi
  id=$(curl -sf --max-time 10 -X POST -H "x-admin-key: $key" -H 'content-type: application/json' \
    "$front/admin/coupons" \
    -d '{"name":"burst","discount_amount":1000,"quantity":250,"opens_at":"2020-01-01T00:00:00Z","expires_at":"2100-01-01T00:00:00Z"}' \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["id"])')
  echo "{\"coupon\":{\"id\":$id,\"quantity\":250}}" > "$out/data.json"
  timeout 120 setsid ${pin[@]+"${pin[@]}"} k6 run -q --summary-export "$out/c$i.json" -e BASE_URLS="$front" \
    -e CEILING_SCENARIO='{"executor":"per-vu-iterations","vus":500,"iterations":1,"maxDuration":"2m","exec":"default"}' \
    "$k6_dir/ceiling.js" >/dev/null 2>&1
  # Snapshots before k6 starts and after it ends: pgrep and /proc reads
  # in the middle of the burst would compete with it for the CPU.
  # k6's own CPU comes from `time` (its process is gone by then).
  before=$(snap)
  TIMEFORMAT='%U %S'
  { time timeout 120 setsid -w ${pin[@]+"${pin[@]}"} k6 run -q --summary-export "$out/s$i.json" -e BASE_URLS="$front" \
    -e TOKENS_FILE="$run_dir/tokens.json" -e DATA_FILE="$out/data.json" \
    "$k6_dir/coupon-peak.js" >/dev/null 2>&1 || true; } 2> "$out/t$i"
  after=$(snap)
  read -r k6u k6s < "$out/t$i"
  k6ticks=$(python3 -c "print(round(($k6u + $k6s) * 100))")
  before="0 $before"; after="$k6ticks $after"
  python3 - "$out" "$i" "$before" "$after" <<'PY'
import json, sys
out, i = sys.argv[1], sys.argv[2]
before, after = (list(map(int, a.split())) for a in sys.argv[3:5])
c = json.load(open(f"{out}/c{i}.json"))["metrics"]["live_duration"]["p(95)"]
s = json.load(open(f"{out}/s{i}.json"))["metrics"]
p = s["issue_duration"]["p(95)"]
issued = s.get("coupon_issued", {}).get("count", 0)
cpu = " ".join(f"{n}={a - b}" for n, a, b in zip(["k6", "servers", "nginx", "postgres", "redis"], after, before))
print(f"burst {i}: ceiling p95 {c:.1f} ms, issue p95 {p:.1f} ms, ratio {p / c:.2f}, issued {issued}; cpu ticks {cpu}")
PY
done
