#!/usr/bin/env python3
"""Scores soundcheck's analyser beside essentia on the analysis evaluation set (build.py).

For each part (tune, heldout) it reports tempo accuracy within 2% ("acc1"), within 2% allowing
x2 and x1/2 ("acc2"), and within 2% also allowing x3/2 and x2/3 ("acc2+3/2"); key exact, and
key errors counted apart as relative, fifth (dominant/subdominant, same mode), parallel and
other; the same per genre; and soundcheck's accuracy per confidence bucket, with the
confidences' AUC and Brier score.

essentia: RhythmExtractor2013(method="multifeature") for BPM, KeyExtractor for key with the
profile named by --key-profile (default "temperley": the best of essentia's profiles on the tune part,
see README.md; --all-profiles prints every profile's key accuracy). essentia's results are cached
under the set's directory, keyed by file, size and mtime.

soundcheck: `soundcheck analyze FILE --json` (the CLI's full analysis: rhythm.bpm,
rhythm.confidence, key.name, key.confidence), run with the binary given by --bin.

--check: exits 1 when soundcheck's held-out tempo acc1, acc2 or key exact falls below essentia's
minus --margin (points; default 0, the issue's target: at or above essentia). CI passes the gap
measured when the gate was set, so the step catches regressions while the target is open.

Usage:
  python3 scripts/analysis_eval/evaluate.py [--bin target/debug/soundcheck] [--part heldout] [--check]
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PROFILES = ["bgate", "edma", "temperley", "krumhansl", "shaath", "noland", "diatonic", "tonictriad",
            "temperley2005", "edmm", "braw", "gomez"]

PC = {"C": 0, "B#": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "Fb": 4, "F": 5, "E#": 5,
      "F#": 6, "Gb": 6, "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11, "Cb": 11}


def parse_key(s):
    if not s:
        return None
    parts = s.split()
    if len(parts) != 2 or parts[0] not in PC:
        return None
    return PC[parts[0]], parts[1].lower()


def tempo_class(est, truth, tol=0.02):
    """'exact', 'double', 'half', 'x3/2', 'x2/3' or 'other'."""
    if not est or est <= 0:
        return "other"
    for name, f in (("exact", 1.0), ("double", 2.0), ("half", 0.5), ("x3/2", 1.5), ("x2/3", 2.0 / 3.0)):
        if abs(est / (truth * f) - 1.0) <= tol:
            return name
    return "other"


def key_class(est, truth):
    """'exact', 'fifth', 'relative', 'parallel', 'other' (or 'none' when nothing was named)."""
    if est is None:
        return "none"
    (et, em), (tt, tm) = est, truth
    if (et, em) == (tt, tm):
        return "exact"
    if em == tm and (et - tt) % 12 in (5, 7):
        return "fifth"
    if em != tm:
        if tm == "major" and em == "minor" and et == (tt + 9) % 12:
            return "relative"
        if tm == "minor" and em == "major" and et == (tt + 3) % 12:
            return "relative"
        if et == tt:
            return "parallel"
    return "other"


# --------------------------------------------------------------------------------------------
# essentia (in worker processes; imported there so the parent stays light)

def _essentia_one(args):
    path, profiles = args
    import essentia
    import essentia.standard as es
    essentia.log.infoActive = False
    essentia.log.warningActive = False
    audio = es.MonoLoader(filename=path, sampleRate=44100)()
    bpm, _, conf, _, _ = es.RhythmExtractor2013(method="multifeature")(audio)
    keys = {}
    for p in profiles:
        try:
            k, scale, strength = es.KeyExtractor(profileType=p)(audio)
            keys[p] = [f"{k} {scale}", float(strength)]
        except RuntimeError:  # a profile that cannot name this excerpt's key
            keys[p] = ["", 0.0]
    return path, {"bpm": float(bpm), "bpm_confidence": float(conf), "keys": keys}


def essentia_cached(paths, cache_path, jobs, worker, job_of=lambda p: p, stale=lambda entry: False,
                    what="analyse"):
    """Runs `worker(job_of(path)) -> (path, result)` in worker processes for the paths whose
    result is not in the JSON cache at `cache_path` (or is `stale`), saves the cache, and returns
    path -> result. Entries are keyed by the file's path relative to the cache's folder (so a set
    copied or moved with its cache, times kept, is not analysed again), size, mtime and essentia's
    version."""
    home = os.path.dirname(os.path.abspath(cache_path))
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path) as fh:
            cache = json.load(fh)
    # Caches written before 2026-12-07 keyed files by absolute path: rewritten as relative (and
    # saved below, so that a copy of the set made afterwards finds them).
    migrated = {(os.path.relpath(k.split("|", 1)[0], home) + "|" + k.split("|", 1)[1]
                 if k.startswith(home + os.sep) else k): v for k, v in cache.items()}
    changed = set(migrated) != set(cache)
    cache = migrated
    import essentia
    ver = essentia.__version__

    def ck(p):
        st = os.stat(p)
        return f"{os.path.relpath(os.path.abspath(p), home)}|{st.st_size}|{int(st.st_mtime)}|{ver}"

    todo = [p for p in paths if ck(p) not in cache or stale(cache[ck(p)])]
    if todo:
        print(f"essentia: {len(todo)} files to {what}", file=sys.stderr)
        with ProcessPoolExecutor(jobs) as ex:
            for i, (p, r) in enumerate(ex.map(worker, [job_of(p) for p in todo], chunksize=4)):
                cache[ck(p)] = r
                if (i + 1) % 50 == 0:
                    print(f"  essentia {i + 1}/{len(todo)}", file=sys.stderr)
    if todo or changed:
        with open(cache_path, "w") as fh:
            json.dump(cache, fh)
    return {p: cache[ck(p)] for p in paths}


def run_essentia(paths, profiles, cache_path, jobs):
    return essentia_cached(paths, cache_path, jobs, _essentia_one, job_of=lambda p: (p, profiles),
                           stale=lambda entry: any(q not in entry["keys"] for q in profiles))


# --------------------------------------------------------------------------------------------
# soundcheck

def _soundcheck_one(binary, path):
    r = subprocess.run([binary, "analyze", path, "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"soundcheck analyze {path} failed: {r.stderr[-500:]}")
    j = json.loads(r.stdout)
    return {"bpm": j["rhythm"]["bpm"], "bpm_confidence": j["rhythm"]["confidence"],
            "key": j["key"]["name"], "key_confidence": j["key"]["confidence"]}


def run_soundcheck(binary, paths, jobs):
    with ThreadPoolExecutor(jobs) as ex:
        return dict(zip(paths, ex.map(lambda p: _soundcheck_one(binary, p), paths)))


# --------------------------------------------------------------------------------------------
# scoring

def score(rows, est_bpm, est_key):
    """rows: manifest rows; est_bpm/est_key: id -> value. Returns a dict of counts."""
    s = defaultdict(int)
    for r in rows:
        s["n"] += 1
        c = tempo_class(est_bpm[r["id"]], float(r["bpm"]))
        s["t_" + c] += 1
        tk = parse_key(r["key"])
        if tk is not None:
            s["nk"] += 1
            s["k_" + key_class(parse_key(est_key[r["id"]]), tk)] += 1
    s["acc1"] = s["t_exact"] / max(s["n"], 1)
    s["acc2"] = (s["t_exact"] + s["t_double"] + s["t_half"]) / max(s["n"], 1)
    s["acc2_32"] = (s["t_exact"] + s["t_double"] + s["t_half"] + s["t_x3/2"] + s["t_x2/3"]) / max(s["n"], 1)
    s["key"] = s["k_exact"] / max(s["nk"], 1)
    return s


def pct(x):
    return f"{100 * x:5.1f}%"


def table(title, groups, systems):
    """groups: list of (label, rows); systems: list of (name, est_bpm, est_key)."""
    out = [f"\n### {title}\n",
           "| group | n (key) | system | tempo acc1 | acc2 (x2, x1/2) | acc2 + x3/2, x2/3 | key exact | fifth | relative | parallel | other |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, rows in groups:
        for name, b, k in systems:
            s = score(rows, b, k)
            out.append(f"| {label} | {s['n']} ({s['nk']}) | {name} | {pct(s['acc1'])} | {pct(s['acc2'])} | {pct(s['acc2_32'])} | "
                       f"{pct(s['key'])} | {s['k_fifth']} | {s['k_relative']} | {s['k_parallel']} | {s['k_other'] + s['k_none']} |")
    return "\n".join(out)


def tempo_errors(title, rows, systems):
    out = [f"\n### {title}\n", "| system | exact | double | half | x3/2 | x2/3 | other |", "|---|---|---|---|---|---|---|"]
    for name, b, k in systems:
        s = score(rows, b, k)
        out.append(f"| {name} | " + " | ".join(str(s['t_' + c]) for c in ("exact", "double", "half", "x3/2", "x2/3", "other")) + " |")
    return "\n".join(out)


def sign_test(wins, losses):
    """Two-sided exact binomial test of wins vs losses at even odds (McNemar's exact test when
    the counts are discordant pairs)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(title, rows, systems):
    """soundcheck against essentia excerpt by excerpt: how many each reads right that the other
    does not, and whether the difference is more than chance. Both renders of a piece are one
    piece of music, so the excerpt-level test overstates the evidence; the piece-level sign test
    counts a piece for the system right on more of its renders."""
    (n1, b1, k1), (n2, b2, k2) = systems[0], systems[1]
    right = {
        "tempo acc1": lambda b, r: tempo_class(b[r["id"]], float(r["bpm"])) == "exact",
        "tempo acc2": lambda b, r: tempo_class(b[r["id"]], float(r["bpm"])) in ("exact", "double", "half"),
    }
    out = [f"\n### {title}\n",
           f"| figure | only {n1} right | only {n2} right | exact p (excerpts) | pieces {n1} ahead | pieces {n2} ahead | sign-test p (pieces) |",
           "|---|---|---|---|---|---|---|"]
    figures = [(name, rows, lambda r, f=f: (f(b1, r), f(b2, r))) for name, f in right.items()]
    figures.append(("key exact", [r for r in rows if parse_key(r["key"]) is not None],
                    lambda r: tuple(key_class(parse_key(k[r["id"]]), parse_key(r["key"])) == "exact"
                                    for k in (k1, k2))))
    for name, rs, ok in figures:
        a = b = 0
        per_piece = defaultdict(int)
        for r in rs:
            x, y = ok(r)
            a += x and not y
            b += y and not x
            per_piece[r["piece"]] += int(x) - int(y)
        pa = sum(v > 0 for v in per_piece.values())
        pb = sum(v < 0 for v in per_piece.values())
        out.append(f"| {name} | {a} | {b} | {sign_test(a, b):.2f} | {pa} | {pb} | {sign_test(pa, pb):.2f} |")
    return "\n".join(out)


