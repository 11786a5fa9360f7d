#!/usr/bin/env python3
"""Section-curve experiments on the TUNE part of sections.py (MMA songs with sections by
construction): the analyser's `sections` stage ported to numpy, and variants of it scored beside
it without rebuilding soundcheck. The held-out part (the Simutrans pieces' rehearsal marks) is
read only with --part heldout, once per finished variant.

  python3 scripts/analysis_eval/sections.py --part tune         # renders the songs
  cargo build --example analysis_dump
  python3 scripts/analysis_eval/sections_lab.py [--part tune|heldout] [--check-port BIN]

The port follows src/engines/analyze/mod.rs `sections`: one vector a second (mean log-mel, 40
bands, and the sum of max-normalised chroma frames x 10), each dimension z-scored, vectors
unit-normalised, Foote's checkerboard kernel (half-width HALF s, unweighted) over the cosine
self-similarity, peaks over +-MIN_LEN/2 s above mean + K sd of the novelty, MIN_LEN s apart.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import sections as S  # noqa: E402

FPS = 22050 / 256
CHROMA_PER_SEC = 22050 / 4096
N_MELS = 40


def features(mel, chroma, chroma_weight=10.0, smooth=0):
    per_sec = int(round(FPS))
    n_sec = max(len(mel) // per_sec, 1)
    feats = np.zeros((n_sec, N_MELS + 12))
    for s in range(n_sec):
        block = mel[s * per_sec:(s + 1) * per_sec]
        if len(block):
            feats[s, :N_MELS] = block.mean(0)
        c0 = int(s * CHROMA_PER_SEC)
        c1 = max(int((s + 1) * CHROMA_PER_SEC), c0 + 1)
        c = chroma[c0:c1]
        if len(c):
            feats[s, N_MELS:] = (c / np.maximum(c.max(1, keepdims=True), 1e-9)).sum(0) * chroma_weight
    if smooth > 1:  # running median over `smooth` seconds, per dimension
        pad = smooth // 2
        padded = np.pad(feats, ((pad, pad), (0, 0)), mode="edge")
        feats = np.array([np.median(padded[i:i + smooth], 0) for i in range(n_sec)])
    feats = (feats - feats.mean(0)) / np.maximum(feats.std(0), 1e-9)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-9)
    return feats


def novelty(feats, half=6, gaussian=False):
    n = len(feats)
    sim = feats @ feats.T
    sign = np.ones((2 * half, 2 * half))
    sign[:half, half:] = -1
    sign[half:, :half] = -1
    if gaussian:
        g = np.exp(-0.5 * ((np.arange(2 * half) - half + 0.5) / (0.5 * half)) ** 2)
        sign = sign * np.outer(g, g)
    out = np.zeros(n)
    for t in range(half, n - half + 1):
        out[t] = (sim[t - half:t + half, t - half:t + half] * sign).sum() / (4 * half * half)
    return out


def peaks(nov, k=0.5, min_len=8):
    n = len(nov)
    mean, sd = nov.mean(), nov.std()
    bounds, last = [], 0
    for t in range(1, n - 1):
        lo, hi = max(t - min_len // 2, 0), min(t + min_len // 2 + 1, n)
        if (nov[lo:hi] <= nov[t]).all() and nov[t] > mean + k * sd and nov[t] > 0 and t - last >= min_len \
                and n - t >= min_len:
            bounds.append(float(t))
            last = t
    return bounds


def sections(mel, chroma, half=6, k=0.5, min_len=8, chroma_weight=10.0, smooth=0, gaussian=False):
    return peaks(novelty(features(mel, chroma, chroma_weight, smooth), half, gaussian), k, min_len)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["tune", "heldout"], default="tune")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "analysis_eval", "sections"))
    ap.add_argument("--dump", default=os.path.join(ROOT, "target", "analysis_eval", "sections", "dump"))
    ap.add_argument("--dumper", default=os.path.join(ROOT, "target", "debug", "examples", "analysis_dump"))
    ap.add_argument("--check-port", metavar="BIN", help="compare the port's boundaries with the binary's")
    args = ap.parse_args()
    tracks = []
    for name, midi, bounds, _ in S.pieces_of(args.part, args.out):
        for rend in S.RENDERERS:
            wav = os.path.join(args.out, f"{name}__{rend}.wav")
            if not os.path.exists(wav):
                sys.exit(f"no {wav}: run sections.py --part {args.part} first")
            stem = os.path.join(args.dump, f"{name}__{rend}")
            if not os.path.exists(stem + ".chroma"):
                subprocess.run([args.dumper, args.dump, wav], check=True)
            mel = np.fromfile(stem + ".mel", "<f4").reshape(-1, N_MELS).astype(np.float64)
            chroma = np.fromfile(stem + ".chroma", "<f4").reshape(-1, 12).astype(np.float64)
            span, shift = S.alignment(wav, midi)
            tracks.append(dict(name=name, wav=wav, mel=mel, chroma=chroma, span=span,
                               ref=[t + shift for t in bounds]))
    if args.check_port:
        differ = 0
        for t in tracks:
            r = subprocess.run([args.check_port, "analyze", t["wav"], "--json"], capture_output=True, text=True,
                               check=True)
            got = [round(s["start"]) for s in json.loads(r.stdout)["sections"]][1:]
            mine = [round(b) for b in sections(t["mel"], t["chroma"])]
            differ += got != mine
            if got != mine:
                print(f"port differs on {os.path.basename(t['wav'])}: binary {got}, port {mine}")
        print(f"port differs from the binary on {differ} of {len(tracks)} tracks")

    def score(name, **kw):
        f = []
        for t in tracks:
            est = sections(t["mel"], t["chroma"], **kw)
            f.append(S.hit_rate(t["ref"], est, t["span"]) + (len(S.inside(est, t["span"])),))
        a = np.array(f)
        half = len(a) // 2
        print(f"{name:44s} P {a[:, 0].mean():.3f} R {a[:, 1].mean():.3f} F {a[:, 2].mean():.3f} "
              f"(n {a[:, 3].mean():.1f}; F first/second half of the tracks {a[:half, 2].mean():.3f} / "
              f"{a[half:, 2].mean():.3f})", flush=True)

    print(f"{len(tracks)} tracks, part {args.part}")
    score("half 6 (shipped)", half=6)
    score("half 16 (best on tune; lost on the marks, never shipped)", half=16)
    if args.part == "heldout":
        return
    for half in (4, 8, 10, 12, 16):
        score(f"half {half}", half=half)
    for k in (0.0, 0.25, 1.0):
        score(f"k {k}", k=k)
    for m in (6, 12):
        score(f"min_len {m}", min_len=m)
    for w in (3.0, 20.0):
        score(f"chroma x{w:g}", chroma_weight=w)
    for sm in (3, 5):
        score(f"median {sm} s", smooth=sm)
    score("gaussian kernel", gaussian=True)
    # A grid over half x k x min_len (half 12-24, k 0.25-1, min 8-16) put half 16 on top with
    # any k and min_len (F 0.69-0.71); 14 and 20 fell to 0.68 and below.
    for half in (8, 12, 16):
        score(f"gaussian kernel, half {half}", gaussian=True, half=half)


if __name__ == "__main__":
    main()
