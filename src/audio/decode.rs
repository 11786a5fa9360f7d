//! Decoding and probing through symphonia: any container and codec symphonia reads (WAV, AIFF,
//! FLAC, MP3, Ogg Vorbis, AAC/M4A, CAF, MKV) into planar `f32` [`Audio`], plus a cheap
//! [`probe`] that reads headers and one packet so uploads can be refused before a job exists.
//!
//! Bad input never panics and never loops forever: every symphonia call runs under
//! `catch_unwind`, undecodable packets are counted and bounded, and the decoded length is checked
//! against the length the container declares so truncated files are reported as corrupt. Nothing
//! is allocated from a header before it is checked: [`prescan`] refuses container sizes that
//! reach past the file, and [`limits`] refuses absurd rates, channel counts and lengths.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use serde::Serialize;
use symphonia::core::audio::{AudioBufferRef, Signal};
use symphonia::core::codecs::{
    CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_FLAC, CODEC_TYPE_MP3, CODEC_TYPE_NULL,
};
use symphonia::core::conv::IntoSample;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader, Packet, Track};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::{MetadataOptions, StandardTagKey, Tag};
use symphonia::core::probe::Hint;

use super::error::{Error, Result};
use super::limits;
use super::prescan;
use super::Audio;

/// Most samples (all channels together) one decode may produce ([`limits::MAX_SAMPLES`]).
pub const MAX_SAMPLES: usize = limits::MAX_SAMPLES as usize;

/// Most frames per channel reserved up front from a declared length; past this the buffers grow as
/// audio actually decodes, so a header that lies about its length allocates nothing.
const MAX_PREALLOCATED_FRAMES: u64 = 1 << 22;

/// Undecodable packets tolerated in a row before the stream is declared corrupt; a few bad
/// packets in a long MP3 are normal, hundreds in a row mean garbage.
const MAX_CONSECUTIVE_ERRORS: usize = 64;

/// `POST /v1/metadata`: what a file's headers and first packet say, without decoding it all.
// What `probe` learns; named `MetadataReport` in the OpenAPI document.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = MetadataReport)]
pub struct ProbeInfo {
    /// Container, sniffed from the magic bytes: `wav`, `aiff`, `flac`, `mp3`, `ogg`, `mp4`,
    /// `adts`, `caf`, `mkv`, or `unknown`.
    pub container: String,
    /// Codec short name as symphonia names it (`pcm_s16le`, `mp3`, `flac`, `vorbis`, `aac` …).
    pub codec: String,
    /// Sample rate of the audio track in Hz.
    pub sample_rate: u32,
    /// Channel count of the audio track.
    pub channels: usize,
    /// Bits per sample for PCM-like codecs; null for lossy codecs.
    pub bits_per_sample: Option<u32>,
    /// Length in sample frames when the container declares it.
    pub frames: Option<u64>,
    /// Length in seconds when the container declares it.
    pub duration_secs: Option<f64>,
    /// Average bit rate over the whole file (size × 8 / duration), kbit/s.
    pub bit_rate_kbps: Option<f64>,
    /// File size in bytes.
    pub file_size: u64,
    /// Tags (title, artist, album, …) under lower-case standard names where symphonia knows the
    /// key, else under the container's own key.
    pub tags: BTreeMap<String, String>,
}

/// Decodes a whole file. Errors are [`Error::Unsupported`] (not audio we read) or
/// [`Error::Corrupt`] (damaged, truncated) for bad input, [`Error::Io`] if the file can't be read.
pub fn decode(path: &Path) -> Result<Audio> {
    decode_file(path, rayon::current_num_threads())
}

/// Opens an audio file; a failure names the file (`x.wav: No such file or directory`).
fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    })
}

/// [`decode`] reporting progress in `0.0..=1.0` (when the container declares its length) so the
/// CLI and jobs can show it on long files.
pub fn decode_with_progress(path: &Path, progress: &dyn Fn(f32)) -> Result<Audio> {
    let mut file = open_file(path)?;
    let found = prescan_file(&mut file)?;
    decode_source(Box::new(file), found, extension(path).as_deref(), progress)
}

/// [`decode`] of a file, in runs of packets on several threads where the codec allows it (see
/// [`in_runs`]); the same audio, to the bit, as one pass.
fn decode_file(path: &Path, runs: usize) -> Result<Audio> {
    let mut file = open_file(path)?;
    let found = prescan_file(&mut file)?;
    let ext = extension(path);
    if runs > 1 {
        if let Ok(Some(audio)) =
            guarded(|| in_runs(Box::new(file.try_clone()?), found, ext.as_deref(), runs))
        {
            return Ok(audio);
        }
        file.seek(std::io::SeekFrom::Start(0))?;
    }
    decode_source(Box::new(file), found, ext.as_deref(), &|_| {})
}

/// Decodes audio held in memory; `ext` (e.g. `"mp3"`) is only a hint, the bytes decide.
pub fn decode_bytes(bytes: Vec<u8>, ext: Option<&str>) -> Result<Audio> {
    decode_bytes_in(bytes, ext, rayon::current_num_threads())
}

fn decode_bytes_in(bytes: Vec<u8>, ext: Option<&str>, runs: usize) -> Result<Audio> {
    let found = prescan_bytes(&bytes)?;
    let bytes = bytes::Bytes::from(bytes);
    if runs > 1 {
        if let Ok(Some(audio)) =
            guarded(|| in_runs(Box::new(Cursor::new(bytes.clone())), found, ext, runs))
        {
            return Ok(audio);
        }
    }
    decode_source(Box::new(Cursor::new(bytes)), found, ext, &|_| {})
}

/// [`prescan::check`] of an open file, which is left at its start.
fn prescan_file(file: &mut File) -> Result<prescan::Found> {
    let len = file.metadata()?.len();
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut magic = [0u8; 12];
    let n = read_up_to(file, &mut magic)?;
    let container = sniff_container(&magic[..n]);
    let checked = guarded(|| prescan::check(file, len, container));
    file.seek(std::io::SeekFrom::Start(0))?;
    checked
}

/// [`prescan::check`] of bytes in memory.
fn prescan_bytes(bytes: &[u8]) -> Result<prescan::Found> {
    let container = sniff_container(&bytes[..bytes.len().min(12)]);
    guarded(|| prescan::check(&mut Cursor::new(bytes), bytes.len() as u64, container))
}

/// Reads headers, tags and the first decodable packet: cheap enough to run on every upload, and
/// enough to refuse non-audio with `422`. It cannot see truncation further in; [`decode`] does.
pub fn probe(path: &Path) -> Result<ProbeInfo> {
    let mut file = open_file(path)?;
    let file_size = file.metadata()?.len();
    let mut magic = [0u8; 12];
    let n = read_up_to(&mut file, &mut magic)?;
    let container = sniff_container(&magic[..n]).to_string();
    let found = prescan_file(&mut file)?;
    probe_source(Box::new(file), found, container, file_size, extension(path))
}

