//! MP3 through LAME (`mp3lame-encoder`), with a LAME/Info tag carrying the encoder delay and
//! padding so gapless decoders trim to the exact length.
//!
//! LAME encodes on one thread. A long track can instead be cut into pieces encoded on several
//! threads and joined frame by frame into one stream, which is how a generated track's MP3 keeps
//! up with its render:
//!
//! - An encoder fed audio from a frame boundary emits frame `j` for the same stretch of input as
//!   an encoder fed from the start emits frame `start + j`: the framing is fixed by the first
//!   sample. So piece `k` keeps global frames `b[k]..b[k+1]` of its own output.
//! - Each later piece's encoder is first fed [`PRIMING`] frames from before its boundary, so its
//!   filterbank, MDCT overlap and psychoacoustic state are what one encoder's would be there (the
//!   decoder overlaps the last kept frame of one piece with the first of the next; both encode
//!   the same signal, so the time-domain aliasing cancels as within one stream). Each piece is
//!   also fed [`LOOKAHEAD`] frames past its end, so its last kept frames never see the zeros a
//!   flush pads with.
//! - The bit reservoir is off in every piece, so no frame borrows bytes from a frame of another
//!   encoder; at 192 kbit/s that costs nothing audible.
//! - The first piece's Info tag is kept, with its frame and byte counts, padding, music length
//!   and both CRCs rewritten for the joined stream.

use std::fs;
use std::ops::Range;
use std::path::Path;

use mp3lame_encoder::{Bitrate, Builder, DualPcm, Encoder, FlushGap, Mode, MonoPcm, Quality};

use super::error::{Error, Result};
use super::resample::{resample, Quality as ResampleQuality};
use super::Audio;

/// Sample rates MPEG-1/2/2.5 layer III can carry.
const MP3_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];
/// Samples per MPEG-1 layer III frame (the rates pieces are used at: 32, 44.1 and 48 kHz).
const FRAME: usize = 1152;
/// Frames a later piece's encoder is fed before its first kept frame.
const PRIMING: usize = 16;
/// Frames a piece's encoder is fed past its last kept frame (LAME looks ahead under 2 frames).
const LOOKAHEAD: usize = 4;
/// Shortest piece, in frames (about 3.3 s at 44.1 kHz): short files stay one piece.
const MIN_PIECE: usize = 128;
/// Input handed to LAME per call.
const BLOCK: usize = FRAME * 32;
/// CRC-16 as LAME computes it for the Info tag (polynomial 0x8005, reflected, initial 0).
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);

/// Writes `audio` as a constant-bit-rate MP3 at `kbps`, in up to `pieces` pieces encoded in
/// parallel (one piece: a single encoder with the bit reservoir on, as LAME's command line would).
pub(super) fn write(
    audio: &Audio,
    path: &Path,
    kbps: u32,
    quality: Quality,
    pieces: usize,
    progress: &dyn Fn(f32),
) -> Result<()> {
    let brate = bitrate(kbps)?;
    // MP3 carries one or two channels at nine rates: fold wider layouts to stereo and resample
    // odd rates to the nearest standard one at or above them.
    let folded;
    let audio = if audio.channels.len() > 2 {
        folded = audio.fold_to_stereo();
        &folded
    } else {
        audio
    };
    let resampled;
    let audio = if MP3_RATES.contains(&audio.sample_rate) {
        audio
    } else {
        let rate = MP3_RATES
            .iter()
            .copied()
            .find(|&r| r >= audio.sample_rate)
            .unwrap_or(48_000);
        resampled = resample(audio, rate, ResampleQuality::High)?;
        &resampled
    };
    // Pieces rely on MPEG-1 framing (1152 samples) at the input's own rate and on the first
    // piece writing an Info tag: both hold at 32–48 kHz and 128 kbit/s or more (below that LAME
    // may lower the output rate or leave the tag out).
    let splittable = audio.sample_rate >= 32_000 && kbps >= 128;
    let pieces = if splittable {
        pieces.min(audio.frames() / FRAME / MIN_PIECE).max(1)
    } else {
        1
    };
    let out = if pieces > 1 {
        encode_pieces(audio, brate, quality, pieces)?
    } else {
        encode_whole(audio, brate, quality, progress)?
    };
    fs::write(path, &out)?;
    Ok(())
}

