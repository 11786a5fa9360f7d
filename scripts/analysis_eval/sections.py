#!/usr/bin/env python3
"""The section curve against a composer's rehearsal marks, beside MSAF and a blind baseline.

`soundcheck analyze` splits a track into sections (`sections`: Foote's novelty over 1 s
timbre + harmony vectors, sections at least 8 s long). The evaluation set's excerpts are 30 s
and carry no section truth, but seven of Simutrans' MIDI files (`simutrans-data`, by the composer
RykSeb) carry rehearsal marks as MIDI marker events: `introA introB mainA mainB sabi mainA2 …`,
`A A2 B B2 C …`, `Night Night2 Day Day2 Night' …`, `1 2 3 …`. This script renders those pieces
whole (FluidSynth + FluidR3_GM and TiMidity++ + TimGM6mb, as build.py does), reads the marks
as truth at two levels, and scores the boundaries with mir_eval's hit rate (±3 s) over the
sounding span (first sound to last sound at -60 dB, so FluidSynth's release tails do not count);
every system's boundaries and the truth's within 3 s of either end of that span are left out,
since the start and end of the music are not section changes:

  * sections -- where the mark's letter changes: its text without trailing digits and primes
                (`mainA2` is `mainA`, `Night2'` is `Night`; a mark of digits alone is its own
                label). The opening span before the first mark (title, credits) is the first
                mark's section when that mark is a continuation (`A2`), else a section of its own;
  * phrases  -- every mark.

Marks in the first second (`Setup`, titles at 0.5 s) and marks with a space in them (titles,
`by RykSeb`) are not boundaries. Files whose marks are chord names or drum-pattern names
(others of Simutrans' files) are not used: only files whose every kept mark is a short word
with optional digits and primes count.

`--part tune` reads instead the tune part: MMA songs with sections by construction (each 4/4
standard groove with a `Sus`, `Plus` or `1` variant playing intro, verse, chorus, verse, chorus,
bridge, chorus, ending; the chorus on the variant and a second progression, the bridge a fourth
up), 72 songs x 2 renderers, for trying changes to the section stage (sections_lab.py) before
they meet the composer's marks. Its truth is of this script's making, and its sections are all
16 or 8 bars: a change that fits that length and not music's is what the held-out marks catch.

Beside soundcheck: MSAF (Nieto & Bello's Music Structure Analysis Framework, the reference
toolkit for boundary detection) with its defaults, two of its algorithms: `sf` (Serrà et al.'s
structural features, its best) and `foote` (Foote's novelty, soundcheck's own method, as a check
of the implementation); and a blind baseline that splits the track evenly into as many sections
as soundcheck found. MSAF 0.1.80 needs numpy < 2 and an older scipy, so it lives in a virtual
environment of its own (requirements-msaf.txt), run as a subprocess; without `--msaf-python` its
columns are left out. essentia has no comparable segmenter (its `SBic` with an 8 s minimum found
about one boundary per track here). Not tuned on; nothing in the analyser was changed looking at
this.

    apt-get install -y simutrans-data fluidsynth fluid-soundfont-gm timidity timgm6mb-soundfont
    pip install -r scripts/analysis_eval/requirements.txt
    python3 -m venv /tmp/msaf && /tmp/msaf/bin/pip install -r scripts/analysis_eval/requirements-msaf.txt
    python3 scripts/analysis_eval/sections.py --bin target/debug/soundcheck --msaf-python /tmp/msaf/bin/python
    python3 scripts/analysis_eval/sections.py --bin target/debug/soundcheck --part tune
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import mido
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from build import (GROOVES, MAJOR_PROGS, MINOR_PROGS, MMA_MINOR_ROOT, MMA_ROOT, RENDERERS,  # noqa: E402
                   h32, read_wav, render)  # (importing build also patches mido)

SIMUTRANS = "/usr/share/games/simutrans/music/*.mid"
MARK = re.compile(r"^[A-Za-z]{1,8}\d*'*\d*$|^\d+$")
WINDOW = 3.0


def timed(midi):
    """(time s, message) of a MIDI file's messages in playing order."""
    t = 0.0
    for msg in midi:
        t += msg.time
        yield t, msg


def marks_of(path):
    """(time s, text) of the kept marker events, or None when the file's marks are not
    rehearsal marks."""
    marks = [(t, m.text.strip()) for t, m in timed(mido.MidiFile(path)) if m.is_meta and m.type == "marker"]
    kept = [(t, s) for t, s in marks if t >= 1.0 and " " not in s]
    if len(kept) < 3 or not all(MARK.match(s) for _, s in kept):
        return None
    return kept


def label(text):
    stripped = re.sub(r"[\d']+$", "", text)
    return stripped or text


def truth(kept):
    """(section boundaries, phrase boundaries), seconds, MIDI time."""
    phrases = [t for t, _ in kept]
    sections, prev = [], None
    first = kept[0][1]
    if label(first) != first and re.search(r"\d", first):
        prev = label(first)  # `A2` first: the opening span was `A`
    for t, s in kept:
        if label(s) != prev:
            sections.append(t)
        prev = label(s)
    return sections, phrases


