#!/usr/bin/env python3
"""Writes the Standard MIDI Files behind soundcheck's rendered test fixtures.

Each piece has a known tempo and key, encoded in its file name as
`<name>_<bpm>bpm_<Tonic>_<major|minor>.mid` (`s` stands for a sharp), which is what
tests/it/audio.rs checks the analysis against. No third-party packages: the SMF writer is below.

usage: make_midi.py OUT_DIR
"""

import os
import struct
import sys

PPQ = 480


def vlq(n):
    """MIDI variable-length quantity."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def smf(events, bpm):
    """A type-0 file from (tick, bytes) events."""
    tempo = int(round(60_000_000 / bpm))
    body = b"\x00\xff\x51\x03" + tempo.to_bytes(3, "big")
    body += b"\x00\xff\x58\x04\x04\x02\x18\x08"  # 4/4
    last = 0
    for tick, data in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90)):
        body += vlq(tick - last) + data
        last = tick
    body += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, PPQ)
    return header + b"MTrk" + struct.pack(">I", len(body)) + body


def note(events, ch, start, dur, pitch, vel):
    events.append((start, bytes([0x90 | ch, pitch, vel])))
    events.append((start + dur, bytes([0x80 | ch, pitch, 0])))


def program(events, ch, prog):
    events.append((0, bytes([0xC0 | ch, prog])))


NOTE = {"C": 0, "Cs": 1, "Db": 1, "D": 2, "Ds": 3, "Eb": 3, "E": 4, "F": 5, "Fs": 6,
        "Gb": 6, "G": 7, "Gs": 8, "Ab": 8, "A": 9, "As": 10, "Bb": 10, "B": 11}

# Chords as scale-degree triads (semitones above the tonic).
MAJOR = {"I": (0, 4, 7), "ii": (2, 5, 9), "iii": (4, 7, 11), "IV": (5, 9, 12),
         "V": (7, 11, 14), "vi": (9, 12, 16)}
MINOR = {"i": (0, 3, 7), "iv": (5, 8, 12), "V": (7, 11, 14), "VI": (8, 12, 15),
         "III": (3, 7, 10), "VII": (10, 14, 17)}

PIECES = [
    # name, bpm, tonic, mode, progression, instrument, drum style
    ("pop", 120, "C", "major", ["I", "V", "vi", "IV", "I", "IV", "V", "I"], 0, "rock"),
    ("ballad", 72, "A", "minor", ["i", "iv", "V", "i", "VI", "iv", "V", "i"], 0, "soft"),
    ("rock", 140, "E", "minor", ["i", "VI", "III", "V", "i", "iv", "V", "i"], 29, "rock"),
    ("funk", 96, "Bb", "major", ["I", "IV", "I", "V", "ii", "V", "I", "I"], 4, "funk"),
    ("edm", 128, "Fs", "minor", ["i", "VI", "iv", "V", "i", "VI", "V", "i"], 81, "four"),
    ("shuffle", 105, "D", "major", ["I", "IV", "V", "I", "vi", "ii", "V", "I"], 24, "rock"),
]


def piece(bpm, tonic, mode, prog, instrument, drums):
    events = []
    chords = MAJOR if mode == "major" else MINOR
    root = 48 + NOTE[tonic]
    program(events, 0, instrument)
    program(events, 1, 33)  # fingered bass
    program(events, 2, 73)  # flute melody
    bar = 4 * PPQ
    for b, name in enumerate(prog):
        chord = chords[name]
        t0 = b * bar
        for iv in chord:
            note(events, 0, t0, bar - 20, root + 12 + iv, 70)
        # Bass: root on 1 and 3, fifth on the "and" of 4.
        note(events, 1, t0, PPQ, root - 12 + chord[0], 95)
        note(events, 1, t0 + 2 * PPQ, PPQ, root - 12 + chord[0], 90)
        note(events, 1, t0 + 3 * PPQ + PPQ // 2, PPQ // 2, root - 12 + chord[2], 80)
        # Melody: chord tones in quarters.
        for q in range(4):
            note(events, 2, t0 + q * PPQ, PPQ - 40, root + 24 + chord[(q + b) % 3], 60)
        # Drums on channel 10 (index 9).
        for e in range(8):
            t = t0 + e * PPQ // 2
            beat, on = e // 2, e % 2 == 0
            if drums == "four":
                if on:
                    note(events, 9, t, 60, 36, 110)
                else:
                    note(events, 9, t, 60, 46, 70)
                if on and beat in (1, 3):
                    note(events, 9, t, 60, 39, 90)
                continue
            note(events, 9, t, 60, 42, 60 if on else 45)
            if drums == "soft":
                if on and beat == 0:
                    note(events, 9, t, 60, 36, 80)
                if on and beat == 2:
                    note(events, 9, t, 60, 37, 70)
                continue
            if on and beat in (0, 2) or (drums == "funk" and e == 5):
                note(events, 9, t, 60, 36, 105)
            if on and beat in (1, 3):
                note(events, 9, t, 60, 38, 100)
    return smf(events, bpm)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, bpm, tonic, mode, prog, instrument, drums in PIECES:
        path = os.path.join(out, f"{name}_{bpm}bpm_{tonic}_{mode}.mid")
        with open(path, "wb") as f:
            f.write(piece(bpm, tonic, mode, prog, instrument, drums))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