fn bitrate(kbps: u32) -> Result<Bitrate> {
    Ok(match kbps {
        8 => Bitrate::Kbps8,
        16 => Bitrate::Kbps16,
        24 => Bitrate::Kbps24,
        32 => Bitrate::Kbps32,
        40 => Bitrate::Kbps40,
        48 => Bitrate::Kbps48,
        64 => Bitrate::Kbps64,
        80 => Bitrate::Kbps80,
        96 => Bitrate::Kbps96,
        112 => Bitrate::Kbps112,
        128 => Bitrate::Kbps128,
        160 => Bitrate::Kbps160,
        192 => Bitrate::Kbps192,
        224 => Bitrate::Kbps224,
        256 => Bitrate::Kbps256,
        320 => Bitrate::Kbps320,
        other => return Err(Error::Invalid(format!("unsupported MP3 bit rate {other}"))),
    })
}

/// A configured LAME encoder for `audio`'s rate and channels.
fn encoder(
    audio: &Audio,
    brate: Bitrate,
    quality: Quality,
    reservoir: bool,
    tag: bool,
) -> Result<Encoder> {
    let stereo = audio.channels.len() == 2;
    let lame = |e: mp3lame_encoder::BuildError| Error::Encode(format!("lame: {e:?}"));
    let mut builder = Builder::new().ok_or_else(|| Error::Encode("lame: out of memory".into()))?;
    builder
        .set_num_channels(if stereo { 2 } else { 1 })
        .map_err(lame)?;
    builder.set_sample_rate(audio.sample_rate).map_err(lame)?;
    builder.set_brate(brate).map_err(lame)?;
    builder
        .set_mode(if stereo {
            Mode::JointStereo
        } else {
            Mode::Mono
        })
        .map_err(lame)?;
    builder.set_quality(quality).map_err(lame)?;
    // The Info tag carries encoder delay and padding, so decoders trim to the exact length.
    builder.set_to_write_vbr_tag(tag).map_err(lame)?;
    if !reservoir {
        // Pieces are cut in input frames: LAME must not pick another output rate.
        let rate = std::num::NonZeroU32::new(audio.sample_rate);
        builder.set_output_sample_rate(rate).map_err(lame)?;
        // SAFETY: the pointer is the builder's live LAME handle, used before `build` and not
        // kept; the setting is a plain flag read by `lame_init_params`.
        let status =
            unsafe { mp3lame_encoder::ffi::lame_set_disable_reservoir(builder.as_ptr(), 1) };
        if status != 0 {
            return Err(Error::Encode(format!(
                "lame: disabling the bit reservoir failed ({status})"
            )));
        }
    }
    builder.build().map_err(lame)
}

/// Feeds frames `from..to` of `audio` to `enc`, then flushes it; the MP3 bytes go to `out`.
fn encode_range(
    enc: &mut Encoder,
    audio: &Audio,
    range: Range<usize>,
    out: &mut Vec<u8>,
    progress: &dyn Fn(f32),
) -> Result<()> {
    let encode_err = |e: mp3lame_encoder::EncodeError| Error::Encode(format!("lame: {e:?}"));
    let mut pos = range.start;
    while pos < range.end {
        let end = (pos + BLOCK).min(range.end);
        out.reserve(mp3lame_encoder::max_required_buffer_size(end - pos));
        if audio.channels.len() == 2 {
            let input = DualPcm {
                left: &audio.channels[0][pos..end],
                right: &audio.channels[1][pos..end],
            };
            enc.encode_to_vec(input, out).map_err(encode_err)?;
        } else {
            enc.encode_to_vec(MonoPcm(&audio.channels[0][pos..end]), out)
                .map_err(encode_err)?;
        }
        pos = end;
        progress((pos - range.start) as f32 / range.len().max(1) as f32 * 0.99);
    }
    out.reserve(7200);
    enc.flush_to_vec::<FlushGap>(out).map_err(encode_err)?;
    Ok(())
}

/// The finished LAME/Info tag frame of `enc` (empty when it wrote none).
fn lame_tag(enc: &Encoder) -> Vec<u8> {
    let mut tag = Vec::with_capacity(enc.lame_tag_size().max(1));
    match enc.lame_tag_encode_to_vec(&mut tag) {
        Some(len) => tag[..len.get()].to_vec(),
        None => Vec::new(),
    }
}

/// One encoder over the whole track.
fn encode_whole(
    audio: &Audio,
    brate: Bitrate,
    quality: Quality,
    progress: &dyn Fn(f32),
) -> Result<Vec<u8>> {
    let mut enc = encoder(audio, brate, quality, true, true)?;
    let n = audio.frames();
    let mut out = Vec::with_capacity(n / 4 + 8192);
    encode_range(&mut enc, audio, 0..n, &mut out, progress)?;
    // Overwrite the placeholder first frame with the finished tag.
    let tag = lame_tag(&enc);
    let start = enc.id3v2_tag_size();
    if start + tag.len() <= out.len() {
        out[start..start + tag.len()].copy_from_slice(&tag);
    }
    Ok(out)
}

