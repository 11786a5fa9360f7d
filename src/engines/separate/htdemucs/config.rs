//! `Config`: the keyword arguments `demucs.htdemucs.HTDemucs.__init__` was called with, as demucs
//! stores them in a checkpoint (`package["kwargs"]`) and as soundcheck's converter writes them to JSON.
//!
//! Every field has the reference's default, so a kwargs dict that omits a value means the same here
//! as in Python. Options the port does not implement are rejected by [`Config::validate`] rather than
//! silently ignored.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Error;

/// The training segment length in seconds. demucs stores either a number or a `fractions.Fraction`;
/// the fraction is kept exact so that `int(segment * samplerate)` gives the same sample count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Segment {
    Seconds(f64),
    Fraction { num: i64, den: i64 },
}

impl Segment {
    /// `int(segment * samplerate)` as Python computes it (truncation towards zero).
    pub fn samples(&self, samplerate: u32) -> usize {
        match *self {
            Segment::Seconds(s) => (s * samplerate as f64) as usize,
            Segment::Fraction { num, den } => {
                ((num as i128 * samplerate as i128) / den as i128).max(0) as usize
            }
        }
    }

    pub fn seconds(&self) -> f64 {
        match *self {
            Segment::Seconds(s) => s,
            Segment::Fraction { num, den } => num as f64 / den as f64,
        }
    }
}

impl Serialize for Segment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Segment::Seconds(v) => s.serialize_f64(v),
            Segment::Fraction { num, den } => s.serialize_str(&format!("{num}/{den}")),
        }
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_f64()
                .map(Segment::Seconds)
                .ok_or_else(|| D::Error::custom("segment is not a number")),
            serde_json::Value::String(s) => {
                let (num, den) = s
                    .split_once('/')
                    .ok_or_else(|| D::Error::custom(format!("segment {s:?} is not \"n/d\"")))?;
                let num = num.trim().parse().map_err(D::Error::custom)?;
                let den: i64 = den.trim().parse().map_err(D::Error::custom)?;
                if den <= 0 {
                    return Err(D::Error::custom("segment denominator must be positive"));
                }
                Ok(Segment::Fraction { num, den })
            }
            other => Err(D::Error::custom(format!(
                "segment must be a number or \"n/d\", got {other}"
            ))),
        }
    }
}

