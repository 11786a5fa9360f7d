#!/usr/bin/env python3
"""Tempo experiments on the TUNE part: the analyser's tempo stage as it ships, ported to numpy, and
the alternatives of 2026-12-06's fifth session scored beside it without rebuilding soundcheck.
The held-out part is read only with --part heldout, once per finished alternative.

  cargo build --example analysis_dump
  python3 scripts/analysis_eval/tempo_lab.py dump                 # front-end dumps of the set
  python3 scripts/analysis_eval/tempo_lab.py port [--sc-json F]   # the port; against the binary
  python3 scripts/analysis_eval/tempo_lab.py agreement            # beat agreement across ODFs
  python3 scripts/analysis_eval/tempo_lab.py davies               # windowed periodicity
  python3 scripts/analysis_eval/tempo_lab.py unbiased             # unbiased autocorrelation
  python3 scripts/analysis_eval/tempo_lab.py octave               # learned x1/2, x1, x2 choice
  python3 scripts/analysis_eval/tempo_lab.py prior                # prior and margins, by family

Each prints tempo within 2% / within 2% of x1, x2 or x1/2 over the part, and over its original
excerpts and the MMA grooves added to the tune part only (`build.TUNE_ONLY_GROOVES`), since a
gain on the added grooves alone has twice failed to carry over to held-out.

The port follows src/engines/analyze/tempo.rs (detrend, magnitude autocorrelation, 4-multiple
comb, log-normal prior, the faster-level margins, sharpening); `port --sc-json` counts the
excerpts where it differs from `evaluate.py --json`'s readings by more than 1%.
"""
import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from build import TUNE_ONLY_GROOVES  # noqa: E402
from evaluate import tempo_class  # noqa: E402
from tune_lab import detrend, fit_logit, stem  # noqa: E402  (the same helpers as the older lab)

FPS = 22050 / 256
N_MELS = 40

# ---------------------------------------------------------------------------------------------
# The shipped tempo stage (src/engines/analyze/tempo.rs), tempo only.


def normalise(x):
    sd = x.std()
    return x / sd if sd > 1e-12 else x


def autocorr(x, exponent=1.0):
    n = len(x)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    return np.fft.irfft(np.abs(np.fft.rfft(x, size)) ** exponent, size)[:n]


def prior(bpm):
    o = np.log2(bpm / 120.0)
    return np.exp(-0.5 * o * o)


def comb(ac, lags, multiples=4):
    n = len(ac)
    total, count = np.zeros_like(lags), np.zeros_like(lags)
    for k in range(1, multiples + 1):
        lag = lags * k
        ok = lag < n - 1
        i = np.minimum(np.floor(lag).astype(int), n - 2)
        f = lag - np.floor(lag)
        v = (ac[i] * (1 - f) + ac[i + 1] * f) / ac[0]
        total += np.where(ok, np.maximum(v, 0), 0)
        count += ok
    return np.where(count > 0, total / np.maximum(count, 1), 0)


def sharpen(ac, period, multiples=4):
    s = w = 0.0
    for k in range(1, multiples + 1):
        lag = period * k
        lo, hi = max(int(np.floor(lag * 0.98)), 1), int(np.ceil(lag * 1.02))
        if hi + 1 >= len(ac):
            break
        i = lo + int(np.argmax(ac[lo:hi + 1]))
        a, b, c = ac[i - 1], ac[i], ac[i + 1]
        curve = a - 2 * b + c
        if b <= 0 or curve >= 0 or i in (lo, hi):
            continue
        s += b * (i + 0.5 * (a - c) / curve) / k
        w += b
    if w <= 0:
        return period
    sharp = s / w
    return sharp if abs(sharp / period - 1) <= 0.01 else period


