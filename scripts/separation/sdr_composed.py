#!/usr/bin/env python3
"""Drum-separation quality (SDR) on composed music nobody in this project wrote.

    apt-get install -y fluidsynth fluid-soundfont-gm \\
        simutrans-data openttd-openmsx freedink-data planetblupi-music-midi pianobooster freedoom
    pip install -r scripts/separation/requirements.txt
    cargo build                      # provides target/debug/soundcheck
    python scripts/separation/sdr_composed.py [--bin target/debug/soundcheck] [--out DIR]
                                              [--limit N] [--pieces 24] [--jobs 2] [--list]
                                              [--drums-to-rest DB] [--model M]

Why: sdr.py scores the separator on four songs whose drum parts this project wrote itself (three
rock beats, one four-on-the-floor), every stem brought to the same level. The drum target (issue 16:
the drum stem's SDR at least 6 dB better than the mixture's) was only ever met there. This script
asks the same question of composed music: the game and teaching soundtracks that the analysis
evaluation set (scripts/analysis_eval/build.py) takes from Debian packages, with their own drum
parts, arrangements and balance.

Pieces: the composed MIDI files of build.py's GAME_SOURCES plus Freedoom's music lumps
(build.freedoom_midis()), each with the excerpt start the analysis set uses (build.game_pieces(),
i.e. build.choose_window(): inside one constant-tempo stretch, a fifth into the piece or a minute
in). A piece is eligible when the 20 s excerpt from that start lies wholly inside the analysis
window, holds at least MIN_DRUM_ONSETS drum onsets (MIDI channel 10, index 9) and at least
MIN_PITCHED_ONSETS pitched onsets (the analysis set's 20-note rule, applied to the 20 s), and its
notes and tempo map are not a copy of a piece already taken (pianobooster ships Clair de la Lune
twice). Eligible pieces are ordered by the SHA-1 of their piece id (e.g. "freedoom:freedoom1_D_E1M1")
and the first --pieces are used: a fixed, package-blind draw.

Ground truth, per piece:
1. The MIDI file is trimmed after the excerpt (build.trim_midi) and split in two: "drums" keeps the
   note events of channel 9 only, "rest" drops them; both keep every other event (tempo, program,
   controller, pitch-bend, SysEx), so each part plays exactly as it does in the full arrangement.
2. Each part is rendered on its own by FluidSynth with the FluidR3 GM SoundFont
   (/usr/share/sounds/sf2/FluidR3_GM.sf2) as build.render() does for "fluidsynth-fluidr3"
   (gain 0.5, sample timing, 44.1 kHz, stereo), but with reverb and chorus off (-R 0 -C 0: dry
   parts, no effect tails smearing the drum hits into the rest's time) and to 32-bit float (no
   clipping, no dither). The mix is never rendered as a whole, so FluidSynth's run-to-run
   differences cannot come between the mix and its references.
3. The same 20 s are cut from both renders (10 ms fades in and out, as build.excerpt()); the mix is
   drums + rest, sample for sample, so the references are exact. Unlike sdr.py, the stems are NOT
   brought to a common level: the composer's balance is kept (--drums-to-rest DB instead scales the
   drum part so that its energy is DB relative to the rest's, e.g. -4.8 for sdr.py's balance of one
   drum stem against three stems of the same RMS). One common gain (so the mix peaks at -1 dBFS) is
   applied to the mix and to both references alike.

Separation and scoring: `soundcheck separate MIX.wav --stems 4 -o OUTDIR --json` (its default
engine, as in sdr.py; the table's footer names the engine it reported). drums.wav is the drums
estimate; vocals + bass + other, summed, is the estimate of the rest. Both are scored exactly as in
sdr.py: mir_eval.separation.bss_eval_sources (BSS Eval v3, no permutation search, 512-tap distortion
filter) on the full 20 s, each stereo channel on its own, the two SDRs averaged; the mixture baseline
scores the mix itself as each source's estimate; improvement = SDR(soundcheck) - SDR(mixture).
(SDR in bss_eval_sources depends only on a source's own reference, so scoring two sources here and
four in sdr.py measures the same thing.)

Prints a Markdown table per piece (drums-to-rest level of the excerpt, then SDR of soundcheck, of
the mixture and the improvement, for drums and for the rest, and notes: drum parts without kick or snare,
pitched percussion in the rest, GS rhythm-part SysEx, clipped estimates) and the mean and median
improvement per source, overall and per package. Read the improvement next to the level column:
the mixture's own drum SDR is about the drums-to-rest level, so quiet drums make a large improvement
easy and a good drum stem hard. --out DIR keeps the MIDI parts, mixes, references
and estimates (one folder per piece).
"""
import argparse
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import mido
import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "analysis_eval"))
import build  # noqa: E402  (scripts/analysis_eval/build.py: the analysis set's sources and windows)