# ---------------------------------------------------------------------------------------------
# The tune part: MMA songs with sections by construction. Each standard-library groove that has a
# `Sus` or `Plus` variant plays intro, verse, chorus, verse, chorus, bridge, chorus, ending; the
# chorus takes the variant (sustained strings or an added lead) and a second progression, the
# bridge a third progression a fourth up; tempo, key and progressions are chosen by hashing the
# groove's name, as build.py does. The section boundaries are the bars where a part starts.

SONG = [("intro", 4), ("verse", 16), ("chorus", 16), ("verse", 16), ("chorus", 16), ("bridge", 8),
        ("chorus", 16), ("end", 2)]


def groove_names():
    names = set()
    for f in glob.glob("/usr/share/mma/lib/stdlib/*.mma"):
        for line in open(f, errors="replace"):
            if line.lower().startswith("defgroove "):
                names.add(line.split()[1])
    return names


def mma_songs(out):
    """(name, MIDI path, section boundaries in s) of the MMA songs, written under `out`."""
    have = groove_names()
    songs = []
    for groove, (genre, beats, (lo, hi)) in sorted(GROOVES.items()):
        variant = next((groove + v for v in ("Sus", "Plus", "1") if groove + v in have), None)
        if variant is None or beats != 4:
            continue
        h = h32("sections:" + groove)
        tonic, minor = h % 12, (h >> 4) % 5 < 2
        progs = MINOR_PROGS if minor else MAJOR_PROGS
        p1 = progs[(h >> 8) % len(progs)]
        p2 = progs[((h >> 8) + 1 + (h >> 16) % (len(progs) - 1)) % len(progs)]
        bpm = lo + (h >> 12) % (hi - lo + 1)
        parts = {"intro": (groove + "Intro" if groove + "Intro" in have else groove, p1, 0),
                 "verse": (groove, p1, 0), "chorus": (variant, p2, 0), "bridge": (groove, p1, 5),
                 "end": (groove + "End" if groove + "End" in have else groove, p1, 0)}
        root = MMA_MINOR_ROOT if minor else MMA_ROOT
        lines = [f"Tempo {bpm}", f"KeySig {root[tonic]} {'Minor' if minor else 'Major'}"]
        bar, bounds = 1, []
        bar_s = 60.0 / bpm * beats
        for k, (part, n) in enumerate(SONG):
            g, prog, shift = parts[part]
            if k:
                bounds.append((bar - 1) * bar_s)
            lines.append(f"Groove {g}")
            for b in range(n):
                iv, q = prog[b % len(prog)]
                lines.append(f"{bar} {MMA_ROOT[(tonic + shift + iv) % 12]}{q}")
                bar += 1
        src = os.path.join(out, f"mma_{groove}.mma")
        mid = src[:-4] + ".mid"
        if not os.path.exists(mid):
            with open(src, "w") as fh:
                fh.write("\n".join(lines) + "\n")
            subprocess.run(["mma", src, "-f", mid], capture_output=True, text=True, check=True)
        songs.append((f"mma_{groove}", mid, bounds))
    return songs


def first_sound(x, sr):
    """Time of the first sample within 40 dB of the peak, seconds."""
    peak = np.abs(x).max()
    if peak <= 0:
        return 0.0
    return float(np.argmax(np.abs(x) > peak * 0.01)) / sr


def last_sound(x, sr):
    """Time of the last sample within 60 dB of the peak, seconds."""
    peak = np.abs(x).max()
    if peak <= 0:
        return len(x) / sr
    return float(len(x) - np.argmax(np.abs(x[::-1]) > peak * 0.001)) / sr


def pieces_of(part, out):
    """(name, MIDI path, section boundaries, phrase boundaries) of every piece of a part,
    boundaries in MIDI seconds: tune, the MMA songs (sections and phrases alike); heldout, the
    Simutrans pieces with rehearsal marks."""
    if part == "tune":
        return [(name, mid, bounds, bounds) for name, mid, bounds in mma_songs(out)]
    pieces = []
    for path in sorted(glob.glob(SIMUTRANS)):
        try:
            got = marks_of(path)
        except (OSError, ValueError, EOFError) as e:
            print(f"skip {os.path.basename(path)}: {e}", file=sys.stderr)
            continue
        if got:
            pieces.append((os.path.basename(path)[:-4], path, *truth(got)))
    return pieces


def alignment(wav, midi_path):
    """(sounding span of the track, seconds to add to MIDI time). The renderers start at MIDI time
    0 but may trim or pad silence: the truth is aligned by the first sound against the first note."""
    x, sr = read_wav(wav)
    span = (first_sound(x, sr), last_sound(x, sr))
    first_note = next((t for t, m in timed(mido.MidiFile(midi_path)) if m.type == "note_on" and m.velocity > 0),
                      0.0)
    return span, span[0] - first_note


def inside(bounds, span):
    """The boundaries more than WINDOW inside the sounding span."""
    start, end = span
    return [t for t in sorted(bounds) if start + WINDOW < t < end - WINDOW]


