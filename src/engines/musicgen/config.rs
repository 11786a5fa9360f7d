//! The checkpoint's configuration, mirroring transformers' `MusicgenConfig` (`config.json`: `text_encoder`,
//! `audio_encoder`, `decoder`) and `GenerationConfig` (`generation_config.json`), field for field where we
//! use a field. Missing fields take the reference's defaults, so both the published files (written by
//! transformers 4.31) and newer `save_pretrained` output (which omits defaults) parse.

use candle_nn::Activation;
use serde::Deserialize;

/// `MusicgenConfig`: the three sub-models.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    /// The T5 encoder that turns the text prompt into conditioning states.
    pub text_encoder: T5Config,
    /// The EnCodec model whose codes the decoder predicts (only its decoder half is used).
    pub audio_encoder: EncodecConfig,
    /// The 4-codebook transformer language model.
    pub decoder: DecoderConfig,
}

impl Config {
    /// facebook/musicgen-small: 24 layers, width 1024, 16 heads, 2048 codes; T5-base; EnCodec 32 kHz.
    pub fn musicgen_small() -> Self {
        Self {
            text_encoder: T5Config::t5_base(),
            audio_encoder: EncodecConfig::encodec_32khz(),
            decoder: DecoderConfig {
                vocab_size: 2048,
                max_position_embeddings: 2048,
                num_hidden_layers: 24,
                ffn_dim: 4096,
                num_attention_heads: 16,
                hidden_size: 1024,
                activation_function: Activation::Gelu,
                num_codebooks: 4,
                audio_channels: 1,
                pad_token_id: 2048,
                bos_token_id: 2048,
                scale_embedding: false,
                cross_attention_hidden_size: None,
            },
        }
    }

    /// facebook/musicgen-medium: 48 layers, width 1536, 24 heads; T5-base; EnCodec 32 kHz.
    pub fn musicgen_medium() -> Self {
        let mut cfg = Self::musicgen_small();
        cfg.decoder.num_hidden_layers = 48;
        cfg.decoder.hidden_size = 1536;
        cfg.decoder.ffn_dim = 6144;
        cfg.decoder.num_attention_heads = 24;
        cfg
    }

    /// Whether the text states go through `enc_to_dec_proj` (widths differ and no explicit
    /// `cross_attention_hidden_size`), exactly the reference's condition.
    pub fn has_enc_to_dec_proj(&self) -> bool {
        self.text_encoder.d_model != self.decoder.hidden_size
            && self.decoder.cross_attention_hidden_size.is_none()
    }

    /// Rejects configurations this implementation does not run (stereo checkpoints, odd shapes), so a bad
    /// model directory fails at load time with a message instead of deep inside a tensor op.
    pub fn validate(&self) -> Result<(), String> {
        let d = &self.decoder;
        if d.audio_channels != 1 {
            return Err(format!(
                "decoder.audio_channels = {} (stereo MusicGen is not supported)",
                d.audio_channels
            ));
        }
        if d.num_codebooks == 0 || d.num_attention_heads == 0 || d.hidden_size == 0 {
            return Err("decoder has zero codebooks, heads or width".into());
        }
        if d.hidden_size % d.num_attention_heads != 0 {
            return Err(format!(
                "decoder.hidden_size {} is not a multiple of num_attention_heads {}",
                d.hidden_size, d.num_attention_heads
            ));
        }
        if self.audio_encoder.codebook_size != d.vocab_size {
            return Err(format!(
                "audio_encoder.codebook_size {} != decoder.vocab_size {}",
                self.audio_encoder.codebook_size, d.vocab_size
            ));
        }
        if self.audio_encoder.num_quantizers() < d.num_codebooks {
            return Err(format!(
                "audio_encoder has {} quantizers, decoder predicts {} codebooks",
                self.audio_encoder.num_quantizers(),
                d.num_codebooks
            ));
        }
        if self.audio_encoder.audio_channels != 1 {
            return Err("audio_encoder.audio_channels must be 1".into());
        }
        if self.audio_encoder.upsampling_ratios.is_empty() || self.audio_encoder.hop_length() == 0 {
            return Err("audio_encoder.upsampling_ratios is empty".into());
        }
        if self.text_encoder.num_heads == 0 || self.text_encoder.d_model == 0 {
            return Err("text_encoder has zero heads or width".into());
        }
        Ok(())
    }
}