import mir_eval  # noqa: E402

SR = 44_100
SECONDS = 20.0
N = int(SR * SECONDS)
SOUNDFONT = build.FLUID_SF
DRUM_CH = 9
SOURCES = ["drums", "rest"]
MIX_PEAK_DBFS = -1.0
N_PIECES = 24
MIN_DRUM_ONSETS = 10
MIN_PITCHED_ONSETS = 20
PITCHED_PERCUSSION = range(112, 120)  # GM 113-120: tinkle bell, agogo, steel drums, woodblock,
#                                       taiko, melodic tom, synth drum, reverse cymbal
KICKS_SNARES = {35, 36, 38, 40}
FADE_S = 0.01


# ---------------------------------------------------------------------------------------------
# Choosing the pieces.


def candidates(mid_dir):
    """The analysis set's composed pieces with their excerpt start, and what the 20 s hold."""
    with contextlib.redirect_stderr(io.StringIO()):  # build's "skip ..." lines are not news here
        pieces = build.game_pieces(mid_dir)
    out = []
    for g in pieces:
        m, tm, _keys, notes = build.read_midi(g["path"])
        f, _ = build.tick_to_sec_fn(tm, m.ticks_per_beat)
        start, end = g["start"], g["start"] + SECONDS
        onsets = [(f(s), p, ch) for s, _e, p, ch in notes]
        drums = [p for t, p, ch in onsets if ch == DRUM_CH and start <= t < end]
        pitched = [p for t, p, ch in onsets if ch != DRUM_CH and start <= t < end]
        content = hashlib.sha1(repr((m.ticks_per_beat, tm, notes)).encode()).hexdigest()
        out.append(dict(piece=g["piece"], package=g["package"], path=g["path"], start=g["start"],
                        window=g["dur"], n_drums=len(drums), n_pitched=len(pitched),
                        drum_notes=sorted(set(drums)), content=content,
                        order=hashlib.sha1(g["piece"].encode()).hexdigest()))
    return out


def choose(cands, n):
    """The first n eligible pieces by SHA-1 of the piece id; returns (chosen, reasons skipped)."""
    chosen, skipped, seen = [], [], {}
    for c in sorted(cands, key=lambda c: c["order"]):
        if len(chosen) >= n:
            break
        if c["window"] < SECONDS:
            skipped.append((c["piece"], f"analysis window only {c['window']:.1f} s"))
        elif c["n_drums"] < MIN_DRUM_ONSETS:
            skipped.append((c["piece"], f"{c['n_drums']} drum onsets in the excerpt"))
        elif c["n_pitched"] < MIN_PITCHED_ONSETS:
            skipped.append((c["piece"], f"{c['n_pitched']} pitched onsets in the excerpt"))
        elif c["content"] in seen:
            skipped.append((c["piece"], f"same notes and tempo map as {seen[c['content']]}"))
        else:
            seen[c["content"]] = c["piece"]
            chosen.append(c)
    return chosen, skipped


# ---------------------------------------------------------------------------------------------
# Ground truth.


