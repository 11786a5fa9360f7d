#!/usr/bin/env python3
"""PyTorch reference speed and memory for `cargo bench --bench separate` (issue 6, "Speed and memory").

Builds the official `htdemucs` configuration of `demucs.htdemucs.HTDemucs` (demucs 4.0.1; 42.0 M
parameters: 48 channels, depth 4, bottom_channels 512, 5 cross-transformer layers, 7.8 s segments) with
random weights under `torch.manual_seed(0)` and saves it the way demucs does (`serialize_model` +
`save_with_checksum`: float16 weights, the sha256 prefix in the name), so soundcheck loads the very same
file with no download. Writes a deterministic stereo input as 16-bit WAV (both sides then read the same
samples), and times `demucs.apply.apply_model(model, mix, shifts, split=True, overlap=0.25)` on the model
reloaded with `demucs.states.load_model`, as the demucs command line loads it.

The measurement runs in a child process that does nothing else (load, read, separate), so its peak RSS
(`ru_maxrss`) is the separation's, interpreter and torch included, not the model building's. Prints one
JSON line. The separated stems are saved afterwards as `out_<seconds>s.npy` (sources, channels, samples)
so the Rust bench can check it computed the same thing.

Usage: python scripts/demucs/bench_reference.py [--dir DIR] [--seconds 30] [--shifts 0] [--threads N]
       [--prepare-only]
(`--threads` defaults to torch's own default, the machine's core count.) `scripts/demucs/bench.sh`
runs it and the Rust bench back to back.
"""

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time
import wave
from fractions import Fraction

import numpy as np
import torch

RATE = 44100


def full_size_model():
    from demucs.htdemucs import HTDemucs

    # The official htdemucs checkpoint's kwargs; everything else is HTDemucs's default, which is
    # also that checkpoint's value (nfft 4096, depth 4, t_heads 8, ...).
    return HTDemucs(
        sources=["drums", "bass", "other", "vocals"],
        audio_channels=2,
        samplerate=RATE,
        segment=Fraction(39, 5),
        channels=48,
        bottom_channels=512,
        dconv_mode=3,
        t_layers=5,
    )


def checkpoint_path(out: pathlib.Path) -> pathlib.Path:
    """The saved full-size model, built and saved on first use."""
    found = sorted(out.glob("htdemucs_full-*.th"))
    if found:
        return found[0]
    from omegaconf import OmegaConf
    from demucs.states import save_with_checksum, serialize_model

    torch.manual_seed(0)
    model = full_size_model()
    params = sum(p.numel() for p in model.parameters())
    print(f"built HTDemucs with {params / 1e6:.1f} M parameters", file=sys.stderr)
    save_with_checksum(serialize_model(model, OmegaConf.create({})), out / "htdemucs_full.th")
    return sorted(out.glob("htdemucs_full-*.th"))[0]


def mix_path(out: pathlib.Path, seconds: float) -> pathlib.Path:
    """`seconds` of stereo noise (0.1 rms, seeded), 16-bit at 44.1 kHz, written on first use."""
    path = out / f"mix_{seconds:g}s.wav"
    if not path.exists():
        gen = torch.Generator().manual_seed(6)
        x = torch.randn(int(seconds * RATE), 2, generator=gen) * 0.1
        pcm = (x * 32768).round().clamp(-32768, 32767).to(torch.int16).numpy()
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())
    return path


def read_wav(path: pathlib.Path) -> torch.Tensor:
    """`(1, channels, samples)` float32, the int16 samples / 32768 (as soundcheck decodes them)."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getframerate() == RATE
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        pcm = pcm.reshape(-1, w.getnchannels())
    return torch.from_numpy(pcm.T.astype(np.float32) / 32768.0).unsqueeze(0)


def measure(args):
    """The child: load, read, separate; nothing else before the peak RSS is read."""
    from demucs.apply import apply_model
    from demucs.states import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(str(args.th))
    model.eval()
    mix = read_wav(args.wav)
    length = mix.shape[-1]
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = apply_model(model, mix, shifts=args.shifts, split=True, overlap=0.25)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seg = model.segment * model.samplerate
    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "audio_s": round(length / RATE, 3),
        "shifts": args.shifts,
        "segment_samples": int(seg),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "peak_rss_mb": round(rss_mb, 1),
    }), flush=True)
    np.save(args.wav.parent / f"out_{args.wav.stem[4:]}.npy", out[0].numpy())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("target/sepbench"))
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--shifts", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--prepare-only", action="store_true",
                   help="write the checkpoint and the input, measure nothing")
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--th", type=pathlib.Path, help=argparse.SUPPRESS)
    p.add_argument("--wav", type=pathlib.Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        return measure(args)
    args.dir.mkdir(parents=True, exist_ok=True)
    th, wav = checkpoint_path(args.dir), mix_path(args.dir, args.seconds)
    print(f"checkpoint {th}, input {wav}", file=sys.stderr)
    if args.prepare_only:
        return
    child = [sys.executable, __file__, "--measure", "--th", str(th), "--wav", str(wav),
             "--shifts", str(args.shifts), "--threads", str(args.threads)]
    sys.exit(subprocess.run(child).returncode)


if __name__ == "__main__":
    main()
