//! A structural check of a file's container before symphonia reads it. symphonia's readers trust
//! the sizes a file declares and allocate them before reading: a 53-byte FLAC whose PICTURE block
//! says 4 GB, an 18 KB M4A whose `stco` table says two billion entries, a WAV whose `LIST` chunk
//! says 3.9 GB. Such a size can never be honest, because the bytes it describes would have to be
//! in the file. So before any decoding, this walks the container's chunk, box or element tree and
//! refuses (as `corrupt_audio`, naming the structure) every size that reaches past its parent or
//! past the end of the file, and every table whose entry count does not fit its box. Audio payload
//! chunks (WAV `data`, AIFF `SSND`, MP4 `mdat`, CAF `data`) may be cut short, as a truncated file
//! is: they are streamed, never allocated whole, and the decoder reports truncation itself.
//!
//! The walk reads headers only (a few bytes per structure, seeking over payloads), stops after
//! [`MAX_STRUCTURES`] structures, and knows WAV/RF64, AIFF, CAF, FLAC, MP4/M4A, Matroska/WebM and
//! ID3v2-tagged MP3. Ogg pages and MP3/ADTS frames carry sizes that are bounded by their formats.

use std::io::{Read, Seek, SeekFrom};

use super::error::{Error, Result};

/// Most structures one walk looks at: a real file has dozens; a crafted one may have millions of
/// empty boxes, each cheap for symphonia too, so the walk simply stops checking.
const MAX_STRUCTURES: usize = 100_000;

/// Deepest nesting followed (MP4 and Matroska nest a handful of levels).
const MAX_DEPTH: usize = 16;

/// Something to read from: a file or bytes in memory.
pub trait Source: Read + Seek {}
impl<T: Read + Seek> Source for T {}

/// What the walk found that the decoder must hold its reader to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Where the audio data ends (AIFF: the end of the `SSND` chunk). symphonia counts that
    /// chunk's 8-byte offset and block-size header as audio, so it reads 8 bytes past the chunk:
    /// a chunk that follows (`ID3 `, `MARK` …) was decoded as two frames of noise at the end.
    pub audio_end: Option<u64>,
    /// The length in frames the header gives (AIFF: `COMM`'s numSampleFrames), where the
    /// reader's own count is off (by the same 8 bytes).
    pub frames: Option<u64>,
}

/// Checks the container that `magic` (the file's first bytes) names; unknown containers pass (the
/// probe decides what they are).
pub fn check(src: &mut dyn Source, len: u64, container: &str) -> Result<Found> {
    let mut walk = Walk { src, len, seen: 0 };
    match container {
        "wav" => walk.riff(),
        "aiff" => return walk.aiff(),
        "caf" => walk.caf(),
        "flac" => walk.flac(),
        "mp4" => walk.mp4_boxes(0, len, 0),
        "mkv" => walk.ebml(0, len, 0),
        "mp3" => walk.id3v2(),
        _ => Ok(()),
    }?;
    Ok(Found::default())
}

struct Walk<'a> {
    src: &'a mut dyn Source,
    len: u64,
    seen: usize,
}

/// The `fmt ` tag of a WAV whose format chunk carries a channel mask (and a sub-format GUID).
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// A PCM-like WAV's frame size must be its channels' samples side by side: symphonia counts the
/// frames by it and reads samples by the sample width, so a file whose `fmt ` says 16-bit stereo
/// in 3-byte frames would be announced with one length and decode to another. (Compressed
/// formats' block align is their own block size, not checked here.)
fn check_block_align(tag: u16, channels: u16, bits: u16, block_align: u16) -> Result<()> {
    // PCM, IEEE float, A-law, µ-law, and the extensible form of those.
    if !matches!(tag, 1 | 3 | 6 | 7 | WAVE_FORMAT_EXTENSIBLE) {
        return Ok(());
    }
    let expected = u32::from(channels) * u32::from(bits).div_ceil(8);
    if u32::from(block_align) != expected {
        return Err(corrupt(format!(
            "the WAV format says {channels} channel(s) of {bits}-bit samples in frames of \
             {block_align} bytes; they take {expected}"
        )));
    }
    Ok(())
}