/// What one piece's encoder produced.
struct Piece {
    bytes: Vec<u8>,
    /// Byte range of each frame of `bytes` (the first piece's frame 0 is its tag placeholder).
    frames: Vec<Range<usize>>,
    /// The first piece's finished tag frame.
    tag: Vec<u8>,
    /// Samples fed to the encoder.
    fed: usize,
}

/// The track cut at frame boundaries into `pieces` pieces, encoded on as many threads, joined.
fn encode_pieces(
    audio: &Audio,
    brate: Bitrate,
    quality: Quality,
    pieces: usize,
) -> Result<Vec<u8>> {
    let n = audio.frames();
    let total = n.div_ceil(FRAME);
    // Piece k keeps global frames bounds[k]..bounds[k + 1] (the last one: to the end).
    let bounds: Vec<usize> = (0..pieces).map(|k| k * total / pieces).collect();
    // Encoders are set up here, one after another: LAME's setup (re)writes global lookup tables
    // that running encoders read, so no piece encodes while another is being set up.
    let encoders = (0..pieces)
        .map(|k| encoder(audio, brate, quality, false, k == 0))
        .collect::<Result<Vec<Encoder>>>()?;
    let encode_piece = |k: usize, mut enc: Encoder| -> Result<Piece> {
        let first = if k == 0 { 0 } else { bounds[k] - PRIMING };
        let end = match bounds.get(k + 1) {
            Some(&b) => ((b + LOOKAHEAD) * FRAME).min(n),
            None => n,
        };
        let mut bytes = Vec::with_capacity((end - first * FRAME) / 4 + 8192);
        encode_range(&mut enc, audio, first * FRAME..end, &mut bytes, &|_| {})?;
        let frames = split_frames(&bytes)?;
        let tag = if k == 0 { lame_tag(&enc) } else { Vec::new() };
        Ok(Piece {
            bytes,
            frames,
            tag,
            fed: end - first * FRAME,
        })
    };
    let encoded: Vec<Result<Piece>> = std::thread::scope(|s| {
        let mut encoders = encoders.into_iter().enumerate();
        let (_, head) = encoders.next().expect("at least one piece");
        let others: Vec<_> = encoders
            .map(|(k, enc)| s.spawn(move || encode_piece(k, enc)))
            .collect();
        let mut all = vec![encode_piece(0, head)];
        for h in others {
            all.push(
                h.join()
                    .unwrap_or_else(|_| Err(Error::Encode("an MP3 piece panicked".into()))),
            );
        }
        all
    });
    let encoded = encoded.into_iter().collect::<Result<Vec<Piece>>>()?;

    // Join: the first piece's tag frame, then each piece's kept frames.
    let head = &encoded[0];
    let short = || Error::Encode("lame: a piece produced fewer frames than expected".into());
    let tag_frame = head.frames.first().ok_or_else(short)?.clone();
    let mut out = Vec::with_capacity(encoded.iter().map(|p| p.bytes.len()).sum());
    out.extend_from_slice(&head.bytes[tag_frame.clone()]);
    let mut music_frames = 0usize;
    for (k, piece) in encoded.iter().enumerate() {
        // Frame j of piece k's music is global frame (bounds[k] - PRIMING) + j, or j for k = 0.
        let skip = if k == 0 { 1 } else { PRIMING };
        let keep = match bounds.get(k + 1) {
            Some(&b) => b - bounds[k],
            None => piece.frames.len().checked_sub(skip).ok_or_else(short)?,
        };
        let kept = piece.frames.get(skip..skip + keep).ok_or_else(short)?;
        if let (Some(a), Some(b)) = (kept.first(), kept.last()) {
            out.extend_from_slice(&piece.bytes[a.start..b.end]);
        }
        music_frames += keep;
    }

    // The first piece's tag describes its own stream; rewrite it for the joined one.
    let mut tag = head.tag.clone();
    if tag.len() != tag_frame.len() {
        return Err(Error::Encode(
            "lame: the first piece wrote no Info tag to rewrite".into(),
        ));
    }
    {
        let head_music_frames = head.frames.len() as i64 - 1;
        let delta_frames = music_frames as i64 - head_music_frames;
        let delta_bytes = out.len() as i64 - head.bytes.len() as i64;
        let delta_samples = delta_frames * FRAME as i64 - (n as i64 - head.fed as i64);
        let music_crc = CRC16.checksum(&out[tag_frame.len()..]);
        patch_tag(
            &mut tag,
            delta_frames,
            delta_bytes,
            delta_samples,
            music_crc,
        )?;
        out[..tag.len()].copy_from_slice(&tag);
    }
    Ok(out)
}

