#!/usr/bin/env python3
"""How essentia reads the clearest pulse there is: a metronome.

Synthesises 30 s click tracks (a decaying sine per beat, optional accent pattern over the bar)
and prints the BPM `RhythmExtractor2013(method="multifeature")` reports for each, the setting
evaluate.py and generations.py use. It shows where essentia's tempo stage cannot read a tempo
whatever the music does: a click at 60 bpm reads 120, at 177 bpm 88.5 (any accent pattern).

Usage: python3 scripts/analysis_eval/essentia_clicks.py [--bpm 60,62,65,174,177,180]
"""
import argparse

import numpy as np

SR = 44100


def clicks(bpm, accents, tone=1000.0, decay=0.03, seconds=30.0):
    n = int(seconds * SR)
    y = np.zeros(n, np.float32)
    t = np.arange(int(0.3 * SR)) / SR
    click = np.sin(2 * np.pi * tone * t) * np.exp(-t / decay)
    k = 0
    while k * 60.0 / bpm < seconds - 0.3:
        s = int(round(k * 60.0 / bpm * SR))
        y[s:s + len(t)] += (accents[k % len(accents)] * click).astype(np.float32)
        k += 1
    return 0.5 * y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpm", default="60,62,65,174,177,180")
    args = ap.parse_args()
    import essentia.standard as es
    read = es.RhythmExtractor2013(method="multifeature")
    patterns = {"even": [1.0], "4: 1 .6 .8 .6": [1.0, 0.6, 0.8, 0.6], "4: 1 .3 .3 .3": [1.0, 0.3, 0.3, 0.3],
                "3: 1 .6 .6": [1.0, 0.6, 0.6]}
    print("| bpm | " + " | ".join(f"{p}, {d} s" for p in patterns for d in (0.03, 0.2)) + " |")
    print("|---" * (1 + 2 * len(patterns)) + "|")
    for bpm in [float(b) for b in args.bpm.split(",")]:
        row = [f"{read(clicks(bpm, acc, decay=d))[0]:.1f}" for acc in patterns.values() for d in (0.03, 0.2)]
        print(f"| {bpm:g} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
