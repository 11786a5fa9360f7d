#!/usr/bin/env bash
# Renders soundcheck's committed audio fixtures (tests/fixtures/audio):
#  - six short pieces of known tempo and key, written as MIDI by make_midi.py and played by
#    FluidSynth with Debian's General MIDI soundfont, stored as mono 22.05 kHz 48 kbit/s MP3
#    (each < 200 KB);
#  - one-second tones in containers soundcheck cannot write itself (Ogg Vorbis, AAC in M4A,
#    AIFF) and one it cannot read (Opus), made by ffmpeg, for the decoder tests.
# Needs: python3, fluidsynth, fluid-soundfont-gm, ffmpeg (apt-get install fluidsynth
# fluid-soundfont-gm ffmpeg). Re-running overwrites the fixtures; renders differ slightly
# between FluidSynth versions, which the tests tolerate.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/tests/fixtures/audio"
sf2="${SOUNDFONT:-/usr/share/sounds/sf2/FluidR3_GM.sf2}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for tool in python3 fluidsynth ffmpeg; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -f "$sf2" ] || { echo "missing soundfont $sf2" >&2; exit 1; }
mkdir -p "$out"

python3 "$root/scripts/audio/make_midi.py" "$tmp" >/dev/null
for mid in "$tmp"/*.mid; do
  name="$(basename "$mid" .mid)"
  fluidsynth -ni -q -g 0.7 -r 44100 -F "$tmp/$name.wav" "$sf2" "$mid" >/dev/null
  ffmpeg -loglevel error -y -i "$tmp/$name.wav" -ac 1 -ar 22050 -codec:a libmp3lame -b:a 48k \
    -map_metadata -1 "$out/$name.mp3"
  size=$(stat -c %s "$out/$name.mp3")
  [ "$size" -lt 200000 ] || { echo "$name.mp3 is $size bytes (limit 200000)" >&2; exit 1; }
  echo "$out/$name.mp3 ($size bytes)"
done

# Format fixtures: 1 s, 440 Hz, 44.1 kHz, with a title tag where the container carries one.
tone=(-f lavfi -i "sine=frequency=440:sample_rate=44100:duration=1")
ffmpeg -loglevel error -y "${tone[@]}" -ac 2 -codec:a libvorbis -q:a 2 \
  -metadata title="Tone" -metadata artist="soundcheck" "$out/tone_440hz.ogg"
ffmpeg -loglevel error -y "${tone[@]}" -ac 2 -codec:a aac -b:a 96k \
  -metadata title="Tone" -metadata artist="soundcheck" "$out/tone_440hz.m4a"
ffmpeg -loglevel error -y "${tone[@]}" -ac 1 -codec:a pcm_s16be "$out/tone_440hz.aiff"
ffmpeg -loglevel error -y "${tone[@]}" -ac 1 -codec:a libopus -b:a 32k "$out/tone_440hz.opus"
ls -l "$out"