BUCKETS = [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0001)]


def buckets(title, rows, sc):
    out = [f"\n### {title}\n",
           "| confidence | tempo: n | tempo acc2 | tempo acc1 | key: n | key exact |", "|---|---|---|---|---|---|"]
    for lo, hi in BUCKETS:
        tr = [r for r in rows if lo <= sc[r["path"]]["bpm_confidence"] < hi]
        kr = [r for r in rows if r["key"] and lo <= sc[r["path"]]["key_confidence"] < hi]
        t1 = sum(tempo_class(sc[r["path"]]["bpm"], float(r["bpm"])) == "exact" for r in tr)
        t2 = sum(tempo_class(sc[r["path"]]["bpm"], float(r["bpm"])) in ("exact", "double", "half") for r in tr)
        ke = sum(key_class(parse_key(sc[r["path"]]["key"]), parse_key(r["key"])) == "exact" for r in kr)
        f = lambda a, n: pct(a / n) if n else "    -"
        out.append(f"| {lo:.2f}-{min(hi, 1):.2f} | {len(tr)} | {f(t2, len(tr))} | {f(t1, len(tr))} | {len(kr)} | {f(ke, len(kr))} |")
    tempo = [(sc[r["path"]]["bpm_confidence"], tempo_class(sc[r["path"]]["bpm"], float(r["bpm"])) == "exact")
             for r in rows]
    key = [(sc[r["path"]]["key_confidence"],
            key_class(parse_key(sc[r["path"]]["key"]), parse_key(r["key"])) == "exact") for r in rows if r["key"]]
    out.append("\nRanking and calibration (AUC: the chance that a right reading has a higher confidence than "
               "a wrong one, 0.5 = blind; Brier: mean squared gap between confidence and 1/0 right):\n")
    out.append(f"tempo (acc1): AUC {auc(tempo):.3f}, Brier {brier(tempo):.3f}; "
               f"key (exact): AUC {auc(key):.3f}, Brier {brier(key):.3f}")
    return "\n".join(out)


