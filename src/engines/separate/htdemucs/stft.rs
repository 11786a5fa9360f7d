//! The STFT and inverse STFT exactly as HTDemucs frames them (`HTDemucs._spec` / `_ispec` over
//! `demucs.spec.spectro` / `ispectro`, i.e. `torch.stft` / `torch.istft` with a periodic Hann window,
//! `normalized=True`, `center=True`, reflect padding), on planar `f32` samples with realfft.
//!
//! `_spec` re-pads the signal by `3 * hop / 2` (reflect) so that a signal of `L` samples gives exactly
//! `ceil(L / hop)` frames, drops the Nyquist bin and keeps frames `2 .. 2 + ceil(L / hop)`; `_ispec`
//! undoes that. Spectrograms here are `nfft / 2` bins by `frames` frames, row-major (bin-major).

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::Error;

/// A planned STFT of one size; cheap to share between threads.
#[derive(Clone)]
pub struct Stft {
    nfft: usize,
    hop: usize,
    /// Periodic Hann window (`torch.hann_window(nfft)`).
    window: Arc<Vec<f32>>,
    r2c: Arc<dyn RealToComplex<f32>>,
    c2r: Arc<dyn ComplexToReal<f32>>,
}

impl std::fmt::Debug for Stft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stft")
            .field("nfft", &self.nfft)
            .field("hop", &self.hop)
            .finish()
    }
}

/// A complex spectrogram: `bins x frames`, split into real and imaginary planes.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    pub bins: usize,
    pub frames: usize,
    pub re: Vec<f32>,
    pub im: Vec<f32>,
}

impl Spectrogram {
    pub fn zeros(bins: usize, frames: usize) -> Self {
        Spectrogram {
            bins,
            frames,
            re: vec![0.0; bins * frames],
            im: vec![0.0; bins * frames],
        }
    }
}

/// `torch.nn.functional.pad(x, (left, right), mode="reflect")` (requires `left, right < len`).
fn reflect_pad(x: &[f32], left: usize, right: usize) -> Vec<f32> {
    let n = x.len();
    debug_assert!(left < n && right < n);
    let mut out = Vec::with_capacity(n + left + right);
    out.extend((1..=left).rev().map(|i| x[i]));
    out.extend_from_slice(x);
    out.extend((1..=right).map(|i| x[n - 1 - i]));
    out
}

/// demucs's `pad1d(x, (left, right), mode="reflect")`: zero-extends a signal too short to reflect
/// before reflecting, instead of failing like `F.pad`.
pub fn pad1d_reflect(x: &[f32], left: usize, right: usize) -> Vec<f32> {
    let len = x.len();
    let max_pad = left.max(right);
    if len <= max_pad {
        let extra = max_pad - len + 1;
        let extra_right = right.min(extra);
        let extra_left = extra - extra_right;
        let mut padded = vec![0.0; extra_left];
        padded.extend_from_slice(x);
        padded.extend(std::iter::repeat_n(0.0, extra_right));
        reflect_pad(&padded, left - extra_left, right - extra_right)
    } else {
        reflect_pad(x, left, right)
    }
}

