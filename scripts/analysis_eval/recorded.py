#!/usr/bin/env python3
"""Tempo on recorded music: the Frets on Fire song packs, beside essentia.

The rest of this directory renders MIDI through synthesizers. These are eight recorded rock and
metal songs (real guitars, drums and vocals, mixed and produced) that Debian ships for the game
Frets on Fire: `fretsonfire-songs-muldjord` (4) and `fretsonfire-songs-sectoid` (4). Each song is
a backing track (`song.ogg`) and a guitar track (`guitar.ogg`) that play together, and a note
chart (`notes.mid`) whose tempo map must follow the recording for the game to work: every song's
chart holds one constant tempo, the truth used here. No key truth exists.

Per song, three 30 s excerpts of song + guitar (starting at 30%, 50% and 70% of the chart's
length, peak-normalised to -3 dBFS, 44.1 kHz stereo WAV under --out) are read by
`soundcheck analyze --json` and by essentia's `RhythmExtractor2013(method="multifeature")` (as
evaluate.py does). Tempo within 2% (acc1) and within 2% of x1, x2 or x1/2 (acc2) are counted by
excerpt and by song (a song counts for a system right on at least two of its three excerpts).
Nothing in the analyser was tuned on these songs; read it as a small third part beside the
held-out one, not a place to tune.

    apt-get install -y fretsonfire-songs-muldjord fretsonfire-songs-sectoid
    pip install -r scripts/analysis_eval/requirements.txt soundfile
    python3 scripts/analysis_eval/recorded.py --bin target/debug/soundcheck
"""
import argparse
import glob
import os
import sys

import mido
import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from evaluate import run_essentia, run_soundcheck, tempo_class  # noqa: E402

SONGS = "/usr/share/games/fretsonfire/data/songs/*/*/"
EXCERPT_S = 30.0
STARTS = (0.3, 0.5, 0.7)


def chart_tempo(path):
    """The chart's tempo (BPM) and length (s); None when it changes tempo."""
    m = mido.MidiFile(path)
    tempi = {msg.tempo for tr in m.tracks for msg in tr if msg.type == "set_tempo"}
    if len(tempi) != 1:
        return None
    return mido.tempo2bpm(tempi.pop()), m.length


def excerpts(out):
    """Writes the excerpts; returns rows (id, song, file, bpm)."""
    rows = []
    for d in sorted(glob.glob(SONGS)):
        song = os.path.basename(d.rstrip("/"))
        truth = chart_tempo(os.path.join(d, "notes.mid"))
        if truth is None:
            print(f"skip {song}: its chart changes tempo", file=sys.stderr)
            continue
        bpm, length = truth
        backing, sr = sf.read(os.path.join(d, "song.ogg"), always_2d=True)
        guitar, sr_g = sf.read(os.path.join(d, "guitar.ogg"), always_2d=True)
        if sr != sr_g:
            print(f"skip {song}: its two tracks differ in rate", file=sys.stderr)
            continue
        n = min(len(backing), len(guitar))
        mix = backing[:n] + guitar[:n]
        for k, at in enumerate(STARTS):
            s0 = int(min(at * length, n / sr - EXCERPT_S) * sr)
            x = mix[s0:s0 + int(EXCERPT_S * sr)]
            peak = np.abs(x).max()
            if peak <= 0:
                continue
            path = os.path.join(out, f"{song.replace(' ', '_')}_{k}.wav")
            if not os.path.exists(path):
                sf.write(path, x * (10 ** (-3 / 20) / peak), sr, subtype="PCM_16")
            rows.append(dict(id=f"{song}@{k}", song=song, file=path, bpm=bpm))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "soundcheck"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "analysis_eval", "recorded"))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = excerpts(args.out)
    if not rows:
        sys.exit("no songs: apt-get install fretsonfire-songs-muldjord fretsonfire-songs-sectoid")
    paths = [r["file"] for r in rows]
    sc = run_soundcheck(args.bin, paths, args.jobs)
    ess = run_essentia(paths, ["temperley"], os.path.join(args.out, "essentia_cache.json"), args.jobs)
    print("| song | truth | excerpt | soundcheck | essentia |")
    print("|---|---:|---:|---|---|")
    classes = {"soundcheck": {}, "essentia": {}}
    for r in rows:
        s, e = sc[r["file"]]["bpm"], ess[r["file"]]["bpm"]
        classes["soundcheck"][r["id"]] = tempo_class(s, r["bpm"])
        classes["essentia"][r["id"]] = tempo_class(e, r["bpm"])
        print(f"| {r['song']} | {r['bpm']:.1f} | {r['id'].rsplit('@', 1)[1]} | {s:.1f} "
              f"({classes['soundcheck'][r['id']]}) | {e:.1f} ({classes['essentia'][r['id']]}) |")
    songs = sorted({r["song"] for r in rows})
    print(f"\n{len(rows)} excerpts of {len(songs)} songs:")
    for name, c in classes.items():
        acc1 = sum(v == "exact" for v in c.values())
        acc2 = sum(v in ("exact", "double", "half") for v in c.values())
        by_song = sum(sum(c[r["id"]] == "exact" for r in rows if r["song"] == s) >= 2 for s in songs)
        print(f"  {name:10s} acc1 {acc1}/{len(rows)}  acc2 {acc2}/{len(rows)}  songs right (acc1, 2 of 3) "
              f"{by_song}/{len(songs)}")


if __name__ == "__main__":
    main()
