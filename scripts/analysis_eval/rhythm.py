#!/usr/bin/env python3
"""Beats, downbeats and meter of soundcheck's analyser on the analysis evaluation set, beside
essentia's beats, where the truth is known: the MMA pieces (build.py), whose beat grid is known by
construction. MMA plays bar 1 from time 0 at a constant tempo, and each excerpt starts at the
start of bar 2, so the true beats of an excerpt are at k * 60/bpm and its downbeats at
m * beats_per_bar * 60/bpm (beats per bar from the manifest's `detail`, "Swing 4/4 ...").

The composed game pieces are left out: their excerpts start anywhere in a bar and their meter
comes from time-signature events that many files lack or leave at a sequencer's default.
The excerpts carry no section truth (an MMA piece repeats one progression; 30 s is too short for
sections); the section curve is scored on whole pieces with a composer's rehearsal marks by
sections.py.

Scores (mir_eval 0.8, 70 ms window, beats before 5 s left out as mir_eval.beat does):
  * beats: F-measure, and the continuity measures CMLt (correct metrical level) and AMLt (any
    metrical level: double, half or off-beat readings count), for soundcheck and essentia
    (RhythmExtractor2013 "multifeature" ticks);
  * downbeats: F-measure against the true bar starts (soundcheck only: essentia 2.1 has no
    downbeat tracker), over all pieces and over those whose tempo soundcheck read within 2%;
  * meter: soundcheck's `rhythm.beats_per_bar` against the truth. The analyser reports 3 or 4;
    the set also has two 5/4 excerpts (Jazz54), listed in their own row and left out of the
    meter share that --check reads.

Usage:
  python3 scripts/analysis_eval/rhythm.py --bin target/debug/soundcheck [--part heldout|tune|all] \
      [--check downbeat_f=0.6,meter=0.9,meter3=0.4]
"""
import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from evaluate import essentia_cached, tempo_class  # noqa: E402

WINDOW = 0.07


def truth_grid(row):
    bpm = float(row["bpm"])
    beats_per_bar = int(row["detail"].split()[1].split("/")[0])
    dur = float(row["dur_s"])
    period = 60.0 / bpm
    beats = np.arange(0.0, dur - 1e-6, period)
    downbeats = np.arange(0.0, dur - 1e-6, period * beats_per_bar)
    return beats, downbeats, beats_per_bar


def _essentia_ticks(path):
    import essentia
    import essentia.standard as es
    essentia.log.infoActive = False
    essentia.log.warningActive = False
    audio = es.MonoLoader(filename=path, sampleRate=44100)()
    _, ticks, _, _, _ = es.RhythmExtractor2013(method="multifeature")(audio)
    return path, [float(t) for t in ticks]


def essentia_ticks(paths, cache_path, jobs):
    ticks = essentia_cached(paths, cache_path, jobs, _essentia_ticks, what="track")
    return {p: np.array(t) for p, t in ticks.items()}