impl Stft {
    /// Plan an STFT of `nfft` points with the hop HTDemucs uses (`nfft / 4`).
    pub fn new(nfft: usize) -> Result<Self, Error> {
        if nfft < 8 || nfft % 4 != 0 {
            return Err(Error::Config(format!(
                "nfft {nfft} must be a multiple of 4"
            )));
        }
        let mut planner = RealFftPlanner::<f32>::new();
        let window = (0..nfft)
            .map(|i| {
                let phase = 2.0 * std::f64::consts::PI * i as f64 / nfft as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        Ok(Stft {
            nfft,
            hop: nfft / 4,
            window: Arc::new(window),
            r2c: planner.plan_fft_forward(nfft),
            c2r: planner.plan_fft_inverse(nfft),
        })
    }

    pub fn nfft(&self) -> usize {
        self.nfft
    }

    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Frames `spec` produces for a signal of `len` samples.
    pub fn frames_for(&self, len: usize) -> usize {
        len.div_ceil(self.hop)
    }

    /// `HTDemucs._spec` of one channel: `nfft / 2` bins (Nyquist dropped) by `ceil(len / hop)`.
    pub fn spec(&self, x: &[f32]) -> Result<Spectrogram, Error> {
        if x.is_empty() {
            return Err(Error::Input(
                "cannot take the STFT of an empty signal".into(),
            ));
        }
        let (nfft, hop) = (self.nfft, self.hop);
        let frames = self.frames_for(x.len());
        let pad = hop / 2 * 3;
        let x = pad1d_reflect(x, pad, pad + frames * hop - x.len());
        // torch.stft(center=True): reflect by nfft / 2 on both sides.
        let x = reflect_pad(&x, nfft / 2, nfft / 2);
        let bins = nfft / 2;
        let mut out = Spectrogram::zeros(bins, frames);
        let scale = 1.0 / (nfft as f32).sqrt();
        let mut input = self.r2c.make_input_vec();
        let mut output = self.r2c.make_output_vec();
        let mut scratch = self.r2c.make_scratch_vec();
        for t in 0..frames {
            // `_spec` keeps the STFT frames 2 .. 2 + frames.
            let start = (t + 2) * hop;
            for (i, v) in input.iter_mut().enumerate() {
                *v = x[start + i] * self.window[i];
            }
            self.r2c
                .process_with_scratch(&mut input, &mut output, &mut scratch)
                .map_err(|e| Error::Internal(format!("rfft: {e}")))?;
            for (f, c) in output.iter().take(bins).enumerate() {
                out.re[f * frames + t] = c.re * scale;
                out.im[f * frames + t] = c.im * scale;
            }
        }
        Ok(out)
    }

    /// `HTDemucs._ispec(z, length)` of one channel: the inverse of [`Stft::spec`], `length` samples.
    pub fn ispec(&self, z: &Spectrogram, length: usize) -> Result<Vec<f32>, Error> {
        let (nfft, hop) = (self.nfft, self.hop);
        if z.bins != nfft / 2 || z.re.len() != z.bins * z.frames || z.im.len() != z.re.len() {
            return Err(Error::Internal(format!(
                "ispec: expected {} bins, got {} x {}",
                nfft / 2,
                z.bins,
                z.frames
            )));
        }
        let pad = hop / 2 * 3;
        let le = hop * length.div_ceil(hop) + 2 * pad;
        // `_ispec` adds a zero Nyquist bin and two empty frames on each side.
        let frames = z.frames + 4;
        let full = nfft + hop * (frames - 1);
        let mut acc = vec![0.0f32; full];
        let mut env = vec![0.0f32; full];
        let mut spec = self.c2r.make_input_vec();
        let mut frame = self.c2r.make_output_vec();
        let mut scratch = self.c2r.make_scratch_vec();
        // torch.istft(normalized=True) is an orthonormal inverse: 1 / sqrt(nfft).
        let scale = 1.0 / (nfft as f32).sqrt();
        for t in 0..frames {
            let start = t * hop;
            for i in 0..nfft {
                env[start + i] += self.window[i] * self.window[i];
            }
            if t < 2 || t >= z.frames + 2 {
                continue;
            }
            let col = t - 2;
            for (f, c) in spec.iter_mut().enumerate() {
                *c = if f < z.bins {
                    Complex32::new(z.re[f * z.frames + col], z.im[f * z.frames + col])
                } else {
                    Complex32::new(0.0, 0.0)
                };
            }
            // A one-sided inverse ignores the imaginary parts of the DC and Nyquist bins.
            spec[0].im = 0.0;
            spec[nfft / 2].im = 0.0;
            self.c2r
                .process_with_scratch(&mut spec, &mut frame, &mut scratch)
                .map_err(|e| Error::Internal(format!("irfft: {e}")))?;
            for i in 0..nfft {
                acc[start + i] += frame[i] * scale * self.window[i];
            }
        }
        // center=True drops nfft / 2 samples; `length=le` keeps exactly `le` of what remains
        // (always available here), and `_ispec` then drops `pad` more.
        let begin = nfft / 2;
        debug_assert!(begin + le <= full);
        let mut out = Vec::with_capacity(length);
        for i in begin + pad..begin + pad + length {
            if env[i] <= 1e-11 {
                return Err(Error::Internal("istft: window envelope vanishes".into()));
            }
            out.push(acc[i] / env[i]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_padding_matches_torch() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(
            reflect_pad(&x, 2, 3),
            vec![3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0, 1.0]
        );
        // pad1d zero-extends first when the signal is too short to reflect.
        let y = pad1d_reflect(&[1.0, 2.0], 3, 1);
        assert_eq!(y.len(), 6);
        assert_eq!(&y[3..5], &[1.0, 2.0]);
    }

    #[test]
    fn ispec_inverts_spec() {
        let stft = Stft::new(64).unwrap();
        let x: Vec<f32> = (0..300)
            .map(|i| ((i as f32) * 0.37).sin() + 0.3 * ((i as f32) * 1.1 + 0.5).cos())
            .collect();
        let z = stft.spec(&x).unwrap();
        assert_eq!((z.bins, z.frames), (32, 300usize.div_ceil(16)));
        let y = stft.ispec(&z, x.len()).unwrap();
        assert_eq!(y.len(), x.len());
        // `_spec` drops the two outermost frames on each side, so only the interior (beyond
        // 2 hops from either end) is reconstructed exactly; the Nyquist bin is dropped too.
        let err = x[32..268]
            .iter()
            .zip(&y[32..268])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-3, "round trip error {err}");
    }
}
