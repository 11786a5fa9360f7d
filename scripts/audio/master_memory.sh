#!/usr/bin/env bash
# Peak memory and time of `soundcheck master` on a 10-minute 48 kHz stereo WAV (230 MB decoded),
# for one or more binaries, twice each, alternating (BENCHMARKS.md, "Mastering memory").
#   bash scripts/audio/master_memory.sh target/debug/soundcheck [other/soundcheck ...]
# Needs python3 with numpy (scripts/requirements.txt) and GNU time (/usr/bin/time).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN ...]" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir/song.wav" <<'PY'
import sys, wave
import numpy as np
rate, secs = 48_000, 600
t = np.arange(rate * secs) / rate
rng = np.random.default_rng(1)
gate = lambda phase: np.sin(2 * np.pi * 2 * t + phase) > 0.5
left = 0.3 * np.sin(2 * np.pi * 110 * t) + 0.1 * rng.standard_normal(t.size) * gate(0)
right = 0.3 * np.sin(2 * np.pi * 165 * t) + 0.1 * rng.standard_normal(t.size) * gate(1)
level = 0.5 + 0.4 * np.sin(2 * np.pi * t / 60)
pcm = (np.clip(np.stack([left * level, right * level], 1), -1, 1) * 32000).astype("<i2")
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(2)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(pcm.tobytes())
PY
for round in 1 2; do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    /usr/bin/time -f "%M %e" -o "$dir/time" "$bin" master "$dir/song.wav" -o "$dir/out$i.wav" --json > /dev/null
    read -r kb secs < "$dir/time"
    printf '%s  round %d: peak RSS %d MB, %s s\n' "$bin" "$round" $((kb / 1024)) "$secs"
  done
done
if [ $# -ge 2 ]; then
  cmp -s "$dir/out1.wav" "$dir/out2.wav" && echo "outputs 1 and 2: byte-identical" || echo "outputs 1 and 2: differ"
fi