/// [`probe`] of a file held in memory (an upload small enough to be kept in the database).
pub fn probe_bytes(bytes: bytes::Bytes, ext: Option<&str>) -> Result<ProbeInfo> {
    let found = prescan_bytes(&bytes)?;
    let container = sniff_container(&bytes[..bytes.len().min(12)]).to_string();
    let file_size = bytes.len() as u64;
    let ext = ext.map(str::to_ascii_lowercase);
    probe_source(
        Box::new(Cursor::new(bytes)),
        found,
        container,
        file_size,
        ext,
    )
}

fn probe_source(
    source: Box<dyn MediaSource>,
    found: prescan::Found,
    container: String,
    file_size: u64,
    ext: Option<String>,
) -> Result<ProbeInfo> {
    guarded(move || {
        let mut opened = open(source, found, ext.as_deref())?;
        let mut info = ProbeInfo {
            container,
            codec: codec_name(&opened.track),
            sample_rate: opened.track.codec_params.sample_rate.unwrap_or(0),
            channels: opened.track.codec_params.channels.map_or(0, |c| c.count()),
            bits_per_sample: opened.track.codec_params.bits_per_sample,
            frames: opened.track.codec_params.n_frames,
            duration_secs: None,
            bit_rate_kbps: None,
            file_size,
            tags: std::mem::take(&mut opened.tags),
        };
        // One decoded packet proves the codec accepts the data and fills in what headers omit.
        let mut errors = 0;
        loop {
            let packet = match opened.format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(Error::Corrupt("no decodable audio packet".into()));
                }
                Err(e) => return Err(map_err(e)),
            };
            if packet.track_id() != opened.track.id {
                continue;
            }
            match opened.decoder.decode(&packet) {
                Ok(buf) => {
                    let spec = *buf.spec();
                    info.sample_rate = spec.rate;
                    info.channels = spec.channels.count();
                    limits::check_format(spec.rate, info.channels)?;
                    // Again with the channels the first packet has: a Matroska track with an
                    // unusual count declares none.
                    if let Some(frames) = opened.track.codec_params.n_frames {
                        limits::check_length(frames, spec.rate, info.channels, true)?;
                    }
                    let mut first = vec![Vec::new(); info.channels];
                    append_planar(&buf, &mut first);
                    for (c, ch) in first.iter().enumerate() {
                        limits::check_finite(ch, c, 0)?;
                    }
                    break;
                }
                Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => {
                    errors += 1;
                    if errors >= MAX_CONSECUTIVE_ERRORS {
                        return Err(Error::Corrupt("no decodable audio packet".into()));
                    }
                }
                Err(e) => return Err(map_err(e)),
            }
        }
        if info.sample_rate == 0 || info.channels == 0 {
            return Err(Error::Unsupported(
                "audio track has no sample rate or channels".into(),
            ));
        }
        if let Some(frames) = info.frames {
            let secs = frames as f64 / info.sample_rate as f64;
            info.duration_secs = Some(secs);
            if secs > 0.0 {
                info.bit_rate_kbps = Some(file_size as f64 * 8.0 / secs / 1000.0);
            }
        }
        Ok(info)
    })
}

/// Why a file no reader recognises is refused (RF64, Wave64, AU, a truncated Ogg header, text …).
const NOT_A_CONTAINER: &str = "not a recognised audio container: soundcheck reads RIFF WAV (not \
    RF64 or Wave64), AIFF/AIFC, CAF, FLAC, MP3, Ogg (Vorbis, FLAC), MP4/M4A (AAC, ALAC), \
    Matroska/WebM and ADTS AAC";

/// A source cut at `end` bytes: symphonia's reader sees the file end there.
struct Bounded {
    inner: Box<dyn MediaSource>,
    end: u64,
    pos: u64,
}

impl Bounded {
    fn new(inner: Box<dyn MediaSource>, end: u64) -> Bounded {
        Bounded { inner, end, pos: 0 }
    }
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Bounded {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let to = match to {
            std::io::SeekFrom::End(back) => std::io::SeekFrom::Start(
                u64::try_from(self.end as i128 + back as i128).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
                })?,
            ),
            other => other,
        };
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

impl MediaSource for Bounded {
    fn is_seekable(&self) -> bool {
        self.inner.is_seekable()
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.end)
    }
}

/// A format reader positioned on the audio track, with its decoder and the tags found so far.
struct Opened {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track: Track,
    tags: BTreeMap<String, String>,
}

/// Opens `source` with symphonia, held to what the prescan `found` (see [`prescan::Found`]).
fn open(source: Box<dyn MediaSource>, found: prescan::Found, ext: Option<&str>) -> Result<Opened> {
    let source: Box<dyn MediaSource> = match found.audio_end {
        Some(end) => Box::new(Bounded::new(source, end)),
        None => source,
    };
    let mss = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = ext {
        hint.with_extension(ext);
    }
    let format_opts = FormatOptions {
        // Honour encoder delay/padding (LAME tags, iTunSMPB) so durations round-trip exactly.
        enable_gapless: true,
        ..Default::default()
    };
    let mut probed = symphonia::default::get_probe()
        .format(&hint, mss, &format_opts, &MetadataOptions::default())
        .map_err(|e| match e {
            // No reader recognised the file (symphonia reads to the end looking for one, hence
            // its "end of stream"): say what it does read.
            SymError::IoError(_) | SymError::Unsupported(_) => {
                Error::Unsupported(NOT_A_CONTAINER.to_string())
            }
            SymError::DecodeError(what) if what.contains("channel") => {
                map_err(SymError::DecodeError(what))
            }
            other => map_err(other),
        })?;
    let mut tags = BTreeMap::new();
    if let Some(rev) = probed.metadata.get().as_ref().and_then(|m| m.current()) {
        collect_tags(rev.tags(), &mut tags);
    }
    let mut format = probed.format;
    if let Some(rev) = format.metadata().current() {
        collect_tags(rev.tags(), &mut tags);
    }
    let mut track = format
        .default_track()
        .filter(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .or_else(|| {
            format
                .tracks()
                .iter()
                .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        })
        .cloned()
        .ok_or_else(|| Error::Unsupported("no audio track".into()))?;
    track.codec_params.n_frames = match (declared_frames(&track.codec_params), found.frames) {
        (Some(reader), Some(header)) => Some(reader.min(header)),
        (reader, _) => reader,
    };
    check_declared(&track)?;
    let decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(what) => Error::Unsupported(format!("codec: {what}")),
            other => map_err(other),
        })?;
    Ok(Opened {
        format,
        decoder,
        track,
        tags,
    })
}