def curve(onset, unbiased=0.0):
    """(lags, bpms, comb scores before the prior, autocorrelation) of one envelope."""
    ac = autocorr(normalise(detrend(onset, int(FPS))))
    if unbiased:
        n = len(ac)
        ac = ac / ((n - np.arange(n)) / n) ** unbiased
    lags = np.arange(60 * FPS / 300, min(60 * FPS / 30, len(onset) // 2) + 1e-9, 0.125)
    return lags, 60 * FPS / lags, comb(ac, lags), ac


def peak(a, lag):
    """The largest value of a within 3% of lag (0 when negative, or when the window leaves a)."""
    lo, hi = int(np.floor(lag * 0.97)), int(np.ceil(lag * 1.03))
    if lo < 1 or hi >= len(a):
        return 0.0
    return max(a[lo:hi + 1].max(), 0.0)


def select(lags, bpms, c, ac, margin=1.1, sub_margin=1.3, share=0.5):
    """The comb's best period under the prior, or its x2 / x3/2 level within the margins."""
    sc = c * prior(bpms)
    b = int(np.argmax(sc))
    acf = ac / ac[0]

    def near(bpm):
        m = np.abs(bpms / bpm - 1) < 0.03
        if not m.any():
            return None
        j = np.flatnonzero(m)[np.argmax(sc[m])]
        return sc[j], lags[j]

    pick = (sc[b], lags[b])
    for f in (2.0, 1.5):
        r = near(bpms[b] * f)
        if r is None:
            continue
        s, lag = r
        subdivided = max(peak(acf, lag / 2), peak(acf, lag / 3)) > share * max(peak(acf, lag), 1e-6)
        if s * (sub_margin if subdivided else margin) > pick[0]:
            pick = (s * (sub_margin if subdivided else margin), lag)
    return pick[1]


def estimate(onset, unbiased=0.0, **kw):
    """(bpm, period in frames) as the analyser reads them; (0, 0) when it reads nothing."""
    if len(onset) < 2 * FPS:
        return 0.0, 0.0
    lags, bpms, c, ac = curve(onset, unbiased)
    if ac[0] <= 0:
        return 0.0, 0.0
    period = select(lags, bpms, c, ac, **kw)
    return 60 * FPS / sharpen(ac, period), period


# ---------------------------------------------------------------------------------------------
# Beat tracking (Ellis' dynamic programme, as track_beats) and beat-sequence agreement.


def track(env, period, tightness=100.0):
    n = len(env)
    sigma = max(period / 32, 0.5)
    rad = int(np.ceil(3 * sigma))
    local = np.convolve(env, np.exp(-0.5 * (np.arange(-rad, rad + 1) / sigma) ** 2), mode="same")
    lo, hi = max(int(round(period / 2)), 1), int(round(period * 2))
    penalty = tightness * np.log(np.arange(lo, hi + 1) / period) ** 2
    score, back = np.zeros(n), -np.ones(n, int)
    for t in range(n):
        score[t] = local[t]
        if t >= lo:
            ps = np.arange(max(t - hi, 0), t - lo + 1)
            cand = score[ps] - penalty[t - ps - lo]
            j = int(np.argmax(cand))
            if cand[j] > 0:
                score[t] += cand[j]
                back[t] = ps[j]
    start = max(n - int(np.ceil(period)) - 1, 0)
    beats = [start + int(np.argmax(score[start:]))]
    while back[beats[-1]] >= 0:
        beats.append(back[beats[-1]])
    beats = beats[::-1]
    strong = local.max() * 0.02
    while beats and local[beats[0]] <= strong:
        beats.pop(0)
    while beats and local[beats[-1]] <= strong:
        beats.pop()
    return np.array(beats)


def f_measure(ref, est, tol):
    """F-measure of two beat sequences (frames), greedy one-to-one matching within tol frames."""
    if len(ref) == 0 or len(est) == 0:
        return 0.0
    used, hits = np.zeros(len(est), bool), 0
    for r in ref:
        d = np.abs(est - r).astype(float)
        d[used] = np.inf
        j = int(np.argmin(d))
        if d[j] <= tol:
            used[j] = True
            hits += 1
    return 0.0 if hits == 0 else 2 * hits / (len(ref) + len(est))


def hz_to_mel(f):
    return 2595 * np.log10(1 + f / 700)


def mel_to_hz(m):
    return 700 * (10 ** (m / 2595) - 1)


# Band centres of the front end's 40 mel bands (30 Hz to 11.025 kHz).
_LO, _HI = hz_to_mel(30.0), hz_to_mel(11025.0)
CENTRES = mel_to_hz(_LO + (_HI - _LO) * np.arange(1, N_MELS + 1) / (N_MELS + 1))


def onset_functions(x):
    """Six onset functions from one excerpt's dumps: the shipped one, three registers' rectified
    log-mel rise, the log frame energy's rise and the unrectified log-mel change."""
    mel = x["mel"]

    def rise(mask):
        d = np.diff(mel[:, mask], axis=0, prepend=mel[:1, mask])
        return np.maximum(d, 0).sum(1)

    energy = 10 * np.log10((10 ** (mel / 10)).sum(1) + 1e-10)
    return {
        "full": x["onset"],
        "low": x["low"],
        "mid": rise((CENTRES >= 200) & (CENTRES < 2000)),
        "high": rise(CENTRES >= 2000),
        "energy": np.maximum(np.diff(energy, prepend=energy[:1]), 0),
        "change": np.abs(np.diff(mel, axis=0, prepend=mel[:1])).sum(1),
    }


# ---------------------------------------------------------------------------------------------
# Davies & Plumbley's periodicity (the tempo half of essentia's TempoTapDegara), written from
# the paper: 6 s windows, 1.5 s hop, unbiased ACF, widened comb, Rayleigh weighting, Viterbi.


def moving_threshold(x, half):
    k = 2 * half + 1
    padded = np.concatenate([np.full(half, x[0]), x, np.full(half, x[-1])])
    c = np.cumsum(np.concatenate([[0], padded]))
    return np.maximum(x - (c[k:] - c[:-k]) / k, 0)


def davies_tempo(onset, window_s=5.944, combs=4, lo_bpm=None, hi_bpm=None, sigma=8.0,
                 threshold=True, unbiased=True):
    x = np.asarray(onset, np.float64)
    if len(x) == 0 or x.max() <= 0:
        return 0.0
    x = moving_threshold(x / x.max(), 8)
    n = int(round(window_s * FPS))
    hop = n // combs
    taus = np.arange(1, hop + 1).astype(float)
    beta2 = (60 * FPS / 120.0) ** 2
    rayleigh = taus / beta2 * np.exp(-0.5 * taus ** 2 / beta2)
    rayleigh /= rayleigh.sum()
    lo_t = 1 if hi_bpm is None else int(np.floor(60 * FPS / hi_bpm))
    hi_t = hop if lo_bpm is None else min(hop, int(np.ceil(60 * FPS / lo_bpm)))
    size = 1 << int(np.ceil(np.log2(2 * n)))
    obs = []
    for s in range(0, max(len(x) - n, 0) + 1, hop):
        f = np.zeros(n)
        f[:len(x[s:s + n])] = x[s:s + n]
        ac = np.fft.irfft(np.abs(np.fft.rfft(f, size)) ** 2, size)[:n]
        if unbiased:
            ac = ac / (n - np.arange(n))
        sc = np.zeros(hop)
        for c in range(1, combs + 1):
            for r in range(1 - c, c):
                idx = (taus * c + r).astype(int)
                ok = idx < n
                sc[ok] += ac[idx[ok]] / (2 * c - 1)
        sc *= rayleigh
        if threshold:
            sc = moving_threshold(sc, 8)
        sc[:lo_t - 1] = 0
        sc[hi_t:] = 0
        total = sc.sum()
        obs.append(sc / total if total > 0 else np.full(hop, 1.0 / hop))
    if not obs:
        return 0.0
    trans = np.exp(-0.5 * ((taus[:, None] - taus[None, :]) / sigma) ** 2)
    delta = rayleigh * obs[0]
    delta /= delta.sum()
    psi = []
    for o in obs[1:]:
        tmp = delta[None, :] * trans
        i = tmp.argmax(1)
        psi.append(i)
        delta = tmp[np.arange(hop), i] * o
        delta /= max(delta.sum(), 1e-300)
    path = [int(delta.argmax())]
    for p in reversed(psi):
        path.append(int(p[path[-1]]))
    return 60 * FPS / np.median(taus[path])


def nearest_octave(bpm, judge):
    """`bpm`, x1/2 or x2: whichever is nearest `judge` on a log scale."""
    if judge <= 0 or bpm <= 0:
        return bpm
    return min((bpm * f for f in (0.5, 1.0, 2.0)), key=lambda b: abs(np.log2(b / judge)))


# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# A learned octave choice (2026-12-06, seventh session): a conditional logit over the shipped
# reading and its half and double, 5-fold cross-validated by piece on the tune part.

OCTAVE_FEATURES = ["log2(bpm/120)", "log2(bpm/120)^2", "log comb score under the prior", "subdivision",
                   "periodicity at 2 periods", "low-register periodicity", "low-register subdivision",
                   "high-register subdivision", "mid-register periodicity", "harmony change at 4 beats",
                   "harmony change at 2 beats", "harmony change at 8 beats", "the shipped reading"]
CHROMA_FPS = 22050 / 4096


def octave_candidates(r, chroma):
    """(bpm, features) for the shipped reading x1/2, x1, x2 (OCTAVE_FEATURES, in that order)."""
    lags, bpms, c, ac = curve(r["onset"])
    bpm0 = 60 * FPS / sharpen(ac, select(lags, bpms, c, ac))
    acf, scored = ac / ac[0], c * prior(bpms)

    def periodicity(x, fps=FPS):
        a = autocorr(normalise(detrend(x, int(fps))))
        return a / max(a[0], 1e-12)

    mel = r["mel"]

    def rise(lo, hi):
        return np.maximum(np.diff(mel[:, lo:hi], axis=0, prepend=mel[:1, lo:hi]), 0).sum(1)

    low, mid, high = periodicity(rise(0, 8)), periodicity(rise(8, 24)), periodicity(rise(24, 40))
    unit = chroma / (np.linalg.norm(chroma, axis=1, keepdims=True) + 1e-9)
    change = periodicity(np.concatenate([[0.0], 1 - (unit[1:] * unit[:-1]).sum(1)]), CHROMA_FPS)
    out = []
    for f in (0.5, 1.0, 2.0):
        bpm = bpm0 * f
        if not 30 <= bpm <= 300:
            continue
        lag, beat = 60 * FPS / bpm, 60 * CHROMA_FPS / bpm
        one = max(peak(acf, lag), 1e-6)
        x = np.log2(bpm / 120)
        j = int(np.argmin(np.abs(bpms - bpm)))
        out.append((bpm, [x, x * x, np.log(max(scored[j], 1e-6) / scored.max()), peak(acf, lag / 2) / one,
                          peak(acf, 2 * lag) / one, peak(low, lag), peak(low, lag / 2) / max(peak(low, lag), 1e-6),
                          peak(high, lag / 2) / max(peak(high, lag), 1e-6), peak(mid, lag), peak(change, 4 * beat),
                          peak(change, 2 * beat), peak(change, 8 * beat), float(f == 1.0)]))
    return out


def octave_experiment(rows, args):
    import hashlib

    cands = {}
    for r in rows:
        chroma = np.fromfile(os.path.join(args.dump, stem(r) + ".chroma"), "<f4").reshape(-1, 12)
        cands[r["id"]] = octave_candidates(r, chroma.astype(np.float64))
    # Folds by music, not by name: both renders of a piece, and two pieces that are the same
    # notes (PianoBooster ships Clair de la Lune twice), must be on the same side. Two pieces of a
    # package with the same tempo and the same excerpt start and length are taken as one (not
    # MMA's: each is its own groove, and many share a tempo and a one-bar start).
    music = {r["piece"]: r["piece"] if r["package"] == "mma" else
             f'{r["package"]}|{r["bpm"]}|{r["start_s"]}|{r["dur_s"]}' for r in rows}
    fold = {p: int(hashlib.sha1(m.encode()).hexdigest(), 16) % 5 for p, m in music.items()}
    same = len(music) - len(set(music.values()))
    print(f"{same} piece(s) sharing another's music, kept in its fold")
    print("features: " + "; ".join(f"{i} {n}" for i, n in enumerate(OCTAVE_FEATURES)))
    for chosen in (None, list(range(12)), [0, 1, 2, 12], [0, 1, 2, 3, 4, 12], [0, 1, 2, 5, 6, 7, 8, 12],
                   [0, 1, 2, 9, 10, 11, 12]):
        def sub(c):
            return [(b, [f[i] for i in chosen] if chosen else f) for b, f in c]
        for l2 in (0.1, 1.0):
            est = {}
            for k in range(5):
                train = [r for r in rows if fold[r["piece"]] != k]
                pick = fit_logit([sub(cands[r["id"]]) for r in train], [r["bpm"] for r in train],
                                 l2=l2, iters=600, lr=0.2)
                for r in rows:
                    if fold[r["piece"]] == k:
                        est[r["id"]] = pick(sub(cands[r["id"]]))
            names = "all" if chosen is None else ",".join(map(str, chosen))
            report(f"learned, features {names}, l2 {l2}", rows, [est[r["id"]] for r in rows])


def load(args):
    out = []
    for r in csv.DictReader(open(args.manifest)):
        if r["part"] != args.part:
            continue
        p = os.path.join(args.dump, stem(r))
        if not os.path.exists(p + ".onset"):
            sys.exit(f"no dump for {r['file']}: run `tempo_lab.py dump` first")
        r["onset"] = np.fromfile(p + ".onset", "<f4").astype(np.float64)
        r["low"] = np.fromfile(p + ".low", "<f4").astype(np.float64)
        r["mel"] = np.fromfile(p + ".mel", "<f4").reshape(-1, N_MELS).astype(np.float64)
        r["bpm"] = float(r["bpm"])
        r["added"] = r["package"] == "mma" and r["piece"].split(":", 1)[1] in TUNE_ONLY_GROOVES
        out.append(r)
    return out


def report(name, rows, est):
    def acc(sel):
        pairs = [(r, e) for r, e in zip(rows, est) if sel(r)]
        c = [tempo_class(e, r["bpm"]) for r, e in pairs]
        return f"{sum(x == 'exact' for x in c)} / {sum(x in ('exact', 'double', 'half') for x in c)} of {len(c)}"
    print(f"{name:58s} all {acc(lambda r: True):16s} original {acc(lambda r: not r['added']):16s} "
          f"added grooves {acc(lambda r: r['added'])}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["dump", "port", "agreement", "davies", "unbiased", "octave", "prior"])
    ap.add_argument("--set", default=os.path.join(ROOT, "target", "analysis_eval"))
    ap.add_argument("--dump", default=os.path.join(ROOT, "target", "analysis_eval", "dump"))
    ap.add_argument("--dumper", default=os.path.join(ROOT, "target", "debug", "examples", "analysis_dump"))
    ap.add_argument("--manifest", default=os.path.join(HERE, "manifest.csv"))
    ap.add_argument("--part", choices=["tune", "heldout"], default="tune")
    ap.add_argument("--sc-json", help="evaluate.py --json output, to compare the port with the binary")
    args = ap.parse_args()

    if args.what == "dump":
        files = [os.path.join(args.set, r["file"]) for r in csv.DictReader(open(args.manifest))]
        subprocess.run([args.dumper, args.dump] + files, check=True)
        return
    rows = load(args)
    base = [estimate(r["onset"])[0] for r in rows]
    report("shipped rule (port)", rows, base)

    if args.what == "port" and args.sc_json:
        sc = json.load(open(args.sc_json))
        differ = [r["id"] for r, b in zip(rows, base)
                  if r["id"] in sc and abs(sc[r["id"]]["soundcheck"]["bpm"] / max(b, 1e-9) - 1) > 0.01]
        print(f"port differs from the binary by > 1% on {len(differ)} of {len(rows)}: {differ[:10]}")

    if args.what == "agreement":
        readings = []
        for r in rows:
            tempi, beats = {}, {}
            for name, odf in onset_functions(r).items():
                bpm, period = estimate(odf)
                tempi[name] = bpm
                beats[name] = track(normalise(detrend(odf, int(FPS))), period) if period > 0 else np.array([])
            readings.append((tempi, beats))
        for name in readings[0][0]:
            report(f"  {name} alone", rows, [t[name] for t, _ in readings])
        for chosen in (["full", "low", "mid", "high", "energy", "change"], ["full", "low", "mid", "high"],
                       ["full", "mid", "energy", "change"]):
            est = []
            for tempi, beats in readings:
                score = {i: np.mean([f_measure(beats[j], beats[i], 6) for j in chosen if j != i]) for i in chosen}
                best = max(chosen, key=lambda i: (score[i], i == "full"))
                est.append(tempi[best])
            report("agreement of " + "+".join(chosen), rows, est)

    if args.what == "davies":
        for kw in [{}, {"lo_bpm": 48, "hi_bpm": 185}, {"unbiased": False}, {"threshold": False}]:
            judge = [davies_tempo(r["onset"], **kw) for r in rows]
            report(f"Davies {kw or 'as in the paper'}", rows, judge)
            report("  the shipped reading, octave nearest it", rows,
                   [nearest_octave(b, j) for b, j in zip(base, judge)])

    if args.what == "unbiased":
        for e in (0.5, 1.0):
            for m in ((1.05, 1.25), (1.1, 1.3), (1.15, 1.35)):
                report(f"unbiased^{e}, margins {m}", rows,
                       [estimate(r["onset"], e, margin=m[0], sub_margin=m[1])[0] for r in rows])


    if args.what == "octave":
        octave_experiment(rows, args)

    if args.what == "prior":
        # The shipped margins under other log-normal priors, on the MMA grooves and on the composed
        # (game and teaching) pieces apart: the held-out part is mostly the latter, the tune part
        # mostly the former (2026-12-07: the shipped 120 / 1 octave is within one or two excerpts
        # of the best on the composed pieces too).
        global prior
        shipped = prior
        composed = [r["package"] != "mma" for r in rows]
        try:
            for centre in (100, 110, 120, 130):
                for width in (0.7, 0.85, 1.0, 1.2, 1.5):
                    prior = lambda b, c=centre, w=width: np.exp(-0.5 * (np.log2(b / c) / w) ** 2)  # noqa: E731
                    est = [estimate(r["onset"])[0] for r in rows]
                    right = [tempo_class(e, r["bpm"]) == "exact" for r, e in zip(rows, est)]
                    print(f"prior centre {centre} width {width}: within 2% {sum(right)} of {len(rows)}; MMA "
                          f"{sum(x for x, c in zip(right, composed) if not c)}, composed "
                          f"{sum(x for x, c in zip(right, composed) if c)} of {sum(composed)}", flush=True)
        finally:
            prior = shipped
        for m in ((1.0, 1.0), (1.0, 1.3), (1.1, 1.1), (1.1, 1.2), (1.2, 1.3), (1.1, 1.5)):
            est = [estimate(r["onset"], margin=m[0], sub_margin=m[1])[0] for r in rows]
            right = [tempo_class(e, r["bpm"]) == "exact" for r, e in zip(rows, est)]
            print(f"margins {m[0]} / {m[1]} (shipped 1.1 / 1.3): within 2% {sum(right)} of {len(rows)}; composed "
                  f"{sum(x for x, c in zip(right, composed) if c)} of {sum(composed)}", flush=True)


if __name__ == "__main__":
    main()
