#!/usr/bin/env python3
"""Reference fixtures for soundcheck's HTDemucs port (src/engines/separate/htdemucs).

Builds `demucs.htdemucs.HTDemucs` (demucs 4.0.1, Rouard et al. 2023, "Hybrid Transformers for Music
Source Separation", https://github.com/facebookresearch/demucs) in a reduced configuration that keeps
every code path of the official `htdemucs` checkpoints (depth 4 with nfft 4096 so the frequency axis
goes 2048 -> 512 -> 128 -> 32 -> 8 as in the real model, complex-as-channels, frequency embedding,
DConv branches with LayerScale in encoder *and* decoder (dconv_mode 3), bottom_channels 1x1
up/down-sampling around the cross transformer, sin 1d/2d positional embeddings, norm_first with
norm_out and LayerScale, self/cross alternation over 3 layers), gives it random weights under a fixed
seed, saves it exactly the way demucs does (`demucs.states.serialize_model` +
`demucs.states.save_with_checksum`: a torch zip pickle with klass/args/kwargs/state/training_args,
weights in float16, the sha256 prefix in the file name), reloads it with `demucs.states.load_model`
and records, with the reloaded model:

- `stft.*`/`istft.*`: `HTDemucs._spec` on a short stereo signal and `HTDemucs._ispec` of a random
  spectrogram (complex values stored as a trailing [re, im] axis);
- `fwd.*`: the input of one `forward` call (one training-length segment), the outputs of every
  encoder layer (frequency `enc.i`, time `tenc.i`), the cross transformer's inputs and outputs, the
  outputs of the first three decoder layers of both branches and the model output;
- `separate.*`: a 0.8 s stereo mix (2 segments of 0.4 s with 25% overlap, plus a short tail) run
  the way `demucs.separate` does: normalise by the mono reference's mean/std, `apply_model(shifts=0,
  split=True, overlap=0.25)`, de-normalise.

Also writes what soundcheck's converter produces from the .th file: `htdemucs_tiny.safetensors` (the
state dict as saved, float16) and `htdemucs_tiny.json` (the constructor kwargs), for reference.

Run: .venv/bin/python scripts/demucs/make_fixtures.py   (writes tests/fixtures/htdemucs/)
"""

import json
import pathlib
from fractions import Fraction

import numpy as np
import torch
from torch import nn
from omegaconf import OmegaConf
from safetensors.torch import save_file

from demucs.htdemucs import HTDemucs
from demucs.apply import apply_model
from demucs.states import serialize_model, save_with_checksum, load_model

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "htdemucs"
SEED = 1234

# Everything not listed keeps HTDemucs's default, which is also the official checkpoints' value
# (nfft 4096, depth 4, kernel 8 / stride 4, cac, freq_emb 0.2, t_emb "sin", t_norm_first, ...).
KWARGS = dict(
    sources=["drums", "bass", "other", "vocals"],
    audio_channels=2,
    samplerate=44100,
    segment=Fraction(2, 5),  # 17640 samples; a Fraction, as demucs can store it
    channels=4,
    depth=4,
    dconv_mode=3,
    dconv_comp=2,
    bottom_channels=32,
    t_layers=3,
    t_heads=4,
    t_hidden_scale=2.0,
)


