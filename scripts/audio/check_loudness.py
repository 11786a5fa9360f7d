#!/usr/bin/env python3
"""Checks soundcheck's loudness measurements and mastering against independent implementations.

The test `audio::masters_agree_with_pyloudnorm` (tests/it/audio.rs) writes test mixes, their masters
(WAV 16/24/float and MP3, decoded back to float WAV) and soundcheck's own numbers (soundcheck.json)
to a directory, then runs this script on it. Every file is measured with pyloudnorm (integrated
loudness, BS.1770-4) and a true-peak meter built on scipy's polyphase resampler (4x, as BS.1770
Annex 2). Fails (exit 1) when
  - soundcheck and pyloudnorm disagree on integrated loudness by more than 0.3 LU,
  - a master is more than 0.5 LU from its target by pyloudnorm, or
  - a master's independent true peak exceeds its ceiling by more than 0.1 dB (oversampling
    filters differ; soundcheck's own meter must be at or below the ceiling).

usage: check_loudness.py DIR      (normally run by `cargo test audio::masters_agree_with_pyloudnorm`)
needs: pip install -r scripts/requirements.txt
"""

import argparse
import json
import os
import sys

import numpy as np
import pyloudnorm
import scipy.signal
import soundfile


def true_peak_db(data):
    up = scipy.signal.resample_poly(data, 4, 1, axis=0)
    peak = np.max(np.abs(up))
    return 20 * np.log10(peak) if peak > 0 else -120.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", help="a directory written by the masters_agree_with_pyloudnorm test")
    out = ap.parse_args().dir
    with open(os.path.join(out, "soundcheck.json")) as f:
        rows = json.load(f)
    failures = 0
    diffs = []
    print(f"{'file':<44}{'sc LUFS':>9}{'pyln':>9}{'diff':>7}{'sc dBTP':>9}{'scipy':>8}  verdict")
    for row in rows:
        data, rate = soundfile.read(os.path.join(out, row["file"]), dtype="float64", always_2d=True)
        meter = pyloudnorm.Meter(rate)
        ref = meter.integrated_loudness(data)
        tp = true_peak_db(data)
        diff = row["integrated_lufs"] - ref
        diffs.append(abs(diff))
        problems = []
        if abs(diff) > 0.3:
            problems.append("loudness disagrees")
        if row["kind"] == "mastered":
            if abs(ref - row["target_lufs"]) > 0.5:
                problems.append(f"off target {row['target_lufs']}")
            if tp > row["ceiling_dbtp"] + 0.1:
                problems.append(f"over ceiling {row['ceiling_dbtp']}")
            if row["true_peak_dbtp"] > row["ceiling_dbtp"]:
                problems.append("soundcheck's own meter over ceiling")
        failures += bool(problems)
        verdict = "ok" if not problems else "FAIL: " + ", ".join(problems)
        print(f"{row['file']:<44}{row['integrated_lufs']:>9.2f}{ref:>9.2f}{diff:>7.2f}"
              f"{row['true_peak_dbtp']:>9.2f}{tp:>8.2f}  {verdict}")
    print(f"\n{len(rows)} files, max |soundcheck - pyloudnorm| = {max(diffs):.3f} LU, "
          f"mean {sum(diffs) / len(diffs):.3f} LU, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
