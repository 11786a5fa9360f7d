"""Writes the two MP3 fixtures whose bit reservoir reaches far back (tests/fixtures/audio/):
quiet noise with a tone and a loud burst each second, encoded by LAME (through libsndfile) at
constant low bit rates, where a frame's data can start up to 511 bytes (MPEG-1) or 255 bytes
(MPEG-2) before it — many frames back when frames are small. The decoder's runs
(src/audio/decode.rs) must prime each run far enough back for these to decode as one pass does.

    pip install soundfile numpy   # libsndfile >= 1.1 writes MP3
    python3 scripts/audio/make_reservoir_mp3.py
"""
from pathlib import Path

import numpy as np
import soundfile as sf

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "audio"
rng = np.random.default_rng(1)


def signal(rate: int, secs: int) -> np.ndarray:
    n = rate * secs
    t = np.arange(n) / rate
    x = 0.003 * rng.standard_normal((n, 2))
    for s in range(secs):
        a = int((s + 0.5) * rate)
        x[a : a + rate // 20] += 0.5 * rng.standard_normal((rate // 20, 2))
    x[:, 0] += 0.01 * np.sin(2 * np.pi * 440 * t)
    x[:, 1] += 0.01 * np.sin(2 * np.pi * 660 * t)
    return x.astype(np.float32)


# 48 kHz MPEG-1 at LAME's lowest rate (32 kbit/s: 96-byte frames), 24 kHz MPEG-2 at 8 kbit/s
# (24-byte frames): both long enough for four runs of 2^18 frames.
for name, rate, secs in [("reservoir_48k.mp3", 48_000, 22), ("reservoir_24k.mp3", 24_000, 44)]:
    sf.write(
        OUT / name,
        signal(rate, secs),
        rate,
        format="MP3",
        subtype="MPEG_LAYER_III",
        compression_level=0.999,
        bitrate_mode="CONSTANT",
    )
    print(name, (OUT / name).stat().st_size, "bytes")
