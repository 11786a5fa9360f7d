#!/usr/bin/env bash
# Fuzzing of issue 14, item 8: the seeded mutation fuzzer (examples/fuzz.rs) over the committed
# corpus (tests/fuzz/corpus), every target for a fixed budget, after replaying every committed
# regression input (tests/fuzz/regressions). Fails on any panic, hang (> 10 s per input), memory
# blow-up (> 1 GiB per input) or contract violation (5xx, an error without the envelope, a bad 206).
#
#   bash scripts/fuzz.sh                # 35 s per target, seed 1 (CI)
#   FUZZ_SECONDS=300 FUZZ_SEED=7 bash scripts/fuzz.sh
#
# Failing inputs are in target/fuzz/crashes/; copy them into tests/fuzz/regressions/ as
# <target>-<name> once fixed so they are replayed on every run.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-35}"
seed="${FUZZ_SEED:-1}"
out="${CARGO_TARGET_DIR:-target}/fuzz"

cargo build --locked --example fuzz || exit 1
"${CARGO_TARGET_DIR:-target}/debug/examples/fuzz" --target all --seconds "$seconds" --seed "$seed" --out "$out"
rc=$?
if [ "$rc" -ne 0 ]; then
  # The fuzzer saves what it sees fail; the input in flight when a process died is kept here too.
  mkdir -p "$out/crashes"
  for f in "$out"/current-*.bin; do
    [ -e "$f" ] || continue
    cp "$f" "$out/crashes/last-$(basename "$f")"
  done
  echo "== failing inputs (hex)"
  for f in "$out"/crashes/*; do
    [ -e "$f" ] || continue
    echo "-- $f ($(stat -c %s "$f") bytes)"
    xxd "$f" | head -32
  done
  echo "fuzz: FAILED (exit $rc); inputs in $out/crashes/"
fi
exit "$rc"
