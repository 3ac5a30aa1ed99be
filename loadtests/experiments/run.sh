#!/usr/bin/env bash
# Runs coupon-peak against a server built with one experiment patch applied,
# to see what a part of the issue path costs (loadtests/README.md, "Where
# coupon-peak's time goes"). The patches break rules on purpose (a winner
# without a row, say): they are for measuring, never for main.
#
#   bash loadtests/experiments/run.sh loadtests/experiments/no-write.patch [bursts]
#
# The patch is applied to the work tree only while the server builds, then
# reverted; crates/ must have no uncommitted changes.
set -euo pipefail
cd "$(dirname "$0")/../.."
patch=$(realpath "${1:?usage: run.sh <patch> [bursts]}")
bursts=${2:-7}
name=$(basename "$patch" .patch)
git diff --quiet -- crates || { echo "crates/ has uncommitted changes: commit or stash them first" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
bin_dir=$(mktemp -d)
git apply "$patch"
revert() {
  git apply -R "$patch"
  # A later normal build must not reuse the patched artefacts.
  touch $(git apply --numstat "$patch" | cut -f3)
}
trap revert EXIT
cargo build --release -p commerce-server
cp "$target/release/commerce-server" "$bin_dir/"
revert
trap 'rm -rf "$bin_dir"' EXIT
# Each patch reads its own switch; the others are ignored.
export HACK_LEASE=1 HACK_NOWRITE=1 HACK_SELECT1=1
set +e
cargo run -q -p loadtest --release -- coupon-peak --server-bin "$bin_dir/commerce-server" \
  --bursts "$bursts" --label "exp-$name"
rc=$?
set -e
echo "[experiment] $name: runner exit $rc (a patch that skips the write breaks rules on purpose)"
echo "[experiment] report: loadtests/reports/coupon-peak-exp-$name-$(date -u +%F).md"
