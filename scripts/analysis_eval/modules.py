#!/usr/bin/env python3
"""Tempo on tracker modules: the MOD/S3M/XM/IT music of Debian's game packages, beside essentia.

The rest of this directory renders MIDI through General MIDI synthesizers. Tracker modules carry
their own samples (drum kits, basses, leads sampled by their authors), so they sound like
neither soundfont, and their tempo is in the file: a row lasts `speed × 2.5 / tempo` seconds.
This script reads each module with libopenmpt (through ctypes; Debian `libopenmpt0`), follows
its speed and tempo while it plays, and renders one excerpt of up to 30 s (at least 15 s) from
the middle of its longest stretch of constant speed and tempo, mono 44.1 kHz, peak-normalised
to -3 dBFS. Of the 142 files (141 distinct) 130 have such a stretch; left out are the modules
that swing by alternating two speeds row by row (six), three short jingles, one that mixes three
speeds, and one whose stretch is silent.

What the file does not say is how many rows make a beat. Trackers default to 4 (the row
highlight of every tracker's pattern editor), and `truth = 24 × tempo / (4 × speed)` is that
reading; but authors write slow pieces at 8 rows a beat and fast ones at 2, and compound
metres at 3 or 6 (then the beat is truth × 2/3 × 2^k). So this set only says whether an analyser
found the pulse, not which octave of it a listener would tap:

  * pulse        -- within 2% of truth × 2^k for some whole k (-3..3): the measure --check gates;
  * pulse or 2/3 -- the same, or of truth × 2/3 × 2^k. Reported apart: it credits the readings of
                    the modules in 6 rows a beat (about seven here, which both analysers read
                    that way), but also the wrong 2/3 readings of binary music (about nine);
  * 4 rows       -- within 2% of the 4-rows-a-beat reading itself (an octave convention only),
                    and the readings at x1/2, x2 and x1/4 of it.

No key truth. Nothing in the analyser was tuned on these modules; read it as a fourth part beside
the held-out one and recorded.py's songs, not a place to tune.

    apt-get install -y libopenmpt0 pingus-data tecnoballz-data pekka-kana-2-data \\
        heroes-sound-tracks gl-117-data freedroid-data biniax2-data rafkill-data \\
        bomberclone-data pachi-data madbomber-data circuslinux-data ironseed-data
    pip install -r scripts/analysis_eval/requirements.txt
    python3 scripts/analysis_eval/modules.py --bin target/debug/soundcheck [--check --expect 130]
"""
import argparse
import ctypes as C
import hashlib
import os
import subprocess
import sys


import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from build import write_wav  # noqa: E402
from evaluate import run_essentia, run_soundcheck  # noqa: E402

PACKAGES = ["pingus-data", "tecnoballz-data", "pekka-kana-2-data", "heroes-sound-tracks", "gl-117-data",
            "freedroid-data", "biniax2-data", "rafkill-data", "bomberclone-data", "pachi-data",
            "madbomber-data", "circuslinux-data", "ironseed-data"]
EXTENSIONS = (".mod", ".s3m", ".xm", ".it")
SR = 44100
EXCERPT_S = 30.0
MIN_EXCERPT_S = 15.0
# Playback is followed in steps of this many frames (10 ms), reading the speed and tempo at each.
STEP = 441


def libopenmpt():
    lib = C.CDLL("libopenmpt.so.0")
    lib.openmpt_module_create_from_memory2.restype = C.c_void_p
    lib.openmpt_module_create_from_memory2.argtypes = [
        C.c_char_p, C.c_size_t, C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p,
        C.POINTER(C.c_int), C.POINTER(C.c_char_p), C.c_void_p]
    for f in ("openmpt_module_get_current_speed", "openmpt_module_get_current_tempo"):
        getattr(lib, f).argtypes = [C.c_void_p]
        getattr(lib, f).restype = C.c_int32
    lib.openmpt_module_read_float_mono.argtypes = [C.c_void_p, C.c_int32, C.c_size_t, C.POINTER(C.c_float)]
    lib.openmpt_module_read_float_mono.restype = C.c_size_t
    lib.openmpt_module_destroy.argtypes = [C.c_void_p]
    return lib


def render(lib, data):
    """The whole module, mono float at SR, and its (speed, tempo) at every STEP frames."""
    err, msg = C.c_int(0), C.c_char_p()
    mod = lib.openmpt_module_create_from_memory2(data, len(data), None, None, None, None,
                                                 C.byref(err), C.byref(msg), None)
    if not mod:
        return None, None
    buf = (C.c_float * STEP)()
    chunks, states = [], []
    try:
        while True:
            states.append((lib.openmpt_module_get_current_speed(mod), lib.openmpt_module_get_current_tempo(mod)))
            n = lib.openmpt_module_read_float_mono(mod, SR, STEP, buf)
            if n == 0:
                states.pop()
                break
            chunks.append(np.frombuffer(buf, np.float32, n).copy())
    finally:
        lib.openmpt_module_destroy(mod)
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), states


def longest_constant(states):
    """(first step, steps, (speed, tempo)) of the longest run of equal states."""
    best, start = (0, 0, None), 0
    for i in range(1, len(states) + 1):
        if i == len(states) or states[i] != states[start]:
            if i - start > best[1]:
                best = (start, i - start, states[start])
            start = i
    return best