def soundcheck_rhythm(binary, path):
    r = subprocess.run([binary, "analyze", path, "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"soundcheck analyze {path} failed: {r.stderr[-500:]}")
    rh = json.loads(r.stdout)["rhythm"]
    return path, rh


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="soundcheck binary")
    ap.add_argument("--set", default=os.path.join(ROOT, "target", "analysis_eval"))
    ap.add_argument("--manifest", default=os.path.join(HERE, "manifest.csv"))
    ap.add_argument("--part", choices=["tune", "heldout", "all"], default="heldout")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--check", default="",
                    help="floors, e.g. downbeat_f=0.6,meter=0.9,meter3=0.4: exit 1 when the part's mean "
                         "downbeat F-measure, share of meters right (3/4 and 4/4 excerpts) or share of "
                         "3/4 excerpts read in 3 is below (a constant 4 scores 0 on meter3)")
    args = ap.parse_args()
    import mir_eval

    with open(args.manifest) as fh:
        rows = [r for r in csv.DictReader(fh) if r["package"] == "mma"
                and (args.part == "all" or r["part"] == args.part)]
    paths = [os.path.join(args.set, r["file"]) for r in rows]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        sys.exit(f"{len(missing)} excerpts not rendered (first: {missing[0]}): run build.py")
    ess = essentia_ticks(paths, os.path.join(args.set, "essentia_ticks.json"), args.jobs)
    with ThreadPoolExecutor(args.jobs) as ex:
        sc = dict(ex.map(lambda p: soundcheck_rhythm(args.bin, p), paths))

    groups = {}
    for r, p in zip(rows, paths):
        beats, downbeats, bpb = truth_grid(r)
        ref_b = mir_eval.beat.trim_beats(beats)
        ref_d = mir_eval.beat.trim_beats(downbeats)
        rh = sc[p]
        est_b = mir_eval.beat.trim_beats(np.array(rh["beats"], dtype=float))
        est_d = mir_eval.beat.trim_beats(np.array(rh["downbeats"], dtype=float))
        est_e = mir_eval.beat.trim_beats(ess[p])
        res = {
            "sc_f": mir_eval.beat.f_measure(ref_b, est_b, WINDOW),
            "es_f": mir_eval.beat.f_measure(ref_b, est_e, WINDOW),
            "sc_cont": mir_eval.beat.continuity(ref_b, est_b)[1::2],  # CMLt, AMLt
            "es_cont": mir_eval.beat.continuity(ref_b, est_e)[1::2],
            "down_f": mir_eval.beat.f_measure(ref_d, est_d, WINDOW),
            "tempo_ok": tempo_class(rh["bpm"], float(r["bpm"])) == "exact",
            "meter_ok": rh.get("beats_per_bar") == bpb,
            "meter": rh.get("beats_per_bar"),
        }
        for g in ("all", f"{bpb}/4", r["genre"]):
            groups.setdefault(g, []).append(res)

    print(f"# Beats, downbeats and meter on the MMA pieces ({args.part}: {len(rows)} excerpts)\n")
    print("| group | n | beat F soundcheck | beat F essentia | CMLt sc / es | AMLt sc / es "
          "| downbeat F (all) | downbeat F (tempo right) | meter right |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = ["all"] + sorted(g for g in groups if g[0].isdigit()) + sorted(g for g in groups if not g[0].isdigit() and g != "all")
    for g in order:
        if g not in groups:
            continue
        xs = groups[g]
        mean = lambda k: np.mean([x[k] for x in xs])
        cont = lambda k, i: np.mean([x[k][i] for x in xs])
        ok = [x["down_f"] for x in xs if x["tempo_ok"]]
        print(f"| {g} | {len(xs)} | {mean('sc_f'):.3f} | {mean('es_f'):.3f} | "
              f"{cont('sc_cont', 0):.3f} / {cont('es_cont', 0):.3f} | {cont('sc_cont', 1):.3f} / {cont('es_cont', 1):.3f} | "
              f"{mean('down_f'):.3f} | {np.mean(ok) if ok else float('nan'):.3f} ({len(ok)}) | "
              f"{sum(x['meter_ok'] for x in xs)}/{len(xs)} |")
    if args.check:
        floors = {k: float(v) for k, v in (item.split("=") for item in args.check.split(","))}
        xs = groups["all"]
        reportable = groups.get("3/4", []) + groups.get("4/4", [])
        threes = groups.get("3/4", [])
        got = {"downbeat_f": float(np.mean([x["down_f"] for x in xs])),
               "meter": sum(x["meter_ok"] for x in reportable) / max(len(reportable), 1),
               "meter3": sum(x["meter_ok"] for x in threes) / max(len(threes), 1)}
        bad = [f"{k} {got[k]:.3f} < {v}" for k, v in floors.items() if got[k] < v]
        print(f"\ncheck ({args.part}): downbeat F {got['downbeat_f']:.3f}, meter right {got['meter']:.3f} "
              f"(3/4 read in 3: {got['meter3']:.3f}): "
              + ("FAIL: " + "; ".join(bad) if bad else "PASS"))
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
