//! `MusicgenForConditionalGeneration` minus the sampling loop: the T5 text encoder (candle-transformers'
//! `t5::T5EncoderModel`, reused as is), the `enc_to_dec_proj` projection, the decoder LM and the EnCodec
//! decoder, built from one `VarBuilder` whose names are the checkpoint's keys (`text_encoder.*`,
//! `enc_to_dec_proj.*`, `decoder.*`, `audio_encoder.*`).
//!
//! Reference code: transformers `models/musicgen/modeling_musicgen.py` v4.57, `MusicgenForConditionalGeneration`
//! (`forward`, `_prepare_text_encoder_kwargs_for_generation`).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::t5::T5EncoderModel;

use super::config::Config;
use super::decoder::MusicgenDecoder;
use super::encodec::EncodecDecoder;

/// Longest text prompt fed to T5, in tokens (T5's `model_max_length`); longer prompts are cut, keeping `</s>`.
pub const MAX_TEXT_TOKENS: usize = 512;

/// The three networks of a MusicGen checkpoint.
#[derive(Debug, Clone)]
pub struct MusicgenModel {
    text_encoder: T5EncoderModel,
    enc_to_dec_proj: Option<Linear>,
    decoder: MusicgenDecoder,
    audio: EncodecDecoder,
    cfg: Config,
    device: Device,
}

impl MusicgenModel {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let t5_cfg = cfg
            .text_encoder
            .to_candle()
            .map_err(candle_core::Error::Msg)?;
        let text_encoder = T5EncoderModel::load(vb.pp("text_encoder"), &t5_cfg)?;
        let enc_to_dec_proj = if cfg.has_enc_to_dec_proj() {
            Some(candle_nn::linear(
                cfg.text_encoder.d_model,
                cfg.decoder.hidden_size,
                vb.pp("enc_to_dec_proj"),
            )?)
        } else {
            None
        };
        let decoder = MusicgenDecoder::new(&cfg.decoder, vb.pp("decoder"))?;
        let audio = EncodecDecoder::new(&cfg.audio_encoder, vb.pp("audio_encoder"))?;
        Ok(Self {
            text_encoder,
            enc_to_dec_proj,
            decoder,
            audio,
            cfg: cfg.clone(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn decoder(&self) -> &MusicgenDecoder {
        &self.decoder
    }

    pub fn audio_decoder(&self) -> &EncodecDecoder {
        &self.audio
    }

    /// T5's last hidden states for token ids: `[1, len, d_model]` (no projection).
    pub fn encode_text_raw(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = clip_ids(ids, self.cfg.text_encoder.eos_token_id as u32);
        let vocab = self.cfg.text_encoder.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            candle_core::bail!("text token id {bad} outside the encoder's vocabulary ({vocab})");
        }
        let input = Tensor::from_vec(ids.clone(), (1, ids.len()), &self.device)?;
        // T5EncoderModel::forward takes &mut self for its (unused, encoder-side) cache: run on a cheap clone
        let mut t5 = self.text_encoder.clone();
        t5.forward(&input)?.to_dtype(DType::F32)
    }

    /// The conditioning the decoder attends to: T5 states through `enc_to_dec_proj` → `[1, len, hidden]`.
    pub fn encode_text(&self, ids: &[u32]) -> Result<Tensor> {
        let states = self.encode_text_raw(ids)?;
        match &self.enc_to_dec_proj {
            Some(p) => p.forward(&states),
            None => Ok(states),
        }
    }

    /// EnCodec decode of codes `[codebooks][frames]` → mono samples (frames × hop of them). Up to
    /// [`DECODE_CHUNK_FRAMES`] frames are decoded in one pass, exactly as the reference; longer sequences in
    /// chunks (see [`Self::decode_audio_chunked`]) so memory stays flat for minutes of audio.
    pub fn decode_audio(&self, codes: &[Vec<u32>]) -> Result<Vec<f32>> {
        self.decode_audio_chunked(codes, DECODE_CHUNK_FRAMES, DECODE_CONTEXT_FRAMES)
    }

    /// Decodes `chunk` frames at a time, each pass seeing `context` extra frames on both sides whose
    /// samples are dropped: the SEANet decoder's convolutions and LSTM only look a short way around a
    /// frame, so the seams are inaudible while peak memory is that of one chunk (the single-pass decode of
    /// 30 s at 32 kHz needs gigabytes for the last convolutions' im2col buffers).
    pub fn decode_audio_chunked(
        &self,
        codes: &[Vec<u32>],
        chunk: usize,
        context: usize,
    ) -> Result<Vec<f32>> {
        let n_q = codes.len();
        let frames = codes.first().map_or(0, Vec::len);
        if frames == 0 {
            return Ok(Vec::new());
        }
        if codes.iter().any(|c| c.len() != frames) {
            candle_core::bail!("codebooks have different lengths");
        }
        let size = self.cfg.audio_encoder.codebook_size as u32;
        if codes.iter().flatten().any(|&c| c >= size) {
            candle_core::bail!("audio code outside the codebook (size {size})");
        }
        let hop = self.cfg.audio_encoder.hop_length();
        let chunk = chunk.max(1);
        let mut out = Vec::with_capacity(frames * hop);
        let mut start = 0;
        while start < frames {
            let end = if frames - start <= chunk + context {
                frames
            } else {
                start + chunk
            };
            let (a, b) = (start.saturating_sub(context), (end + context).min(frames));
            let flat: Vec<u32> = codes.iter().flat_map(|c| c[a..b].iter().copied()).collect();
            let t = Tensor::from_vec(flat, (1, n_q, b - a), &self.device)?;
            let samples = self
                .audio
                .decode(&t)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let from = (start - a) * hop;
            let to = (from + (end - start) * hop).min(samples.len());
            out.extend_from_slice(&samples[from.min(to)..to]);
            start = end;
        }
        Ok(out)
    }
}

/// Frames decoded in one EnCodec pass (10 s at 50 frames/s).
pub const DECODE_CHUNK_FRAMES: usize = 500;
/// Frames of context on each side of a chunk (1 s).
pub const DECODE_CONTEXT_FRAMES: usize = 50;

/// At least one token, at most `MAX_TEXT_TOKENS` with the last one kept (the `</s>` the tokenizer appends).
fn clip_ids(ids: &[u32], eos: u32) -> Vec<u32> {
    if ids.is_empty() {
        return vec![eos];
    }
    if ids.len() <= MAX_TEXT_TOKENS {
        return ids.to_vec();
    }
    let mut v = ids[..MAX_TEXT_TOKENS - 1].to_vec();
    v.push(ids[ids.len() - 1]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_the_end_token() {
        assert_eq!(clip_ids(&[], 1), vec![1]);
        assert_eq!(clip_ids(&[5, 6, 1], 1), vec![5, 6, 1]);
        let long: Vec<u32> = (0..600).collect();
        let c = clip_ids(&long, 1);
        assert_eq!(c.len(), MAX_TEXT_TOKENS);
        assert_eq!(*c.last().unwrap(), 599);
    }
}
