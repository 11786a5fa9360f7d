#!/usr/bin/env python3
"""Note accuracy on music nobody here wrote: Bach chorales (public domain, from music21's corpus) rendered
through FluidSynth, transcribed by soundcheck and by the basic-pitch Python package, scored with mir_eval.

    apt-get install -y fluidsynth fluid-soundfont-gm
    pip install --no-deps basic-pitch==0.4.0 && pip install -r scripts/basic_pitch/requirements.txt
    cargo build --release --example transcribe_file
    python scripts/basic_pitch/accuracy.py [--out DIR] [--check]

CI runs it with `--bin target/debug/examples/transcribe_file --check` (the example `cargo test` built).

For each chorale: music21 writes the score as MIDI (default tempo, piano), which is the ground truth (its
notes, read back with pretty_midi; unisons of two voices merged) and what FluidSynth renders with the GM SoundFont at 22,050 Hz. The
render is mixed to mono and written as 16-bit PCM; both transcribers read that file (soundcheck through
`examples/transcribe_file.rs`, the reference through `basic_pitch.inference.predict` on onnxruntime), both
with the default options. Scores: `mir_eval.transcription.precision_recall_f1_overlap`, onset tolerance
50 ms, offsets ignored; also soundcheck scored against the reference's notes (their agreement).
Prints a Markdown table (the one in BENCHMARKS.md).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import mir_eval
import numpy as np
import pretty_midi
from scipy.io import wavfile

from basic_pitch import ICASSP_2022_MODEL_PATH
from basic_pitch import inference

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SR = 22_050
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
# Five four-part chorales of varied keys, metres and lengths.
CHORALES = ["bach/bwv66.6", "bach/bwv269", "bach/bwv347", "bach/bwv153.1", "bach/bwv86.6"]


def render(name: str, tmp: str):
    """Score → MIDI (ground truth) → FluidSynth → mono 16-bit WAV at 22,050 Hz. Returns (wav, truth)."""
    from music21 import corpus

    stem = name.replace("/", "_")
    mid = os.path.join(tmp, f"{stem}.mid")
    corpus.parse(name).write("midi", fp=mid)
    stereo = os.path.join(tmp, f"{stem}.stereo.wav")
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SR), "-F", stereo, SOUNDFONT, mid],
                   check=True, stdout=subprocess.DEVNULL)
    sr, y = wavfile.read(stereo)
    assert sr == SR, sr
    y = y.astype(np.float64)
    if y.ndim == 2:
        y = y.mean(axis=1)
    wav = os.path.join(tmp, f"{stem}.wav")
    wavfile.write(wav, SR, np.clip(np.round(y), -32768, 32767).astype(np.int16))
    # Two voices on the same pitch at the same time sound as one note: keep the longest of them.
    longest = {}
    for inst in pretty_midi.PrettyMIDI(mid).instruments:
        for n in inst.notes:
            key = (round(n.start, 6), n.pitch)
            longest[key] = max(longest.get(key, n.end), n.end)
    truth = sorted((start, end, pitch) for (start, pitch), end in longest.items())
    return wav, truth


def as_arrays(notes):
    notes = [n for n in notes if n[1] > n[0]]
    iv = np.array([[s, e] for s, e, _ in notes], dtype=float).reshape(-1, 2)
    hz = np.array([pretty_midi.note_number_to_hz(p) for _, _, p in notes], dtype=float)
    return iv, hz


def f1(reference, estimate):
    ri, rp = as_arrays(reference)
    ei, ep = as_arrays(estimate)
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=0.05, offset_ratio=None)
    return p, r, f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                                  "release", "examples", "transcribe_file"),
                    help="the built examples/transcribe_file binary")
    ap.add_argument("--out", help="keep the rendered audio and notes here (default: a temporary directory)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless soundcheck agrees with the Python package (note F1 >= 0.98 between "
                         "them on every chorale) and its mean F1 against the score is within 0.01 of the "
                         "package's (CI runs this)")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} missing: cargo build --release --example transcribe_file")
    model = inference.Model(ICASSP_2022_MODEL_PATH)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        os.makedirs(out, exist_ok=True)
        for name in CHORALES:
            wav, truth = render(name, out)
            notes_json = wav[:-4] + ".soundcheck.json"
            subprocess.run([args.bin, wav, notes_json], check=True)
            with open(notes_json) as f:
                ours = [(n["start"], n["end"], n["pitch"]) for n in json.load(f)]
            _, _, events = inference.predict(wav, model)
            ref = [(float(s), float(e), int(p)) for s, e, p, _, _ in events]
            with open(wav[:-4] + ".reference.json", "w") as f:
                json.dump(ref, f)
            rows.append((name, len(truth), f1(truth, ours), f1(truth, ref), f1(ref, ours), len(ours), len(ref)))

    print("| chorale | score notes | soundcheck P / R / F1 | basic-pitch (Python) P / R / F1 | "
          "soundcheck vs Python F1 |")
    print("|---|---:|---|---|---:|")
    for name, n, (p1, r1, f1a), (p2, r2, f1b), (_, _, fa), n_ours, n_ref in rows:
        print(f"| {name} | {n} | {p1:.3f} / {r1:.3f} / **{f1a:.3f}** ({n_ours} notes) | "
              f"{p2:.3f} / {r2:.3f} / **{f1b:.3f}** ({n_ref} notes) | {fa:.3f} |")
    mean = lambda i: np.mean([row[i][2] for row in rows])  # noqa: E731
    print(f"| mean | | **{mean(2):.3f}** | **{mean(3):.3f}** | {mean(4):.3f} |")
    if args.check:
        worst = min(row[4][2] for row in rows)
        ok = worst >= 0.98 and mean(2) >= mean(3) - 0.01 and len(rows) == len(CHORALES)
        print(f"check: lowest soundcheck-vs-Python F1 {worst:.3f} (>= 0.98), mean F1 {mean(2):.3f} vs "
              f"{mean(3):.3f} (within 0.01): {'ok' if ok else 'FAILED'}")
        if not ok:
            sys.exit(1)


if __name__ == "__main__":
    main()
