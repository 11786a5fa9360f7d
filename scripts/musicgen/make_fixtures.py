#!/usr/bin/env python3
"""Builds the MusicGen parity fixtures in tests/fixtures/musicgen/.

A tiny `MusicgenForConditionalGeneration` (transformers) with random weights under a fixed seed — same code
paths as facebook/musicgen-small (T5 text encoder with relative attention buckets, enc_to_dec projection,
4-codebook decoder, EnCodec 32 kHz decoder with weight-norm convolutions, reflect padding, LSTM) but a few
layers and a small width — saved in the published Hugging Face layout (config.json, generation_config.json,
model.safetensors, tokenizer.json), plus reference inputs and outputs in reference.safetensors and
reference.json. The Rust tests (tests/it/musicgen.rs) load the model directory through the production loader.

No download: the hub is not reachable here, so the tokenizer is a small unigram (sentencepiece-like) model
trained on a few music prompts with the `tokenizers` library, with T5's special tokens and post-processor.

Usage: .venv/bin/python scripts/musicgen/make_fixtures.py [OUT_DIR]
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    EncodecConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    T5Config,
)

SEED = 1234
GUIDANCE = 3.0
PROMPT = "lofi chill, piano, 80 bpm, A minor"

CORPUS = [
    "lofi chill hip hop beat with mellow piano and vinyl crackle",
    "80s pop track with bassy drums and synth, 120 bpm, C major",
    "90s rock song with loud guitars and heavy drums, 140 bpm, E minor",
    "a light and cheerly EDM track, with syncopated drums, aery pads, and strong emotions, 128 bpm",
    "ambient cinematic soundscape with strings, pads and bells, slow tempo, D minor",
    "jazz trio with upright bass, brushed drums and piano, swing, 100 bpm, Bb major",
    "house music with four on the floor kick, piano chords, 124 bpm, F minor",
    "drum and bass with fast breakbeats and deep sub bass, 174 bpm, G minor",
    "classical piano sonata, gentle and sad, A minor, 60 bpm",
    "funk groove with slap bass, clavinet and horns, 105 bpm, E major",
    "techno track with driving kick, hypnotic synth, 130 bpm, A minor",
    "lofi chill, piano, rain, tape hiss, 80 bpm, A minor, 70 bpm, C# minor, F# major",
]


def build_tokenizer(path):
    """A T5-like unigram tokenizer: <pad>=0, </s>=1, <unk>=2, Metaspace, `$A </s>` template."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=160,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tok.save(path)
    return tok


def tiny_config(text_vocab):
    text = T5Config(
        vocab_size=text_vocab,
        d_model=24,
        d_kv=6,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="relu",
        layer_norm_epsilon=1e-6,
        initializer_factor=1.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    audio = EncodecConfig(
        target_bandwidths=[1.6],  # 1600 // (50 frames/s * 8 bits) = 4 quantizers, as 2.2 kbps with 2048 codes
        sampling_rate=32000,
        audio_channels=1,
        normalize=False,
        chunk_length_s=None,
        overlap=None,
        hidden_size=16,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 4],
        norm_type="weight_norm",
        kernel_size=7,
        last_kernel_size=7,
        residual_kernel_size=3,
        dilation_growth_rate=2,
        use_causal_conv=False,
        pad_mode="reflect",
        compress=2,
        num_lstm_layers=2,
        trim_right_ratio=1.0,
        codebook_size=256,
        codebook_dim=16,
        use_conv_shortcut=False,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=256,
        max_position_embeddings=512,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        hidden_size=32,
        activation_function="gelu",
        initializer_factor=0.02,
        num_codebooks=4,
        audio_channels=1,
        pad_token_id=256,
        bos_token_id=256,
        scale_embedding=False,
        tie_word_embeddings=False,
    )
    return MusicgenConfig.from_sub_models_config(text, audio, decoder)


def published_keys(state):
    """transformers >= 4.4x saves weight-normed convs as parametrizations; the published checkpoints use
    `weight_g`/`weight_v`. Write the published names so the fixture looks like facebook/musicgen-small."""
    out = {}
    for k, v in state.items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        out[k] = v.contiguous()
    return out