/// `HTDemucs.__init__` keyword arguments (demucs 4.0.1), with the reference defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Source names, in the order of the model's output channels.
    pub sources: Vec<String>,
    /// Input/output audio channels (2 for every official model).
    pub audio_channels: usize,
    /// Hidden channels of the first layer; multiplied by `growth` at each layer.
    pub channels: usize,
    /// Time-branch channels when they differ from `channels`.
    pub channels_time: Option<usize>,
    pub growth: f64,
    /// STFT size; the hop is `nfft / 4`.
    pub nfft: usize,
    /// Wiener filtering iterations (only 0 with `cac` is supported).
    pub wiener_iters: i64,
    pub end_iters: i64,
    pub wiener_residual: bool,
    /// Complex-as-channels: the frequency branch sees (re, im) as two channels.
    pub cac: bool,
    /// Number of encoder (and decoder) layers.
    pub depth: usize,
    /// 1x1 (or `1 + 2 * context`) GLU convolution at the end of each layer.
    pub rewrite: bool,
    /// Frequency band splitting (`MultiWrap`); unsupported, must be empty.
    pub multi_freqs: Option<Vec<f64>>,
    pub multi_freqs_depth: usize,
    /// Weight of the frequency embedding added after the first frequency layer (0 = none).
    pub freq_emb: f64,
    /// The embedding's learning-rate boost, a constant factor at inference.
    pub emb_scale: f64,
    pub emb_smooth: bool,
    pub kernel_size: usize,
    pub time_stride: usize,
    pub stride: usize,
    /// Context of the decoder's rewrite convolution (kernel `1 + 2 * context`).
    pub context: usize,
    /// Context of the encoder's rewrite convolution.
    pub context_enc: usize,
    /// First layer index with GroupNorm in encoder/decoder layers.
    pub norm_starts: usize,
    pub norm_groups: usize,
    /// DConv residual branches: bit 1 = encoder, bit 2 = decoder.
    pub dconv_mode: usize,
    pub dconv_depth: usize,
    pub dconv_comp: f64,
    pub dconv_init: f64,
    /// Width of the 1x1 projections around the transformer (0 = none).
    pub bottom_channels: usize,
    /// Cross-transformer layers per branch (alternating self / cross attention).
    pub t_layers: usize,
    /// Positional embedding: only "sin" is supported.
    pub t_emb: String,
    pub t_hidden_scale: f64,
    pub t_heads: usize,
    pub t_dropout: f64,
    pub t_max_positions: usize,
    pub t_norm_in: bool,
    pub t_norm_in_group: bool,
    pub t_group_norm: bool,
    pub t_norm_first: bool,
    pub t_norm_out: bool,
    pub t_max_period: f64,
    pub t_weight_decay: f64,
    pub t_lr: Option<f64>,
    pub t_layer_scale: bool,
    /// GELU (else ReLU) in the transformer feed-forward blocks.
    pub t_gelu: bool,
    pub t_weight_pos_embed: f64,
    pub t_sin_random_shift: usize,
    pub t_cape_mean_normalize: bool,
    pub t_cape_augment: bool,
    pub t_cape_glob_loc_scale: Vec<f64>,
    pub t_sparse_self_attn: bool,
    pub t_sparse_cross_attn: bool,
    pub t_mask_type: String,
    pub t_mask_random_seed: i64,
    pub t_sparse_attn_window: usize,
    pub t_global_window: usize,
    pub t_sparsity: f64,
    pub t_auto_sparsity: bool,
    /// Whether the first transformer layer is a cross-attention one.
    pub t_cross_first: bool,
    /// Weight rescaling at init; no effect at inference.
    pub rescale: f64,
    pub samplerate: u32,
    /// Training segment length; inference runs on segments of exactly this length.
    pub segment: Segment,
    pub use_train_segment: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sources: ["drums", "bass", "other", "vocals"]
                .map(String::from)
                .to_vec(),
            audio_channels: 2,
            channels: 48,
            channels_time: None,
            growth: 2.0,
            nfft: 4096,
            wiener_iters: 0,
            end_iters: 0,
            wiener_residual: false,
            cac: true,
            depth: 4,
            rewrite: true,
            multi_freqs: None,
            multi_freqs_depth: 3,
            freq_emb: 0.2,
            emb_scale: 10.0,
            emb_smooth: true,
            kernel_size: 8,
            time_stride: 2,
            stride: 4,
            context: 1,
            context_enc: 0,
            norm_starts: 4,
            norm_groups: 4,
            dconv_mode: 1,
            dconv_depth: 2,
            dconv_comp: 8.0,
            dconv_init: 1e-3,
            bottom_channels: 0,
            t_layers: 5,
            t_emb: "sin".into(),
            t_hidden_scale: 4.0,
            t_heads: 8,
            t_dropout: 0.0,
            t_max_positions: 10000,
            t_norm_in: true,
            t_norm_in_group: false,
            t_group_norm: false,
            t_norm_first: true,
            t_norm_out: true,
            t_max_period: 10000.0,
            t_weight_decay: 0.0,
            t_lr: None,
            t_layer_scale: true,
            t_gelu: true,
            t_weight_pos_embed: 1.0,
            t_sin_random_shift: 0,
            t_cape_mean_normalize: true,
            t_cape_augment: true,
            t_cape_glob_loc_scale: vec![5000.0, 1.0, 1.4],
            t_sparse_self_attn: false,
            t_sparse_cross_attn: false,
            t_mask_type: "diag".into(),
            t_mask_random_seed: 42,
            t_sparse_attn_window: 500,
            t_global_window: 100,
            t_sparsity: 0.95,
            t_auto_sparsity: false,
            t_cross_first: false,
            rescale: 0.1,
            samplerate: 44100,
            segment: Segment::Seconds(10.0),
            use_train_segment: true,
        }
    }
}

