//! Dumps the analyser's front end for offline tuning on the tune part of
//! `scripts/analysis_eval`: per WAV, the onset envelope, the low-band onset envelope, the log-mel
//! frames (40 per frame, dB) and the chroma frames as little-endian f32 files (`NAME.onset`,
//! `NAME.low`, `NAME.mel`, `NAME.chroma`).
//!
//! `cargo run --example analysis_dump -- OUT_DIR FILE.wav…`

use std::path::Path;

use soundcheck::audio;
use soundcheck::engines::analyze::frontend::Frontend;

fn write(path: &Path, xs: impl Iterator<Item = f32>) {
    let bytes: Vec<u8> = xs.flat_map(f32::to_le_bytes).collect();
    std::fs::write(path, bytes).expect("write");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = Path::new(&args[0]);
    std::fs::create_dir_all(out).expect("out dir");
    for f in &args[1..] {
        let a = audio::decode(Path::new(f)).expect("decode");
        let fe = Frontend::new(&a).expect("frontend");
        let stem = Path::new(f)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        write(
            &out.join(format!("{stem}.onset")),
            fe.frames.onset.iter().copied(),
        );
        write(
            &out.join(format!("{stem}.low")),
            fe.frames.low_onset.iter().copied(),
        );
        write(
            &out.join(format!("{stem}.mel")),
            fe.frames.mel_db.iter().copied(),
        );
        write(
            &out.join(format!("{stem}.chroma")),
            fe.chroma.iter().flatten().copied(),
        );
    }
}