/// `MusicgenDecoderConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecoderConfig {
    /// Codes per codebook (EnCodec's codebook size); the embeddings have one more row for the pad/BOS id.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Positions of the sinusoidal table the reference builds at start (it grows on demand, as here).
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_ffn")]
    pub ffn_dim: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// `"gelu"` in every published checkpoint: the exact (erf) GELU.
    #[serde(default = "d_act")]
    pub activation_function: Activation,
    /// Parallel codebooks predicted per step (4 for the 32 kHz EnCodec).
    #[serde(default = "d_codebooks")]
    pub num_codebooks: usize,
    /// 1 for mono checkpoints (2 = stereo, interleaved codebooks: not supported).
    #[serde(default = "d_one")]
    pub audio_channels: usize,
    /// The id that fills the delay pattern's empty cells (= vocab_size).
    #[serde(default = "d_vocab")]
    pub pad_token_id: u32,
    /// The start id fed at position 0 (= vocab_size).
    #[serde(default = "d_vocab")]
    pub bos_token_id: u32,
    /// Multiplies token embeddings by sqrt(hidden) when true (false in every published checkpoint).
    #[serde(default)]
    pub scale_embedding: bool,
    /// When set, the decoder attends to text states of this width directly (no projection).
    #[serde(default)]
    pub cross_attention_hidden_size: Option<usize>,
}

/// 2048: the published codebook size, also the pad/BOS id.
fn d_vocab<T: From<u16>>() -> T {
    T::from(2048)
}
fn d_max_pos() -> usize {
    2048
}
fn d_layers() -> usize {
    24
}
fn d_ffn() -> usize {
    4096
}
fn d_heads() -> usize {
    16
}
fn d_hidden() -> usize {
    1024
}
fn d_act() -> Activation {
    Activation::Gelu
}
fn d_codebooks() -> usize {
    4
}
fn d_one() -> usize {
    1
}

/// `T5Config`, with transformers' defaults for omitted fields; converted to candle's `t5::Config`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct T5Config {
    #[serde(default = "t5_vocab")]
    pub vocab_size: usize,
    #[serde(default = "t5_d_model")]
    pub d_model: usize,
    #[serde(default = "t5_d_kv")]
    pub d_kv: usize,
    #[serde(default = "t5_d_ff")]
    pub d_ff: usize,
    #[serde(default = "t5_layers")]
    pub num_layers: usize,
    #[serde(default = "t5_heads")]
    pub num_heads: usize,
    #[serde(default = "t5_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "t5_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "t5_eps")]
    pub layer_norm_epsilon: f64,
    /// `"relu"` for T5-base; `"gated-gelu"` for the v1.1 / flan family.
    #[serde(default = "t5_ff_proj")]
    pub feed_forward_proj: String,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "d_one")]
    pub eos_token_id: usize,
}

fn t5_vocab() -> usize {
    32128
}
fn t5_d_model() -> usize {
    512
}
fn t5_d_kv() -> usize {
    64
}
fn t5_d_ff() -> usize {
    2048
}
fn t5_layers() -> usize {
    6
}
fn t5_heads() -> usize {
    8
}
fn t5_buckets() -> usize {
    32
}
fn t5_max_distance() -> usize {
    128
}
fn t5_eps() -> f64 {
    1e-6
}
fn t5_ff_proj() -> String {
    "relu".into()
}

impl T5Config {
    /// t5-base, MusicGen's text encoder.
    pub fn t5_base() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 768,
            d_kv: 64,
            d_ff: 3072,
            num_layers: 12,
            num_heads: 12,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "relu".into(),
            pad_token_id: 0,
            eos_token_id: 1,
        }
    }

    /// candle's T5 configuration for an encoder-only stack.
    pub fn to_candle(&self) -> Result<candle_transformers::models::t5::Config, String> {
        use candle_transformers::models::t5::{ActivationWithOptionalGating, Config as C};
        let feed_forward_proj = match self.feed_forward_proj.as_str() {
            "relu" => ActivationWithOptionalGating {
                gated: false,
                activation: Activation::Relu,
            },
            "gated-gelu" => ActivationWithOptionalGating {
                gated: true,
                activation: Activation::NewGelu,
            },
            "gated-silu" => ActivationWithOptionalGating {
                gated: true,
                activation: Activation::Silu,
            },
            other => {
                return Err(format!(
                    "text_encoder.feed_forward_proj {other:?} unsupported"
                ))
            }
        };
        Ok(C {
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            d_kv: self.d_kv,
            d_ff: self.d_ff,
            num_layers: self.num_layers,
            num_decoder_layers: None,
            num_heads: self.num_heads,
            relative_attention_num_buckets: self.relative_attention_num_buckets,
            relative_attention_max_distance: self.relative_attention_max_distance,
            dropout_rate: 0.0,
            layer_norm_epsilon: self.layer_norm_epsilon,
            initializer_factor: 1.0,
            feed_forward_proj,
            tie_word_embeddings: true,
            is_decoder: false,
            is_encoder_decoder: false,
            use_cache: false,
            pad_token_id: self.pad_token_id,
            eos_token_id: self.eos_token_id,
            decoder_start_token_id: None,
        })
    }
}