/// The declared length in frames at the sample rate. symphonia gives `n_frames` in the track's
/// time base, which is the sample period for most containers but not for Matroska (its
/// TimestampScale: milliseconds by default) or MP4 (the `mdhd` timescale); read as frames, a 3 s
/// Matroska file with a microsecond scale was "truncated", and a long one passed the caps.
fn declared_frames(params: &CodecParameters) -> Option<u64> {
    let n = params.n_frames?;
    match (params.time_base, params.sample_rate) {
        (Some(tb), Some(rate)) if tb.denom != 0 && !(tb.numer == 1 && tb.denom == rate) => {
            let (numer, denom) = (tb.numer as u128, tb.denom as u128);
            let frames = (n as u128 * numer * rate as u128 + denom / 2) / denom;
            Some(u64::try_from(frames).unwrap_or(u64::MAX))
        }
        _ => Some(n),
    }
}

/// Refuses what the headers declare before a decoder or buffer is made from it: a sample rate or
/// channel count outside [`limits`], or a length beyond the duration cap.
fn check_declared(track: &Track) -> Result<()> {
    let params = &track.codec_params;
    if let Some(rate) = params.sample_rate {
        let channels = params.channels.map_or(1, |c| c.count());
        limits::check_format(rate, channels)?;
        if let Some(frames) = params.n_frames {
            limits::check_length(frames, rate, channels, true)?;
        }
    }
    Ok(())
}

fn decode_source(
    source: Box<dyn MediaSource>,
    found: prescan::Found,
    ext: Option<&str>,
    progress: &dyn Fn(f32),
) -> Result<Audio> {
    guarded(|| decode_inner(source, found, ext, progress))
}

fn decode_inner(
    source: Box<dyn MediaSource>,
    found: prescan::Found,
    ext: Option<&str>,
    progress: &dyn Fn(f32),
) -> Result<Audio> {
    let mut opened = open(source, found, ext)?;
    let declared = opened.track.codec_params.n_frames;
    let mut rate = 0u32;
    let mut channels: Vec<Vec<f32>> = Vec::new();
    if let (Some(n), Some(c)) = (declared, opened.track.codec_params.channels) {
        let reserve = n.min(MAX_PREALLOCATED_FRAMES) as usize;
        channels = (0..c.count())
            .map(|_| Vec::with_capacity(reserve))
            .collect();
    }
    let mut consecutive_errors = 0usize;
    let mut decoded_any = false;
    let mut last_report = 0.0f32;
    loop {
        let packet = match opened.format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            // A chained stream (e.g. concatenated Ogg) changing parameters: keep what we have.
            Err(SymError::ResetRequired) => break,
            Err(SymError::IoError(e)) => return Err(Error::Corrupt(format!("read error: {e}"))),
            Err(e) => {
                if decoded_any {
                    // Damage after good audio: stop here; the length check below decides.
                    break;
                }
                return Err(map_err(e));
            }
        };
        if packet.track_id() != opened.track.id {
            continue;
        }
        let buf = match opened.decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => {
                consecutive_errors += 1;
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    return Err(Error::Corrupt(format!(
                        "{MAX_CONSECUTIVE_ERRORS} undecodable packets in a row"
                    )));
                }
                continue;
            }
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(map_err(e)),
        };
        consecutive_errors = 0;
        let spec = *buf.spec();
        let n_ch = spec.channels.count();
        if !decoded_any {
            if spec.rate == 0 || n_ch == 0 {
                return Err(Error::Unsupported(
                    "audio has no sample rate or channels".into(),
                ));
            }
            limits::check_format(spec.rate, n_ch)?;
            if let Some(frames) = declared {
                limits::check_length(frames, spec.rate, n_ch, true)?;
            }
            rate = spec.rate;
            if channels.len() != n_ch {
                channels = vec![Vec::new(); n_ch];
            }
            decoded_any = true;
        } else if spec.rate != rate || n_ch != channels.len() {
            return Err(Error::Corrupt(
                "sample rate or channel count changes mid-stream".into(),
            ));
        }
        let before = channels[0].len();
        // Checked before the packet is appended, so the buffers never grow past the caps (a
        // vector that doubles on the packet that crosses them would hold twice the cap).
        limits::check_length((before + buf.frames()) as u64, rate, n_ch, false)?;
        append_planar(&buf, &mut channels);
        if is_float(&buf) {
            for (c, ch) in channels.iter().enumerate() {
                limits::check_finite(&ch[before..], c, before)?;
            }
        }
        if let Some(n) = declared.filter(|&n| n > 0) {
            let p = (channels[0].len() as f64 / n as f64).min(1.0) as f32;
            if p - last_report >= 0.01 {
                last_report = p;
                progress(p);
            }
        }
    }
    if !decoded_any || channels.first().is_none_or(|c| c.is_empty()) {
        return Err(Error::Corrupt("no decodable audio".into()));
    }
    let frames = channels[0].len() as u64;
    if let Some(n) = declared {
        if frames + truncation_slack(n) < n {
            return Err(Error::Corrupt(format!(
                "truncated: decoded {frames} of {n} declared frames"
            )));
        }
    }
    progress(1.0);
    Ok(Audio {
        sample_rate: rate,
        channels,
    })
}

/// A run of packets decoded on one thread is at least this many frames long (about 6 s at
/// 44.1 kHz): shorter files are not worth a thread.
const MIN_FRAMES_PER_RUN: u64 = 1 << 18;

/// Most samples (all channels) a file may declare to be decoded in runs: the runs hold the whole
/// compressed stream in memory beside the decoded audio, which one pass does not (about 25 minutes
/// of 44.1 kHz stereo).
const MAX_SAMPLES_IN_RUNS: u64 = 1 << 27;

/// Fewest frames a packet holds on average for a stream to be decoded in runs (FLAC blocks are
/// usually 4096, MP3 frames 576 or 1152).
const MIN_PACKET_FRAMES: u64 = 128;

/// How a run of packets is started part-way through a stream, for the codecs decoded in runs.
#[derive(Clone, Copy, PartialEq)]
enum Priming {
    /// Every packet stands alone (FLAC frames).
    None,
    /// MP3: decode from far enough back for the bit reservoir ([`mp3_run_start`]).
    Mp3,
}

/// PCM is left to one pass: its decoding is a copy, and runs (which hold the packets first)
/// measured slower.
fn priming(track: &Track) -> Option<Priming> {
    match track.codec_params.codec {
        CODEC_TYPE_FLAC => Some(Priming::None),
        CODEC_TYPE_MP3 => Some(Priming::Mp3),
        _ => None,
    }
}

/// Furthest an MP3 run may start before its first packet; a stream that needs more goes to one
/// pass. A bound for safety: valid layer III needs at most 259 (MPEG-2 at 8 kbit/s, 24 kHz, stereo
/// with CRC: one byte of main data a frame, data starting up to 255 bytes back, plus 4).
const MAX_MP3_PRIMING: usize = 400;