def intervals(bounds, span):
    b = [span[0]] + inside(bounds, span) + [span[1]]
    return np.array([[b[i], b[i + 1]] for i in range(len(b) - 1)])


def hit_rate(ref_bounds, est_bounds, span):
    import warnings

    import mir_eval
    warnings.filterwarnings("ignore", message="Estimated intervals are empty")
    p, r, f = mir_eval.segment.detection(intervals(ref_bounds, span), intervals(est_bounds, span),
                                         window=WINDOW, trim=True)
    return p, r, f


MSAF_ALGORITHMS = ("sf", "foote")
MSAF_SCRIPT = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import msaf
out = {}
for alg in sys.argv[2:]:
    bounds, _ = msaf.process(sys.argv[1], boundaries_id=alg, labels_id=None)
    out[alg] = [float(b) for b in bounds]
print(json.dumps(out))
"""


def msaf_bounds(python, wav, cache):
    """MSAF's boundaries per algorithm, cached (its list starts at 0 and ends with the last frame
    and the duration; `inside` drops those with the rest near the ends)."""
    key = f"{os.path.basename(wav)}|{os.path.getsize(wav)}|{os.path.getmtime(wav)}"
    if key not in cache:
        r = subprocess.run([python, "-c", MSAF_SCRIPT, wav, *MSAF_ALGORITHMS], capture_output=True,
                           text=True, check=True, cwd=tempfile.gettempdir())
        cache[key] = json.loads(r.stdout.strip().splitlines()[-1])
    return {a: sorted(set(b)) for a, b in cache[key].items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "soundcheck"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "analysis_eval", "sections"))
    ap.add_argument("--msaf-python", help="python of a virtual environment with requirements-msaf.txt")
    ap.add_argument("--part", choices=["heldout", "tune"], default="heldout",
                    help="heldout: the Simutrans pieces' rehearsal marks; tune: the MMA songs")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cache_path = os.path.join(args.out, "msaf_cache.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    pieces = pieces_of(args.part, args.out)
    if not pieces:
        sys.exit("no pieces: apt-get install simutrans-data mma")
    totals = {}
    systems = ["soundcheck"] + ([f"MSAF {a}" for a in MSAF_ALGORITHMS] if args.msaf_python else []) + ["even split"]
    print("| piece | renderer | sounding | sections (truth) | " + " | ".join(f"{s} P / R / F (n)" for s in systems) + " |")
    print("|---|---|---:|---:|" + "---|" * len(systems))
    for name, path, sections, phrases in pieces:
        length = mido.MidiFile(path).length
        for rend in RENDERERS:
            wav = os.path.join(args.out, f"{name}__{rend}.wav")
            if not os.path.exists(wav):
                with tempfile.TemporaryDirectory() as tmp:
                    # build.render's timeout (20 s + 0.2 s per second of music) is sized for
                    # 30 s excerpts; whole songs on a loaded machine need more.
                    render(path, wav + ".part.wav", rend, tmp, 3 * length)
                os.replace(wav + ".part.wav", wav)
                if os.path.exists(wav + ".part.wav.cfg"):
                    os.remove(wav + ".part.wav.cfg")  # TiMidity's soundfont config
            span, shift = alignment(wav, path)
            ref_s = [t + shift for t in sections]
            ref_p = [t + shift for t in phrases]
            r = subprocess.run([args.bin, "analyze", wav, "--json"], capture_output=True, text=True, check=True)
            est = inside([s["start"] for s in json.loads(r.stdout)["sections"]], span)
            found = {"soundcheck": est, "even split": list(np.linspace(*span, len(est) + 2)[1:-1])}
            if args.msaf_python:
                for a, b in msaf_bounds(args.msaf_python, wav, cache).items():
                    found[f"MSAF {a}"] = b
                with open(cache_path, "w") as fh:
                    json.dump(cache, fh)
            row = []
            for system in systems:
                b = found[system]
                n = len(inside(b, span))
                for level, ref in (("sections", ref_s), ("phrases", ref_p)):
                    p, rr, f = hit_rate(ref, b, span)
                    totals.setdefault((system, level), []).append((p, rr, f, n))
                p, rr, f = hit_rate(ref_s, b, span)
                row.append(f"{p:.2f} / {rr:.2f} / {f:.2f} ({n})")
            print(f"| {name} | {rend} | {span[1] - span[0]:.0f} s | {len(inside(ref_s, span))} | "
                  + " | ".join(row) + " |")
    print(f"\nMean over {len(pieces)} pieces x {len(RENDERERS)} renders, boundary hit rate within ±{WINDOW:.0f} s:")
    for (system, level), v in totals.items():
        a = np.array(v)
        print(f"  {system:12s} {level:8s} P {a[:, 0].mean():.2f}  R {a[:, 1].mean():.2f}  F {a[:, 2].mean():.2f}"
              f"  (boundaries per track {a[:, 3].mean():.1f})")


if __name__ == "__main__":
    main()
