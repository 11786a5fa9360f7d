#!/usr/bin/env python3
"""Stem-separation quality (SDR) on songs nobody here tuned on, with ground truth rendered here.

    apt-get install -y fluidsynth fluid-soundfont-gm espeak-ng
    pip install -r scripts/separation/requirements.txt
    cargo build                      # provides target/debug/soundcheck
    python scripts/separation/sdr.py [--bin target/debug/soundcheck] [--out DIR] [--check]

What it does, per song (four songs, each 20 s, 44.1 kHz stereo, each with its own tempo, key, beat and
chord instrument):

1. Builds the four stems separately so the ground truth is known exactly:
   * drums, bass, other: small MIDI files written with pretty_midi (drums: a rock beat on the GM
     standard kit, or an electronic four-on-the-floor beat with claps and off-beat hats on the
     SoundFont's Electronic kit; bass: a root/fifth bass line on GM program 33, fingered bass; other:
     chords on GM program 0, piano, 25, steel guitar, or 4, electric piano), each rendered on its own
     by FluidSynth with the FluidR3 GM SoundFont (/usr/share/sounds/sf2/FluidR3_GM.sf2);
   * vocals: espeak-ng speech with a raised pitch ("singing-ish"), resampled to 44.1 kHz and looped
     to 20 s.
   Every stem is brought to the same RMS level; the mix is their sum, and one common gain (so the mix
   peaks at -1 dBFS) is applied to the mix and to all four references alike.
2. Runs soundcheck's DSP separator through its CLI:
   `soundcheck separate MIX.wav --stems 4 -o OUTDIR` (writes vocals/drums/bass/other.wav).
3. Scores each estimate with BSS Eval (`mir_eval.separation.bss_eval_sources`, version 3 of the
   metrics, no permutation search, 512-tap distortion filter) on the full 20 s signals, each stereo
   channel scored on its own and the two SDRs averaged. museval (BSS Eval v4, framewise medians) is not
   used: it drags in musdb/stempeg/ffmpeg for nothing we need here. The mixture baseline scores the
   mix itself as every source's estimate; improvement = SDR(soundcheck) - SDR(mixture).
   (mir_eval 0.8 marks its separation module deprecated, to be removed in 0.9: keep the pin.)

Prints a Markdown table (per song and source: SDR of soundcheck, of the mixture, and the improvement)
and the mean improvement per source. `--check` exits 1 unless the mean improvement over the mixture is
> 0 dB for drums and for bass (the DSP separator's strengths), and at least --drums-target dB for drums
(issue 16's target is 6; default 0).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from fractions import Fraction

import mir_eval
import numpy as np
import pretty_midi
import soundfile as sf
from scipy.signal import resample_poly

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SR = 44_100
SECONDS = 20.0
N = int(SR * SECONDS)
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SOURCES = ["vocals", "drums", "bass", "other"]
STEM_RMS_DBFS = -20.0
MIX_PEAK_DBFS = -1.0

# name, tempo (BPM), tonic (MIDI note of the key's root in octave 4), chord degrees (semitones from the
# tonic, with quality), chord program (GM, 0-based), espeak voice, espeak pitch, text; "beat": rock
# (default) or electronic
SONGS = [
    {
        "name": "c_major_120",
        "tempo": 120.0,
        "tonic": 60,  # C
        "chords": [(0, "maj"), (7, "maj"), (9, "min"), (5, "maj")],  # I V vi IV
        "program": 0,  # acoustic grand piano
        "voice": "en+f3",
        "pitch": 70,
        "text": "la la la, the morning light is on the water, la la la, and we sing along",
    },
    {
        "name": "a_minor_96",
        "tempo": 96.0,
        "tonic": 57,  # A
        "chords": [(0, "min"), (8, "maj"), (3, "maj"), (10, "maj")],  # i VI III VII
        "program": 25,  # acoustic guitar (steel)
        "voice": "en+m3",
        "pitch": 55,
        "text": "oh the river runs so slowly, oh the river takes me home, oh oh oh",
    },
    {
        "name": "e_major_140",
        "tempo": 140.0,
        "tonic": 64,  # E
        "chords": [(0, "maj"), (5, "maj"), (9, "min"), (7, "maj")],  # I IV vi V
        "program": 0,
        "voice": "en+f4",
        "pitch": 80,
        "text": "hey hey tonight we are dancing, hey hey under the stars, yeah yeah yeah",
    },
    {
        "name": "f_minor_124_electronic",
        "tempo": 124.0,
        "tonic": 65,  # F
        "chords": [(0, "min"), (8, "maj"), (3, "maj"), (10, "maj")],  # i VI III VII
        "program": 4,  # electric piano 1
        "voice": "en+f2",
        "pitch": 75,
        "text": "all night, all night, the lights are moving, all night, we keep on moving, oh",
        "beat": "electronic",
    },
]

KICK, SNARE, CLAP, HIHAT, OPEN_HAT, CRASH = 36, 38, 39, 42, 46, 49
ELECTRONIC_KIT = 24  # FluidR3_GM bank 128 preset 24, "Electronic"


def write_midi(path, tempo, build):
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    build(pm)
    pm.write(path)


def drums_part(song):
    if song.get("beat") == "electronic":
        return electronic_drums(song)
    beat = 60.0 / song["tempo"]
    inst = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    n_beats = int(SECONDS / beat)
    for b in range(n_beats):
        t = b * beat
        bar_pos = b % 4
        if bar_pos in (0, 2):
            inst.notes.append(pretty_midi.Note(110, KICK, t, t + 0.1))
        if bar_pos == 2:  # extra kick on the "and" of three
            inst.notes.append(pretty_midi.Note(90, KICK, t + beat / 2, t + beat / 2 + 0.1))
        if bar_pos in (1, 3):
            inst.notes.append(pretty_midi.Note(105, SNARE, t, t + 0.1))
        if b % 16 == 0:
            inst.notes.append(pretty_midi.Note(100, CRASH, t, t + 0.5))
        for e in range(2):  # eighth-note hi-hats
            te = t + e * beat / 2
            inst.notes.append(pretty_midi.Note(80 if e == 0 else 60, HIHAT, te, te + 0.05))
    return inst


def electronic_drums(song):
    """Four-on-the-floor kick, clap on 2 and 4, closed hats on the off-beats, an open hat every bar."""
    beat = 60.0 / song["tempo"]
    inst = pretty_midi.Instrument(program=ELECTRONIC_KIT, is_drum=True, name="drums")
    for b in range(int(SECONDS / beat)):
        t = b * beat
        inst.notes.append(pretty_midi.Note(112, KICK, t, t + 0.1))
        if b % 4 in (1, 3):
            inst.notes.append(pretty_midi.Note(100, CLAP, t, t + 0.1))
        off = t + beat / 2
        if b % 4 == 3:
            inst.notes.append(pretty_midi.Note(80, OPEN_HAT, off, off + 0.2))
        else:
            inst.notes.append(pretty_midi.Note(75, HIHAT, off, off + 0.05))
    return inst


def chord_root(song, bar):
    degree, quality = song["chords"][bar % len(song["chords"])]
    return song["tonic"] + degree, quality


def bass_part(song):
    beat = 60.0 / song["tempo"]
    inst = pretty_midi.Instrument(program=33, name="bass")  # GM 34: electric bass (finger)
    n_bars = int(SECONDS / (4 * beat))
    for bar in range(n_bars):
        root, _ = chord_root(song, bar)
        root -= 24  # two octaves down: E2..C3 range
        pattern = [(0, root), (1, root), (1.5, root + 7), (2, root), (3, root + 7), (3.5, root + 12)]
        for pos, pitch in pattern:
            t = (bar * 4 + pos) * beat
            inst.notes.append(pretty_midi.Note(100, pitch, t, t + 0.45 * beat))
    return inst


def other_part(song):
    beat = 60.0 / song["tempo"]
    inst = pretty_midi.Instrument(program=song["program"], name="chords")
    n_bars = int(SECONDS / (4 * beat))
    for bar in range(n_bars):
        root, quality = chord_root(song, bar)
        third = 4 if quality == "maj" else 3
        pitches = [root, root + third, root + 7, root + 12]
        for half in range(2):  # two strums per bar
            t = (bar * 4 + 2 * half) * beat
            for k, p in enumerate(pitches):
                dt = 0.015 * k if song["program"] == 25 else 0.0  # strum the guitar
                inst.notes.append(pretty_midi.Note(75, p, t + dt, t + 1.9 * beat))
    return inst


def load(path):
    """Float32 (channels, samples) at SR, stereo, exactly N samples."""
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.T
    if sr != SR:
        f = Fraction(SR, sr).limit_denominator(1000)
        x = resample_poly(x, f.numerator, f.denominator, axis=1).astype(np.float32)
    if x.shape[0] == 1:
        x = np.repeat(x, 2, axis=0)
    x = x[:2]
    if x.shape[1] >= N:
        return x[:, :N]
    return np.pad(x, ((0, 0), (0, N - x.shape[1])))


def render_midi(mid, wav):
    subprocess.run(["fluidsynth", "-ni", "-F", wav, "-r", str(SR), SOUNDFONT, mid], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return load(wav)


def render_vocals(song, work):
    raw = os.path.join(work, "vocals_raw.wav")
    subprocess.run(["espeak-ng", "-v", song["voice"], "-s", "140", "-p", str(song["pitch"]), "-w", raw,
                    song["text"]], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    x, sr = sf.read(raw, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    f = Fraction(SR, sr).limit_denominator(1000)
    x = resample_poly(x, f.numerator, f.denominator).astype(np.float32)
    nz = np.flatnonzero(np.abs(x) > 1e-4)  # trim espeak's leading/trailing silence
    x = x[nz[0]:nz[-1] + 1]
    gap = np.zeros(int(0.5 * SR), dtype=np.float32)
    lead = np.zeros(int(0.25 * SR), dtype=np.float32)
    reps = [lead]
    total = lead.size
    while total < N:
        reps += [x, gap]
        total += x.size + gap.size
    y = np.concatenate(reps)[:N]
    return np.stack([y, y])


def rms_normalise(x):
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    return (x * (10 ** (STEM_RMS_DBFS / 20) / rms)).astype(np.float32)


def build_song(song, work):
    stems = {}
    parts = {"drums": drums_part, "bass": bass_part, "other": other_part}
    for name, part in parts.items():
        mid = os.path.join(work, f"{name}.mid")
        write_midi(mid, song["tempo"], lambda pm, part=part: pm.instruments.append(part(song)))
        stems[name] = render_midi(mid, os.path.join(work, f"{name}_render.wav"))
    stems["vocals"] = render_vocals(song, work)
    stems = {k: rms_normalise(v) for k, v in stems.items()}
    mix = sum(stems[s] for s in SOURCES)
    gain = 10 ** (MIX_PEAK_DBFS / 20) / np.max(np.abs(mix))
    mix = (mix * gain).astype(np.float32)
    refs = {k: (v * gain).astype(np.float32) for k, v in stems.items()}
    mix_path = os.path.join(work, "mix.wav")
    sf.write(mix_path, mix.T, SR, subtype="FLOAT")
    for k, v in refs.items():
        sf.write(os.path.join(work, f"ref_{k}.wav"), v.T, SR, subtype="FLOAT")
    return mix_path, mix, refs


def sdr(refs, ests):
    """Per-source SDR (dB): bss_eval_sources per channel on the full signals, averaged over channels."""
    per_channel = []
    warnings.filterwarnings("ignore", message="mir_eval.separation", category=FutureWarning)
    for ch in range(2):
        r = np.stack([refs[s][ch] for s in SOURCES]).astype(np.float64)
        e = np.stack([ests[s][ch] for s in SOURCES]).astype(np.float64)
        d, _sir, _sar, _perm = mir_eval.separation.bss_eval_sources(r, e, compute_permutation=False)
        per_channel.append(d)
    return dict(zip(SOURCES, np.mean(per_channel, axis=0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "soundcheck"))
    ap.add_argument("--out", help="keep the songs, references and estimates here (default: a temp dir)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless mean improvement over the mixture is > 0 dB for drums and bass")
    ap.add_argument("--drums-target", type=float, default=0.0,
                    help="--check also needs the drums' mean improvement to reach this (dB; issue 16: 6)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        rows = []
        for song in SONGS:
            work = os.path.join(out, song["name"])
            os.makedirs(work, exist_ok=True)
            mix_path, mix, refs = build_song(song, work)
            est_dir = os.path.join(work, "soundcheck")
            subprocess.run([args.bin, "separate", mix_path, "--stems", "4", "-o", est_dir], check=True,
                           stdout=subprocess.DEVNULL)
            ests = {s: load(os.path.join(est_dir, f"{s}.wav")) for s in SOURCES}
            ours = sdr(refs, ests)
            base = sdr(refs, {s: mix for s in SOURCES})
            for s in SOURCES:
                rows.append((song["name"], s, ours[s], base[s]))
            print(f"scored {song['name']}", file=sys.stderr)

    print("| song | source | SDR soundcheck (dB) | SDR mixture (dB) | improvement (dB) |")
    print("|---|---|---:|---:|---:|")
    for name, s, o, b in rows:
        print(f"| {name} | {s} | {o:.2f} | {b:.2f} | {o - b:+.2f} |")
    print()
    print("| source | mean improvement over the mixture (dB) |")
    print("|---|---:|")
    mean_imp = {}
    for s in SOURCES:
        mean_imp[s] = float(np.mean([o - b for _, src, o, b in rows if src == s]))
        print(f"| {s} | {mean_imp[s]:+.2f} |")

    if args.check:
        failed = [f"no improvement over the mixture for {s}" for s in ("drums", "bass") if not mean_imp[s] > 0.0]
        if mean_imp["drums"] < args.drums_target:
            failed.append(f"drums improve by {mean_imp['drums']:+.2f} dB, below {args.drums_target:g} dB")
        if failed:
            print("FAIL: " + "; ".join(failed), file=sys.stderr)
            return 1
        print("OK: drums and bass beat the mixture baseline", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