/// Positions in symphonia's channel map (its `Channels` bits): the channel limit itself.
const SPEAKER_POSITIONS: u32 = super::limits::MAX_CHANNELS as u32;

/// A WAVE_FORMAT_EXTENSIBLE channel mask as symphonia's WAV reader will take it: it first makes
/// the mask's count of ones match the channel count (ones added above the highest, or the highest
/// dropped), then maps the bits onto its 26 positions. A mask that would end up naming a position
/// past those is refused here, with the reason: symphonia refuses it as "too many channels in
/// mask", or, with bit 31 set and ones missing, shifts past 32 bits (a panic in a debug build).
fn check_wav_channel_mask(mask: u32, channels: u16) -> Result<()> {
    let (ones, n) = (mask.count_ones(), u32::from(channels));
    // The highest position the mask names once its ones match the channel count.
    let top = if n > ones {
        // Ones added just above the highest one (or from bit 0 when the mask is empty).
        (32 - mask.leading_zeros()) + (n - ones)
    } else {
        // The highest ones dropped: the n-th lowest one is the top.
        let mut m = mask;
        for _ in n..ones {
            m &= !(1 << (31 - m.leading_zeros()));
        }
        32 - m.leading_zeros()
    };
    if top > SPEAKER_POSITIONS {
        return Err(Error::Unsupported(format!(
            "channels: the WAV channel mask {mask:#010x} for {channels} channels names speaker \
             positions past the {SPEAKER_POSITIONS} the decoder maps"
        )));
    }
    Ok(())
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(what.to_string())
}