/// Byte ranges of the MPEG-1 layer III frames that make up `bytes`, which must be nothing else.
fn split_frames(bytes: &[u8]) -> Result<Vec<Range<usize>>> {
    let mut frames = Vec::with_capacity(bytes.len() / 400 + 1);
    let mut pos = 0;
    while pos < bytes.len() {
        let len = bytes
            .get(pos..pos + 4)
            .and_then(frame_len)
            .filter(|&len| pos + len <= bytes.len())
            .ok_or_else(|| {
                Error::Encode(format!("lame: no MPEG-1 layer III frame at byte {pos}"))
            })?;
        frames.push(pos..pos + len);
        pos += len;
    }
    Ok(frames)
}

/// The length in bytes of the MPEG-1 layer III frame whose 4-byte header is `h`.
fn frame_len(h: &[u8]) -> Option<usize> {
    // Sync (11 bits), MPEG-1 (11), layer III (01).
    if h[0] != 0xFF || h[1] & 0xFE != 0xFA {
        return None;
    }
    const KBPS: [usize; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const RATES: [usize; 3] = [44_100, 48_000, 32_000];
    let kbps = *KBPS.get((h[2] >> 4) as usize).filter(|&&k| k > 0)?;
    let rate = *RATES.get(((h[2] >> 2) & 3) as usize)?;
    let padding = ((h[2] >> 1) & 1) as usize;
    Some(144_000 * kbps / rate + padding)
}

/// Rewrites a LAME Info tag frame for a stream with `delta_frames` more music frames,
/// `delta_bytes` more bytes and `delta_samples` more padding than the one it was written for,
/// whose music data has CRC `music_crc`; recomputes the tag's own CRC.
fn patch_tag(
    tag: &mut [u8],
    delta_frames: i64,
    delta_bytes: i64,
    delta_samples: i64,
    music_crc: u16,
) -> Result<()> {
    let bad = |what: &str| Error::Encode(format!("lame: unexpected Info tag ({what})"));
    // The Xing/Info header sits after the side information; the LAME extension 120 bytes later.
    let x = tag
        .windows(4)
        .position(|w| w == b"Info" || w == b"Xing")
        .ok_or_else(|| bad("no Info header"))?;
    if tag.len() < x + 156 || &tag[x + 120..x + 124] != b"LAME" {
        return Err(bad("no LAME extension"));
    }
    let add_u32 = |tag: &mut [u8], at: usize, delta: i64| -> Result<()> {
        let old = u32::from_be_bytes(tag[at..at + 4].try_into().expect("4 bytes"));
        let new = u32::try_from(old as i64 + delta).map_err(|_| bad("count out of range"))?;
        tag[at..at + 4].copy_from_slice(&new.to_be_bytes());
        Ok(())
    };
    add_u32(tag, x + 8, delta_frames)?;
    add_u32(tag, x + 12, delta_bytes)?;
    add_u32(tag, x + 148, delta_bytes)?;
    // Encoder delay and padding: 12 bits each.
    let packed = &mut tag[x + 141..x + 144];
    let delay = ((packed[0] as u32) << 4) | (packed[1] as u32 >> 4);
    let padding = (((packed[1] & 0x0F) as i64) << 8 | packed[2] as i64) + delta_samples;
    if !(0..4096).contains(&padding) {
        return Err(bad("padding out of range"));
    }
    let padding = padding as u32;
    packed[0] = (delay >> 4) as u8;
    packed[1] = ((delay << 4) as u8 & 0xF0) | (padding >> 8) as u8;
    packed[2] = padding as u8;
    tag[x + 152..x + 154].copy_from_slice(&music_crc.to_be_bytes());
    let crc = CRC16.checksum(&tag[..x + 154]);
    tag[x + 154..x + 156].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::decode::decode;

    /// Twenty seconds of something like music: chords, a bass line and noise-burst drums (the
    /// bursts make LAME switch to short blocks), different in each channel.
    fn music(seconds: usize) -> Audio {
        let rate = 44_100;
        let n = seconds * rate;
        let mut noise = 0x1234_5678u32;
        let mut channels = vec![vec![0f32; n]; 2];
        for i in 0..n {
            let t = i as f32 / rate as f32;
            let beat = (t * 2.0).fract();
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let burst = (noise as f32 / u32::MAX as f32 - 0.5) * (-beat * 30.0).exp();
            let chord = (t / 2.0) as usize % 3;
            for (c, ch) in channels.iter_mut().enumerate() {
                let root = [220.0, 246.9, 196.0][chord] * (1.0 + 0.003 * c as f32);
                let tone: f32 = [1.0, 1.26, 1.5]
                    .iter()
                    .map(|m| (std::f32::consts::TAU * root * m * t).sin())
                    .sum();
                let bass = (std::f32::consts::TAU * root / 4.0 * t).sin();
                ch[i] = 0.12 * tone + 0.2 * bass + 0.5 * burst;
            }
        }
        Audio {
            sample_rate: rate as u32,
            channels,
        }
    }

    /// Error energy of `decoded` against `original` in each 1152-sample window.
    fn window_errors(original: &Audio, decoded: &Audio) -> Vec<f64> {
        (0..original.frames() / FRAME)
            .map(|w| {
                let mut e = 0f64;
                for c in 0..2 {
                    for i in w * FRAME..(w + 1) * FRAME {
                        let d = (decoded.channels[c][i] - original.channels[c][i]) as f64;
                        e += d * d;
                    }
                }
                e
            })
            .collect()
    }

    /// LAME's own tag: the music CRC and the tag CRC are what this module computes, at the
    /// offsets it patches; a patch that changes nothing leaves the tag as LAME wrote it.
    #[test]
    fn the_tag_fields_are_where_the_patch_writes() {
        let audio = music(4);
        let out = encode_whole(&audio, Bitrate::Kbps192, Quality::Good, &|_| {}).unwrap();
        let frames = split_frames(&out).unwrap();
        let tag = &out[frames[0].clone()];
        let x = tag.windows(4).position(|w| w == b"Info").unwrap();
        let stored_music_crc = u16::from_be_bytes([tag[x + 152], tag[x + 153]]);
        assert_eq!(stored_music_crc, CRC16.checksum(&out[frames[0].end..]));
        let mut patched = tag.to_vec();
        patch_tag(&mut patched, 0, 0, 0, stored_music_crc).unwrap();
        assert_eq!(patched, tag, "recomputed tag CRC differs from LAME's");
        let stored_frames = u32::from_be_bytes(tag[x + 8..x + 12].try_into().unwrap());
        assert!((stored_frames as usize).abs_diff(frames.len()) <= 1);
    }

    /// Two and three pieces decode to the exact length, and the joins are as clean as the rest of
    /// the stream: the windows around a join have at most twice the coding error one encoder's
    /// stream has there (a click or gap would be orders of magnitude more).
    #[test]
    fn pieces_join_into_one_clean_stream() {
        let audio = music(20);
        let n = audio.frames();
        let dir = tempfile::tempdir().unwrap();
        let decode_with = |pieces: usize| {
            let path = dir.path().join(format!("p{pieces}.mp3"));
            write(&audio, &path, 192, Quality::Good, pieces, &|_| {}).unwrap();
            decode(&path).unwrap()
        };
        let single = decode_with(1);
        assert_eq!(single.frames(), n);
        let single_err = window_errors(&audio, &single);
        let worst_single = single_err.iter().cloned().fold(0.0, f64::max);
        let median_single = {
            let mut s = single_err.clone();
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        };
        for pieces in [2, 3] {
            let joined = decode_with(pieces);
            assert_eq!(joined.frames(), n, "{pieces} pieces: length");
            let err = window_errors(&audio, &joined);
            let total = n.div_ceil(FRAME);
            for k in 1..pieces {
                let join = k * total / pieces;
                // The decoder's output lags the frames by under two frames; look either side.
                let near = join.saturating_sub(3)..(join + 3).min(err.len());
                let worst = err[near.clone()].iter().cloned().fold(0.0, f64::max);
                let there = single_err[near].iter().cloned().fold(0.0, f64::max);
                eprintln!(
                    "{pieces} pieces, join {k}: worst window error {worst:.3e}, single stream \
                     there {there:.3e} (median {median_single:.3e}, worst {worst_single:.3e})"
                );
                assert!(
                    worst <= 2.0 * there.max(median_single),
                    "{pieces} pieces: join {k} error {worst:.3e} vs {there:.3e}"
                );
            }
            // Away from the joins the pieces code as well as one encoder (no reservoir costs
            // little at 192 kbit/s): the total error is within 2× of the single stream's.
            let ratio = err.iter().sum::<f64>() / single_err.iter().sum::<f64>();
            eprintln!("{pieces} pieces: total error {ratio:.2}× the single stream's");
            assert!(ratio < 2.0, "{pieces} pieces: error ratio {ratio:.2}");
        }
    }
}
