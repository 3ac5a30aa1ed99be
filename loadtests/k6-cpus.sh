# Sourced by the load-test shell scripts: sets `pin`, the command prefix that
# puts k6 where the runner's `--k6-cpus` does (crates/loadtest/src/k6.rs).
# K6_CPUS=half (default) takes the first half, rounded up, of the CPUs this
# shell may use; K6_CPUS=all shares every CPU; K6_CPUS=0,2 picks them.
pin=()
case "${K6_CPUS:-half}" in
  all) ;;
  half)
    half=$(python3 -c 'import os; c = sorted(os.sched_getaffinity(0)); print(",".join(map(str, c[:(len(c) + 1) // 2])) if len(c) > 1 else "")')
    if [ -n "$half" ]; then pin=(taskset -c "$half"); fi
    ;;
  *) pin=(taskset -c "$K6_CPUS") ;;
esac
