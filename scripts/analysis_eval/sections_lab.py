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

`reference_foote` is MSAF's configuration of the same method (its `foote` defaults: beat-synchronous
pitch-class vectors shifted to be positive and divided by each dimension's maximum, a 12-beat
running median, similarity from the standardised Euclidean distance, a Gaussian-tapered
checkerboard 66 beats wide (std 22), peaks of the novelty smoothed over 4 beats above its 64-beat
running median plus a twentieth of its mean), on soundcheck's own chroma and beats (`soundcheck
analyze --json`, cached beside the renders with the sections `--check-port` compares). One
difference: the novelty is scaled by its min and max, where MSAF adds its minimum; the same where
the novelty is never negative, as on the marks.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
from scipy import ndimage, signal
from scipy.spatial import distance

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


def beat_sync(chroma, beats):
    """Mean max-normalised chroma over each stretch between beats (before the first beat and after
    the last too), and the stretches' start times."""
    unit = chroma / np.maximum(chroma.max(1, keepdims=True), 1e-9)
    centres = (np.arange(len(unit)) + 1) / CHROMA_PER_SEC  # 8192-sample frames, hop 4096
    edges = np.unique(np.concatenate([[0.0], beats, [centres[-1] + 1 / CHROMA_PER_SEC]]))
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        inside = (centres >= a) & (centres < b)
        out.append(unit[inside].mean(0) if inside.any() else unit[min(np.searchsorted(centres, a), len(unit) - 1)])
    return np.array(out), edges[:-1]


def reference_foote(chroma, beats, width=66, median=12, smooth=4, window=64):
    feats, starts = beat_sync(chroma, beats)
    feats = feats - feats.min() + 0.001
    feats = ndimage.median_filter(feats / feats.max(0), size=(median, 1))
    d = distance.squareform(distance.pdist(feats, "seuclidean"))
    sim = 1 - d / max(d.max(), 1e-12)
    half = width // 2
    g = signal.windows.gaussian(2 * half, 2 * half // 3)
    kernel = np.outer(g, g)
    kernel[half:, :half] *= -1
    kernel[:half, half:] *= -1
    n = len(feats)
    nov = np.zeros(n)
    for t in range(half, n - half + 1):
        nov[t] = (sim[t - half:t + half, t - half:t + half] * kernel).sum()
    nov = (nov - nov.min()) / max(nov.max() - nov.min(), 1e-12)
    sm = ndimage.gaussian_filter1d(nov, smooth)
    threshold = ndimage.median_filter(sm, size=window) + nov.mean() / 20
    return [float(starts[t]) for t in range(1, n - 1) if sm[t - 1] < sm[t] > sm[t + 1] and sm[t] > threshold[t]]


def analysis_of(binary, wav, cache):
    """A soundcheck binary's beats and section starts for a track, cached by the track's and the
    binary's name, size and mtime (a rebuilt analyser reads the track again)."""
    st, sb = os.stat(wav), os.stat(binary)
    k = f"{os.path.basename(wav)}|{st.st_size}|{st.st_mtime}|{os.path.abspath(binary)}|{sb.st_size}|{sb.st_mtime}"
    if k not in cache:
        r = subprocess.run([binary, "analyze", wav, "--json"], capture_output=True, text=True, check=True)
        d = json.loads(r.stdout)
        cache[k] = {"beats": d["rhythm"]["beats"], "sections": [s["start"] for s in d["sections"]]}
    return cache[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["tune", "heldout"], default="tune")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "analysis_eval", "sections"))
    ap.add_argument("--dump", default=os.path.join(ROOT, "target", "analysis_eval", "sections", "dump"))
    ap.add_argument("--dumper", default=os.path.join(ROOT, "target", "debug", "examples", "analysis_dump"))
    ap.add_argument("--check-port", metavar="BIN", help="compare the port's boundaries with the binary's")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "soundcheck"),
                    help="the analyser whose beats reference_foote reads")
    args = ap.parse_args()
    cache_path = os.path.join(args.out, "analyze_cache.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    tracks = []
    for name, midi, bounds, phrases in S.pieces_of(args.part, args.out):
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
                               ref=[t + shift for t in bounds], ref_phrases=[t + shift for t in phrases],
                               beats=np.array(analysis_of(args.bin, wav, cache)["beats"])))
    if args.check_port:
        differ = 0
        for t in tracks:
            got = [round(s) for s in analysis_of(args.check_port, t["wav"], cache)["sections"]][1:]
            mine = [round(b) for b in sections(t["mel"], t["chroma"])]
            differ += got != mine
            if got != mine:
                print(f"port differs on {os.path.basename(t['wav'])}: binary {got}, port {mine}")
        print(f"port differs from the binary on {differ} of {len(tracks)} tracks")
    with open(cache_path, "w") as fh:
        json.dump(cache, fh)

    def score(name, find=None, **kw):
        f = []
        for t in tracks:
            est = find(t) if find else sections(t["mel"], t["chroma"], **kw)
            f.append(S.hit_rate(t["ref"], est, t["span"]) + (len(S.inside(est, t["span"])),
                                                              S.hit_rate(t["ref_phrases"], est, t["span"])[2]))
        a = np.array(f)
        half = len(a) // 2
        print(f"{name:44s} P {a[:, 0].mean():.3f} R {a[:, 1].mean():.3f} F {a[:, 2].mean():.3f} "
              f"(n {a[:, 3].mean():.1f}; F first/second half of the tracks {a[:half, 2].mean():.3f} / "
              f"{a[half:, 2].mean():.3f}; phrases F {a[:, 4].mean():.3f})", flush=True)

    print(f"{len(tracks)} tracks, part {args.part}")
    score("half 6 (shipped)", half=6)
    score("half 16 (best on tune; lost on the marks, never shipped)", half=16)
    score("MSAF's foote configuration (not shipped)", lambda t: reference_foote(t["chroma"], t["beats"]))
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
