#!/usr/bin/env python3
"""Make the parity fixtures for the Rust port of basic-pitch (tests/fixtures/basic_pitch/).

    pip install --no-deps basic-pitch==0.4.0 && pip install -r scripts/basic_pitch/requirements.txt
    python scripts/basic_pitch/make_fixtures.py

For each generated clip (22,050 Hz mono, 16-bit WAV so Rust reads bit-identical samples) this runs the
reference package on its ONNX model (onnxruntime, no TensorFlow) exactly as `basic_pitch.inference.predict`
does, and stores:
  <clip>.wav                 the input
  <clip>.outputs.safetensors the stitched model outputs `contour` [n, 264], `note` [n, 88], `onset` [n, 88]
  <clip>.notes.json          note events for several option sets (frames and seconds, amplitude, pitch bends)
  <clip>.mid                 pretty_midi's MIDI file for the default options
"""
import json
import os

import numpy as np
from scipy.io import wavfile
from safetensors.numpy import save_file

from basic_pitch import ICASSP_2022_MODEL_PATH
from basic_pitch import inference, note_creation
from basic_pitch.constants import AUDIO_SAMPLE_RATE, FFT_HOP

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.abspath(os.path.join(HERE, "..", "..", "tests", "fixtures", "basic_pitch"))
SR = AUDIO_SAMPLE_RATE
RNG = np.random.default_rng(7)


def midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69) / 12)


def tone(freq: float, dur: float, decay: float, n_harm: int = 8, amp: float = 0.3) -> np.ndarray:
    """A plucked/piano-like tone: decaying harmonics with a short attack."""
    t = np.arange(int(dur * SR)) / SR
    y = np.zeros_like(t)
    for h in range(1, n_harm + 1):
        f = freq * h * np.sqrt(1 + 0.0004 * h * h)  # slight inharmonicity
        if f >= SR / 2:
            break
        y += np.sin(2 * np.pi * f * t) * (0.6**h) * np.exp(-t * decay * (1 + 0.3 * h))
    attack = np.minimum(1.0, t / 0.005)
    return amp * y * attack


def place(buf: np.ndarray, y: np.ndarray, start: float) -> None:
    i = int(start * SR)
    n = min(len(y), len(buf) - i)
    buf[i : i + n] += y[:n]


def clip_chords() -> np.ndarray:
    """Four triads of one second each (C, Am, F, G), with a bass note; > 2 model windows."""
    buf = np.zeros(int(4.0 * SR))
    chords = [[48, 60, 64, 67], [45, 57, 60, 64], [41, 57, 60, 65], [43, 59, 62, 67]]
    for k, chord in enumerate(chords):
        for m in chord:
            place(buf, tone(midi_hz(m), 0.95, 1.5, amp=0.18), k * 1.0)
    # A noise floor (-60 dBFS) as any recording has; without one, CQT bins far from every partial are
    # ~1e-5 and their float32 rounding noise (in the reference as in the port) dominates: see `sweep`.
    buf += 0.001 * RNG.standard_normal(len(buf))
    return buf


def clip_sweep() -> np.ndarray:
    """An exponential sine sweep 220 -> 880 Hz over 2.5 s (exercises contours and pitch bends).

    Deliberately noiseless: the worst case for float32 parity (see the Rust test's bound for it)."""
    dur = 2.5
    t = np.arange(int(dur * SR)) / SR
    f0, f1 = 220.0, 880.0
    k = np.log(f1 / f0) / dur
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    env = np.minimum(1.0, np.minimum(t / 0.02, (dur - t) / 0.02))
    return 0.5 * np.sin(phase) * env


def clip_piano() -> np.ndarray:
    """A melody of decaying tones with varied loudness, overlaps, a vibrato note and a little noise."""
    buf = np.zeros(int(3.5 * SR))
    melody = [(72, 0.0, 0.45, 0.35), (76, 0.4, 0.45, 0.2), (79, 0.8, 0.6, 0.3), (84, 1.3, 0.4, 0.15),
              (36, 0.0, 1.6, 0.3), (67, 1.7, 0.5, 0.3), (64, 2.1, 0.5, 0.25), (60, 2.5, 0.9, 0.35)]
    for m, start, dur, amp in melody:
        place(buf, tone(midi_hz(m), dur, 2.0, amp=amp), start)
    # a sung-like note with 5 Hz vibrato of +-0.4 semitone
    t = np.arange(int(1.0 * SR)) / SR
    f = midi_hz(57) * 2 ** (0.4 * np.sin(2 * np.pi * 5 * t) / 12)
    v = 0.15 * np.sin(2 * np.pi * np.cumsum(f) / SR) * np.minimum(1, t / 0.05) * np.minimum(1, (1 - t) / 0.05)
    place(buf, v, 1.9)
    buf += 0.002 * RNG.standard_normal(len(buf))
    return buf