def module_files():
    """(package, path) of every module file installed, and the packages missing."""
    out, missing = [], []
    for pkg in PACKAGES:
        try:
            listing = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout
        except (subprocess.CalledProcessError, FileNotFoundError):
            listing = ""
        files = [(pkg, p) for p in sorted(listing.split("\n"))
                 if p.lower().endswith(EXTENSIONS) and os.path.isfile(p)]
        if not files:
            print(f"skip {pkg}: not installed (or no module files)", file=sys.stderr)
            missing.append(pkg)
        out += files
    return out, missing


def excerpts(out, files):
    """Writes the excerpts (named by the module's SHA-1: a changed file is rendered afresh);
    returns rows (id, package, file, bpm)."""
    lib = libopenmpt()
    rows, seen = [], set()
    for pkg, path in files:
        data = open(path, "rb").read()
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen:
            continue  # the same file shipped twice
        seen.add(digest)
        name = f"{pkg}:{os.path.basename(path)}"
        wav = os.path.join(out, f"{pkg}__{os.path.basename(path)}__{digest[:10]}.wav")
        audio, states = render(lib, data)
        if audio is None:
            print(f"skip {name}: libopenmpt cannot read it", file=sys.stderr)
            continue
        first, steps, state = longest_constant(states)
        if steps * STEP < MIN_EXCERPT_S * SR or not state or min(state) <= 0:
            continue
        speed, tempo = state
        length = min(steps * STEP, int(EXCERPT_S * SR))
        s0 = first * STEP + (steps * STEP - length) // 2
        x = audio[s0:s0 + length]
        peak = float(np.abs(x).max()) if len(x) else 0.0
        if peak <= 1e-4:
            continue
        if not os.path.exists(wav):
            write_wav(wav + ".part", x, SR)  # peak normalised to -3 dBFS, as the MIDI set's
            os.replace(wav + ".part", wav)  # a killed run leaves no truncated excerpt behind
        rows.append(dict(id=name, package=pkg, file=wav, bpm=24.0 * tempo / (4 * speed), speed=speed, tempo=tempo))
    return rows


def near(bpm, truth, factors):
    return bpm > 0 and any(abs(bpm / (truth * f) - 1) <= 0.02 for f in factors)


OCTAVES = [2.0 ** k for k in range(-3, 4)]
WITH_TWO_THIRDS = OCTAVES + [f * 2.0 / 3.0 for f in OCTAVES]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "soundcheck"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "analysis_eval", "modules"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when soundcheck finds the pulse in fewer excerpts than essentia, less --margin")
    ap.add_argument("--margin", type=int, default=0, help="excerpts --check allows soundcheck to trail by")
    ap.add_argument("--expect", type=int, help="with --check: exit 1 unless exactly this many excerpts are read")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    files, missing = module_files()
    if args.check and missing:
        sys.exit(f"FAIL: packages missing: {' '.join(missing)}")
    rows = excerpts(args.out, files)
    if not rows:
        sys.exit("no modules: apt-get install libopenmpt0 and the packages in the notes")
    if args.check and args.expect is not None and len(rows) != args.expect:
        sys.exit(f"FAIL: {len(rows)} excerpts, expected {args.expect}: the set changed")
    paths = [r["file"] for r in rows]
    sc = run_soundcheck(args.bin, paths, args.jobs)
    ess = run_essentia(paths, ["temperley"], os.path.join(args.out, "essentia_cache.json"), args.jobs)
    print("| module | speed/tempo | 4 rows | soundcheck | essentia |")
    print("|---|---|---:|---:|---:|")
    count = {s: {"pulse": 0, "pulse or 2/3": 0, "4 rows": 0, "x1/2": 0, "x2": 0, "x1/4": 0}
             for s in ("soundcheck", "essentia")}
    only = {"soundcheck": 0, "essentia": 0}
    same = 0
    for r in rows:
        got = {"soundcheck": sc[r["file"]]["bpm"], "essentia": ess[r["file"]]["bpm"]}
        right = {}
        for s, b in got.items():
            right[s] = near(b, r["bpm"], OCTAVES)
            count[s]["pulse"] += right[s]
            count[s]["pulse or 2/3"] += near(b, r["bpm"], WITH_TWO_THIRDS)
            count[s]["4 rows"] += near(b, r["bpm"], [1.0])
            for name, f in (("x1/2", 0.5), ("x2", 2.0), ("x1/4", 0.25)):
                count[s][name] += near(b, r["bpm"], [f])
        for s in only:
            only[s] += right[s] and not right["essentia" if s == "soundcheck" else "soundcheck"]
        same += right["soundcheck"] and near(got["soundcheck"], got["essentia"], [1.0])
        print(f"| {r['id']} | {r['speed']}/{r['tempo']} | {r['bpm']:.1f} | {got['soundcheck']:.1f} | "
              f"{got['essentia']:.1f} |")
    packages = sorted({r["package"] for r in rows})
    print(f"\n{len(rows)} excerpts (one per module) from {len(packages)} packages:")
    for s, c in count.items():
        print(f"  {s:10s} " + "  ".join(f"{k} {v}/{len(rows)}" for k, v in c.items()))
    print(f"  pulse found by one only: soundcheck {only['soundcheck']}, essentia {only['essentia']}; "
          f"both found it at the same octave: {same}")
    if args.check:
        ours, theirs = count["soundcheck"]["pulse"], count["essentia"]["pulse"]
        if ours < theirs - args.margin:
            sys.exit(f"FAIL: soundcheck found the pulse in {ours}, essentia in {theirs} (margin {args.margin})")
        print(f"check passed: soundcheck {ours} >= essentia {theirs} - {args.margin}")


if __name__ == "__main__":
    main()