def randomise(model: nn.Module, gen: torch.Generator):
    """At init LayerScale is 1e-3 (DConv) / 1e-4 (transformer), norms are identities and attention
    biases zero: a port that got those branches wrong would still match. Make them all count."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".scale"):
                p.copy_(0.2 + 0.6 * torch.rand(p.shape, generator=gen))
            elif name.endswith("in_proj_bias") or name.endswith("out_proj.bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))


def test_signal(length: int, gen: torch.Generator, dc=(0.03, -0.02)) -> torch.Tensor:
    """Deterministic stereo 'music': a few partials with vibrato, decaying clicks and noise."""
    t = torch.arange(length, dtype=torch.float64) / 44100.0
    chans = []
    for c in range(2):
        x = torch.zeros(length, dtype=torch.float64)
        for k, f in enumerate([110.0, 220.0, 330.0, 587.3, 1244.5, 3520.0]):
            amp = 0.25 / (k + 1) * (1.0 + 0.3 * c * (k % 2))
            x += amp * torch.sin(2 * torch.pi * f * t + 0.5 * torch.sin(2 * torch.pi * 5.0 * t) + c * k)
        clicks = torch.zeros(length, dtype=torch.float64)
        clicks[:: 4410 + 300 * c] = 0.8
        env = torch.exp(-torch.arange(400, dtype=torch.float64) / 60.0)
        clicks = torch.from_numpy(np.convolve(clicks.numpy(), env.numpy())[:length])
        x += clicks * torch.randn(length, generator=gen, dtype=torch.float64)
        x += 0.05 * torch.randn(length, generator=gen, dtype=torch.float64)
        chans.append(x + dc[c])
    return torch.stack(chans).float()


def cac(z: torch.Tensor) -> torch.Tensor:
    """complex (..., F, T) -> float (..., F, T, 2)."""
    return torch.view_as_real(z).contiguous()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.th"):
        old.unlink()
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    model = HTDemucs(**KWARGS)
    randomise(model, gen)
    training_args = OmegaConf.create({
        "model": "htdemucs",
        "seed": SEED,
        "note": "soundcheck parity fixture: random weights, reduced configuration",
        "dset": {"segment": 0.4, "sources": KWARGS["sources"], "normalize": True},
        "optim": {"lr": 3e-4, "beta2": 0.999, "clip_grad": None},
    })
    package = serialize_model(model, training_args)  # half=True, as the official checkpoints
    save_with_checksum(package, OUT / "htdemucs_tiny.th")
    (th_path,) = list(OUT.glob("htdemucs_tiny-*.th"))

    # The state as the converter should write it, and the kwargs as JSON (Fraction as "n/d").
    save_file({k: v.contiguous() for k, v in package["state"].items()}, OUT / "htdemucs_tiny.safetensors")
    kw = {k: (f"{v.numerator}/{v.denominator}" if isinstance(v, Fraction) else v) for k, v in KWARGS.items()}
    (OUT / "htdemucs_tiny.json").write_text(json.dumps(kw, indent=2) + "\n")

    model = load_model(str(th_path))  # float32 parameters holding the float16-rounded weights
    model.eval()

    ref = {}
    with torch.no_grad():
        # STFT / iSTFT as HTDemucs calls them.
        x_short = test_signal(4410, gen)
        ref["stft.input"] = x_short
        ref["stft.spec"] = cac(model._spec(x_short))  # (2, 2048, 5, 2)
        z_rand = torch.complex(torch.randn(2, 2048, 5, generator=gen), torch.randn(2, 2048, 5, generator=gen))
        ref["istft.spec"] = cac(z_rand)
        ref["istft.output"] = model._ispec(z_rand, length=4410)

        # The full separation as `demucs.separate` runs it.
        mix = test_signal(int(0.8 * 44100), gen)
        mono = mix.mean(0)
        mean, std = mono.mean(), mono.std()
        norm = (mix - mean) / std
        out = apply_model(model, norm[None], shifts=0, split=True, overlap=0.25)[0]
        out = out * std + mean
        ref["separate.mix"] = mix
        ref["separate.output"] = out

        # One forward call on the first segment, with every stage recorded.
        seg = int(KWARGS["segment"] * KWARGS["samplerate"])
        chunk = norm[None, :, :seg].contiguous()
        hooks = []

        def keep(name, fn):
            def hook(_module, args, output):
                for key, value in fn(args, output).items():
                    ref[f"{name}{key}"] = value[0].contiguous()
            return hook

        for i, layer in enumerate(model.encoder):
            hooks.append(layer.register_forward_hook(keep(f"fwd.enc.{i}", lambda a, o: {"": o})))
        for i, layer in enumerate(model.tencoder):
            hooks.append(layer.register_forward_hook(keep(f"fwd.tenc.{i}", lambda a, o: {"": o})))
        for i, layer in enumerate(model.decoder[:3]):
            hooks.append(layer.register_forward_hook(keep(f"fwd.dec.{i}", lambda a, o: {"": o[0]})))
        for i, layer in enumerate(model.tdecoder[:3]):
            hooks.append(layer.register_forward_hook(keep(f"fwd.tdec.{i}", lambda a, o: {"": o[0]})))
        hooks.append(model.crosstransformer.register_forward_hook(keep(
            "fwd.xf.", lambda a, o: {"in_x": a[0], "in_xt": a[1], "out_x": o[0], "out_xt": o[1]})))
        ref["fwd.input"] = chunk[0]
        ref["fwd.output"] = model(chunk)[0]
        for h in hooks:
            h.remove()

    ref = {k: v.float().contiguous() for k, v in ref.items()}
    save_file(ref, OUT / "reference.safetensors", metadata={
        "generator": "scripts/demucs/make_fixtures.py",
        "torch": torch.__version__,
        "checkpoint": th_path.name,
    })
    total = 0
    for p in sorted(OUT.iterdir()):
        total += p.stat().st_size
        print(f"{p.stat().st_size:>9}  {p.name}")
    print(f"{total:>9}  total")
    for k, v in ref.items():
        print(f"{k:22s} {tuple(v.shape)}  max|x|={v.abs().max().item():.4g}")


if __name__ == "__main__":
    main()
