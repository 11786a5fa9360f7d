#!/usr/bin/env python3
"""PyTorch reference speed for `cargo bench --bench musicgen`: transformers' MusicgenForConditionalGeneration
with facebook/musicgen-small's configuration (24 layers, width 1024, 16 heads, 2048 codes; T5-base; EnCodec
32 kHz) and random weights, generating with the published settings (guidance 3.0, top-k 250, sampling).
Prints decoder steps per second (one step = one frame of 4 codes; `max_new_tokens` steps) with the EnCodec
decode timed apart, as the Rust bench does.

Usage: .venv/bin/python scripts/musicgen/bench_reference.py [FRAMES]   (default 100 = 2 s of audio)
"""

import sys
import time

import torch
from transformers import (
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    T5Config,
)


def small_config():
    text = T5Config(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
        relative_attention_num_buckets=32, feed_forward_proj="relu",
    )
    audio = EncodecConfig(
        target_bandwidths=[2.2], sampling_rate=32000, audio_channels=1, normalize=False,
        chunk_length_s=None, overlap=None, hidden_size=128, num_filters=64, num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 4], norm_type="weight_norm", kernel_size=7, last_kernel_size=7,
        residual_kernel_size=3, dilation_growth_rate=2, use_causal_conv=False, pad_mode="reflect",
        compress=2, num_lstm_layers=2, trim_right_ratio=1.0, codebook_size=2048, codebook_dim=128,
        use_conv_shortcut=False,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=24, ffn_dim=4096,
        num_attention_heads=16, hidden_size=1024, num_codebooks=4, pad_token_id=2048, bos_token_id=2048,
    )
    return MusicgenConfig.from_sub_models_config(text, audio, decoder)


def main():
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    torch.manual_seed(0)
    t0 = time.time()
    model = MusicgenForConditionalGeneration(small_config()).eval()
    g = model.generation_config
    g.decoder_start_token_id = g.pad_token_id = g.bos_token_id = 2048
    print(f"musicgen-small (random weights) built in {time.time() - t0:.1f} s; torch threads {torch.get_num_threads()}")

    decode_time = {}
    orig_decode = model.audio_encoder.decode

    def timed_decode(*a, **k):
        t, c = time.time(), time.process_time()
        out = orig_decode(*a, **k)
        decode_time["s"], decode_time["cpu"] = time.time() - t, time.process_time() - c
        return out

    model.audio_encoder.decode = timed_decode
    input_ids = torch.tensor([[71, 8, 17, 1]])  # any few tokens; the cost is in the decoder
    kwargs = dict(do_sample=True, top_k=250, temperature=1.0, guidance_scale=3.0)
    with torch.no_grad():
        model.generate(input_ids=input_ids, max_new_tokens=8, **kwargs)  # warm-up
        # frames + codebooks - 1 decoder steps give `frames` frames after the delay pattern is reverted
        steps = frames + 3
        t0, c0 = time.time(), time.process_time()
        audio = model.generate(input_ids=input_ids, max_new_tokens=steps, **kwargs)
        total, cpu = time.time() - t0, time.process_time() - c0
    gen = total - decode_time["s"]
    gen_cpu = cpu - decode_time["cpu"]
    secs = audio.shape[-1] / 32000
    print(
        f"transformers {__import__('transformers').__version__} / torch {torch.__version__} CPU: "
        f"{steps} decoder steps in {gen:.2f} s = {steps / gen:.2f} steps/s ({gen_cpu / steps:.3f} CPU-s/step; "
        f"guidance batch 2, text encoder included); EnCodec decode of {secs:.1f} s audio in {decode_time['s']:.2f} s; total {total:.2f} s"
    )


if __name__ == "__main__":
    main()