impl Walk<'_> {
    /// Counts one structure; false once the walk has seen enough.
    fn more(&mut self) -> bool {
        self.seen += 1;
        self.seen <= MAX_STRUCTURES
    }

    /// Reads exactly `buf.len()` bytes at `at`; `false` if the file ends first.
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<bool> {
        if at.saturating_add(buf.len() as u64) > self.len {
            return Ok(false);
        }
        self.src.seek(SeekFrom::Start(at))?;
        match self.src.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// RIFF/RF64 WAVE: every chunk but `data` must fit in the file (RF64 keeps the real sizes in
    /// `ds64`; its `data` and `RIFF` sizes say 0xFFFFFFFF).
    fn riff(&mut self) -> Result<()> {
        let mut at = 12u64;
        let mut head = [0u8; 8];
        while self.more() && self.read_at(at, &mut head)? {
            let id = [head[0], head[1], head[2], head[3]];
            let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as u64;
            let body = at + 8;
            if &id == b"data" {
                // The payload is streamed; nothing after it matters to the decoder.
                return Ok(());
            }
            if body.saturating_add(size) > self.len {
                return Err(corrupt(format!(
                    "the {:?} chunk declares {size} bytes, past the end of the file",
                    String::from_utf8_lossy(&id)
                )));
            }
            if &id == b"LIST" {
                self.sub_chunks(body + 4, body + size, u32::from_le_bytes, "LIST")?;
            }
            if &id == b"fmt " && size >= 8 {
                // The format's own fields, before a decoder is made from them (a rate of 0
                // makes symphonia panic; 4 GHz makes the resampler allocate without bound).
                // Read once: the tag, channels and rate (8 bytes), block align and sample width
                // (16), and an extensible format's channel mask (at 20; present from 40).
                let mut fmt = [0u8; 24];
                let head = &mut fmt[..size.min(24) as usize];
                if self.read_at(body, head)? {
                    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
                    let channels = u16_at(2);
                    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
                    super::limits::check_format(rate, channels as usize)?;
                    let tag = u16_at(0);
                    if size >= 16 {
                        check_block_align(tag, channels, u16_at(14), u16_at(12))?;
                    }
                    if tag == WAVE_FORMAT_EXTENSIBLE && size >= 40 {
                        let mask = u32::from_le_bytes([fmt[20], fmt[21], fmt[22], fmt[23]]);
                        check_wav_channel_mask(mask, channels)?;
                    }
                }
            }
            at = body + size + (size & 1);
        }
        Ok(())
    }

    /// The sub-chunks of a RIFF `LIST` (little-endian) or an AIFF container chunk.
    fn sub_chunks(
        &mut self,
        mut at: u64,
        end: u64,
        size_of: fn([u8; 4]) -> u32,
        parent: &str,
    ) -> Result<()> {
        let mut head = [0u8; 8];
        while at + 8 <= end && self.more() && self.read_at(at, &mut head)? {
            let size = size_of([head[4], head[5], head[6], head[7]]) as u64;
            if (at + 8).saturating_add(size) > end {
                return Err(corrupt(format!(
                    "a chunk inside {parent} declares {size} bytes, past the end of its parent"
                )));
            }
            at += 8 + size + (size & 1);
        }
        Ok(())
    }

    /// AIFF/AIFF-C: every chunk but `SSND` must fit in the file. Finds where `SSND` ends and
    /// the frame count `COMM` declares (see [`Found`]).
    fn aiff(&mut self) -> Result<Found> {
        let mut at = 12u64;
        let mut head = [0u8; 8];
        let mut found = Found::default();
        while self.more() && self.read_at(at, &mut head)? {
            let id = [head[0], head[1], head[2], head[3]];
            let size = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as u64;
            if &id == b"SSND" {
                // Only when the chunk ends inside the file: a truncated one is read to the end.
                let end = (at + 8).saturating_add(size);
                found.audio_end = (end < self.len).then_some(end);
                return Ok(found);
            }
            if &id == b"COMM" && size >= 6 {
                // numChannels (2 bytes), then numSampleFrames (4).
                let mut frames = [0u8; 4];
                if self.read_at(at + 10, &mut frames)? {
                    found.frames = Some(u32::from_be_bytes(frames) as u64);
                }
            }
            if (at + 8).saturating_add(size) > self.len {
                return Err(corrupt(format!(
                    "the {:?} chunk declares {size} bytes, past the end of the file",
                    String::from_utf8_lossy(&id)
                )));
            }
            at += 8 + size + (size & 1);
        }
        Ok(found)
    }

    /// CAF: 64-bit chunk sizes; `data` may say -1 (to the end).
    fn caf(&mut self) -> Result<()> {
        let mut at = 8u64;
        let mut head = [0u8; 12];
        while self.more() && self.read_at(at, &mut head)? {
            let id = [head[0], head[1], head[2], head[3]];
            let size = i64::from_be_bytes(head[4..12].try_into().expect("8 bytes"));
            if &id == b"data" {
                return Ok(());
            }
            let size = u64::try_from(size).map_err(|_| {
                corrupt(format!(
                    "the {:?} chunk declares a negative size",
                    String::from_utf8_lossy(&id)
                ))
            })?;
            if (at + 12).saturating_add(size) > self.len {
                return Err(corrupt(format!(
                    "the {:?} chunk declares {size} bytes, past the end of the file",
                    String::from_utf8_lossy(&id)
                )));
            }
            at += 12 + size;
        }
        Ok(())
    }

    /// FLAC: each metadata block must fit in the file, and the lengths inside PICTURE and
    /// VORBIS_COMMENT blocks must fit in their block.
    fn flac(&mut self) -> Result<()> {
        let mut at = 4u64;
        let mut head = [0u8; 4];
        while self.more() && self.read_at(at, &mut head)? {
            let last = head[0] & 0x80 != 0;
            let kind = head[0] & 0x7F;
            let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as u64;
            let body = at + 4;
            if body.saturating_add(size) > self.len {
                return Err(corrupt(format!(
                    "FLAC metadata block {kind} declares {size} bytes, past the end of the file"
                )));
            }
            match kind {
                0 if size >= 18 => {
                    // STREAMINFO: 20-bit sample rate and 3-bit channel count - 1 at byte 10.
                    let mut info = [0u8; 13];
                    if self.read_at(body, &mut info)? {
                        let rate = ((info[10] as u32) << 12)
                            | ((info[11] as u32) << 4)
                            | ((info[12] as u32) >> 4);
                        let channels = (((info[12] >> 1) & 0x07) + 1) as usize;
                        super::limits::check_format(rate, channels)?;
                    }
                }
                4 => self.flac_comments(body, size)?,
                6 => self.flac_picture(body, size)?,
                _ => {}
            }
            if last {
                break;
            }
            at = body + size;
        }
        Ok(())
    }

    fn flac_comments(&mut self, body: u64, size: u64) -> Result<()> {
        let end = body + size;
        let mut len = [0u8; 4];
        let mut at = body;
        let field = |w: &mut Self, at: &mut u64, what: &str| -> Result<bool> {
            let mut len = [0u8; 4];
            if !w.read_at(*at, &mut len)? {
                return Ok(false);
            }
            let n = u32::from_le_bytes(len) as u64;
            if (*at + 4).saturating_add(n) > end {
                return Err(corrupt(format!(
                    "a FLAC comment {what} declares {n} bytes, past the end of its block"
                )));
            }
            *at += 4 + n;
            Ok(true)
        };
        if !field(self, &mut at, "vendor string")? || !self.read_at(at, &mut len)? {
            return Ok(());
        }
        let count = u32::from_le_bytes(len) as u64;
        at += 4;
        if count.saturating_mul(4) > end.saturating_sub(at) {
            return Err(corrupt(format!(
                "a FLAC comment block declares {count} comments, more than it can hold"
            )));
        }
        for _ in 0..count {
            if !self.more() || !field(self, &mut at, "string")? {
                break;
            }
        }
        Ok(())
    }

    fn flac_picture(&mut self, body: u64, size: u64) -> Result<()> {
        let end = body + size;
        let mut at = body + 4; // picture type
        let mut len = [0u8; 4];
        // MIME type and description, then 16 bytes of dimensions, then the picture data.
        for (what, skip_after) in [
            ("MIME type", 0u64),
            ("description", 16),
            ("picture data", 0),
        ] {
            if !self.read_at(at, &mut len)? {
                return Ok(());
            }
            let n = u32::from_be_bytes(len) as u64;
            if (at + 4).saturating_add(n) > end {
                return Err(corrupt(format!(
                    "a FLAC picture's {what} declares {n} bytes, past the end of its block"
                )));
            }
            at += 4 + n + skip_after;
        }
        Ok(())
    }

    /// MP4 boxes between `start` and `end`: each must fit its parent; containers are walked; the
    /// sample tables' entry counts must fit their box, and no sample may be larger than the file.
    fn mp4_boxes(&mut self, start: u64, end: u64, depth: usize) -> Result<()> {
        self.mp4_boxes_in(start, end, depth, false)
    }

    /// [`Walk::mp4_boxes`] with `in_ilst` when the boxes are metadata items.
    fn mp4_boxes_in(&mut self, start: u64, end: u64, depth: usize, in_ilst: bool) -> Result<()> {
        let mut at = start;
        let mut head = [0u8; 8];
        while at + 8 <= end && self.more() && self.read_at(at, &mut head)? {
            let kind = [head[4], head[5], head[6], head[7]];
            let name = String::from_utf8_lossy(&kind).into_owned();
            let mut size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
            let mut header = 8u64;
            if size == 1 {
                let mut large = [0u8; 8];
                if !self.read_at(at + 8, &mut large)? {
                    return Ok(());
                }
                size = u64::from_be_bytes(large);
                header = 16;
            } else if size == 0 {
                size = end - at; // to the end of the parent
            }
            if size < header {
                return Err(corrupt(format!(
                    "the MP4 box {name:?} declares a size smaller than its header"
                )));
            }
            let fits = at.saturating_add(size) <= end;
            if &kind == b"mdat" {
                // Media data is read packet by packet: a top-level one cut short is a truncated
                // file (the decoder says so); inside another box it must fit.
                if !fits && depth > 0 {
                    return Err(corrupt("an MP4 mdat box reaches past its parent"));
                }
                at = at.saturating_add(size);
                continue;
            }
            if !fits {
                return Err(corrupt(format!(
                    "the MP4 box {name:?} declares {size} bytes, past the end of its parent"
                )));
            }
            let (body, body_end) = (at + header, at + size);
            if depth < MAX_DEPTH {
                match &kind {
                    b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" | b"dinf" | b"udta"
                    | b"edts" | b"mvex" | b"moof" | b"traf" | b"sinf" | b"schi" => {
                        self.mp4_boxes_in(body, body_end, depth + 1, false)?
                    }
                    b"ilst" => self.mp4_boxes_in(body, body_end, depth + 1, true)?,
                    // A full box (version and flags) holding boxes.
                    b"meta" => self.mp4_boxes_in(body + 4, body_end, depth + 1, false)?,
                    b"stsd" => self.mp4_boxes_in(body + 8, body_end, depth + 1, false)?,
                    // An ilst item (any four-character code) holds `mean`, `name` and `data`.
                    _ if in_ilst => self.mp4_boxes_in(body, body_end, depth + 1, false)?,
                    // Full boxes whose payload length is the box size minus their header: a size
                    // below the header would make that length wrap around.
                    b"data" | b"mean" | b"name" if size < header + 8 => {
                        return Err(corrupt(format!(
                            "the MP4 box {name:?} is smaller than its own header"
                        )))
                    }
                    _ => self.mp4_table(&kind, body, body_end)?,
                }
            }
            at = body_end;
        }
        Ok(())
    }

    /// A sample table box: `count` entries of a fixed size after the full box header must fit.
    fn mp4_table(&mut self, kind: &[u8; 4], body: u64, end: u64) -> Result<()> {
        let entry: u64 = match kind {
            b"stco" | b"stss" | b"stps" => 4,
            b"co64" | b"stts" | b"ctts" => 8,
            b"stsc" => 12,
            b"stsz" => 4,
            b"elst" => 12, // version 0; version 1 checked below
            _ => return Ok(()),
        };
        let mut fields = [0u8; 12];
        if !self.read_at(body, &mut fields[..8])? {
            return Ok(());
        }
        let version = fields[0];
        let (count, entries_at, entry) = if kind == b"stsz" {
            // version/flags, sample_size, sample_count: a table only when sample_size is 0.
            if !self.read_at(body, &mut fields)? {
                return Ok(());
            }
            let sample_size = u32::from_be_bytes(fields[4..8].try_into().expect("4 bytes")) as u64;
            let count = u32::from_be_bytes(fields[8..12].try_into().expect("4 bytes")) as u64;
            if sample_size != 0 {
                if sample_size > self.len {
                    return Err(corrupt(format!(
                        "the MP4 stsz box declares samples of {sample_size} bytes, larger than the file"
                    )));
                }
                return Ok(());
            }
            (count, body + 12, entry)
        } else {
            let count = u32::from_be_bytes(fields[4..8].try_into().expect("4 bytes")) as u64;
            let entry = if kind == b"elst" && version == 1 {
                20
            } else {
                entry
            };
            (count, body + 8, entry)
        };
        let name = String::from_utf8_lossy(kind);
        if count.saturating_mul(entry) > end.saturating_sub(entries_at) {
            return Err(corrupt(format!(
                "the MP4 {name} box declares {count} entries, more than it holds"
            )));
        }
        if kind == b"stsz" {
            // Each sample is read into a buffer of its declared size.
            let mut buf = vec![0u8; (count * 4).min(1 << 20) as usize];
            let mut at = entries_at;
            let mut left = count * 4;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                if !self.read_at(at, &mut buf[..n])? {
                    break;
                }
                if let Some(big) = buf[..n]
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")) as u64)
                    .find(|&s| s > self.len)
                {
                    return Err(corrupt(format!(
                        "the MP4 stsz box declares a sample of {big} bytes, larger than the file"
                    )));
                }
                at += n as u64;
                left -= n as u64;
            }
        }
        Ok(())
    }

    /// Matroska/WebM: EBML elements; master elements are walked, and every element but a Segment
    /// or Cluster of unknown size must fit its parent.
    fn ebml(&mut self, start: u64, end: u64, depth: usize) -> Result<()> {
        let mut at = start;
        while at < end && self.more() {
            let Some((id, id_len)) = self.vint(at, false)? else {
                return Ok(());
            };
            let Some((size, size_len)) = self.vint(at + id_len, true)? else {
                return Ok(());
            };
            let body = at + id_len + size_len;
            let unknown = size == u64::MAX;
            let is_master = matches!(
                id,
                0x1A45DFA3 // EBML header
                    | 0x18538067 // Segment
                    | 0x114D9B74 // SeekHead
                    | 0x4DBB // Seek
                    | 0x1549A966 // Info
                    | 0x1654AE6B // Tracks
                    | 0xAE // TrackEntry
                    | 0xE1 // Audio
                    | 0x6D80 // ContentEncodings
                    | 0x6240 // ContentEncoding
                    | 0x1C53BB6B // Cues
                    | 0xBB // CuePoint
                    | 0xB7 // CueTrackPositions
                    | 0x1254C367 // Tags
                    | 0x7373 // Tag
                    | 0x67C8 // SimpleTag
                    | 0x63C0 // Targets
                    | 0x1043A770 // Chapters
                    | 0x45B9 // EditionEntry
                    | 0xB6 // ChapterAtom
                    | 0x80 // ChapterDisplay
                    | 0x1941A469 // Attachments
                    | 0x61A7 // AttachedFile
                    | 0x1F43B675 // Cluster
                    | 0xA0 // BlockGroup
            );
            let streamed = matches!(id, 0x18538067 | 0x1F43B675);
            if unknown && streamed {
                // Live streams: the element runs to the end of its parent.
                if depth < MAX_DEPTH {
                    self.ebml(body, end, depth + 1)?;
                }
                return Ok(());
            }
            if unknown || body.saturating_add(size) > end {
                return Err(corrupt(format!(
                    "the Matroska element 0x{id:X} declares {} bytes, past the end of its parent",
                    if unknown {
                        "an unknown number of".to_string()
                    } else {
                        size.to_string()
                    }
                )));
            }
            if is_master && depth < MAX_DEPTH {
                self.ebml(body, body + size, depth + 1)?;
            }
            at = body + size;
        }
        Ok(())
    }

    /// An EBML variable-length integer at `at`: `(value, length)`. Sizes have their marker bit
    /// cleared and all-ones meaning "unknown" (returned as `u64::MAX`); ids keep the marker.
    fn vint(&mut self, at: u64, is_size: bool) -> Result<Option<(u64, u64)>> {
        let mut first = [0u8; 1];
        if !self.read_at(at, &mut first)? {
            return Ok(None);
        }
        let len = first[0].leading_zeros() as u64 + 1;
        if len > 8 || (!is_size && len > 4) {
            return Err(corrupt("a Matroska element has an invalid id or size"));
        }
        let mut bytes = [0u8; 8];
        if !self.read_at(at, &mut bytes[..len as usize])? {
            return Ok(None);
        }
        let mut v = 0u64;
        for &b in &bytes[..len as usize] {
            v = (v << 8) | b as u64;
        }
        if is_size {
            let marker = 1u64 << (7 * len);
            v &= marker - 1;
            if v == marker - 1 {
                return Ok(Some((u64::MAX, len)));
            }
        }
        Ok(Some((v, len)))
    }

    /// MP3 with an ID3v2 tag: the tag's (syncsafe) size must fit in the file.
    fn id3v2(&mut self) -> Result<()> {
        let mut head = [0u8; 10];
        if !self.read_at(0, &mut head)? || &head[..3] != b"ID3" {
            return Ok(());
        }
        let size = head[6..10]
            .iter()
            .fold(0u64, |acc, &b| (acc << 7) | (b & 0x7F) as u64);
        if 10 + size > self.len {
            return Err(corrupt(format!(
                "the ID3v2 tag declares {size} bytes, past the end of the file"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn run(bytes: &[u8], container: &str) -> Result<()> {
        check(&mut Cursor::new(bytes), bytes.len() as u64, container).map(|_| ())
    }

    fn flac_with_block(kind: u8, body: &[u8], declared: u32) -> Vec<u8> {
        let mut v = b"fLaC".to_vec();
        // A STREAMINFO saying 44.1 kHz stereo, then the block under test, marked last.
        v.extend_from_slice(&[0, 0, 0, 34]);
        let mut info = [0u8; 34];
        info[10..13].copy_from_slice(&[0x0A, 0xC4, 0x42]);
        v.extend_from_slice(&info);
        v.push(0x80 | kind);
        v.extend_from_slice(&declared.to_be_bytes()[1..]);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn flac_blocks_and_their_fields_must_fit() {
        assert!(run(&flac_with_block(1, &[0u8; 8], 8), "flac").is_ok());
        let e = run(&flac_with_block(6, &[0u8; 8], 0xFF_FFFF), "flac").unwrap_err();
        assert!(e.to_string().contains("past the end of the file"), "{e}");
        // A picture block that fits, whose MIME type length says 4 GB.
        let mut pic = vec![0, 0, 0, 3];
        pic.extend_from_slice(&u32::MAX.to_be_bytes());
        pic.extend_from_slice(&[0u8; 24]);
        let e = run(&flac_with_block(6, &pic, pic.len() as u32), "flac").unwrap_err();
        assert!(e.to_string().contains("MIME type"), "{e}");
        // A comment block claiming a billion comments.
        let mut c = 0u32.to_le_bytes().to_vec();
        c.extend_from_slice(&1_000_000_000u32.to_le_bytes());
        let e = run(&flac_with_block(4, &c, c.len() as u32), "flac").unwrap_err();
        assert!(e.to_string().contains("comments"), "{e}");
    }

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn mp4_boxes_and_tables_must_fit() {
        let ftyp = mp4_box(b"ftyp", b"M4A \0\0\0\0");
        let good_stco = mp4_box(b"stco", &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 8]);
        let file = [
            ftyp.clone(),
            mp4_box(
                b"moov",
                &mp4_box(
                    b"trak",
                    &mp4_box(b"mdia", &mp4_box(b"minf", &mp4_box(b"stbl", &good_stco))),
                ),
            ),
        ]
        .concat();
        assert!(run(&file, "mp4").is_ok());
        let bad_stco = mp4_box(b"stco", &[0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF]);
        let file = [
            ftyp.clone(),
            mp4_box(
                b"moov",
                &mp4_box(
                    b"trak",
                    &mp4_box(b"mdia", &mp4_box(b"minf", &mp4_box(b"stbl", &bad_stco))),
                ),
            ),
        ]
        .concat();
        let e = run(&file, "mp4").unwrap_err();
        assert!(e.to_string().contains("stco"), "{e}");
        // A box that says it is larger than its parent.
        let mut hdlr = mp4_box(b"hdlr", &[0u8; 24]);
        hdlr[..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
        let file = [
            ftyp.clone(),
            mp4_box(b"moov", &mp4_box(b"trak", &mp4_box(b"mdia", &hdlr))),
        ]
        .concat();
        let e = run(&file, "mp4").unwrap_err();
        assert!(e.to_string().contains("hdlr"), "{e}");
        // A sample larger than the file.
        // A metadata item whose data box is shorter than its header.
        let item = mp4_box(b"\xa9nam", &mp4_box(b"data", &[0, 0, 0, 1]));
        let file = [
            ftyp.clone(),
            mp4_box(
                b"moov",
                &mp4_box(
                    b"udta",
                    &mp4_box(b"meta", &[&[0u8; 4][..], &mp4_box(b"ilst", &item)].concat()),
                ),
            ),
        ]
        .concat();
        let e = run(&file, "mp4").unwrap_err();
        assert!(e.to_string().contains("smaller than its own header"), "{e}");
        let stsz = mp4_box(
            b"stsz",
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 0, 0, 0],
        );
        let file = [ftyp, mp4_box(b"moov", &mp4_box(b"stbl", &stsz))].concat();
        let e = run(&file, "mp4").unwrap_err();
        assert!(e.to_string().contains("larger than the file"), "{e}");
    }

    #[test]
    fn format_fields_are_checked_from_the_header() {
        let mut zero_rate = flac_with_block(1, &[0u8; 8], 8);
        zero_rate[8 + 10..8 + 13].copy_from_slice(&[0, 0, 0x02]);
        let e = run(&zero_rate, "flac").unwrap_err();
        assert!(e.to_string().contains("sample_rate 0"), "{e}");
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&[1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 16, 0]);
        let e = run(&wav, "wav").unwrap_err();
        assert!(e.to_string().contains("sample_rate 0"), "{e}");
        wav[24..28].copy_from_slice(&44_100u32.to_le_bytes());
        assert!(run(&wav, "wav").is_ok());
        // 16-bit stereo in 3-byte frames: refused, naming both sizes.
        wav[32] = 3;
        let e = run(&wav, "wav").unwrap_err().to_string();
        assert!(
            e.contains("frames of 3 bytes") && e.contains("take 4"),
            "{e}"
        );
    }

    /// A WAVE_FORMAT_EXTENSIBLE file of `channels` 16-bit PCM channels with `mask`, 4 frames.
    fn extensible_wav(channels: u16, mask: u32) -> Vec<u8> {
        let block = 2 * channels;
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&WAVE_FORMAT_EXTENSIBLE.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&44_100u32.to_le_bytes());
        fmt.extend_from_slice(&(44_100 * u32::from(block)).to_le_bytes());
        fmt.extend_from_slice(&block.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        fmt.extend_from_slice(&16u16.to_le_bytes()); // valid bits
        fmt.extend_from_slice(&mask.to_le_bytes());
        // KSDATAFORMAT_SUBTYPE_PCM
        fmt.extend_from_slice(&[
            1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71,
        ]);
        let data = vec![0u8; 4 * usize::from(block)];
        let mut wav = b"RIFF".to_vec();
        wav.extend_from_slice(&((4 + 8 + fmt.len() + 8 + data.len()) as u32).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        wav.extend_from_slice(&fmt);
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
        wav.extend_from_slice(&data);
        wav
    }

    /// What the mask check lets through, symphonia decodes (no panic: a debug build's shift
    /// overflow would show as "decoder failed"); what it refuses names `channels`.
    #[test]
    fn extensible_channel_masks_are_checked_as_the_decoder_takes_them() {
        let cases: &[(u16, u32, bool)] = &[
            (2, 0b11, true),
            (2, 0, true),
            (26, 0, true),
            (8, 0xFFFF_FFFF, true),
            (1, 1 << 25, true),
            (6, 0b1111, true), // two ones added above the highest
            (1, 1 << 26, false),
            (2, 0x8000_0000, false), // bit 31 with a one missing: symphonia shifts past 32 bits
            (2, 1 << 25, false),     // one added above LFE2 lands past the 26 positions
            (4, 0b1100_0000_0000_0000_0000_0000_0000, false),
        ];
        for &(channels, mask, ok) in cases {
            let wav = extensible_wav(channels, mask);
            let checked = run(&wav, "wav");
            assert_eq!(
                checked.is_ok(),
                ok,
                "{channels} ch, mask {mask:#x}: {checked:?}"
            );
            if ok {
                let audio = crate::audio::decode::decode_bytes(wav, Some("wav"))
                    .unwrap_or_else(|e| panic!("{channels} ch, mask {mask:#x}: {e}"));
                assert_eq!(audio.channels.len(), usize::from(channels));
            } else {
                let e = checked.unwrap_err().to_string();
                assert!(e.contains("channels") && e.contains("mask"), "{e}");
            }
        }
        // Past 26 channels nothing can be decoded: refused by the count, before the mask.
        let e = run(&extensible_wav(27, 0), "wav").unwrap_err().to_string();
        assert!(e.contains("channels 27"), "{e}");
    }

    #[test]
    fn riff_chunks_but_data_must_fit() {
        let mut wav = b"RIFF\0\0\0\0WAVE".to_vec();
        wav.extend_from_slice(b"LIST");
        wav.extend_from_slice(&0xF000_0000u32.to_le_bytes());
        wav.extend_from_slice(b"INFO");
        assert!(run(&wav, "wav").unwrap_err().to_string().contains("LIST"));
        let mut wav = b"RIFF\0\0\0\0WAVE".to_vec();
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&0xF000_0000u32.to_le_bytes());
        wav.extend_from_slice(&[0u8; 16]);
        assert!(
            run(&wav, "wav").is_ok(),
            "a short data chunk is a truncated file, not a bomb"
        );
    }

    #[test]
    fn matroska_elements_and_id3_tags_must_fit() {
        // EBML header of 4 bytes declared as 0x10000000.
        let mkv = [
            0x1A, 0x45, 0xDF, 0xA3, 0x90, 0x00, 0x00, 0x00, 0x42, 0x86, 0x81, 0x01,
        ];
        let e = run(&mkv, "mkv").unwrap_err();
        assert!(e.to_string().contains("Matroska"), "{e}");
        let ok = [0x1A, 0x45, 0xDF, 0xA3, 0x84, 0x42, 0x86, 0x81, 0x01];
        assert!(run(&ok, "mkv").is_ok());
        let id3 = [b'I', b'D', b'3', 4, 0, 0, 0x7F, 0x7F, 0x7F, 0x7F, 0, 0];
        assert!(run(&id3, "mp3").unwrap_err().to_string().contains("ID3v2"));
    }
}