def split_midi(src, drums_path, rest_path):
    """Two copies of src: note events of channel 9 only, and all but those; other events kept."""
    m = mido.MidiFile(src)
    for path, keep_drums in ((drums_path, True), (rest_path, False)):
        build.rewrite_midi(m, path, lambda msg, _t, kd=keep_drums: not (
            msg.type in ("note_on", "note_off", "polytouch") and (msg.channel == DRUM_CH) != kd))


def oddities(path, start, end):
    """Notes on the MIDI content of the excerpt that bear on what 'drums' means here."""
    m = mido.MidiFile(path)
    events = []
    for tr in m.tracks:
        t = 0
        for msg in tr:
            t += msg.time
            events.append((t, msg))
    events.sort(key=lambda e: e[0])
    _m, tm, _k, _n = build.read_midi(path)
    f, _ = build.tick_to_sec_fn(tm, m.ticks_per_beat)
    program = {}
    perc, gs_rhythm = set(), False
    for t, msg in events:
        if msg.type == "program_change":
            program[msg.channel] = msg.program
        elif msg.type == "sysex":
            d = msg.data  # GS DT1 "use for rhythm part": 41 dev 42 12 40 1x 15 vv, x = 0 is part 10
            if len(d) >= 8 and d[0] == 0x41 and d[2] == 0x42 and d[3] == 0x12 and d[4] == 0x40 \
                    and d[5] & 0xF0 == 0x10 and d[6] == 0x15 and d[7] != 0 and d[5] & 0x0F != 0:
                gs_rhythm = True  # a channel other than 10 made a drum part
        elif msg.type == "note_on" and msg.velocity > 0 and msg.channel != DRUM_CH \
                and start <= f(t) < end and program.get(msg.channel, 0) in PITCHED_PERCUSSION:
            perc.add(program[msg.channel] + 1)
    notes = []
    if perc:
        notes.append("pitched percussion in rest (GM " + ",".join(map(str, sorted(perc))) + ")")
    if gs_rhythm:
        notes.append("GS SysEx makes another channel a drum part (scored as rest)")
    return notes


def render(midi, wav, secs):
    """build.render()'s FluidSynth call, reverb and chorus off, 32-bit float out."""
    cmd = ["fluidsynth", "-ni", "-g", "0.5", "-R", "0", "-C", "0", "-r", str(SR),
           "-o", "player.timing-source=sample", "-T", "wav", "-O", "float", "-F", wav, SOUNDFONT, midi]
    for _ in range(3):  # FluidSynth's fast render now and then never returns (see build.render)
        try:
            subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=20 + 0.2 * secs)
            return
        except subprocess.TimeoutExpired:
            print(f"  fluidsynth timed out on {midi}, retrying", file=sys.stderr)
    raise RuntimeError(f"fluidsynth failed three times on {midi}")


def cut(wav, start):
    """(2, N) float64: the excerpt from start, zero-padded past the render's end, 10 ms fades."""
    x, sr = sf.read(wav, dtype="float64", always_2d=True)
    assert sr == SR and x.shape[1] == 2, (wav, sr, x.shape)
    a = int(round(start * SR))
    seg = x[a:a + N].T
    seg = np.pad(seg, ((0, 0), (0, N - seg.shape[1])))
    k = int(FADE_S * SR)
    ramp = np.linspace(0.0, 1.0, k)
    seg[:, :k] *= ramp
    seg[:, -k:] *= ramp[::-1]
    return seg


def load(path):
    """(2, N) float64 from a stem file soundcheck wrote."""
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    assert sr == SR, (path, sr)
    x = x.T
    if x.shape[0] == 1:
        x = np.repeat(x, 2, axis=0)
    x = x[:2, :N]
    return np.pad(x, ((0, 0), (0, N - x.shape[1])))


# ---------------------------------------------------------------------------------------------
# Scoring.


