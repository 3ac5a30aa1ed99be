# Sourced by the load-test shell scripts: sets `pin`, the command prefix that
# puts k6 where the runner's `--k6-cpus` and `--k6-nice` do
# (crates/loadtest/src/k6.rs). Use it right after `setsid`, so that the
# priority goes to k6's own session (its scheduling group).
# K6_CPUS=half (default) takes the first half, rounded up, of the CPUs this
# shell may use; K6_CPUS=all shares every CPU; K6_CPUS=0,2 picks them.
# K6_NICE=-10 (default) runs k6 ahead of the service (needs root; 0 leaves it).
pin=()
case "${K6_CPUS:-half}" in
  all) ;;
  half)
    half=$(python3 -c 'import os; c = sorted(os.sched_getaffinity(0)); print(",".join(map(str, c[:(len(c) + 1) // 2])) if len(c) > 1 else "")')
    if [ -n "$half" ]; then pin=(taskset -c "$half"); fi
    ;;
  *) pin=(taskset -c "$K6_CPUS") ;;
esac
k6_nice=${K6_NICE:--10}
if [ "$k6_nice" != 0 ]; then
  # The session's group weight (autogroup) and the process's own nice; best effort.
  pin=(sh -c 'echo "$0" > /proc/self/autogroup 2>/dev/null; renice -n "$0" -p $$ >/dev/null 2>&1; exec "$@"' "$k6_nice" ${pin[@]+"${pin[@]}"})
fi