/// An MP3 (layer III) frame's main data: how many bytes of it the frame carries, and how many
/// bytes before them, in the frames before it, its data begins (`main_data_begin`, up to 511 in
/// MPEG-1 and 255 in MPEG-2/2.5). `None` if `frame` is not a layer III frame with its side info.
fn mp3_main_data(frame: &[u8]) -> Option<(usize, usize)> {
    let h = u32::from_be_bytes(frame.get(..4)?.try_into().ok()?);
    let version = (h >> 19) & 3; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    if h >> 21 != 0x7ff || version == 1 || (h >> 17) & 3 != 1 {
        return None;
    }
    let crc = if (h >> 16) & 1 == 0 { 2 } else { 0 };
    let mono = (h >> 6) & 3 == 3;
    let side = match (version == 3, mono) {
        (true, true) => 17,
        (true, false) => 32,
        (false, true) => 9,
        (false, false) => 17,
    };
    let at = 4 + crc;
    let info = frame.get(at..at + side)?;
    let begin = if version == 3 {
        (info[0] as usize) << 1 | (info[1] as usize) >> 7
    } else {
        info[0] as usize
    };
    Some((frame.len() - at - side, begin))
}

/// The packet an MP3 run starting at packet `k` decodes from (dropping the output before `k`), so
/// that its decoder is, at `k`, where one decoder running from the start would be. A frame's output
/// depends on its own main data and, through the overlap of the IMDCT and the synthesis filter
/// bank, on the frame before it (MPEG-1, two granules a frame) or the two before it (MPEG-2, one
/// granule): frames k-2, k-1 and k must each find all their data, which may start up to 511 bytes
/// back in the frames before them. The walk back adds up the main data the frames carry until it
/// covers each of them, then takes two frames more. `None` when a frame cannot be read or the walk
/// passes [`MAX_MP3_PRIMING`] packets.
fn mp3_run_start(packets: &[Packet], k: usize) -> Option<usize> {
    let mut start = k;
    for m in k.saturating_sub(2)..=k {
        let (_, begin) = mp3_main_data(&packets[m].data)?;
        let (mut have, mut j) = (0, m);
        // At the stream's start one pass has nothing earlier either.
        while have < begin && j > 0 {
            j -= 1;
            if k - j > MAX_MP3_PRIMING {
                return None;
            }
            have += mp3_main_data(&packets[j].data)?.0;
        }
        start = start.min(j);
    }
    Some(start.saturating_sub(2))
}

/// Decodes a well-formed stream in `runs` runs of packets on rayon's threads: the demuxer reads
/// every packet first (cheap), then each run decodes its share with a decoder of its own, primed
/// with the packets before it ([`priming`]). `None` — the caller then decodes in one pass, which
/// owns every rule for damaged input — for a codec not known to allow it, a file without a
/// declared length or too short or too long for it, and anything irregular: a packet that does not
/// decode, a demuxer error, a change of format, samples out of range, a length past the caps or
/// short of the declared one.
fn in_runs(
    source: Box<dyn MediaSource>,
    found: prescan::Found,
    ext: Option<&str>,
    runs: usize,
) -> Result<Option<Audio>> {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let mut opened = open(source, found, ext)?;
    let params = opened.track.codec_params.clone();
    let (Some(priming), Some(declared), Some(rate), Some(layout)) = (
        priming(&opened.track),
        params.n_frames,
        params.sample_rate,
        params.channels,
    ) else {
        return Ok(None);
    };
    let n_ch = layout.count();
    let runs = (runs as u64).min(declared / MIN_FRAMES_PER_RUN) as usize;
    if runs < 2 || declared.saturating_mul(n_ch as u64) > MAX_SAMPLES_IN_RUNS {
        return Ok(None);
    }
    // Packets are held until decoded: a stream longer than it declares (by the truncation rule's
    // slack) goes to one pass, which streams, before it can fill memory with packets.
    let most = declared + truncation_slack(declared) + MIN_FRAMES_PER_RUN;
    // So are streams of very short packets (a FLAC of one-sample frames holds ~50 bytes per
    // sample as packets): fewer than MIN_PACKET_FRAMES frames a packet on average.
    let most_packets = declared / MIN_PACKET_FRAMES + 1024;
    let mut packets = Vec::new();
    let mut demuxed = 0u64;
    loop {
        match opened.format.next_packet() {
            Ok(p) if p.track_id() == opened.track.id => {
                demuxed += p.dur().max(1);
                if demuxed > most || packets.len() as u64 >= most_packets {
                    return Ok(None);
                }
                packets.push(p)
            }
            Ok(_) => {}
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(_) => return Ok(None),
        }
    }
    // Short of its declared length: one pass will call it truncated; no need to decode it twice.
    if demuxed + truncation_slack(declared) < declared {
        return Ok(None);
    }
    // The caps, shared by the runs so that together they never decode more than one pass would
    // accept: the duration cap, and MAX_SAMPLES.
    let cap = (limits::max_duration_secs().saturating_mul(rate as u64))
        .min((MAX_SAMPLES / n_ch.max(1)) as u64);
    let decoded = AtomicU64::new(0);
    // Set by the first run that gives up, so the others stop too.
    let failed = AtomicBool::new(false);
    let bounds: Vec<usize> = (0..=runs).map(|i| packets.len() * i / runs).collect();
    let run = |i: usize| -> Option<Vec<Vec<f32>>> {
        let mut decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .ok()?;
        let first = match priming {
            _ if i == 0 => 0,
            Priming::None => bounds[i],
            Priming::Mp3 => mp3_run_start(&packets, bounds[i])?,
        };
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); n_ch];
        for (j, packet) in packets[first..bounds[i + 1]].iter().enumerate() {
            if failed.load(Ordering::Relaxed) {
                return None;
            }
            let keep = first + j >= bounds[i];
            match decoder.decode(packet) {
                Ok(_) if !keep => {}
                // A fresh decoder may lack what the frames before the priming held.
                Err(_) if !keep => {}
                Ok(buf) => {
                    let spec = buf.spec();
                    if spec.rate != rate || spec.channels.count() != n_ch {
                        return None;
                    }
                    let before = out[0].len();
                    append_planar(&buf, &mut out);
                    let n = (out[0].len() - before) as u64;
                    if decoded.fetch_add(n, Ordering::Relaxed) + n > cap
                        || is_float(&buf)
                            && out
                                .iter()
                                .enumerate()
                                .any(|(c, ch)| limits::check_finite(&ch[before..], c, 0).is_err())
                    {
                        return None;
                    }
                }
                // Giving up on any error in a kept packet is what keeps a run's bit reservoir the
                // same as one pass's: one pass clears its reservoir on an error and goes on, which
                // a run would not reproduce.
                Err(_) => return None,
            }
        }
        Some(out)
    };
    let parts: Vec<Option<Vec<Vec<f32>>>> = (0..runs)
        .into_par_iter()
        .map(|i| {
            let part = run(i);
            if part.is_none() {
                failed.store(true, Ordering::Relaxed);
            }
            part
        })
        .collect();
    drop(packets);
    let Some(parts) = parts.into_iter().collect::<Option<Vec<_>>>() else {
        return Ok(None);
    };
    // Sized from what decoded, not from the header.
    let total = parts.iter().map(|p| p[0].len()).sum();
    let mut channels: Vec<Vec<f32>> = (0..n_ch).map(|_| Vec::with_capacity(total)).collect();
    for part in parts {
        for (dst, src) in channels.iter_mut().zip(part) {
            dst.extend_from_slice(&src);
        }
    }
    let frames = channels[0].len() as u64;
    // The one-pass rule for truncation.
    if frames == 0 || frames + truncation_slack(declared) < declared {
        return Ok(None);
    }
    Ok(Some(Audio {
        sample_rate: rate,
        channels,
    }))
}

