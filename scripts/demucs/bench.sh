#!/usr/bin/env bash
# Stem separation speed and peak memory, soundcheck against PyTorch demucs in the same session
# (BENCHMARKS.md, "Stem separation"). Both run the full-size HTDemucs with the same random weights on
# the same 30 s stereo WAV, alternately; then soundcheck's engine separates a 10-minute track.
#
# Usage: scripts/demucs/bench.sh [PYTHON]
#   PYTHON           an interpreter with scripts/demucs/requirements.txt installed (default python3)
#   SEPBENCH_DIR     where the checkpoint, inputs and outputs go (default target/sepbench)
#   SEPBENCH_ROUNDS  alternating PyTorch/soundcheck pairs on the 30 s input (default 2)
#   SEPBENCH_LONG=0  skips the 10-minute run (about a quarter of an hour)
# Prints each run's JSON line, then the ratios soundcheck / PyTorch of each pair.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${1:-python3}
export SEPBENCH_DIR=${SEPBENCH_DIR:-target/sepbench}
rounds=${SEPBENCH_ROUNDS:-2}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Build first so that no compiling overlaps the timings; the reference writes the shared files.
cargo bench --bench separate --no-run
"$py" scripts/demucs/bench_reference.py --dir "$SEPBENCH_DIR" --prepare-only

echo "load before: $(uptime)"
for _ in $(seq "$rounds"); do
    "$py" scripts/demucs/bench_reference.py --dir "$SEPBENCH_DIR" | tee -a "$log"
    SEPBENCH_RUNS=30s cargo bench --bench separate 2>/dev/null | tee -a "$log"
done
echo "load after: $(uptime)"
if [ "${SEPBENCH_LONG:-1}" != 0 ]; then
    SEPBENCH_RUNS=600s cargo bench --bench separate 2>/dev/null | tee -a "$log"
    echo "load after the 10-minute run: $(uptime)"
fi

"$py" - "$log" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
torch = [r for r in runs if r["impl"] == "pytorch"]
ours = [r for r in runs if r["impl"] == "soundcheck" and r["run"] == "30s"]
for i, (t, s) in enumerate(zip(torch, ours), 1):
    print(f"pair {i}: time {s['wall_s']:.1f} s / {t['wall_s']:.1f} s = {s['wall_s'] / t['wall_s']:.2f}x, "
          f"CPU {s['cpu_s']:.1f} s / {t['cpu_s']:.1f} s = {s['cpu_s'] / t['cpu_s']:.2f}x, "
          f"peak RSS {s['peak_rss_mb']:.0f} MB / {t['peak_rss_mb']:.0f} MB = "
          f"{s['peak_rss_mb'] / t['peak_rss_mb']:.2f}x, stems differ by {s.get('max_abs_diff_vs_pytorch')}")
for r in runs:
    if r.get("run") == "600s":
        print(f"10 minutes: {r['wall_s']:.0f} s ({r['audio_s'] / r['wall_s']:.2f}x realtime), "
              f"CPU {r['cpu_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
EOF