CLIPS = {"chords": clip_chords, "sweep": clip_sweep, "piano": clip_piano}

# Option sets for the note-extraction parity (the first one is the reference default).
VARIANTS = [
    {"name": "default", "onset_threshold": 0.5, "frame_threshold": 0.3, "min_note_ms": 127.70,
     "min_hz": None, "max_hz": None, "melodia_trick": True, "multiple_pitch_bends": False},
    {"name": "no_melodia", "onset_threshold": 0.5, "frame_threshold": 0.3, "min_note_ms": 127.70,
     "min_hz": None, "max_hz": None, "melodia_trick": False, "multiple_pitch_bends": False},
    {"name": "sensitive", "onset_threshold": 0.3, "frame_threshold": 0.2, "min_note_ms": 58.0,
     "min_hz": None, "max_hz": None, "melodia_trick": True, "multiple_pitch_bends": True},
    {"name": "band", "onset_threshold": 0.6, "frame_threshold": 0.4, "min_note_ms": 200.0,
     "min_hz": 100.0, "max_hz": 500.0, "melodia_trick": True, "multiple_pitch_bends": False},
]


def notes_for(output: dict, v: dict):
    """Replicates basic_pitch.inference.predict's post-processing, keeping the frame indices too."""
    out = {k: a.copy() for k, a in output.items()}  # constrain_frequency edits in place
    min_note_len = int(np.round(v["min_note_ms"] / 1000 * (AUDIO_SAMPLE_RATE / FFT_HOP)))
    est = note_creation.output_to_notes_polyphonic(
        out["note"], out["onset"], onset_thresh=v["onset_threshold"], frame_thresh=v["frame_threshold"],
        infer_onsets=True, min_note_len=min_note_len, min_freq=v["min_hz"], max_freq=v["max_hz"],
        melodia_trick=v["melodia_trick"])
    with_bends = note_creation.get_pitch_bends(out["contour"], est)
    times = note_creation.model_frames_to_time(out["contour"].shape[0])
    # The same call predict() makes, to check the replication above.
    out2 = {k: a.copy() for k, a in output.items()}
    midi, events = note_creation.model_output_to_notes(
        out2, onset_thresh=v["onset_threshold"], frame_thresh=v["frame_threshold"], min_note_len=min_note_len,
        min_freq=v["min_hz"], max_freq=v["max_hz"], multiple_pitch_bends=v["multiple_pitch_bends"],
        melodia_trick=v["melodia_trick"], midi_tempo=120)
    notes = []
    for (s, e, p, a, b), ev in zip(with_bends, events):
        assert times[s] == ev[0] and times[e] == ev[1] and p == ev[2]
        notes.append({"start_frame": int(s), "end_frame": int(e), "start": float(times[s]), "end": float(times[e]),
                      "pitch": int(p), "amplitude": float(a), "pitch_bends": [int(x) for x in b]})
    return notes, midi


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    # Without TensorFlow installed, ICASSP_2022_MODEL_PATH already points at nmp.onnx.
    assert str(ICASSP_2022_MODEL_PATH).endswith("nmp.onnx"), ICASSP_2022_MODEL_PATH
    model = inference.Model(ICASSP_2022_MODEL_PATH)
    for name, make in CLIPS.items():
        y = make()
        pcm = np.clip(np.round(y * 32767), -32768, 32767).astype(np.int16)
        wav = os.path.join(OUT, f"{name}.wav")
        wavfile.write(wav, SR, pcm)
        output = inference.run_inference(wav, model)
        audio = pcm.astype(np.float32) / 32768.0
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in output.items()},
                  os.path.join(OUT, f"{name}.outputs.safetensors"),
                  metadata={"n_samples": str(len(audio)), "basic_pitch": "0.4.0 nmp.onnx via onnxruntime"})
        doc = {"n_samples": len(audio), "n_frames": int(output["note"].shape[0]), "variants": []}
        for v in VARIANTS:
            notes, midi = notes_for(output, v)
            doc["variants"].append({**v, "notes": notes})
            if v["name"] == "default":
                midi.write(os.path.join(OUT, f"{name}.mid"))
        with open(os.path.join(OUT, f"{name}.notes.json"), "w") as f:
            json.dump(doc, f, indent=1)
        counts = {v["name"]: len(v["notes"]) for v in doc["variants"]}
        print(f"{name}: {len(audio)} samples, {doc['n_frames']} frames, notes {counts}")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"fixtures total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
