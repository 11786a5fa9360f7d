//! Speed check of the procedural composer: renders a track (90 s by default) several times and
//! prints the best and median × realtime, then the whole generation as the server delivers it
//! (render + the 44.1 kHz stereo MP3), each with the process's CPU time per run beside the wall
//! time: on this shared 2-core machine the wall time depends on what else runs, the CPU time
//! does not, and with both cores free the wall time is at most the CPU time.
//! `--out FILE.wav` also writes the render for listening.
//!
//! `cargo run --release --example compose_bench -- [--tags T] [--bpm N] [--key K] [--beats N]
//! [--duration S] [--seed N] [--runs N] [--out FILE.wav]`

use std::time::Instant;

use soundcheck::engines::compose::{compose, parse_tags};
use soundcheck::jobs::generator::GenerationInput;

fn main() {
    let mut req = GenerationInput::new(
        "lofi chill, piano, vinyl crackle",
        soundcheck::views::GenerationParameters {
            duration: 90,
            bpm: 80,
            keyscale: "A minor".into(),
            timesignature: 4,
            seed: 1_729_384_756,
        },
    );
    let mut runs = 5;
    let mut out: Option<String> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        let v = args[i + 1].clone();
        match args[i].as_str() {
            "--tags" => req.tags = v,
            "--bpm" => req.parameters.bpm = v.parse().expect("bpm"),
            "--key" => req.parameters.keyscale = v,
            "--beats" => req.parameters.timesignature = v.parse().expect("beats"),
            "--duration" => req.parameters.duration = v.parse().expect("duration"),
            "--seed" => req.parameters.seed = v.parse().expect("seed"),
            "--runs" => runs = v.parse().expect("runs"),
            "--out" => out = Some(v),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    println!("request: {req:?}");
    println!("tags understood: {:?}", parse_tags(&req.tags));
    let mut times = Vec::new();
    let mut audio = None;
    let cpu0 = cpu_seconds();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let a = compose(&req, &|_| {}, &|| false).expect("render");
        times.push(t.elapsed().as_secs_f64());
        audio = Some(a);
    }
    let cpu = (cpu_seconds() - cpu0) / times.len() as f64;
    report("render", req.parameters.duration, &mut times, cpu);

    // The whole generation: render, then the MP3 the server publishes (192 kbit/s, 44.1 kHz stereo).
    let dir = std::env::temp_dir().join(format!("compose-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mp3 = dir.join("track.mp3");
    let mut whole = Vec::new();
    let cpu0 = cpu_seconds();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let a = compose(&req, &|_| {}, &|| false).expect("render");
        soundcheck::audio::encode_mp3_quick(&a, 192, &mp3).expect("mp3");
        whole.push(t.elapsed().as_secs_f64());
    }
    let cpu = (cpu_seconds() - cpu0) / whole.len() as f64;
    report("render + MP3", req.parameters.duration, &mut whole, cpu);
    let _ = std::fs::remove_dir_all(&dir);
    if let (Some(path), Some(a)) = (out, audio) {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: a.sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).expect("create wav");
        for (l, r) in a.channels[0].iter().zip(&a.channels[1]) {
            for x in [l, r] {
                w.write_sample((x.clamp(-1.0, 1.0) * 32767.0) as i16)
                    .expect("write");
            }
        }
        w.finalize().expect("finalize");
        println!("wrote {path}");
    }
}

fn report(what: &str, duration: u32, times: &mut [f64], cpu: f64) {
    times.sort_by(f64::total_cmp);
    let d = duration as f64;
    println!(
        "{duration} s track, {what}: best {:.3} s ({:.0}x realtime), median {:.3} s over {} runs; \
         {cpu:.3} CPU-s per run",
        times[0],
        d / times[0],
        times[times.len() / 2],
        times.len()
    );
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`, clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counting from 0 after the name.
    (ticks(11) + ticks(12)) / 100.0
}