/// `EncodecConfig`, the fields the decoder half uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EncodecConfig {
    /// kbps; the last one fixes the number of quantizers (`num_quantizers`).
    #[serde(default = "enc_bandwidths")]
    pub target_bandwidths: Vec<f64>,
    #[serde(default = "enc_rate")]
    pub sampling_rate: u32,
    #[serde(default = "d_one")]
    pub audio_channels: usize,
    /// Width of the quantized latent.
    #[serde(default = "enc_hidden")]
    pub hidden_size: usize,
    /// Channels of the outermost convolutions; doubled at each of the `upsampling_ratios` stages.
    #[serde(default = "enc_filters")]
    pub num_filters: usize,
    #[serde(default = "d_one")]
    pub num_residual_layers: usize,
    /// Decoder upsampling factors, outermost last; their product is the hop (samples per code frame).
    #[serde(default = "enc_ratios")]
    pub upsampling_ratios: Vec<usize>,
    /// `"weight_norm"` (all published checkpoints) or `"time_group_norm"`.
    #[serde(default = "enc_norm")]
    pub norm_type: String,
    #[serde(default = "enc_kernel")]
    pub kernel_size: usize,
    #[serde(default = "enc_kernel")]
    pub last_kernel_size: usize,
    #[serde(default = "enc_res_kernel")]
    pub residual_kernel_size: usize,
    #[serde(default = "enc_dilation")]
    pub dilation_growth_rate: usize,
    /// Causal (left) padding vs. the symmetric padding the 32 kHz model uses.
    #[serde(default = "d_true")]
    pub use_causal_conv: bool,
    /// `"reflect"` (32 kHz model) or `"constant"`/`"replicate"`.
    #[serde(default = "enc_pad")]
    pub pad_mode: String,
    #[serde(default = "enc_compress")]
    pub compress: usize,
    #[serde(default = "enc_lstm")]
    pub num_lstm_layers: usize,
    /// Share of a causal transposed convolution's padding trimmed on the right.
    #[serde(default = "enc_trim")]
    pub trim_right_ratio: f64,
    #[serde(default = "enc_codebook")]
    pub codebook_size: usize,
    /// Codebook vector width (defaults to `hidden_size`).
    #[serde(default)]
    pub codebook_dim: Option<usize>,
    /// A 1×1 convolution on the residual path instead of the identity.
    #[serde(default = "d_true")]
    pub use_conv_shortcut: bool,
}

fn enc_bandwidths() -> Vec<f64> {
    vec![1.5, 3.0, 6.0, 12.0, 24.0]
}
fn enc_rate() -> u32 {
    24_000
}
fn enc_hidden() -> usize {
    128
}
fn enc_filters() -> usize {
    32
}
fn enc_ratios() -> Vec<usize> {
    vec![8, 5, 4, 2]
}
fn enc_norm() -> String {
    "weight_norm".into()
}
fn enc_kernel() -> usize {
    7
}
fn enc_res_kernel() -> usize {
    3
}
fn enc_dilation() -> usize {
    2
}
fn d_true() -> bool {
    true
}
fn enc_pad() -> String {
    "reflect".into()
}
fn enc_compress() -> usize {
    2
}
fn enc_lstm() -> usize {
    2
}
fn enc_trim() -> f64 {
    1.0
}
fn enc_codebook() -> usize {
    1024
}