/// How many frames short of its declared length a stream may decode and not be called truncated:
/// one MP3/AAC frame and more, for encoders that declare lengths loosely.
fn truncation_slack(declared: u64) -> u64 {
    2048u64.max(declared / 1000)
}

/// Whether a decoded buffer holds floating-point samples, the only kind that can be NaN or
/// infinite (integer samples convert to finite `f32`s, so they are not scanned).
fn is_float(buf: &AudioBufferRef<'_>) -> bool {
    matches!(buf, AudioBufferRef::F32(_) | AudioBufferRef::F64(_))
}

/// Appends one decoded buffer, whatever its sample type, to the planar `f32` output.
fn append_planar(buf: &AudioBufferRef<'_>, out: &mut [Vec<f32>]) {
    macro_rules! copy {
        ($b:expr) => {
            for (c, dst) in out.iter_mut().enumerate() {
                dst.extend(
                    $b.chan(c)
                        .iter()
                        .map(|&s| IntoSample::<f32>::into_sample(s)),
                );
            }
        };
    }
    match buf {
        AudioBufferRef::U8(b) => copy!(b),
        AudioBufferRef::U16(b) => copy!(b),
        AudioBufferRef::U24(b) => copy!(b),
        AudioBufferRef::U32(b) => copy!(b),
        AudioBufferRef::S8(b) => copy!(b),
        AudioBufferRef::S16(b) => copy!(b),
        AudioBufferRef::S24(b) => copy!(b),
        AudioBufferRef::S32(b) => copy!(b),
        AudioBufferRef::F32(b) => copy!(b),
        AudioBufferRef::F64(b) => copy!(b),
    }
}

/// Runs symphonia code so that a panic inside it becomes [`Error::Corrupt`] instead of taking the
/// worker down: malformed input must never crash the server.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let outer = GUARDED.with(|g| g.replace(true));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    out.unwrap_or_else(|_| {
        Err(Error::Corrupt(
            "decoder failed on malformed input".to_string(),
        ))
    })
}

thread_local! {
    /// Set while [`guarded`] runs symphonia on this thread: a panic there is the input's fault,
    /// answered as corrupt audio, so the panic hook logs one line instead of a backtrace.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs the process's panic hook: a panic inside [`guarded`] (the decoder on a malformed
/// file) is one warning line in the log, with where it happened; any other panic goes to the
/// hook that was there before (Rust's: the message, and a backtrace with `RUST_BACKTRACE`).
pub fn install_panic_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if !GUARDED.with(std::cell::Cell::get) {
            return previous(info);
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::warn!(%at, "the audio decoder panicked on malformed input: {message}");
    }));
}

fn map_err(e: SymError) -> Error {
    match e {
        SymError::Unsupported(what) => Error::Unsupported(what.to_string()),
        // symphonia's readers refuse channel counts they cannot map (e.g. WAV past 26 without a
        // channel mask): outside what soundcheck supports, not damage.
        SymError::DecodeError(what) if what.contains("channel") => Error::Unsupported(format!(
            "channels: {what} (at most {} are supported)",
            limits::MAX_CHANNELS
        )),
        SymError::DecodeError(what) => Error::Corrupt(what.to_string()),
        SymError::LimitError(what) => Error::Unsupported(format!("limit exceeded: {what}")),
        SymError::IoError(e) => Error::Corrupt(format!("read error: {e}")),
        SymError::SeekError(_) => Error::Corrupt("seek failed".into()),
        SymError::ResetRequired => Error::Unsupported("stream changes parameters".into()),
    }
}

fn codec_name(track: &Track) -> String {
    symphonia::default::get_codecs()
        .get_codec(track.codec_params.codec)
        .map_or_else(|| "unknown".to_string(), |d| d.short_name.to_string())
}

fn collect_tags(tags: &[Tag], out: &mut BTreeMap<String, String>) {
    for tag in tags {
        let key = match tag.std_key {
            Some(k) => std_key_name(k),
            None => tag.key.to_ascii_lowercase(),
        };
        let value = tag.value.to_string();
        if !value.trim().is_empty() && !key.is_empty() {
            out.entry(key).or_insert(value);
        }
    }
}

/// Lower-case snake names for the standard tag keys clients ask for; others use symphonia's
/// debug name, lower-cased.
fn std_key_name(k: StandardTagKey) -> String {
    let name = match k {
        StandardTagKey::TrackTitle => "title",
        StandardTagKey::Artist => "artist",
        StandardTagKey::Album => "album",
        StandardTagKey::AlbumArtist => "album_artist",
        StandardTagKey::Date => "date",
        StandardTagKey::ReleaseDate => "release_date",
        StandardTagKey::Genre => "genre",
        StandardTagKey::TrackNumber => "track_number",
        StandardTagKey::DiscNumber => "disc_number",
        StandardTagKey::Composer => "composer",
        StandardTagKey::Comment => "comment",
        StandardTagKey::Bpm => "bpm",
        StandardTagKey::Copyright => "copyright",
        StandardTagKey::Encoder => "encoder",
        StandardTagKey::EncodedBy => "encoded_by",
        StandardTagKey::Label => "label",
        StandardTagKey::Lyrics => "lyrics",
        StandardTagKey::IdentIsrc => "isrc",
        other => return format!("{other:?}").to_ascii_lowercase(),
    };
    name.to_string()
}

