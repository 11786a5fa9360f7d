//! A seeded mutation fuzzer over the committed corpus in `tests/fuzz/corpus/` (issue 14, item 8):
//! stable Rust, no cargo-fuzz, one build shared with `cargo test` (which builds examples).
//!
//!     cargo run --example fuzz -- --target all --seconds 35 --seed 1
//!     cargo run --example fuzz -- --make-seeds      # rewrites tests/fuzz/corpus and the generated regressions
//!
//! Targets, each a function of one input (`&[u8]`):
//! - `decode`: `audio::probe_bytes` and `audio::decode_bytes` (the extension hint picked from the
//!   input's hash; regressions try every hint), then the analysis engine on what decoded. Must answer
//!   `Ok`/`Err`; what decodes must keep the documented bounds (rate, channels, finite samples).
//! - `multipart`: `route\ncontent-type\nbody` POSTed to `/v1/metadata`, `/v1/analyze/upload`,
//!   `/v1/analyze` or `/v1/features` of an in-process server.
//! - `json`: `route\nbody` POSTed/PUT to `/v1/generations`, `/v1/webhook`, `/v1/credits`,
//!   `/v1/analyze|features|metadata` (`{MEDIA}` in the body becomes a live result URL).
//! - `range`: `Range\nIf-Range[\nsecond Range]` through `api::media::range_preconditions`, then a
//!   GET of a real result file with those headers (`{LM}` becomes the file's Last-Modified).
//!
//! The server targets fail on any 5xx but 503, and on an error response that is not the
//! `{"error":{"code","message","trace_id"}}` envelope; `range` on any status but 200/206/416, on a
//! 206 body that is not the bytes its `Content-Range` names, and on a 416 outside the envelope or
//! without `Content-Range: bytes */<size>`.
//!
//! Every target fails on a panic that reaches the harness, on a case running over 10 s (a watchdog
//! saves the input and exits 1) and on an allocation that would take live heap past the baseline
//! + 1 GiB (the counting allocator below refuses it; if that aborts the process, the input is in
//! `target/fuzz/current-<target>.bin`, written before every case, and `scripts/fuzz.sh` keeps it).
//! Failing inputs go to `target/fuzz/crashes/`; committed ones live in `tests/fuzz/regressions/`
//! (`<target>-<name>`) and are replayed, with the unmutated corpus, before fuzzing.
//!
//! Panics that the code under test catches itself (decode's guard around symphonia) are not
//! failures; the panic hook counts them and prints where they came from.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;

// ---------------------------------------------------------------------------------------------
// Memory: a counting allocator that refuses to grow the live heap past a limit.

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
static REFUSED_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Bytes one input may add to the live heap.
const MEMORY_BUDGET: usize = 1 << 30;
/// Longest one input may run.
const HANG: Duration = Duration::from_secs(10);
/// Largest input a mutation may produce.
const MAX_INPUT: usize = 64 * 1024;

struct Counting;

impl Counting {
    /// Reserves `size` more live bytes; false (and nothing reserved) past the limit.
    fn reserve(size: usize) -> bool {
        let prev = LIVE.fetch_add(size, Ordering::Relaxed);
        let now = prev.saturating_add(size);
        if now > LIMIT.load(Ordering::Relaxed) {
            LIVE.fetch_sub(size, Ordering::Relaxed);
            REFUSED.fetch_add(1, Ordering::Relaxed);
            REFUSED_SIZE.store(size, Ordering::Relaxed);
            return false;
        }
        PEAK.fetch_max(now, Ordering::Relaxed);
        true
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Counting::reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Counting::reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !Counting::reserve(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Panics seen anywhere in the process (caught or not), by site.

static PANICS: AtomicU64 = AtomicU64::new(0);
static PANIC_SITES: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        // Outside a case it is the harness's own bug: say so the usual way.
        if CASE_START.load(Ordering::Relaxed) == 0 {
            default(info);
        }
        PANICS.fetch_add(1, Ordering::Relaxed);
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = panic_text(info.payload());
        let key = format!("{at}: {}", truncate(&msg, 120));
        if let Ok(mut sites) = PANIC_SITES.lock() {
            *sites.entry(key).or_default() += 1;
        }
    }));
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-text panic)".into())
}

// ---------------------------------------------------------------------------------------------
// The case in flight, for the watchdog.

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
/// Milliseconds since EPOCH when the running case started, plus one; 0 when none runs.
static CASE_START: AtomicU64 = AtomicU64::new(0);
static CASE_TARGET: AtomicUsize = AtomicUsize::new(0);

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The per-input time limit; `FUZZ_HANG_MS` lowers it to test the watchdog itself.
fn hang_ms() -> u64 {
    std::env::var("FUZZ_HANG_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(HANG.as_millis() as u64)
}

/// The per-input memory budget; `FUZZ_MEMORY_MB` lowers it to test the limit itself.
fn memory_budget() -> usize {
    std::env::var("FUZZ_MEMORY_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(MEMORY_BUDGET, |mb| mb << 20)
}

fn start_watchdog(out: PathBuf) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let start = CASE_START.load(Ordering::Relaxed);
        if start == 0 || now_ms().saturating_sub(start - 1) <= hang_ms() {
            continue;
        }
        let target = TARGETS[CASE_TARGET.load(Ordering::Relaxed)];
        let current = out.join(format!("current-{target}.bin"));
        let saved = out
            .join("crashes")
            .join(format!("{target}-hang-{:016x}.bin", now_ms()));
        let _ = fs::create_dir_all(out.join("crashes"));
        let _ = fs::copy(&current, &saved);
        let input = fs::read(&current).unwrap_or_default();
        eprintln!(
            "\nFAIL {target}: one input ran past {} ms; saved to {}\n{}",
            hang_ms(),
            saved.display(),
            hexdump(&input, 512)
        );
        std::process::exit(EXIT_HANG);
    });
}

// ---------------------------------------------------------------------------------------------
// Arguments.

const TARGETS: [&str; 4] = ["decode", "multipart", "json", "range"];