def randomize(model, gen):
    """The default initialisation makes the decoder's logits nearly flat; wider weights give clear argmaxes (so
    greedy tokens are a meaningful check) and exercise the non-linearities."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("decoder."):
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p.shape[-1] ** 0.5))
                elif "layer_norm" in name and name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name == "enc_to_dec_proj.weight":
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p.shape[-1] ** 0.5))
            elif name == "enc_to_dec_proj.bias" or "relative_attention_bias" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        # codebooks are buffers: give them spread so the decoded audio is not near silence
        for i, layer in enumerate(model.audio_encoder.quantizer.layers):
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape, generator=gen))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures", "musicgen")
    model_dir = os.path.join(out_dir, "model")
    os.makedirs(model_dir, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    tok = build_tokenizer(os.path.join(model_dir, "tokenizer.json"))
    text_vocab = 192
    assert tok.get_vocab_size() <= text_vocab

    cfg = tiny_config(text_vocab)
    model = MusicgenForConditionalGeneration(cfg).eval()
    randomize(model, gen)
    model.generation_config.decoder_start_token_id = 256
    model.generation_config.pad_token_id = 256
    model.generation_config.bos_token_id = 256
    model.generation_config.do_sample = True
    model.generation_config.guidance_scale = GUIDANCE
    model.generation_config.top_k = 250
    model.generation_config.max_length = 1500
    model.save_pretrained(model_dir, safe_serialization=True)
    # rewrite the weights with the published key names (weight_g / weight_v)
    weights_path = os.path.join(model_dir, "model.safetensors")
    state = load_file(weights_path)
    save_file(published_keys(state), weights_path, metadata={"format": "pt"})
    # and check that transformers still loads them identically
    reloaded = MusicgenForConditionalGeneration.from_pretrained(model_dir).eval()
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    model = reloaded

    ref = {}
    meta = {"prompt": PROMPT, "guidance_scale": GUIDANCE, "seed": SEED}

    # 1. tokenizer + text encoder (+ enc_to_dec projection)
    ids = tok.encode(PROMPT).ids
    meta["prompt_ids"] = ids
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        enc = model.text_encoder(input_ids=input_ids).last_hidden_state
        proj = model.enc_to_dec_proj(enc)
    ref["text_hidden"] = enc[0]
    ref["text_projected"] = proj[0]

    # 2. decoder logits for given codes, without and with guidance (teacher forcing, full sequence)
    num_codebooks, vocab = 4, 256
    seq = 10
    codes = torch.randint(0, vocab, (num_codebooks, seq), generator=gen)
    codes[:, 0] = 256  # BOS column, as in generation
    for k in range(num_codebooks):
        codes[k, : k + 1] = 256
    ref["decoder_codes"] = codes.to(torch.int64)
    with torch.no_grad():
        out = model(input_ids=input_ids, decoder_input_ids=codes, use_cache=False)
        ref["logits"] = out.logits.reshape(num_codebooks, seq, vocab)
        # classifier-free guidance exactly as generate() builds it: [cond; null] text states, null masked out
        enc2 = torch.cat([enc, torch.zeros_like(enc)], 0)
        mask2 = torch.cat([torch.ones_like(input_ids), torch.zeros_like(input_ids)], 0)
        out2 = model(
            encoder_outputs=(enc2,),
            attention_mask=mask2,
            decoder_input_ids=codes.repeat(2, 1),
            use_cache=False,
        )
        both = out2.logits.reshape(2, num_codebooks, seq, vocab)
        ref["logits_cfg"] = both[1] + (both[0] - both[1]) * GUIDANCE

    # 3. EnCodec decode of given codes
    frames = 24
    audio_codes = torch.randint(0, vocab, (1, 1, num_codebooks, frames), generator=gen)
    ref["encodec_codes"] = audio_codes[0, 0].to(torch.int64)
    with torch.no_grad():
        audio = model.audio_encoder.decode(audio_codes, [None]).audio_values
    ref["encodec_audio"] = audio[0, 0]
    meta["encodec_rms"] = float(audio.pow(2).mean().sqrt())

    # 4. greedy generation with guidance (tokens captured before the EnCodec decode)
    captured = {}
    orig_decode = model.audio_encoder.decode

    def capture(codes, *args, **kwargs):
        captured["codes"] = codes
        return orig_decode(codes, *args, **kwargs)

    model.audio_encoder.decode = capture
    new_tokens = 16
    with torch.no_grad():
        gen_audio = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            guidance_scale=GUIDANCE,
            max_new_tokens=new_tokens,
        )
    model.audio_encoder.decode = orig_decode
    ref["greedy_tokens"] = captured["codes"][0, 0].to(torch.int64)
    ref["greedy_audio"] = gen_audio[0, 0]
    meta["greedy_new_tokens"] = new_tokens

    # top-1/top-2 margins of the guided logits along the greedy path, so a test failure can be judged
    with torch.no_grad():
        L = new_tokens + 1
        grid, pattern = model.decoder.build_delay_pattern_mask(
            torch.full((num_codebooks, 1), 256), pad_token_id=256, max_length=L
        )
        seq_ids = torch.full((num_codebooks, L), 256)
        toks = ref["greedy_tokens"]
        for k in range(num_codebooks):
            seq_ids[k, k + 1 : k + 1 + toks.shape[1]] = toks[k]
        seq_ids = model.decoder.apply_delay_pattern_mask(seq_ids, pattern)
        o = model(encoder_outputs=(enc2,), attention_mask=mask2, decoder_input_ids=seq_ids.repeat(2, 1))
        b = o.logits.reshape(2, num_codebooks, L, vocab)
        g = b[1] + (b[0] - b[1]) * GUIDANCE
        top2 = g.topk(2, dim=-1).values
        valid = pattern[:, 1:] == -1
        margins = (top2[..., 0] - top2[..., 1])[:, :-1][valid]
    meta["greedy_min_margin"] = float(margins.min())

    # 5. delay pattern: build (with a 3-frame prompt) and apply, as generate() uses them
    prompt_codes = torch.randint(0, vocab, (num_codebooks, 3), generator=gen)
    with_bos = torch.cat([torch.full((num_codebooks, 1), 256), prompt_codes], -1)
    max_length = 12
    built, mask = model.decoder.build_delay_pattern_mask(with_bos, pad_token_id=256, max_length=max_length)
    ref["delay_prompt"] = prompt_codes.to(torch.int64)
    ref["delay_built_ids"] = built.to(torch.int64)
    ref["delay_pattern"] = mask.to(torch.int64)
    filled = torch.randint(0, vocab, (num_codebooks, max_length), generator=gen)
    ref["delay_filled"] = filled.to(torch.int64)
    applied = model.decoder.apply_delay_pattern_mask(filled, mask)
    ref["delay_applied"] = applied.to(torch.int64)
    ref["delay_reverted"] = applied[applied != 256].reshape(num_codebooks, -1).to(torch.int64)
    meta["delay_max_length"] = max_length

    ref = {k: v.detach().contiguous() for k, v in ref.items()}
    save_file(ref, os.path.join(out_dir, "reference.safetensors"))
    meta["versions"] = {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    for k, v in ref.items():
        print(f"{k:18s} {tuple(v.shape)} {v.dtype}")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