/// Names the container from its first bytes; symphonia does not report which reader it chose.
pub fn sniff_container(magic: &[u8]) -> &'static str {
    let at = |i: usize, s: &[u8]| magic.len() >= i + s.len() && &magic[i..i + s.len()] == s;
    if (at(0, b"RIFF") || at(0, b"RF64")) && at(8, b"WAVE") {
        "wav"
    } else if at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        "aiff"
    } else if at(0, b"fLaC") {
        "flac"
    } else if at(0, b"OggS") {
        "ogg"
    } else if at(4, b"ftyp") {
        "mp4"
    } else if at(0, b"caff") {
        "caf"
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        "mkv"
    } else if at(0, b"ID3") {
        "mp3"
    } else if magic.len() >= 2 && magic[0] == 0xFF && magic[1] & 0xF6 == 0xF0 {
        "adts"
    } else if magic.len() >= 2 && magic[0] == 0xFF && magic[1] & 0xE0 == 0xE0 {
        "mp3"
    } else {
        "unknown"
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::encode::{encode, Format};
    use std::time::{Duration, Instant};

    /// A panic inside `guarded` is corrupt audio, and the mark the panic hook reads is cleared
    /// after it (nested or not), so a later panic elsewhere on the thread is reported in full.
    #[test]
    fn a_guarded_panic_is_corrupt_audio_and_the_mark_is_cleared() {
        let quiet = |f: fn() -> Result<()>| {
            let previous = panic::take_hook();
            panic::set_hook(Box::new(|_| {}));
            let out = f();
            panic::set_hook(previous);
            out
        };
        let e = quiet(|| guarded(|| panic!("inside symphonia"))).unwrap_err();
        assert!(matches!(e, Error::Corrupt(_)), "{e}");
        assert!(!GUARDED.with(std::cell::Cell::get));
        let nested = quiet(|| {
            guarded(|| {
                let inner = guarded(|| -> Result<()> { panic!("inner") });
                assert!(inner.is_err());
                assert!(
                    GUARDED.with(std::cell::Cell::get),
                    "still inside the outer one"
                );
                Ok(())
            })
        });
        assert!(nested.is_ok());
        assert!(!GUARDED.with(std::cell::Cell::get));
    }

    fn tone(rate: u32, channels: usize, frames: usize) -> Audio {
        Audio {
            sample_rate: rate,
            channels: (0..channels)
                .map(|c| {
                    (0..frames)
                        .map(|i| {
                            0.5 * (2.0 * std::f32::consts::PI * (220.0 * (c + 1) as f32) * i as f32
                                / rate as f32)
                                .sin()
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// WAV in every PCM width hound writes, with odd rates and channel counts.
    fn wav_bytes(bits: u16, float: bool, rate: u32, channels: u16, frames: usize) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let mut cur = Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
            for i in 0..frames {
                for c in 0..channels {
                    let v = 0.5 * ((i as f32 * 0.01 * (c + 1) as f32).sin());
                    if float {
                        w.write_sample(v).unwrap();
                    } else if bits == 8 {
                        w.write_sample((v * 127.0) as i8).unwrap();
                    } else {
                        w.write_sample((v * ((1i64 << (bits - 1)) - 1) as f32) as i32)
                            .unwrap();
                    }
                }
            }
            w.finalize().unwrap();
        }
        cur.into_inner()
    }

    #[test]
    fn wav_widths_rates_and_channels_decode() {
        for &(bits, float) in &[
            (8, false),
            (16, false),
            (24, false),
            (32, false),
            (32, true),
        ] {
            for &(rate, ch) in &[(8_000u32, 1u16), (44_100, 2), (96_000, 6)] {
                let bytes = wav_bytes(bits, float, rate, ch, 1001);
                let a = decode_bytes(bytes, Some("wav")).unwrap();
                assert_eq!(a.sample_rate, rate);
                assert_eq!(a.channels.len(), ch as usize);
                assert_eq!(a.frames(), 1001);
                // Sample 100 of channel 0 is 0.5·sin(1.0) in every width.
                let want = 0.5 * 1.0f32.sin();
                let tol = if bits == 8 { 0.02 } else { 1e-3 };
                assert!((a.channels[0][100] - want).abs() < tol, "{bits} {float}");
            }
        }
    }

    fn encoded(format: Format) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("x.{}", format.extension()));
        encode(&tone(44_100, 2, 44_100), format, &path).unwrap();
        std::fs::read(path).unwrap()
    }

    /// 20 s of stereo with something in every band: tones with a noise floor, changing every
    /// quarter second, so an MP3 encoder uses its bit reservoir and every frame differs.
    fn music(rate: u32, secs: usize) -> Audio {
        let mut x = 0x853c_49e6_748f_ea9b_u64;
        let mut noise = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let frames = rate as usize * secs;
        let channels = (0..2)
            .map(|c| {
                (0..frames)
                    .map(|i| {
                        let step = (i / (rate as usize / 4)) as f32;
                        let f = 110.0 * (1.0 + (step * 0.37 + c as f32).sin().abs() * 7.0);
                        let t = i as f32 / rate as f32;
                        0.4 * (2.0 * std::f32::consts::PI * f * t).sin() + 0.1 * noise()
                    })
                    .collect()
            })
            .collect();
        Audio {
            sample_rate: rate,
            channels,
        }
    }

    #[test]
    fn runs_on_threads_decode_what_one_pass_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let audio = music(44_100, 20);
        // At 32 kbit/s the encoder resamples to 16 kHz: 20 s would be one run.
        let long = music(44_100, 45);
        for format in [
            Format::Flac16,
            Format::Flac24,
            Format::Mp3 { kbps: 320 },
            Format::Mp3 { kbps: 128 },
            Format::Mp3 { kbps: 32 },
        ] {
            let path = dir.path().join(format!("x.{}", format.extension()));
            let audio = if format == (Format::Mp3 { kbps: 32 }) {
                &long
            } else {
                &audio
            };
            encode(audio, format, &path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let ext = Some(format.extension());
            // The runs really run (nothing irregular sent the file to one pass)...
            let runs = in_runs(
                Box::new(Cursor::new(bytes.clone())),
                Default::default(),
                ext,
                4,
            )
            .unwrap()
            .unwrap_or_else(|| panic!("{format:?}: not decoded in runs"));
            // ... and give what one pass gives, to the bit, through every entry point.
            let one = decode_bytes_in(bytes.clone(), ext, 1).unwrap();
            assert!(one.frames() > 300_000);
            assert!(
                runs.channels == one.channels,
                "{format:?}: runs differ from one pass"
            );
            assert!(decode_bytes_in(bytes.clone(), ext, 3).unwrap().channels == one.channels);
            assert!(decode_file(&path, 2).unwrap().channels == one.channels);
            assert!(decode(&path).unwrap().channels == one.channels);
        }
        // PCM is decoded in one pass.
        let path = dir.path().join("x.wav");
        encode(&audio, Format::Wav16, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(in_runs(
            Box::new(Cursor::new(bytes)),
            Default::default(),
            Some("wav"),
            4
        )
        .unwrap()
        .is_none());
    }

    #[test]
    fn mp3_runs_reach_back_as_far_as_the_bit_reservoir() {
        // Small frames whose data starts hundreds of bytes back (scripts/audio/
        // make_reservoir_mp3.py): 8 frames of priming were too few for most run starts.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio");
        for name in ["reservoir_48k.mp3", "reservoir_24k.mp3"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let one = decode_bytes_in(bytes.clone(), Some("mp3"), 1).unwrap();
            // Long enough that four runs are four (a run is at least MIN_FRAMES_PER_RUN).
            assert!(one.frames() as u64 >= 4 * MIN_FRAMES_PER_RUN, "{name}");
            for runs in [2, 3, 4] {
                let many = in_runs(
                    Box::new(Cursor::new(bytes.clone())),
                    Default::default(),
                    Some("mp3"),
                    runs,
                )
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: not decoded in {runs} runs"));
                assert!(
                    many.channels == one.channels,
                    "{name}: {runs} runs differ from one pass"
                );
            }
        }
    }

    #[test]
    fn damaged_streams_leave_the_runs_for_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let audio = music(44_100, 20);
        for format in [Format::Flac16, Format::Mp3 { kbps: 128 }] {
            let path = dir.path().join(format!("x.{}", format.extension()));
            encode(&audio, format, &path).unwrap();
            let good = std::fs::read(&path).unwrap();
            let ext = Some(format.extension());
            let n = good.len();
            let mut garbage = good.clone();
            garbage[n / 2..n / 2 + 4000]
                .iter_mut()
                .for_each(|b| *b = 0xff);
            let mut zeros = good.clone();
            zeros[n / 3..n / 3 + 20_000].iter_mut().for_each(|b| *b = 0);
            for (what, bytes) in [
                ("truncated", good[..n * 2 / 3].to_vec()),
                ("garbage", garbage),
                ("zeros", zeros),
            ] {
                let one = decode_bytes_in(bytes.clone(), ext, 1);
                let runs = decode_bytes_in(bytes, ext, 4);
                match (&one, &runs) {
                    (Ok(a), Ok(b)) => assert!(a.channels == b.channels, "{format:?} {what}"),
                    (Err(a), Err(b)) => {
                        assert_eq!(a.to_string(), b.to_string(), "{format:?} {what}")
                    }
                    _ => panic!("{format:?} {what}: one pass {one:?} vs runs {runs:?}"),
                }
            }
        }
    }

    #[test]
    fn probe_reads_headers_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.flac");
        encode(&tone(48_000, 2, 48_000), Format::Flac16, &path).unwrap();
        let p = probe(&path).unwrap();
        assert_eq!(p.container, "flac");
        assert_eq!(p.codec, "flac");
        assert_eq!((p.sample_rate, p.channels), (48_000, 2));
        assert_eq!(p.frames, Some(48_000));
        assert!((p.duration_secs.unwrap() - 1.0).abs() < 1e-9);
        let text = dir.path().join("notes.wav");
        std::fs::write(&text, b"this is not audio, just text pretending").unwrap();
        assert!(matches!(probe(&text), Err(Error::Unsupported(_))));
    }

    /// An AIFF of 16-bit stereo `frames` (a ramp) at 44.1 kHz, with `after` appended as a chunk
    /// behind `SSND` when given (as taggers write `ID3 `).
    fn aiff(frames: u32, after: Option<&[u8]>) -> Vec<u8> {
        let mut comm = Vec::new();
        comm.extend_from_slice(&2u16.to_be_bytes());
        comm.extend_from_slice(&frames.to_be_bytes());
        comm.extend_from_slice(&16u16.to_be_bytes());
        // 44100 as an 80-bit extended float.
        comm.extend_from_slice(&[0x40, 0x0E, 0xAC, 0x44, 0, 0, 0, 0, 0, 0]);
        let mut ssnd = vec![0u8; 8]; // offset and block size: 0
        for i in 0..frames {
            let v = (i as i16).wrapping_mul(7);
            ssnd.extend_from_slice(&v.to_be_bytes());
            ssnd.extend_from_slice(&(-v).to_be_bytes());
        }
        let mut body = b"AIFF".to_vec();
        for (id, data) in [(b"COMM", &comm[..]), (b"SSND", &ssnd[..])]
            .into_iter()
            .chain(after.map(|a| (b"ID3 ", a)))
        {
            body.extend_from_slice(id);
            body.extend_from_slice(&(data.len() as u32).to_be_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut file = b"FORM".to_vec();
        file.extend_from_slice(&(body.len() as u32).to_be_bytes());
        file.extend_from_slice(&body);
        file
    }

    /// symphonia takes the `SSND` chunk's 8-byte header for audio: it announced 2 frames too
    /// many, and read 8 bytes of the next chunk as two frames of noise (`ID3 ` as samples: a
    /// peak at -4.9 dBFS on a quiet file). Decoded and probed, the file has what `COMM` says.
    #[test]
    fn aiff_holds_the_frames_its_header_declares_whatever_follows_the_sound() {
        let tag = [0x7Fu8; 16];
        for after in [None, Some(&tag[..])] {
            let bytes = aiff(1000, after);
            let audio = decode_bytes(bytes.clone(), Some("aiff")).unwrap();
            assert_eq!(audio.frames(), 1000, "{after:?}");
            let last = audio.channels[0][999];
            assert!(
                (last - (999.0 * 7.0 / 32768.0)).abs() < 1e-6,
                "{after:?}: {last}"
            );
            let probed = probe_bytes(bytes.into(), Some("aiff")).unwrap();
            assert_eq!(probed.frames, Some(1000), "{after:?}");
        }
    }

    #[test]
    fn empty_text_and_random_bytes_are_unsupported() {
        assert!(matches!(
            decode_bytes(vec![], None),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            decode_bytes(b"hello world, definitely not audio".to_vec(), Some("mp3")),
            Err(Error::Unsupported(_)) | Err(Error::Corrupt(_))
        ));
        // Deterministic pseudo-random garbage of many sizes, with and without extension hints.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for len in [1usize, 7, 12, 100, 4096, 100_000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for ext in [
                None,
                Some("wav"),
                Some("mp3"),
                Some("flac"),
                Some("ogg"),
                Some("m4a"),
            ] {
                let t = Instant::now();
                let r = decode_bytes(bytes.clone(), ext);
                assert!(r.is_err(), "garbage {len} {ext:?} decoded");
                assert!(r.unwrap_err().is_client_error());
                assert!(t.elapsed() < Duration::from_secs(5));
            }
        }
    }

    #[test]
    fn truncated_and_damaged_files_give_typed_errors_without_panicking() {
        let formats = [
            ("wav", wav_bytes(16, false, 44_100, 2, 44_100)),
            ("flac", encoded(Format::Flac16)),
            ("mp3", encoded(Format::Mp3 { kbps: 128 })),
        ];
        for (ext, full) in &formats {
            assert!(
                decode_bytes(full.clone(), Some(ext)).is_ok(),
                "{ext} intact"
            );
            // Cut at many points: headers, first frames, the middle, near the end.
            let len = full.len();
            for cut in [
                4,
                11,
                12,
                40,
                44,
                45,
                200,
                1000,
                len / 3,
                len / 2,
                len * 9 / 10,
            ] {
                let t = Instant::now();
                let r = decode_bytes(full[..cut.min(len - 1)].to_vec(), Some(ext));
                assert!(t.elapsed() < Duration::from_secs(5), "{ext} cut {cut} hung");
                match r {
                    Err(e) => assert!(e.is_client_error(), "{ext} cut {cut}: {e}"),
                    // A cut inside the last frame may still decode: it must then be short.
                    Ok(a) => panic!("{ext} cut {cut} decoded {} frames", a.frames()),
                }
            }
            // Overwrite a stretch in the middle with noise: either decodes (lossy formats
            // resync) or is corrupt; never a panic or a hang.
            let mut damaged = full.clone();
            for (i, b) in damaged[len / 2..len / 2 + 2000.min(len / 4)]
                .iter_mut()
                .enumerate()
            {
                *b = (i * 7919 % 251) as u8;
            }
            let t = Instant::now();
            if let Err(e) = decode_bytes(damaged, Some(ext)) {
                assert!(e.is_client_error(), "{ext}: {e}");
            }
            assert!(t.elapsed() < Duration::from_secs(5));
        }
    }

    /// A 16-bit PCM WAV written byte by byte, so its header can say anything.
    fn raw_wav(rate: u32, channels: u16, data_len: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&data_len.wrapping_add(36).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&rate.wrapping_mul(2 * channels as u32).to_le_bytes());
        v.extend_from_slice(&(2 * channels).to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_len.to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    /// The 144-byte WAVs that grew the server past 15 GB: a `fmt` rate of 0xFFFFFFFF, or one flipped
    /// bit turning 11,025 Hz into 134,228,753 Hz. Refused from the header, naming the field, by
    /// both the probe and the decoder.
    #[test]
    fn absurd_sample_rates_are_refused_before_decoding() {
        let data = vec![0u8; 100];
        for rate in [u32::MAX, 11_025 | (1 << 27), 0x7FFF_FFFF, 999, 800_000] {
            let wav = raw_wav(rate, 1, 100, &data);
            assert_eq!(wav.len(), 144);
            for r in [
                probe_bytes(bytes::Bytes::from(wav.clone()), Some("wav")).map(|_| ()),
                decode_bytes(wav.clone(), Some("wav")).map(|_| ()),
            ] {
                let e = r.unwrap_err();
                // symphonia itself may refuse some of these first; ours names the field.
                assert!(e.is_client_error(), "{rate}: {e}");
                if rate >= 999 && e.code() == "unsupported_audio" && rate != 0x7FFF_FFFF {
                    assert!(e.to_string().contains("sample_rate"), "{rate}: {e}");
                }
            }
        }
        assert!(decode_bytes(raw_wav(11_025, 1, 100, &data), Some("wav")).is_ok());
    }

    /// `n_frames` is in the track's time base: Matroska's TimestampScale (ms by default, here
    /// also µs) and MP4's `mdhd` timescale are converted to frames at the sample rate.
    #[test]
    fn declared_lengths_are_read_in_their_time_base() {
        use symphonia::core::units::TimeBase;
        let params = |rate: u32, tb: TimeBase, n: u64| {
            let mut p = CodecParameters::new();
            p.with_sample_rate(rate).with_time_base(tb).with_n_frames(n);
            p
        };
        // Frames already: unchanged.
        let p = params(44_100, TimeBase::new(1, 44_100), 123_457);
        assert_eq!(declared_frames(&p), Some(123_457));
        // Matroska, 3 s at the default 1 ms scale and at a 1 µs scale.
        let p = params(48_000, TimeBase::new(1_000_000, 1_000_000_000), 3_000);
        assert_eq!(declared_frames(&p), Some(144_000));
        let p = params(48_000, TimeBase::new(1_000, 1_000_000_000), 3_000_000);
        assert_eq!(declared_frames(&p), Some(144_000));
        // MP4, 2 s in a 90 kHz timescale at 44.1 kHz.
        let p = params(44_100, TimeBase::new(1, 90_000), 180_000);
        assert_eq!(declared_frames(&p), Some(88_200));
        // No time base or no rate: taken as frames.
        let mut p = CodecParameters::new();
        p.with_n_frames(77);
        assert_eq!(declared_frames(&p), Some(77));
        let p = params(48_000, TimeBase::new(u32::MAX, 1), u64::MAX);
        assert_eq!(declared_frames(&p), Some(u64::MAX));
    }

    #[test]
    fn too_many_channels_and_declared_lengths_beyond_the_cap_are_refused() {
        // symphonia's WAV reader refuses this itself; the bound covers every container.
        let e = decode_bytes(raw_wav(44_100, 40, 160, &[0u8; 160]), Some("wav")).unwrap_err();
        assert!(
            e.is_client_error() && e.to_string().contains("channel"),
            "{e}"
        );
        // 0x7FFF0000 bytes of 8 kHz mono declare ~37 hours in a 144-byte file.
        let wav = raw_wav(8_000, 1, 0x7FFF_0000, &[0u8; 100]);
        let e = probe_bytes(bytes::Bytes::from(wav.clone()), Some("wav")).unwrap_err();
        assert!(e.to_string().contains("duration"), "{e}");
        assert!(decode_bytes(wav, Some("wav")).is_err());
        // 1,000 s of 8-channel 192 kHz 16-bit: inside the hour, but 1.5 billion samples (a 1.6 MB
        // FLAC of silence declaring this once took 4 GB before the decoder stopped it).
        let wav = raw_wav(192_000, 8, 3_072_000_000, &[0u8; 160]);
        let e = probe_bytes(bytes::Bytes::from(wav.clone()), Some("wav")).unwrap_err();
        assert!(e.to_string().contains("samples: the file declares"), "{e}");
        assert_eq!(e.code(), "unsupported_audio");
        assert!(decode_bytes(wav, Some("wav")).is_err());
    }

    /// Float WAVs carrying NaN or infinity are corrupt: refused by the probe when the first packet
    /// has them, and by the decoder wherever they are.
    #[test]
    fn non_finite_samples_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0usize, 10, 40_000] {
                let spec = hound::WavSpec {
                    channels: 2,
                    sample_rate: 44_100,
                    bits_per_sample: 32,
                    sample_format: hound::SampleFormat::Float,
                };
                let mut cur = Cursor::new(Vec::new());
                {
                    let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
                    for i in 0..44_100usize {
                        w.write_sample(0.1f32).unwrap();
                        w.write_sample(if i == at { bad } else { 0.1 }).unwrap();
                    }
                    w.finalize().unwrap();
                }
                let bytes = cur.into_inner();
                let e = decode_bytes(bytes.clone(), Some("wav")).unwrap_err();
                assert_eq!(e.code(), "corrupt_audio", "{e}");
                assert!(
                    e.to_string().contains(&format!("frame {at} of channel 1")),
                    "{e}"
                );
                let probed = probe_bytes(bytes::Bytes::from(bytes), Some("wav"));
                // The probe sees the first packet only.
                match at {
                    0 => assert!(probed.is_err(), "{bad} at {at}"),
                    40_000 => assert!(probed.is_ok(), "{bad} at {at}: {probed:?}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn sniffs_containers() {
        assert_eq!(sniff_container(b"RIFF\0\0\0\0WAVEfmt "), "wav");
        assert_eq!(sniff_container(b"fLaC\0\0\0\x22"), "flac");
        assert_eq!(sniff_container(b"ID3\x04\0\0"), "mp3");
        assert_eq!(sniff_container(b"\0\0\0\x20ftypM4A "), "mp4");
        assert_eq!(sniff_container(b"OggS\0\x02"), "ogg");
        assert_eq!(sniff_container(b"hello"), "unknown");
    }
}