impl Config {
    /// The configuration of the official `htdemucs` checkpoint (42.0 M parameters): its saved
    /// kwargs over `HTDemucs`' defaults — 7.8 s segments, 512 bottom channels, both DConv
    /// branches, 5 cross-transformer layers. With random weights it is the full-size model's
    /// speed without a download (`benches/separate.rs`, the GPU check).
    pub fn htdemucs_official() -> Config {
        Config {
            segment: Segment::Fraction { num: 39, den: 5 },
            bottom_channels: 512,
            dconv_mode: 3,
            t_layers: 5,
            ..Config::default()
        }
    }
}

/// Shapes of one encoder/decoder level, derived exactly as `HTDemucs.__init__` does.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// Frequency-branch input/output channels of the encoder layer.
    pub chin_z: usize,
    pub chout_z: usize,
    /// Time-branch input/output channels.
    pub chin: usize,
    pub chout: usize,
    /// Whether the level has GroupNorm.
    pub norm: bool,
}

impl Config {
    /// Parse the converter's JSON (or any kwargs object) into a validated config.
    pub fn from_json(value: serde_json::Value) -> Result<Config, Error> {
        let cfg: Config = serde_json::from_value(value)
            .map_err(|e| Error::Config(format!("invalid HTDemucs kwargs: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// STFT hop (the reference asserts `hop == nfft / 4`).
    pub fn hop_length(&self) -> usize {
        self.nfft / 4
    }

    /// Samples per model call: `int(segment * samplerate)`.
    pub fn training_length(&self) -> usize {
        self.segment.samples(self.samplerate)
    }

    /// Channels entering the cross transformer (the deepest encoder's width).
    pub fn transformer_input_channels(&self) -> usize {
        self.levels().last().map_or(0, |l| l.chout_z)
    }

    /// Width the transformer runs at.
    pub fn transformer_channels(&self) -> usize {
        if self.bottom_channels > 0 {
            self.bottom_channels
        } else {
            self.transformer_input_channels()
        }
    }

    /// Per-level channel counts; `levels()[0]` is the outermost layer.
    pub fn levels(&self) -> Vec<Level> {
        let mut out = Vec::with_capacity(self.depth);
        let mut chin = self.audio_channels;
        let mut chin_z = if self.cac { 2 * chin } else { chin };
        let mut chout = self.channels_time.unwrap_or(self.channels);
        let mut chout_z = self.channels;
        for index in 0..self.depth {
            out.push(Level {
                chin_z,
                chout_z,
                chin,
                chout,
                norm: index >= self.norm_starts,
            });
            chin = chout;
            chin_z = chout_z;
            chout = (self.growth * chout as f64) as usize;
            chout_z = (self.growth * chout_z as f64) as usize;
        }
        out
    }

    /// Number of frequency bins at the input of each level (`nfft / 2` at level 0).
    pub fn level_freqs(&self) -> Vec<usize> {
        let mut freqs = self.nfft / 2;
        (0..self.depth)
            .map(|_| {
                let f = freqs;
                freqs /= self.stride;
                f
            })
            .collect()
    }

    /// Reject the options this port does not implement (none of them is used by the official
    /// `htdemucs`, `htdemucs_ft` and `htdemucs_6s` checkpoints).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.sources.is_empty() {
            return bad("no sources".into());
        }
        if self.audio_channels == 0 || self.channels == 0 || self.depth == 0 {
            return bad("audio_channels, channels and depth must be positive".into());
        }
        if self.nfft < 8 || self.nfft % 4 != 0 {
            return bad(format!("nfft {} must be a multiple of 4", self.nfft));
        }
        if !self.cac {
            return bad("only complex-as-channels models (cac=True) are supported".into());
        }
        if self.wiener_iters != 0 || self.end_iters != 0 {
            return bad("Wiener filtering is not supported".into());
        }
        if self.multi_freqs.as_ref().is_some_and(|m| !m.is_empty()) {
            return bad("multi_freqs (MultiWrap) is not supported".into());
        }
        if self.t_emb != "sin" {
            return bad(format!(
                "transformer embedding {:?} is not supported (only \"sin\")",
                self.t_emb
            ));
        }
        if self.t_sparse_self_attn || self.t_sparse_cross_attn || self.t_auto_sparsity {
            return bad("sparse attention is not supported".into());
        }
        if !self.use_train_segment {
            return bad("use_train_segment=False is not supported".into());
        }
        if self.t_sin_random_shift != 0 {
            return bad("t_sin_random_shift must be 0 at inference".into());
        }
        if self.t_norm_in_group || self.t_group_norm {
            return bad("group-norm transformer variants are not supported".into());
        }
        // Every level must stay a frequency layer with padding: the `empty` time layer that merges
        // the branches once the frequency axis is exhausted is not ported.
        let freqs = self.level_freqs();
        if freqs.iter().any(|&f| f <= self.kernel_size) {
            return bad(format!(
                "depth {} exhausts the frequency axis (nfft {}); not supported",
                self.depth, self.nfft
            ));
        }
        if self.stride == 0 || self.kernel_size < 4 || self.kernel_size % 4 != 0 {
            return bad(format!(
                "kernel_size {} / stride {} not supported",
                self.kernel_size, self.stride
            ));
        }
        let dim = self.transformer_channels();
        if self.t_layers > 0 && (self.t_heads == 0 || dim % self.t_heads != 0 || dim % 4 != 0) {
            return bad(format!(
                "transformer width {dim} must be a multiple of 4 and of t_heads {}",
                self.t_heads
            ));
        }
        if self.training_length() == 0 {
            return bad("segment is shorter than one sample".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_reference_and_levels_follow_init() {
        let cfg = Config::default();
        cfg.validate().unwrap();
        let levels = cfg.levels();
        assert_eq!(levels.len(), 4);
        assert_eq!((levels[0].chin_z, levels[0].chout_z), (4, 48));
        assert_eq!((levels[0].chin, levels[0].chout), (2, 48));
        assert_eq!((levels[3].chin_z, levels[3].chout_z), (192, 384));
        assert_eq!(cfg.level_freqs(), vec![2048, 512, 128, 32]);
        assert_eq!(cfg.transformer_channels(), 384);
        assert_eq!(cfg.training_length(), 441_000);
    }

    #[test]
    fn segment_accepts_numbers_and_exact_fractions() {
        let cfg = Config::from_json(serde_json::json!({"segment": "39/5"})).unwrap();
        assert_eq!(cfg.segment, Segment::Fraction { num: 39, den: 5 });
        assert_eq!(cfg.training_length(), 343_980);
        let cfg = Config::from_json(serde_json::json!({"segment": 7.8})).unwrap();
        assert_eq!(cfg.training_length(), 343_980);
        assert!(Config::from_json(serde_json::json!({"segment": "7.8"})).is_err());
        let back = serde_json::to_value(Segment::Fraction { num: 2, den: 5 }).unwrap();
        assert_eq!(back, serde_json::json!("2/5"));
    }

    #[test]
    fn unsupported_options_are_rejected() {
        for bad in [
            serde_json::json!({"cac": false}),
            serde_json::json!({"wiener_iters": 1, "end_iters": 1}),
            serde_json::json!({"t_emb": "cape"}),
            serde_json::json!({"depth": 6}),
            serde_json::json!({"multi_freqs": [0.5]}),
            serde_json::json!({"bottom_channels": 30}),
            serde_json::json!({"use_train_segment": false}),
        ] {
            assert!(Config::from_json(bad.clone()).is_err(), "{bad} accepted");
        }
    }
}
