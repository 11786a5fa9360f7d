#!/usr/bin/env python3
"""Time the reference: the basic-pitch Python package (0.4.0) on onnxruntime, on a long track.

    pip install --no-deps basic-pitch==0.4.0 && pip install -r scripts/basic_pitch/requirements.txt
    /usr/bin/time -v python scripts/basic_pitch/bench_reference.py          # BENCH_SECONDS=180 by default

The track is the one `cargo bench --bench transcribe` builds: `tests/fixtures/basic_pitch/piano.wav`
cycled to BENCH_SECONDS seconds (22,050 Hz mono 16-bit). It is written to a temporary WAV and passed to
`basic_pitch.inference.predict` with the default options (the same call `basic-pitch` CLI makes), after the
model is loaded (the Rust bench also loads its model before the clock starts). Prints × realtime; the
peak RSS of the whole process is what `/usr/bin/time -v` reports ("Maximum resident set size").
onnxruntime uses every core by default, as soundcheck does.
"""
import os
import tempfile
import time

import numpy as np
from scipy.io import wavfile

from basic_pitch import ICASSP_2022_MODEL_PATH
from basic_pitch import inference

HERE = os.path.dirname(os.path.abspath(__file__))
CLIP = os.path.abspath(os.path.join(HERE, "..", "..", "tests", "fixtures", "basic_pitch", "piano.wav"))
SR = 22_050


def main() -> None:
    secs = int(os.environ.get("BENCH_SECONDS", "180"))
    sr, clip = wavfile.read(CLIP)
    assert sr == SR and clip.dtype == np.int16, (sr, clip.dtype)
    n = secs * SR
    track = np.resize(clip, n)  # cycles the clip, as `.cycle().take(n)` does in the Rust bench
    assert str(ICASSP_2022_MODEL_PATH).endswith("nmp.onnx"), ICASSP_2022_MODEL_PATH
    model = inference.Model(ICASSP_2022_MODEL_PATH)
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "track.wav")
        wavfile.write(wav, SR, track)
        t0 = time.perf_counter()
        _, _, notes = inference.predict(wav, model)
        total = time.perf_counter() - t0
    print(
        f"basic-pitch 0.4.0 (onnxruntime, CPU): {secs} s of audio in {total:.2f} s = "
        f"{secs / total:.1f}x realtime, {len(notes)} notes",
        flush=True,
    )


if __name__ == "__main__":
    main()
