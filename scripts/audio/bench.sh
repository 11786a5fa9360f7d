#!/usr/bin/env bash
# Times soundcheck's audio layer on a generated 3-minute stereo 44.1 kHz track, next to reference
# tools on the same files in the same session: ffmpeg (decode), librosa (tempo + chroma),
# pyloudnorm (integrated loudness). Prints a table for BENCHMARKS.md.
# Needs: ffmpeg (Debian), pip install librosa pyloudnorm soundfile.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cd "$root"
echo "== soundcheck (cargo bench --bench audio) =="
SOUNDCHECK_BENCH_OUT="$out" cargo bench --bench audio 2>/dev/null
echo "== references =="
for f in track.wav track.flac track.mp3; do
  best=999
  for _ in 1 2 3; do
    s=$(date +%s.%N); ffmpeg -loglevel error -threads 1 -i "$out/$f" -f f32le -y /dev/null; e=$(date +%s.%N)
    best=$(python3 -c "print(min($best, $e - $s))")
  done
  python3 -c "print(f'ffmpeg decode ${f#track.}'.ljust(34) + f'{$best*1000:9.1f} ms{180/$best:10.0f}x realtime')"
done
python3 - "$out/track.wav" <<'PY'
import sys, time
import numpy as np, soundfile as sf, librosa, pyloudnorm
path = sys.argv[1]
def best(f):
    t = []
    for _ in range(3):
        s = time.perf_counter(); f(); t.append(time.perf_counter() - s)
    return min(t)
def tempo_key():
    y, sr = librosa.load(path, sr=22050, mono=True)
    librosa.beat.beat_track(y=y, sr=sr)
    librosa.feature.chroma_stft(y=y, sr=sr)
def loud():
    d, sr = sf.read(path)
    pyloudnorm.Meter(sr).integrated_loudness(d)
for label, f in [("librosa load + beat_track + chroma", tempo_key), ("pyloudnorm integrated", loud)]:
    b = best(f)
    print(f"{label:<34}{b*1000:9.1f} ms{180/b:10.0f}x realtime")
PY