def sdr(refs, ests):
    """Per-source SDR (dB) as in sdr.py: bss_eval_sources per channel on the full signals, averaged
    over channels. A channel where a reference or an estimate is all zeros (mir_eval refuses it) is
    left out; returns (sdrs, channels used)."""
    warnings.filterwarnings("ignore", message="mir_eval.separation", category=FutureWarning)
    per_channel = []
    for ch in range(2):
        r = np.stack([refs[s][ch] for s in SOURCES])
        e = np.stack([ests[s][ch] for s in SOURCES])
        if not (np.any(r, axis=1).all() and np.any(e, axis=1).all()):
            continue
        d, _sir, _sar, _perm = mir_eval.separation.bss_eval_sources(r, e, compute_permutation=False)
        per_channel.append(d)
    if not per_channel:
        return {s: float("nan") for s in SOURCES}, 0
    return dict(zip(SOURCES, np.mean(per_channel, axis=0))), len(per_channel)


def db(x):
    return 10 * np.log10(np.sum(x ** 2) + 1e-30)


def run_piece(c, out, binary, model, drums_to_rest=None):
    t0 = time.time()
    safe = c["piece"].replace(":", "__").replace("/", "_").replace(" ", "_")
    work = os.path.join(out, safe)
    os.makedirs(work, exist_ok=True)
    start, end = c["start"], c["start"] + SECONDS
    trimmed = os.path.join(work, "full.mid")
    build.trim_midi(c["path"], trimmed, end)
    parts = {s: os.path.join(work, f"{s}.mid") for s in SOURCES}
    split_midi(trimmed, parts["drums"], parts["rest"])
    refs = {}
    for s in SOURCES:
        wav = os.path.join(work, f"{s}_render.wav")
        render(parts[s], wav, end)
        refs[s] = cut(wav, start)
        os.remove(wav)  # the whole render runs to the file's end: large, and the cut is kept
    if drums_to_rest is not None:
        refs["drums"] *= 10 ** ((drums_to_rest - (db(refs["drums"]) - db(refs["rest"]))) / 20)
    mix = refs["drums"] + refs["rest"]
    gain = 10 ** (MIX_PEAK_DBFS / 20) / np.max(np.abs(mix))
    mix = mix * gain
    refs = {s: v * gain for s, v in refs.items()}
    mix_path = os.path.join(work, "mix.wav")
    sf.write(mix_path, mix.T.astype(np.float32), SR, subtype="FLOAT")
    for s, v in refs.items():
        sf.write(os.path.join(work, f"ref_{s}.wav"), v.T.astype(np.float32), SR, subtype="FLOAT")

    est_dir = os.path.join(work, "soundcheck")
    cmd = [binary, "separate", mix_path, "--stems", "4", "-o", est_dir, "--json"]
    if model:
        cmd += ["--model", model]
    r = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    engine = json.loads(r.stdout).get("model", "?")
    stems = {s: load(os.path.join(est_dir, f"{s}.wav")) for s in ("vocals", "drums", "bass", "other")}
    ests = {"drums": stems["drums"], "rest": stems["vocals"] + stems["bass"] + stems["other"]}

    ours, ch_ours = sdr(refs, ests)
    base, ch_base = sdr(refs, {s: mix for s in SOURCES})
    notes = oddities(trimmed, start, end)
    if not set(c["drum_notes"]) & KICKS_SNARES:
        notes.append("drums: no kick or snare (GM notes " + ",".join(map(str, c["drum_notes"])) + ")")
    clipped = [s for s, v in stems.items() if np.max(np.abs(v)) >= 0.999]
    if clipped:
        notes.append("estimate at full scale: " + ",".join(clipped))
    if min(ch_ours, ch_base) < 2:
        notes.append(f"only {min(ch_ours, ch_base)} channel(s) scorable (a silent channel)")
    if not model and engine != "dsp":
        notes.append(f"engine {engine}")
    print(f"scored {c['piece']} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return dict(piece=c["piece"], package=c["package"], start=start, engine=engine,
                balance=db(refs["drums"]) - db(refs["rest"]), ours=ours, base=base, notes=notes)