def auc(pairs):
    right = [c for c, ok in pairs if ok]
    wrong = [c for c, ok in pairs if not ok]
    if not right or not wrong:
        return float("nan")
    return sum((a > b) + 0.5 * (a == b) for a in right for b in wrong) / (len(right) * len(wrong))


def brier(pairs):
    return sum((c - ok) ** 2 for c, ok in pairs) / len(pairs) if pairs else float("nan")


def parse_margin(text):
    """'3' -> 3 points for acc1, acc2 and key; 'acc1=7,key=4' -> those, the rest 0."""
    names = ("acc1", "acc2", "key")
    if "=" not in text:
        return {m: float(text) for m in names}
    out = {m: 0.0 for m in names}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in out:
            raise SystemExit(f"--margin: unknown figure {name!r} (acc1, acc2, key)")
        out[name.strip()] = float(value)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                                  "debug", "soundcheck"),
                    help="soundcheck binary, a path or a name on PATH (default: the debug build)")
    ap.add_argument("--set", default=os.path.join(ROOT, "target", "analysis_eval"), help="built set directory")
    ap.add_argument("--manifest", default=os.path.join(HERE, "manifest.csv"))
    ap.add_argument("--part", choices=["tune", "heldout", "all"], default="all")
    ap.add_argument("--key-profile", default="temperley")
    ap.add_argument("--all-profiles", action="store_true", help="also print key exact for every essentia profile")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", help="write per-excerpt results here")
    ap.add_argument("--check", action="store_true",
                    help="held-out only; exit 1 if soundcheck's tempo acc1/acc2 or key exact is below essentia's "
                         "minus --margin")
    ap.add_argument("--margin", default="0",
                    help="points below essentia that --check allows: one number for all three, or "
                         "acc1=N,acc2=N,key=N (unnamed ones stay 0)")
    args = ap.parse_args()
    margin = parse_margin(args.margin)
    if args.check:
        args.part = "heldout"
    found = args.bin if os.path.isfile(args.bin) else shutil.which(args.bin)
    if not found:
        sys.exit(f"no soundcheck binary at {args.bin}: run `cargo build` or pass --bin")
    args.bin = found
    with open(args.manifest) as fh:
        rows = list(csv.DictReader(fh))
    if args.part != "all":
        rows = [r for r in rows if r["part"] == args.part]
    for r in rows:
        r["path"] = os.path.join(args.set, r["file"])
    missing = [r["path"] for r in rows if not os.path.exists(r["path"])]
    if missing:
        hint = " (or pass --part heldout after `build.py --part heldout`)" if args.part == "all" else ""
        sys.exit(f"{len(missing)} excerpts missing (first: {missing[0]}): run scripts/analysis_eval/build.py"
                 + hint)
    paths = [r["path"] for r in rows]
    profiles = PROFILES if args.all_profiles else [args.key_profile]
    ess = run_essentia(paths, profiles, os.path.join(args.set, "essentia_cache.json"), args.jobs)
    print(f"soundcheck: {len(paths)} files", file=sys.stderr)
    sc = run_soundcheck(os.path.abspath(args.bin), paths, args.jobs)

    systems = [
        ("soundcheck", {r["id"]: sc[r["path"]]["bpm"] for r in rows}, {r["id"]: sc[r["path"]]["key"] for r in rows}),
        (f"essentia ({args.key_profile})", {r["id"]: ess[r["path"]]["bpm"] for r in rows},
         {r["id"]: ess[r["path"]]["keys"][args.key_profile][0] for r in rows}),
    ]
    parts = ["tune", "heldout"] if args.part == "all" else [args.part]
    report = ["# soundcheck vs essentia on the analysis evaluation set"]
    verdict = {}
    for part in parts:
        pr = [r for r in rows if r["part"] == part]
        report.append(f"\n## part: {part} ({len(pr)} excerpts, {sum(1 for r in pr if r['key'])} with key truth)")
        genres = sorted(set(r["genre"] for r in pr))
        report.append(table(f"{part}: overall", [("all", pr)], systems))
        report.append(tempo_errors(f"{part}: tempo readings", pr, systems))
        report.append(paired(f"{part}: soundcheck against essentia, excerpt by excerpt", pr, systems))
        report.append(table(f"{part}: per genre", [(g, [r for r in pr if r["genre"] == g]) for g in genres], systems))
        report.append(table(f"{part}: per renderer", [(g, [r for r in pr if r["renderer"] == g])
                                                      for g in sorted(set(r["renderer"] for r in pr))], systems))
        report.append(buckets(f"{part}: soundcheck accuracy per confidence bucket", pr, sc))
        if args.all_profiles:
            report.append(f"\n### {part}: essentia key exact per KeyExtractor profile\n")
            report.append("| profile | key exact |\n|---|---|")
            kr = [r for r in pr if r["key"]]
            for p in PROFILES:
                e = sum(key_class(parse_key(ess[r["path"]]["keys"][p][0]), parse_key(r["key"])) == "exact" for r in kr)
                report.append(f"| {p} | {pct(e / max(len(kr), 1))} |")
        verdict[part] = [score(pr, b, k) for _, b, k in systems]
    print("\n".join(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({r["id"]: {"truth_bpm": float(r["bpm"]), "truth_key": r["key"], "part": r["part"],
                                 "genre": r["genre"], "soundcheck": sc[r["path"]],
                                 "essentia": {"bpm": ess[r["path"]]["bpm"],
                                              "key": ess[r["path"]]["keys"][args.key_profile][0]}}
                       for r in rows}, fh, indent=1)
    if args.check:
        s, e = verdict["heldout"]
        fails = [m for m in ("acc1", "acc2", "key") if s[m] < e[m] - margin[m] / 100 - 1e-9]
        allowed = "" if not any(margin.values()) else \
            " (allowed below essentia: " + ", ".join(f"{m} {margin[m]:g}" for m in margin) + " points)"
        print(f"\ncheck (held-out): soundcheck tempo acc1 {pct(s['acc1'])} acc2 {pct(s['acc2'])} key {pct(s['key'])}; "
              f"essentia {pct(e['acc1'])} / {pct(e['acc2'])} / {pct(e['key'])}{allowed}: "
              + ("PASS" if not fails else "FAIL (" + ", ".join(fails) + " below essentia minus margin)"))
        sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