struct Args {
    targets: Vec<usize>,
    seconds: f64,
    seed: u64,
    make_seeds: bool,
    /// Run one target in this process (the supervisor starts one such child per target).
    child: bool,
    /// Regression files not to replay (a restarted child skips the one that killed its parent).
    skip: Vec<String>,
    /// Files to run through the target once (every extension hint), then exit: checks a fix.
    replay: Vec<PathBuf>,
    root: PathBuf,
    out: PathBuf,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut a = Args {
        targets: (0..TARGETS.len()).collect(),
        seconds: 30.0,
        seed: 1,
        make_seeds: false,
        child: false,
        replay: Vec::new(),
        skip: Vec::new(),
        out: target_dir.join("fuzz"),
        root,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--target" => {
                let v = value()?;
                a.targets = if v == "all" {
                    (0..TARGETS.len()).collect()
                } else {
                    v.split(',')
                        .map(|t| {
                            TARGETS
                                .iter()
                                .position(|x| *x == t)
                                .ok_or(format!("unknown target {t}; one of {TARGETS:?} or all"))
                        })
                        .collect::<Result<_, _>>()?
                };
            }
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--out" => a.out = PathBuf::from(value()?),
            "--make-seeds" => a.make_seeds = true,
            "--child" => a.child = true,
            "--replay" => a.replay.push(PathBuf::from(value()?)),
            "--skip" => a.skip.push(value()?),
            "--verbose" | "-v" => a.verbose = true,
            "--help" | "-h" => {
                println!(
                    "fuzz [--target decode|multipart|json|range|all] [--seconds N per target] \
                     [--seed S] [--out DIR] [--verbose]\n\
                     fuzz --target T --replay FILE [--replay FILE …]   (each file once, then exit)\n\
                     fuzz --make-seeds                                (rewrite tests/fuzz/corpus)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// Mutations.

const INTERESTING8: [u8; 4] = [0, 0x7F, 0x80, 0xFF];
const INTERESTING16: [u16; 5] = [0, 1, 0x7FFF, 0x8000, 0xFFFF];
const INTERESTING32: [u32; 8] = [
    0,
    1,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    1 << 27,
    0x7FFF_0000,
];

/// A position biased towards the first 128 bytes, where headers live.
fn pos(rng: &mut StdRng, len: usize) -> usize {
    if rng.gen_bool(0.5) {
        rng.gen_range(0..len.min(128))
    } else {
        rng.gen_range(0..len)
    }
}

/// Applies 1, 2, 4 or 8 stacked mutations to `data`; `other` is a splice partner.
fn mutate(rng: &mut StdRng, data: &mut Vec<u8>, other: &[u8], dict: &[Vec<u8>]) {
    let n = 1usize << rng.gen_range(0..4);
    for _ in 0..n {
        mutate_once(rng, data, other, dict);
    }
    data.truncate(MAX_INPUT);
}

fn mutate_once(rng: &mut StdRng, data: &mut Vec<u8>, other: &[u8], dict: &[Vec<u8>]) {
    let len = data.len();
    let op = rng.gen_range(0..14);
    if len == 0 && op < 11 {
        data.extend((0..rng.gen_range(1..16)).map(|_| rng.gen::<u8>()));
        return;
    }
    match op {
        // Bit flip.
        0 | 1 => {
            let p = pos(rng, len);
            data[p] ^= 1 << rng.gen_range(0..8);
        }
        // Interesting byte.
        2 => {
            let p = pos(rng, len);
            data[p] = INTERESTING8[rng.gen_range(0..INTERESTING8.len())];
        }
        // Random byte, or a small add/subtract.
        3 => {
            let p = pos(rng, len);
            data[p] = if rng.gen() {
                rng.gen()
            } else {
                let d: u8 = rng.gen_range(1..=16);
                if rng.gen() {
                    data[p].wrapping_add(d)
                } else {
                    data[p].wrapping_sub(d)
                }
            };
        }
        // Aligned u16, either byte order.
        4 if len >= 2 => {
            let p = pos(rng, len - 1) & !1;
            let v = INTERESTING16[rng.gen_range(0..INTERESTING16.len())];
            let b = if rng.gen() {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            data[p..p + 2].copy_from_slice(&b);
        }
        // Aligned u32, either byte order; or a small add to one (lengths, counts).
        5 | 6 if len >= 4 => {
            let p = pos(rng, len - 3) & !3;
            let v = if op == 5 {
                INTERESTING32[rng.gen_range(0..INTERESTING32.len())]
            } else {
                let old = u32::from_le_bytes(data[p..p + 4].try_into().unwrap());
                old.wrapping_add(rng.gen_range(1..=64))
                    .wrapping_mul(if rng.gen() { 1 } else { u32::MAX })
            };
            let b = if rng.gen() {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            data[p..p + 4].copy_from_slice(&b);
        }
        // Insert random bytes.
        7 => {
            let p = rng.gen_range(0..=len);
            let k = rng.gen_range(1..=32);
            let bytes: Vec<u8> = (0..k).map(|_| rng.gen()).collect();
            data.splice(p..p, bytes);
        }
        // Delete a range.
        8 => {
            let p = pos(rng, len);
            let k = rng.gen_range(1..=(len - p).min(256));
            data.drain(p..p + k);
        }
        // Duplicate a range somewhere else.
        9 => {
            let p = rng.gen_range(0..len);
            let k = rng.gen_range(1..=(len - p).min(512));
            let chunk = data[p..p + k].to_vec();
            let at = rng.gen_range(0..=len);
            data.splice(at..at, chunk);
        }
        // Truncate.
        10 => {
            let keep = if rng.gen() {
                pos(rng, len)
            } else {
                rng.gen_range(0..len)
            };
            data.truncate(keep);
        }
        // Splice: a prefix of this input and a suffix of another.
        11 if !other.is_empty() => {
            let a = rng.gen_range(0..=len);
            let b = rng.gen_range(0..other.len());
            data.truncate(a);
            data.extend_from_slice(&other[b..]);
        }
        // A dictionary token, inserted or written over.
        _ if !dict.is_empty() => {
            let tok = &dict[rng.gen_range(0..dict.len())];
            let p = rng.gen_range(0..=len);
            if rng.gen() || p + tok.len() > len {
                data.splice(p..p, tok.iter().copied());
            } else {
                data[p..p + tok.len()].copy_from_slice(tok);
            }
        }
        _ => {
            let p = pos(rng, len);
            data[p] ^= 0xFF;
        }
    }
}

fn dictionary(target: &str) -> Vec<Vec<u8>> {
    let words: &[&str] = match target {
        "decode" => &[
            "RIFF",
            "WAVE",
            "fmt ",
            "data",
            "LIST",
            "INFO",
            "fLaC",
            "OggS",
            "ID3",
            "Xing",
            "Info",
            "LAME",
            "FORM",
            "AIFF",
            "COMM",
            "SSND",
            "ftyp",
            "moov",
            "\u{1}vorbis",
            "OpusHead",
        ],
        "multipart" => &[
            "\r\n",
            "--",
            "--X-FUZZ-BOUNDARY",
            "--X-FUZZ-BOUNDARY--\r\n",
            "\r\n\r\n",
            "Content-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n",
            "Content-Disposition: form-data; name=\"note\"\r\n",
            "Content-Type: audio/wav\r\n",
            "name=\"audio\"",
            "filename=\"\"",
            "filename*=UTF-8''%FF.wav",
            "; boundary=",
            "\"",
            "RIFF",
            "fmt ",
            "data",
        ],
        "json" => &[
            "\"",
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "null",
            "true",
            "false",
            "0",
            "-1",
            "-0",
            "1e308",
            "1e999",
            "0.5",
            "4294967296",
            "18446744073709551616",
            "\\u0000",
            "\\ud800",
            "\\\"",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            "\"tags\"",
            "\"duration\"",
            "\"bpm\"",
            "\"keyscale\"",
            "\"timesignature\"",
            "\"seed\"",
            "\"webhook\"",
            "\"model\"",
            "\"url\"",
            "\"enabled\"",
            "\"amount\"",
            "{MEDIA}",
            "http://",
            "https://[::1]/",
            "/media/",
        ],
        "range" => &[
            "bytes=",
            "-",
            ",",
            " ",
            "0",
            "1",
            "9",
            "100",
            "18446744073709551615",
            "18446744073709551616",
            "{LM}",
            "\"",
            "W/",
            "GMT",
            "\n",
            "Sat, ",
            "items=",
            "*",
        ],
        _ => &[],
    };
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

fn truncate(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

/// An outcome label: digits folded so that "rate 123 Hz" and "rate 456 Hz" count once.
fn norm(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    truncate(&out, 90)
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn hexdump(data: &[u8], max: usize) -> String {
    let mut s = String::new();
    for (i, chunk) in data[..data.len().min(max)].chunks(16).enumerate() {
        s.push_str(&format!("{:08x}: ", i * 16));
        for b in chunk {
            s.push_str(&format!("{b:02x} "));
        }
        s.push_str(&"   ".repeat(16 - chunk.len()));
        s.extend(chunk.iter().map(|&b| {
            if (0x20..0x7F).contains(&b) {
                b as char
            } else {
                '.'
            }
        }));
        s.push('\n');
    }
    if data.len() > max {
        s.push_str(&format!("… {} bytes in all\n", data.len()));
    }
    s
}

/// Splits off the first line (without its `\n`).
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Target: decode / probe.

const EXTS: [Option<&str>; 5] = [None, Some("wav"), Some("mp3"), Some("flac"), Some("ogg")];

fn exec_decode(input: &[u8], replay: bool) -> Result<String, String> {
    if replay {
        let mut labels = Vec::new();
        for ext in EXTS {
            labels.push(decode_one(input, ext)?);
        }
        return Ok(labels.join(" / "));
    }
    decode_one(input, EXTS[(fnv(input) % EXTS.len() as u64) as usize])
}

fn audio_label(e: &soundcheck::audio::Error) -> String {
    format!("{}: {}", e.code(), norm(&e.to_string()))
}

fn decode_one(input: &[u8], ext: Option<&str>) -> Result<String, String> {
    use soundcheck::audio::limits::{MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
    let rate_ok = |r: u32| (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&r);
    let probe = match soundcheck::audio::probe_bytes(bytes::Bytes::copy_from_slice(input), ext) {
        Ok(p) => {
            if !rate_ok(p.sample_rate) || p.channels == 0 || p.channels > MAX_CHANNELS {
                return Err(format!(
                    "probe accepted {} Hz, {} channels (outside the documented bounds)",
                    p.sample_rate, p.channels
                ));
            }
            "ok".to_string()
        }
        Err(e) => audio_label(&e),
    };
    let decoded = match soundcheck::audio::decode::decode_bytes(input.to_vec(), ext) {
        Ok(audio) => {
            let frames = audio.frames();
            if !rate_ok(audio.sample_rate)
                || audio.channels.is_empty()
                || audio.channels.len() > MAX_CHANNELS
            {
                return Err(format!(
                    "decode returned {} Hz, {} channels (outside the documented bounds)",
                    audio.sample_rate,
                    audio.channels.len()
                ));
            }
            if audio.channels.iter().any(|c| c.len() != frames) {
                return Err("decode returned channels of different lengths".into());
            }
            if audio.channels.iter().flatten().any(|s| !s.is_finite()) {
                return Err("decode returned a NaN or infinite sample".into());
            }
            // What the analysis job would do with it (bounded to short audio to keep the rate up).
            if frames > 0 && audio.duration_secs() <= 30.0 {
                match soundcheck::engines::analyze::full(&audio, &|_| {}) {
                    Ok(_) => "ok+analysis ok".to_string(),
                    Err(e) => format!("ok+analysis {}", audio_label(&e)),
                }
            } else {
                "ok".to_string()
            }
        }
        Err(e) => audio_label(&e),
    };
    Ok(format!("probe {probe} | decode {decoded}"))
}

// ---------------------------------------------------------------------------------------------
// The in-process server for the HTTP targets.

struct Server {
    rt: tokio::runtime::Runtime,
    base: String,
    client: reqwest::Client,
    secrets: soundcheck::app::Secrets,
    /// A result file: its URL, bytes and Last-Modified.
    media_url: String,
    media: Vec<u8>,
    modified: SystemTime,
    _dir: tempfile::TempDir,
}

struct Response {
    status: u16,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl Server {
    fn start() -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut config = soundcheck::config::Config::for_data_dir(&soundcheck::config::DataArgs {
            data_dir: Some(dir.path().to_path_buf()),
        })
        .map_err(|e| e.to_string())?;
        config.time_scale = 0.001;
        config.workers = 1;
        config.webhook_timeout = Duration::from_secs(2);
        let (listener, base) = rt
            .block_on(async {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let base = format!("http://{}", l.local_addr()?);
                Ok::<_, std::io::Error>((l, base))
            })
            .map_err(|e| e.to_string())?;
        let registry = soundcheck::engines::registry(&config);
        let (store, secrets) = rt
            .block_on(soundcheck::app::open_store(&config))
            .map_err(|e| e.to_string())?;
        let media = rt
            .block_on(soundcheck::app::open_media(&config, &store))
            .map_err(|e| e.to_string())?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        rt.spawn(soundcheck::app::run(
            config,
            store,
            secrets.clone(),
            media,
            registry,
            listener,
            shutdown,
        ));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let mut s = Server {
            rt,
            base,
            client,
            secrets,
            media_url: String::new(),
            media: Vec::new(),
            modified: UNIX_EPOCH,
            _dir: dir,
        };
        s.make_media()?;
        Ok(s)
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Response, String> {
        let req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .headers(headers)
            .body(body);
        self.rt.block_on(async {
            let resp = req
                .send()
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .bytes()
                .await
                .map_err(|e| format!("reading the response failed: {e}"))?;
            Ok(Response {
                status,
                headers,
                body,
            })
        })
    }

    fn bearer(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", self.secrets.tl_key)).unwrap(),
        );
        h
    }

    /// Runs one `/v1/master` job on a generated WAV and keeps its result file (for `range` and the
    /// JSON `url` bodies). Polls once a second (the poll limit).
    fn make_media(&mut self) -> Result<(), String> {
        let wav = wav_bytes(44_100, 2, 1.0, WavKind::S16);
        let boundary = "X-FUZZ-BOUNDARY";
        let body = multipart_body(boundary, &[], Some(("a.wav", &wav)));
        let mut h = self.bearer();
        h.insert(
            "content-type",
            HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}")).unwrap(),
        );
        let r = self.send(Method::POST, "/v1/master", h, body)?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("master submit answered {}: {e}", r.status))?;
        let id = v["job_id"]
            .as_str()
            .ok_or(format!("master submit answered {}: {v}", r.status))?
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(180);
        let job = loop {
            std::thread::sleep(Duration::from_millis(1100));
            let r = self.send(
                Method::GET,
                &format!("/v1/jobs/{id}"),
                self.bearer(),
                vec![],
            )?;
            let v: serde_json::Value =
                serde_json::from_slice(&r.body).map_err(|e| format!("job poll: {e}"))?;
            match v["status"].as_str() {
                Some("completed") => break v,
                Some("failed") => return Err(format!("the master job failed: {v}")),
                _ if Instant::now() > deadline => {
                    return Err("the master job took over 180 s".into())
                }
                _ => {}
            }
        };
        let url = find_media_url(&job).ok_or(format!("no media URL in {job}"))?;
        let path = url
            .find("/media/")
            .map(|i| url[i..].to_string())
            .ok_or("odd media URL")?;
        let r = self.send(Method::GET, &path, HeaderMap::new(), vec![])?;
        if r.status != 200 {
            return Err(format!("GET {path} answered {}", r.status));
        }
        self.modified = r
            .headers
            .get("last-modified")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .ok_or("the media file has no Last-Modified")?;
        self.media = r.body.to_vec();
        self.media_url = url;
        Ok(())
    }
}

fn find_media_url(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if s.contains("/media/") => Some(s.clone()),
        serde_json::Value::Array(a) => a.iter().find_map(find_media_url),
        serde_json::Value::Object(o) => o.values().find_map(find_media_url),
        _ => None,
    }
}

/// The contract for every response: no 5xx but 503, and errors in the envelope. The label names
/// the status and, for errors, the code and the message with digits folded.
///
/// `501 engine_unavailable` is the documented answer for a generator or engine that is not
/// installed (a `model` name the fuzzer made up), so it passes; every other 5xx but 503 fails.
fn check_response(r: &Response) -> Result<String, String> {
    let text = || truncate(&String::from_utf8_lossy(&r.body), 300);
    if r.status < 400 {
        return Ok(format!("{}", r.status));
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .map_err(|_| format!("status {} without a JSON envelope: {}", r.status, text()))?;
    let e = &v["error"];
    let (code, msg) = match (
        e["code"].as_str(),
        e["message"].as_str(),
        e["trace_id"].as_str(),
    ) {
        (Some(code), Some(msg), Some(_)) => (code, msg),
        _ => {
            return Err(format!(
                "status {} with a body that is not the envelope: {}",
                r.status,
                text()
            ))
        }
    };
    let documented = r.status == 503 || (r.status == 501 && code == "engine_unavailable");
    if r.status >= 500 && !documented {
        return Err(format!("status {} {code}: {msg}", r.status));
    }
    // The message up to the first quoted part (which echoes the input) names the outcome.
    let head = msg.split(['`', '"']).next().unwrap_or_default();
    Ok(format!("{} {code}: {}", r.status, norm(head)))
}

// ---------------------------------------------------------------------------------------------
// Target: multipart.

fn exec_multipart(srv: &Server, input: &[u8]) -> Result<String, String> {
    let (route, rest) = split_line(input);
    let (content_type, body) = split_line(rest);
    let (path, analyze) = match route {
        b"analyze" => ("/v1/analyze/upload", true),
        b"tempo" => ("/v1/analyze", false),
        b"features" => ("/v1/features", false),
        _ => ("/v1/metadata", false),
    };
    let mut h = srv.bearer();
    if let Ok(v) = HeaderValue::from_bytes(content_type) {
        h.insert("content-type", v);
    }
    if analyze {
        // Most jobs fail at once (the refund path); one in four runs the analysis for real.
        // Deliveries never leave the process either way.
        let fault = if fnv(input) % 4 == 0 {
            "webhook_fail"
        } else {
            "internal_error,webhook_fail"
        };
        h.insert("x-soundcheck-fault", HeaderValue::from_static(fault));
    }
    let r = srv.send(Method::POST, path, h, body.to_vec())?;
    let label = check_response(&r)?;
    if r.status == 402 {
        top_up(srv)?;
    }
    Ok(format!("{} {label}", String::from_utf8_lossy(route)))
}

fn top_up(srv: &Server) -> Result<(), String> {
    let mut h = srv.bearer();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    let r = srv.send(
        Method::POST,
        "/v1/credits",
        h,
        br#"{"amount":1000000}"#.to_vec(),
    )?;
    if r.status != 200 {
        return Err(format!("top-up answered {}", r.status));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Target: JSON bodies.

fn exec_json(srv: &Server, input: &[u8]) -> Result<String, String> {
    let (route, body) = split_line(input);
    let body = replace(body, b"{MEDIA}", srv.media_url.as_bytes());
    let mut h = HeaderMap::new();
    let (method, path) = match route {
        b"generations" => {
            h.insert(
                "x-api-key",
                HeaderValue::from_str(&srv.secrets.ft_key).unwrap(),
            );
            // A generation that is accepted fails at once instead of composing up to 10 minutes
            // of music, and its webhook is never sent.
            h.insert(
                "x-soundcheck-fault",
                HeaderValue::from_static("internal_error,webhook_fail"),
            );
            (Method::POST, "/v1/generations")
        }
        b"webhook" => (Method::PUT, "/v1/webhook"),
        b"credits" => (Method::POST, "/v1/credits"),
        b"features" => (Method::POST, "/v1/features"),
        b"metadata" => (Method::POST, "/v1/metadata"),
        _ => (Method::POST, "/v1/analyze"),
    };
    if route != b"generations" {
        h.extend(srv.bearer());
    }
    h.insert("content-type", HeaderValue::from_static("application/json"));
    let r = srv.send(method, path, h, body)?;
    let label = check_response(&r)?;
    Ok(format!("{} {label}", String::from_utf8_lossy(route)))
}

/// Puts the webhook endpoint back to none after the JSON target set it to whatever.
fn reset_webhook(srv: &Server) {
    let mut h = srv.bearer();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    let _ = srv.send(Method::PUT, "/v1/webhook", h, br#"{"url":null}"#.to_vec());
}

// ---------------------------------------------------------------------------------------------
// Target: Range / If-Range.

fn exec_range(srv: &Server, input: &[u8]) -> Result<String, String> {
    let lm = httpdate::fmt_http_date(srv.modified);
    let input = replace(input, b"{LM}", lm.as_bytes());
    let mut lines = input.split(|&b| b == b'\n');
    let range = lines.next().unwrap_or_default();
    let if_range = lines.next().unwrap_or_default();
    let extra: Vec<&[u8]> = lines.collect();
    let mut h = HeaderMap::new();
    // Bytes a header value cannot hold (controls but tab, DEL) become digits, so that every input
    // makes a request.
    let mut add = |name: &'static str, v: &[u8]| {
        if v.is_empty() {
            return;
        }
        let v: Vec<u8> = v
            .iter()
            .map(|&b| {
                if (b < 0x20 && b != b'\t') || b == 0x7F {
                    b'0' + b % 10
                } else {
                    b
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_bytes(&v) {
            h.append(HeaderName::from_static(name), v);
        }
    };
    add("range", range);
    add("if-range", if_range);
    for v in &extra {
        add("range", v);
    }
    // The parser itself, in process.
    let mut local = h.clone();
    soundcheck::api::media::range_preconditions(&mut local, Some(srv.modified));
    if local.contains_key("if-range") {
        return Err("range_preconditions left an If-Range".into());
    }
    let kept = local.contains_key("range");
    // And through the server.
    let path = srv
        .media_url
        .find("/media/")
        .map(|i| &srv.media_url[i..])
        .unwrap_or_default();
    let r = srv.send(Method::GET, path, h, vec![])?;
    let total = srv.media.len();
    match r.status {
        200 => {
            if r.body[..] != srv.media[..] {
                return Err(format!(
                    "200 with {} bytes, not the {total}-byte file",
                    r.body.len()
                ));
            }
        }
        206 => {
            let cr = r
                .headers
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .ok_or("206 without Content-Range")?;
            let span = cr
                .strip_prefix("bytes ")
                .and_then(|s| s.split_once('/'))
                .and_then(|(span, len)| {
                    let (a, b) = span.split_once('-')?;
                    Some((
                        a.parse::<usize>().ok()?,
                        b.parse::<usize>().ok()?,
                        len.parse::<usize>().ok()?,
                    ))
                });
            let Some((a, b, len)) = span else {
                return Err(format!("206 with Content-Range {cr:?}"));
            };
            if a > b || b >= len || len != total {
                return Err(format!(
                    "206 with Content-Range {cr:?} for a {total}-byte file"
                ));
            }
            if r.body.len() != b - a + 1 {
                return Err(format!(
                    "206 with Content-Range {cr:?} but {} body bytes",
                    r.body.len()
                ));
            }
            if r.body[..] != srv.media[a..=b] {
                return Err(format!(
                    "206 with Content-Range {cr:?}: not those bytes of the file"
                ));
            }
            if !kept {
                return Err("206 although range_preconditions dropped the Range".into());
            }
        }
        416 => {
            // In the envelope, with the size the client needs to ask again.
            check_response(&r)?;
            let cr = r.headers.get("content-range").and_then(|v| v.to_str().ok());
            if cr != Some(format!("bytes */{total}").as_str()) {
                return Err(format!(
                    "416 with Content-Range {cr:?} for a {total}-byte file"
                ));
            }
        }
        s => {
            return Err(format!(
                "status {s}: {}",
                truncate(&String::from_utf8_lossy(&r.body), 200)
            ))
        }
    }
    Ok(format!(
        "{} range {}{}{}",
        r.status,
        if kept { "kept" } else { "dropped" },
        if if_range.is_empty() {
            ""
        } else {
            ", with If-Range"
        },
        if extra.is_empty() {
            ""
        } else {
            ", several Range headers"
        }
    ))
}

// ---------------------------------------------------------------------------------------------
// The loop.

#[derive(Default)]
struct Stats {
    cases: u64,
    elapsed: f64,
    outcomes: BTreeMap<String, u64>,
    /// Failures by kind (message with digits folded) and how many inputs hit each.
    failures: BTreeMap<String, u64>,
    panics: u64,
    peak_over_baseline: usize,
    regressions: usize,
}

struct Runner<'a> {
    target: usize,
    out: PathBuf,
    current: fs::File,
    srv: Option<&'a Server>,
    stats: Stats,
    verbose: bool,
}

impl Runner<'_> {
    fn name(&self) -> &'static str {
        TARGETS[self.target]
    }

    /// Runs one input under the harness's checks; records the outcome or the failure.
    fn case(&mut self, input: &[u8], replay: bool) {
        let _ = self.current.set_len(0);
        let _ = self.current.write_all_at(input, 0);
        let refused = REFUSED.load(Ordering::Relaxed);
        CASE_TARGET.store(self.target, Ordering::Relaxed);
        CASE_START.store(now_ms() + 1, Ordering::Relaxed);
        let srv = self.srv;
        let target = self.target;
        let result = panic::catch_unwind(AssertUnwindSafe(|| match (target, srv) {
            (0, _) => exec_decode(input, replay),
            (1, Some(s)) => exec_multipart(s, input),
            (2, Some(s)) => exec_json(s, input),
            (3, Some(s)) => exec_range(s, input),
            _ => Err("no server".into()),
        }));
        CASE_START.store(0, Ordering::Relaxed);
        self.stats.cases += 1;
        let mut verdict = match result {
            Ok(r) => r,
            Err(p) => Err(format!("panic: {}", panic_text(&*p))),
        };
        if REFUSED.load(Ordering::Relaxed) != refused {
            verdict = Err(format!(
                "an allocation of {} bytes was refused (live heap past the baseline + 1 GiB)",
                REFUSED_SIZE.load(Ordering::Relaxed)
            ));
        }
        match verdict {
            Ok(label) => *self.stats.outcomes.entry(label).or_default() += 1,
            Err(why) => self.fail(input, why),
        }
    }

    /// Records a failure; the first three inputs of each kind are saved and printed.
    fn fail(&mut self, input: &[u8], why: String) {
        let seen = self.stats.failures.entry(norm(&why)).or_default();
        *seen += 1;
        if *seen > 3 {
            return;
        }
        let dir = self.out.join("crashes");
        let _ = fs::create_dir_all(&dir);
        let path = dir.join(format!("{}-{:016x}.bin", self.name(), fnv(input)));
        let _ = fs::write(&path, input);
        eprintln!(
            "\nFAIL {}: {why}\n  input saved to {}\n{}",
            self.name(),
            path.display(),
            hexdump(input, 256)
        );
    }
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `summary-<target>.txt`: what the supervisor adds up (cases, seconds, outcomes, panics, peak MB,
/// failures).
fn write_summary(args: &Args, name: &str, s: &Stats, started: Instant, live_before: usize) {
    let peak_mb =
        PEAK.load(Ordering::Relaxed).saturating_sub(live_before) as f64 / (1 << 20) as f64;
    let _ = fs::write(
        args.out.join(format!("summary-{name}.txt")),
        format!(
            "{} {:.3} {} {} {peak_mb:.1} {}\n",
            s.cases,
            started.elapsed().as_secs_f64(),
            s.outcomes.len(),
            PANICS.load(Ordering::Relaxed),
            s.failures.values().sum::<u64>()
        ),
    );
}

fn run_target(args: &Args, target: usize, srv: Option<&Server>, rng: &mut StdRng) -> Stats {
    let name = TARGETS[target];
    let corpus: Vec<Vec<u8>> = read_dir_sorted(&args.root.join("tests/fuzz/corpus").join(name))
        .iter()
        .filter_map(|p| fs::read(p).ok())
        .collect();
    let regressions: Vec<PathBuf> = read_dir_sorted(&args.root.join("tests/fuzz/regressions"))
        .into_iter()
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.split('-').next() == Some(name) && !args.skip.iter().any(|s| s == n)
            })
        })
        .collect();
    let _ = fs::create_dir_all(&args.out);
    let current = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(args.out.join(format!("current-{name}.bin")))
        .expect("target/fuzz is writable");
    let mut r = Runner {
        target,
        out: args.out.clone(),
        current,
        srv,
        stats: Stats::default(),
        verbose: args.verbose,
    };
    let panics_before = PANICS.load(Ordering::Relaxed);
    let live_before = LIVE.load(Ordering::Relaxed);
    PEAK.store(live_before, Ordering::Relaxed);
    let started = Instant::now();
    // Replay: every committed regression (every extension hint), then the corpus as it is.
    for p in &regressions {
        let input = fs::read(p).unwrap_or_default();
        let before: u64 = r.stats.failures.values().sum();
        r.case(&input, true);
        let failed = r.stats.failures.values().sum::<u64>() > before;
        if r.verbose || failed {
            eprintln!(
                "  regression {}: {}",
                p.display(),
                if failed { "FAILED" } else { "ok" }
            );
        }
    }
    r.stats.regressions = regressions.len();
    for input in &corpus {
        r.case(input, true);
    }
    // Mutate until the budget is spent.
    let dict = dictionary(name);
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let has_route = matches!(name, "multipart" | "json");
    let mut last_report = Instant::now();
    if !corpus.is_empty() {
        while Instant::now() < deadline {
            let seed = &corpus[rng.gen_range(0..corpus.len())];
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let input = if has_route {
                // The route line stays; the rest is mutated (splices take the partner's rest).
                let (route, rest) = split_line(seed);
                let (_, other_rest) = split_line(other);
                let mut body = rest.to_vec();
                mutate(rng, &mut body, other_rest, &dict);
                let mut input = route.to_vec();
                input.push(b'\n');
                input.extend_from_slice(&body);
                input
            } else {
                let mut input = seed.clone();
                mutate(rng, &mut input, other, &dict);
                input
            };
            r.case(&input, false);
            // Twice a second the counts go to disk, so a process that dies still reports.
            if r.stats.cases % 64 == 0 && last_report.elapsed() > Duration::from_millis(500) {
                last_report = Instant::now();
                write_summary(args, name, &r.stats, started, live_before);
            }
        }
    }
    write_summary(args, name, &r.stats, started, live_before);
    r.stats.elapsed = started.elapsed().as_secs_f64();
    r.stats.panics = PANICS.load(Ordering::Relaxed) - panics_before;
    r.stats.peak_over_baseline = PEAK.load(Ordering::Relaxed).saturating_sub(live_before);
    if name == "json" {
        if let Some(s) = srv {
            reset_webhook(s);
        }
    }
    r.stats
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz: {e}");
            std::process::exit(2);
        }
    };
    EPOCH.get_or_init(Instant::now);
    if args.make_seeds {
        if let Err(e) = seeds::write_all(&args.root) {
            eprintln!("fuzz: --make-seeds: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.child || !args.replay.is_empty() {
        child(&args);
    }
    supervise(&args);
}

/// Exit status of a child whose watchdog caught a hang (the input is already saved).
const EXIT_HANG: i32 = 3;
/// Most restarts of one target after its process died.
const MAX_RESTARTS: u32 = 25;

/// Runs each target in a child process of its own, so that an input that aborts the process (an
/// allocation refused by the memory limit aborts) or hangs it is saved and the target goes on,
/// with a new seed, for the rest of its budget.
fn supervise(args: &Args) -> ! {
    let _ = fs::remove_dir_all(args.out.join("crashes"));
    let _ = fs::create_dir_all(args.out.join("crashes"));
    let exe = std::env::current_exe().expect("own path");
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failed = 0u64;
    for &t in &args.targets {
        let name = TARGETS[t];
        let t0 = Instant::now();
        let mut total = Summary::default();
        let mut restarts = 0;
        let mut skip: Vec<String> = Vec::new();
        loop {
            let left = args.seconds - t0.elapsed().as_secs_f64();
            let summary_path = args.out.join(format!("summary-{name}.txt"));
            let _ = fs::remove_file(&summary_path);
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["--child", "--target", name, "--out"])
                .arg(&args.out)
                .args(["--seconds", &format!("{:.1}", left.max(0.0))])
                .args(["--seed", &(args.seed + restarts as u64).to_string()]);
            if args.verbose {
                cmd.arg("--verbose");
            }
            for n in &skip {
                cmd.args(["--skip", n]);
            }
            let status = cmd.status().expect("the fuzz child starts");
            if let Some(s) = fs::read_to_string(&summary_path)
                .ok()
                .and_then(|s| Summary::parse(&s))
            {
                total.add(&s);
            }
            match status.code() {
                Some(0) | Some(1) => break,
                code => {
                    total.failures += 1;
                    if code != Some(EXIT_HANG) {
                        let current = args.out.join(format!("current-{name}.bin"));
                        let saved = args
                            .out
                            .join("crashes")
                            .join(format!("{name}-died-{restarts}.bin"));
                        let _ = fs::copy(&current, &saved);
                        let input = fs::read(&current).unwrap_or_default();
                        // A committed regression that kills the process is not replayed again.
                        for p in read_dir_sorted(&args.root.join("tests/fuzz/regressions")) {
                            if fs::read(&p).ok().as_deref() == Some(&input[..]) {
                                if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                                    skip.push(n.to_string());
                                }
                            }
                        }
                        eprintln!(
                            "\nFAIL {name}: the process died ({status}); its last input is saved to {}\n{}",
                            saved.display(),
                            hexdump(&input, 256)
                        );
                    }
                    restarts += 1;
                    if restarts > MAX_RESTARTS || t0.elapsed().as_secs_f64() > args.seconds - 2.0 {
                        break;
                    }
                    eprintln!(
                        "  restarting {name} with seed {}",
                        args.seed + restarts as u64
                    );
                }
            }
        }
        total.elapsed = t0.elapsed().as_secs_f64();
        failed += total.failures;
        rows.push((name, total));
    }
    println!(
        "\n== fuzz summary (seed {}, {:.0} s per target)",
        args.seed, args.seconds
    );
    println!(
        "{:<10} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "target", "cases", "seconds", "cases/s", "outcomes", "panics*", "peak MB", "failures"
    );
    for (name, s) in &rows {
        println!(
            "{:<10} {:>8} {:>9.1} {:>9.1} {:>9} {:>8} {:>8.1} {:>8}",
            name,
            s.cases,
            s.elapsed,
            s.cases as f64 / s.elapsed.max(1e-9),
            s.outcomes,
            s.panics,
            s.peak_mb,
            s.failures
        );
    }
    println!("(panics*: caught inside the code under test, e.g. decode's guard around symphonia; not failures by themselves)");
    println!("(peak MB: highest live heap above the start of the target; an input may add at most 1024 MB)");
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    if failed > 0 {
        println!(
            "{failed} failure(s); inputs in {}",
            args.out.join("crashes").display()
        );
        std::process::exit(1);
    }
    println!("no failures");
    std::process::exit(0);
}

/// What a child reports to its supervisor (one line in `summary-<target>.txt`).
#[derive(Default)]
struct Summary {
    cases: u64,
    elapsed: f64,
    outcomes: u64,
    panics: u64,
    peak_mb: f64,
    failures: u64,
}

impl Summary {
    fn parse(s: &str) -> Option<Summary> {
        let v: Vec<&str> = s.split_whitespace().collect();
        Some(Summary {
            cases: v.first()?.parse().ok()?,
            elapsed: v.get(1)?.parse().ok()?,
            outcomes: v.get(2)?.parse().ok()?,
            panics: v.get(3)?.parse().ok()?,
            peak_mb: v.get(4)?.parse().ok()?,
            failures: v.get(5)?.parse().ok()?,
        })
    }
    fn add(&mut self, o: &Summary) {
        self.cases += o.cases;
        self.outcomes = self.outcomes.max(o.outcomes);
        self.panics += o.panics;
        self.peak_mb = self.peak_mb.max(o.peak_mb);
        self.failures += o.failures;
    }
}

/// `--replay`: each file once through the target, its outcome or failure printed; exits 1 if any
/// failed.
fn replay_files(args: &Args, target: usize, srv: Option<&Server>) -> ! {
    let name = TARGETS[target];
    let _ = fs::create_dir_all(&args.out);
    let current = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(args.out.join(format!("current-{name}.bin")))
        .expect("target/fuzz is writable");
    let mut r = Runner {
        target,
        out: args.out.clone(),
        current,
        srv,
        stats: Stats::default(),
        verbose: true,
    };
    let mut failed = false;
    for p in &args.replay {
        let input = match fs::read(p) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("{}: {e}", p.display());
                failed = true;
                continue;
            }
        };
        let before: u64 = r.stats.failures.values().sum();
        r.case(&input, true);
        if r.stats.failures.values().sum::<u64>() > before {
            failed = true;
            println!("{}: FAILED", p.display());
        } else {
            let label = r.stats.outcomes.keys().last().cloned().unwrap_or_default();
            r.stats.outcomes.clear();
            println!("{}: ok ({label})", p.display());
        }
    }
    let sites = PANIC_SITES.lock().map(|s| s.clone()).unwrap_or_default();
    for (site, n) in &sites {
        println!("  panic x{n}: {site}");
    }
    std::process::exit(if failed { 1 } else { 0 });
}

/// One target in this process: replay, then mutate for the budget; exits 0, or 1 on failures.
fn child(args: &Args) -> ! {
    install_panic_hook();
    start_watchdog(args.out.clone());
    let t = args.targets[0];
    let name = TARGETS[t];
    let srv = if t != 0 {
        let t0 = Instant::now();
        match Server::start() {
            Ok(s) => {
                println!(
                    "{name}: server up, result file made, in {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
                Some(s)
            }
            Err(e) => {
                eprintln!("fuzz: could not start the server: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    // Everything the harness keeps is allocated; from here one input may add at most 1 GiB.
    let baseline = LIVE.load(Ordering::Relaxed);
    LIMIT.store(baseline + memory_budget(), Ordering::Relaxed);
    if !args.replay.is_empty() {
        replay_files(args, t, srv.as_ref());
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let s = run_target(args, t, srv.as_ref(), &mut rng);
    let peak_mb = s.peak_over_baseline as f64 / (1 << 20) as f64;
    println!(
        "{name}: {} cases in {:.1} s ({:.1}/s), {} distinct outcomes, {} contained panics, \
         peak +{peak_mb:.1} MB, {} regression inputs replayed, {} failure(s)",
        s.cases,
        s.elapsed,
        s.cases as f64 / s.elapsed.max(1e-9),
        s.outcomes.len(),
        s.panics,
        s.regressions,
        s.failures.values().sum::<u64>()
    );
    let mut v: Vec<_> = s.outcomes.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    let shown = if args.verbose { v.len() } else { 10 };
    for (label, n) in v.iter().take(shown) {
        println!("  {n:>7}  {label}");
    }
    if v.len() > shown {
        println!(
            "  … {} more outcomes (--verbose lists all)",
            v.len() - shown
        );
    }
    for (why, n) in &s.failures {
        println!("  FAILURE x{n}: {why}");
    }
    let sites = PANIC_SITES.lock().map(|s| s.clone()).unwrap_or_default();
    if !sites.is_empty() {
        println!("  panic sites (caught or not):");
        for (site, n) in &sites {
            println!("  {n:>7}  {site}");
        }
    }
    let _ = std::io::stdout().flush();
    std::process::exit(if s.failures.is_empty() { 0 } else { 1 });
}

// ---------------------------------------------------------------------------------------------
// Generated test audio (seeds and the server's result file).

#[derive(Clone, Copy)]
enum WavKind {
    U8,
    S16,
    S24,
    F32,
}

/// A tone (440 Hz and a fifth above, a little apart per channel) as a WAV file in memory.
fn wav_bytes(rate: u32, channels: u16, secs: f64, kind: WavKind) -> Vec<u8> {
    let (bits, format) = match kind {
        WavKind::U8 => (8, hound::SampleFormat::Int),
        WavKind::S16 => (16, hound::SampleFormat::Int),
        WavKind::S24 => (24, hound::SampleFormat::Int),
        WavKind::F32 => (32, hound::SampleFormat::Float),
    };
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: format,
    };
    let mut cur = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        let frames = (rate as f64 * secs) as usize;
        for i in 0..frames {
            for c in 0..channels {
                let s = tone(i, rate, c);
                match kind {
                    WavKind::U8 => w.write_sample((s * 127.0) as i8).unwrap(),
                    WavKind::S16 => w.write_sample((s * 32767.0) as i16).unwrap(),
                    WavKind::S24 => w.write_sample((s * 8_388_607.0) as i32).unwrap(),
                    WavKind::F32 => w.write_sample(s).unwrap(),
                }
            }
        }
        w.finalize().unwrap();
    }
    cur.into_inner()
}

fn tone(i: usize, rate: u32, channel: u16) -> f32 {
    let t = i as f64 / rate as f64;
    let f = 440.0 * (1.0 + 0.01 * channel as f64);
    (0.4 * (2.0 * std::f64::consts::PI * f * t).sin()
        + 0.2 * (2.0 * std::f64::consts::PI * f * 1.5 * t).sin()) as f32
}

fn multipart_body(
    boundary: &str,
    fields: &[(&str, &str)],
    audio: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((filename, data)) = audio {
        b.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; \
                 filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    b
}

mod seeds {
    //! `--make-seeds`: writes `tests/fuzz/corpus/<target>/` and the generated regression inputs
    //! (the known hostile WAVs of issue 14) from code, so the corpus can be regenerated and read.

    use super::*;
    use soundcheck::audio::{Audio, Format};

    fn put(dir: &Path, name: &str, data: &[u8]) -> Result<(), String> {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        fs::write(dir.join(name), data).map_err(|e| format!("{name}: {e}"))
    }

    fn encoded(rate: u32, channels: u16, secs: f64, format: Format) -> Result<Vec<u8>, String> {
        let frames = (rate as f64 * secs) as usize;
        let audio = Audio {
            sample_rate: rate,
            channels: (0..channels)
                .map(|c| (0..frames).map(|i| tone(i, rate, c)).collect())
                .collect(),
        };
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join(format!("seed.{}", format.extension()));
        soundcheck::audio::encode(&audio, format, &path).map_err(|e| e.to_string())?;
        fs::read(&path).map_err(|e| e.to_string())
    }

    /// A 16-bit AIFF (big-endian PCM, 80-bit float rate), written by hand.
    fn aiff(rate: u32, secs: f64) -> Vec<u8> {
        let frames = (rate as f64 * secs) as u32;
        let mut data = Vec::new();
        for i in 0..frames as usize {
            data.extend_from_slice(&((tone(i, rate, 0) * 32767.0) as i16).to_be_bytes());
        }
        // 80-bit extended: sign+exponent, then a 64-bit mantissa with the integer bit set.
        let exp = 63 - (rate as u64).leading_zeros() as u16;
        let mantissa = (rate as u64) << (63 - exp);
        let mut comm = Vec::new();
        comm.extend_from_slice(&1u16.to_be_bytes());
        comm.extend_from_slice(&frames.to_be_bytes());
        comm.extend_from_slice(&16u16.to_be_bytes());
        comm.extend_from_slice(&(16383 + exp).to_be_bytes());
        comm.extend_from_slice(&mantissa.to_be_bytes());
        let mut body = b"AIFF".to_vec();
        body.extend_from_slice(b"COMM");
        body.extend_from_slice(&(comm.len() as u32).to_be_bytes());
        body.extend_from_slice(&comm);
        body.extend_from_slice(b"SSND");
        body.extend_from_slice(&(data.len() as u32 + 8).to_be_bytes());
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&data);
        let mut out = b"FORM".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The 144-byte WAV of issue 14 (mono 16-bit, 50 frames) with its fmt fields changed.
    fn hostile_wav(rate: u32, float: bool, data_len: Option<u32>) -> Vec<u8> {
        let mut w = if float {
            wav_bytes(11_025, 1, 25.0 / 11_025.0, WavKind::F32)
        } else {
            wav_bytes(11_025, 1, 50.0 / 11_025.0, WavKind::S16)
        };
        w[24..28].copy_from_slice(&rate.to_le_bytes());
        if let Some(n) = data_len {
            let at = data_offset(&w) - 4;
            w[at..at + 4].copy_from_slice(&n.to_le_bytes());
        }
        w
    }

    /// Where the samples of hound's WAV start (after the `data` id and size).
    fn data_offset(w: &[u8]) -> usize {
        w.windows(4)
            .position(|x| x == b"data")
            .expect("a data chunk")
            + 8
    }

    pub fn write_all(root: &Path) -> Result<(), String> {
        let corpus = root.join("tests/fuzz/corpus");
        let regressions = root.join("tests/fuzz/regressions");
        let fixtures = root.join("tests/fixtures/audio");
        let _ = fs::remove_dir_all(&corpus);

        // decode
        let d = corpus.join("decode");
        put(
            &d,
            "wav-u8-mono-8k.wav",
            &wav_bytes(8_000, 1, 0.25, WavKind::U8),
        )?;
        put(
            &d,
            "wav-s16-mono-8k.wav",
            &wav_bytes(8_000, 1, 0.5, WavKind::S16),
        )?;
        put(
            &d,
            "wav-s16-stereo-44k.wav",
            &wav_bytes(44_100, 2, 0.05, WavKind::S16),
        )?;
        put(
            &d,
            "wav-s16-4ch-8k.wav",
            &wav_bytes(8_000, 4, 0.1, WavKind::S16),
        )?;
        put(
            &d,
            "wav-s24-mono-16k.wav",
            &wav_bytes(16_000, 1, 0.1, WavKind::S24),
        )?;
        put(
            &d,
            "wav-f32-mono-8k.wav",
            &wav_bytes(8_000, 1, 0.25, WavKind::F32),
        )?;
        put(&d, "aiff-s16-mono-8k.aiff", &aiff(8_000, 0.25))?;
        put(
            &d,
            "flac-16-mono-22k.flac",
            &encoded(22_050, 1, 0.3, Format::Flac16)?,
        )?;
        put(
            &d,
            "flac-24-stereo-8k.flac",
            &encoded(8_000, 2, 0.2, Format::Flac24)?,
        )?;
        put(
            &d,
            "mp3-128k-mono-44k.mp3",
            &encoded(44_100, 1, 0.5, Format::Mp3 { kbps: 128 })?,
        )?;
        for f in ["tone_440hz.ogg", "tone_440hz.opus", "tone_440hz.m4a"] {
            let data = fs::read(fixtures.join(f)).map_err(|e| format!("{f}: {e}"))?;
            put(&d, &format!("fixture-{f}"), &data)?;
        }

        // multipart: `route\ncontent-type\nbody`
        let m = corpus.join("multipart");
        let b = "X-FUZZ-BOUNDARY";
        let ct = format!("multipart/form-data; boundary={b}");
        let small_wav = wav_bytes(8_000, 1, 0.1, WavKind::S16);
        let small_mp3 = encoded(44_100, 1, 0.1, Format::Mp3 { kbps: 128 })?;
        let small_flac = encoded(8_000, 1, 0.1, Format::Flac16)?;
        let mp = |route: &str, ct: &str, body: Vec<u8>| {
            let mut v = format!("{route}\n{ct}\n").into_bytes();
            v.extend_from_slice(&body);
            v
        };
        put(
            &m,
            "metadata-wav.bin",
            &mp(
                "metadata",
                &ct,
                multipart_body(b, &[], Some(("a.wav", &small_wav))),
            ),
        )?;
        put(
            &m,
            "metadata-mp3.bin",
            &mp(
                "metadata",
                &ct,
                multipart_body(b, &[], Some(("a.mp3", &small_mp3))),
            ),
        )?;
        put(
            &m,
            "metadata-flac.bin",
            &mp(
                "metadata",
                &ct,
                multipart_body(b, &[], Some(("a.flac", &small_flac))),
            ),
        )?;
        put(
            &m,
            "metadata-field.bin",
            &mp(
                "metadata",
                &ct,
                multipart_body(b, &[("note", "hello")], Some(("a.wav", &small_wav))),
            ),
        )?;
        put(
            &m,
            "analyze-wav.bin",
            &mp(
                "analyze",
                &ct,
                multipart_body(b, &[], Some(("a.wav", &small_wav))),
            ),
        )?;
        put(
            &m,
            "analyze-mp3.bin",
            &mp(
                "analyze",
                &ct,
                multipart_body(b, &[], Some(("a.mp3", &small_mp3))),
            ),
        )?;
        put(
            &m,
            "analyze-fields.bin",
            &mp(
                "analyze",
                &ct,
                multipart_body(
                    b,
                    &[("note", "x"), ("webhook_url", "http://127.0.0.1:9/")],
                    Some(("a.flac", &small_flac)),
                ),
            ),
        )?;
        put(
            &m,
            "tempo-wav.bin",
            &mp(
                "tempo",
                &ct,
                multipart_body(b, &[], Some(("a.wav", &small_wav))),
            ),
        )?;
        put(
            &m,
            "tempo-mp3.bin",
            &mp(
                "tempo",
                &ct,
                multipart_body(b, &[], Some(("a.mp3", &small_mp3))),
            ),
        )?;
        put(
            &m,
            "features-flac.bin",
            &mp(
                "features",
                &ct,
                multipart_body(b, &[], Some(("a.flac", &small_flac))),
            ),
        )?;
        put(
            &m,
            "analyze-no-audio.bin",
            &mp("analyze", &ct, multipart_body(b, &[("note", "x")], None)),
        )?;
        put(
            &m,
            "analyze-quoted-boundary.bin",
            &mp(
                "analyze",
                "multipart/form-data; boundary=\"X-FUZZ-BOUNDARY\"",
                multipart_body(b, &[], Some(("a.wav", &small_wav))),
            ),
        )?;

        // json: `route\nbody`
        let j = corpus.join("json");
        let bodies: &[(&str, &str, &str)] = &[
            (
                "generations-min",
                "generations",
                r#"{"tags":"lofi piano, rain"}"#,
            ),
            (
                "generations-full",
                "generations",
                r#"{"tags":"synthwave, driving bass","duration":2,"bpm":120,"keyscale":"F# minor","timesignature":4,"seed":42,"webhook":"http://127.0.0.1:9/hook?x=1","model":"procedural"}"#,
            ),
            (
                "generations-floats",
                "generations",
                r#"{"tags":"jazz","duration":1.0,"bpm":90.0,"seed":4294967295,"keyscale":"bb Major"}"#,
            ),
            (
                "generations-nulls",
                "generations",
                r#"{"tags":"ñ 日本 \u00e9","duration":null,"bpm":null,"keyscale":null,"webhook":null,"extra":[1,{"a":null}]}"#,
            ),
            (
                "webhook-set",
                "webhook",
                r#"{"url":"http://127.0.0.1:9/hook","enabled":true}"#,
            ),
            ("webhook-null", "webhook", r#"{"url":null,"enabled":false}"#),
            (
                "webhook-v6",
                "webhook",
                r#"{"url":"https://[::1]:9/x?y=z#f"}"#,
            ),
            ("credits-int", "credits", r#"{"amount":25}"#),
            ("credits-float", "credits", r#"{"amount":2.5e1}"#),
            ("credits-max", "credits", r#"{"amount":1000000000}"#),
            ("analyze-media", "analyze", r#"{"url":"{MEDIA}"}"#),
            (
                "analyze-other",
                "analyze",
                r#"{"url":"http://localhost:1/media/abc/mastered.wav"}"#,
            ),
            ("features-media", "features", r#"{"url":"{MEDIA}"}"#),
            ("metadata-media", "metadata", r#"{"url":"{MEDIA}"}"#),
        ];
        for (name, route, body) in bodies {
            put(
                &j,
                &format!("{name}.json"),
                format!("{route}\n{body}").as_bytes(),
            )?;
        }

        // range: `Range\nIf-Range[\nanother Range]`
        let r = corpus.join("range");
        let ranges: &[(&str, &str)] = &[
            ("first-100", "bytes=0-99\n"),
            ("open-end", "bytes=100-\n"),
            ("suffix", "bytes=-100\n"),
            ("last-byte", "bytes=-1\n"),
            ("if-range-match", "bytes=100-199\n{LM}"),
            ("if-range-old", "bytes=0-99\nSat, 01 Jan 2000 00:00:00 GMT"),
            ("if-range-etag", "bytes=0-99\n\"abc\""),
            ("if-range-weak", "bytes=0-99\nW/\"abc\""),
            ("two-ranges", "bytes=0-0,5-9\n"),
            ("two-headers", "bytes=0-9\n{LM}\nbytes=10-19"),
            ("other-unit", "items=0-5\n"),
            ("past-end", "bytes=99999999999-\n"),
            ("huge", "bytes=0-18446744073709551615\n"),
            ("reversed", "bytes=9-1\n"),
            ("spaces", " BYTES = 0 - 1 \n"),
            ("none", "\n"),
        ];
        for (name, v) in ranges {
            put(&r, &format!("{name}.txt"), v.as_bytes())?;
        }

        // Generated regressions: the hostile WAVs of issue 14, for the decoder and via upload.
        let hostile: Vec<(&str, Vec<u8>)> = vec![
            (
                "wav-rate-ffffffff.wav",
                hostile_wav(0xFFFF_FFFF, false, None),
            ),
            (
                "wav-rate-11025-bit27.wav",
                hostile_wav(11_025 | (1 << 27), false, None),
            ),
            ("wav-rate-zero.wav", hostile_wav(0, false, None)),
            ("wav-float-nan.wav", {
                let mut w = hostile_wav(11_025, true, None);
                let at = data_offset(&w);
                w[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
                w[at + 16..at + 20].copy_from_slice(&f32::INFINITY.to_le_bytes());
                w
            }),
            (
                "wav-data-7fff0000.wav",
                hostile_wav(11_025, false, Some(0x7FFF_0000)),
            ),
        ];
        for (name, w) in &hostile {
            put(&regressions, &format!("decode-{name}"), w)?;
            put(
                &regressions,
                &format!("multipart-analyze-{name}.bin"),
                &mp("analyze", &ct, multipart_body(b, &[], Some(("a.wav", w)))),
            )?;
            put(
                &regressions,
                &format!("multipart-metadata-{name}.bin"),
                &mp("metadata", &ct, multipart_body(b, &[], Some(("a.wav", w)))),
            )?;
        }
        println!("wrote {} and {}", corpus.display(), regressions.display());
        Ok(())
    }
}