# ---------------------------------------------------------------------------------------------


def summary_rows(label, rows):
    cells = [label, str(len(rows))]
    for s in SOURCES:
        imp = [r["ours"][s] - r["base"][s] for r in rows]
        imp = [x for x in imp if np.isfinite(x)]
        cells += [f"{np.mean(imp):+.2f}", f"{np.median(imp):+.2f}"] if imp else ["-", "-"]
    return "| " + " | ".join(cells) + " |"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "soundcheck"))
    ap.add_argument("--out", help="keep the MIDI parts, mixes, references and estimates here "
                                  "(default: a temp dir)")
    ap.add_argument("--pieces", type=int, default=N_PIECES, help="how many pieces to draw (default 24)")
    ap.add_argument("--limit", type=int, help="score only the first N of the drawn pieces (a quick run)")
    ap.add_argument("--jobs", type=int, default=2, help="pieces processed at once (default 2)")
    ap.add_argument("--model", help="pass --model to soundcheck separate (default: its own default, as sdr.py)")
    ap.add_argument("--drums-to-rest", type=float, metavar="DB",
                    help="scale the drum part to this level relative to the rest (dB; default: as composed)")
    ap.add_argument("--list", action="store_true", help="print the drawn pieces and the skipped ones; score nothing")
    args = ap.parse_args()

    for tool in ("fluidsynth",):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            sys.exit(f"{tool} not found: apt-get install fluidsynth fluid-soundfont-gm")
    if not args.list and not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} not found: cargo build")

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.abspath(args.out or tmp)
        os.makedirs(out, exist_ok=True)
        chosen, skipped = choose(candidates(os.path.join(out, "midi")), args.pieces)
        if args.list:
            for c in chosen:
                print(f"{c['order'][:8]} {c['piece']}: start {c['start']:.2f} s, {c['n_drums']} drum / "
                      f"{c['n_pitched']} pitched onsets, drum notes {c['drum_notes']}")
            for p, why in skipped:
                print(f"skipped {p}: {why}")
            return 0
        if len(chosen) < args.pieces:
            print(f"warning: only {len(chosen)} eligible pieces", file=sys.stderr)
        for p, why in skipped:
            print(f"skipped {p}: {why}", file=sys.stderr)
        if args.limit:
            chosen = chosen[:args.limit]
        with ProcessPoolExecutor(max(1, args.jobs)) as ex:
            rows = list(ex.map(run_piece, chosen, [out] * len(chosen), [args.bin] * len(chosen),
                               [args.model] * len(chosen), [args.drums_to_rest] * len(chosen)))

    print("| piece | start (s) | drums - rest (dB) | drums: SDR soundcheck | SDR mixture | improvement "
          "| rest: SDR soundcheck | SDR mixture | improvement | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        cells = [r["piece"], f"{r['start']:.2f}", f"{r['balance']:+.1f}"]
        for s in SOURCES:
            o, b = r["ours"][s], r["base"][s]
            cells += [f"{o:.2f}", f"{b:.2f}", f"{o - b:+.2f}"]
        cells.append("; ".join(r["notes"]))
        print("| " + " | ".join(cells) + " |")
    print()
    print("| pieces | n | drums: mean improvement (dB) | median | rest: mean improvement (dB) | median |")
    print("|---|---:|---:|---:|---:|---:|")
    print(summary_rows("all", rows))
    for pkg in sorted({r["package"] for r in rows}):
        print(summary_rows(pkg, [r for r in rows if r["package"] == pkg]))
    engines = sorted({r["engine"] for r in rows})
    balance = "as composed" if args.drums_to_rest is None else f"drums set to {args.drums_to_rest:+g} dB re the rest"
    print(f"\nsoundcheck engine: {', '.join(engines)}; {len(rows)} pieces, {SECONDS:g} s each, "
          f"FluidSynth + FluidR3_GM, reverb and chorus off; balance {balance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