impl EncodecConfig {
    /// facebook/encodec_32khz as embedded in the MusicGen checkpoints.
    pub fn encodec_32khz() -> Self {
        Self {
            target_bandwidths: vec![2.2],
            sampling_rate: 32_000,
            audio_channels: 1,
            hidden_size: 128,
            num_filters: 64,
            num_residual_layers: 1,
            upsampling_ratios: vec![8, 5, 4, 4],
            norm_type: "weight_norm".into(),
            kernel_size: 7,
            last_kernel_size: 7,
            residual_kernel_size: 3,
            dilation_growth_rate: 2,
            use_causal_conv: false,
            pad_mode: "reflect".into(),
            compress: 2,
            num_lstm_layers: 2,
            trim_right_ratio: 1.0,
            codebook_size: 2048,
            codebook_dim: Some(128),
            use_conv_shortcut: false,
        }
    }

    /// Samples per code frame.
    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    /// Code frames per second, `ceil(sampling_rate / hop)` as the reference (50 for 32 kHz).
    pub fn frame_rate(&self) -> usize {
        (self.sampling_rate as usize).div_ceil(self.hop_length().max(1))
    }

    pub fn codebook_dim(&self) -> usize {
        self.codebook_dim.unwrap_or(self.hidden_size)
    }

    /// `int(1000 * target_bandwidths[-1] // (frame_rate * log2(codebook_size)))`.
    pub fn num_quantizers(&self) -> usize {
        let bits = (self.codebook_size.max(2) as f64).log2();
        let bw = self.target_bandwidths.last().copied().unwrap_or(0.0);
        ((1000.0 * bw) / (self.frame_rate() as f64 * bits)).floor() as usize
    }
}

/// `generation_config.json`: the sampling defaults shipped with the checkpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GenerationConfig {
    /// The id of position 0 and of the delay pattern's empty cells.
    #[serde(default = "d_vocab")]
    pub decoder_start_token_id: u32,
    #[serde(default = "d_vocab")]
    pub pad_token_id: u32,
    /// Classifier-free guidance coefficient (3.0 published).
    #[serde(default = "g_guidance")]
    pub guidance_scale: f64,
    #[serde(default = "g_top_k")]
    pub top_k: usize,
    #[serde(default = "g_temperature")]
    pub temperature: f64,
    #[serde(default = "d_true")]
    pub do_sample: bool,
}

fn g_guidance() -> f64 {
    3.0
}
fn g_top_k() -> usize {
    250
}
fn g_temperature() -> f64 {
    1.0
}

impl GenerationConfig {
    /// The published defaults for a decoder whose pad/BOS id is `pad`.
    pub fn published(pad: u32) -> Self {
        Self {
            decoder_start_token_id: pad,
            pad_token_id: pad,
            guidance_scale: 3.0,
            top_k: 250,
            temperature: 1.0,
            do_sample: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodec_32khz_has_four_quantizers_at_50_hz() {
        let c = EncodecConfig::encodec_32khz();
        assert_eq!(c.hop_length(), 640);
        assert_eq!(c.frame_rate(), 50);
        assert_eq!(c.num_quantizers(), 4);
    }

    #[test]
    fn omitted_fields_take_reference_defaults() {
        let cfg: Config = serde_json::from_str(
            r#"{"text_encoder": {"d_model": 768, "num_layers": 12, "num_heads": 12, "d_ff": 3072},
                "audio_encoder": {"sampling_rate": 32000, "upsampling_ratios": [8,5,4,4],
                                  "target_bandwidths": [2.2], "codebook_size": 2048, "num_filters": 64,
                                  "use_causal_conv": false, "use_conv_shortcut": false},
                "decoder": {"hidden_size": 1024}}"#,
        )
        .unwrap();
        assert_eq!(cfg.decoder.num_codebooks, 4);
        assert_eq!(cfg.decoder.pad_token_id, 2048);
        assert_eq!(cfg.decoder.activation_function, Activation::Gelu);
        assert_eq!(cfg.text_encoder.eos_token_id, 1);
        assert!(cfg.has_enc_to_dec_proj());
        cfg.validate().unwrap();
    }

    #[test]
    fn validate_rejects_stereo_and_mismatched_codebooks() {
        let mut cfg = Config::musicgen_small();
        cfg.validate().unwrap();
        cfg.decoder.audio_channels = 2;
        assert!(cfg.validate().unwrap_err().contains("stereo"));
        let mut cfg = Config::musicgen_small();
        cfg.audio_encoder.codebook_size = 1024;
        assert!(cfg.validate().is_err());
    }
}
