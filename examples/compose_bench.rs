//! Speed check of the procedural composer: renders a track (90 s by default) several times and
//! prints the best and median × realtime; `--out FILE.wav` also writes the render for listening.
//!
//! `cargo run --release --example compose_bench -- [--tags T] [--bpm N] [--key K] [--beats N]
//! [--duration S] [--seed N] [--runs N] [--out FILE.wav]`

use std::time::Instant;

use soundcheck::engines::compose::{compose, parse_tags};
use soundcheck::jobs::generator::GenerationRequest;

fn main() {
    let mut req = GenerationRequest {
        tags: "lofi chill, piano, vinyl crackle".into(),
        duration: 90,
        bpm: 80,
        keyscale: "A minor".into(),
        timesignature: 4,
        seed: 1_729_384_756,
    };
    let mut runs = 5;
    let mut out: Option<String> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        let v = args[i + 1].clone();
        match args[i].as_str() {
            "--tags" => req.tags = v,
            "--bpm" => req.bpm = v.parse().expect("bpm"),
            "--key" => req.keyscale = v,
            "--beats" => req.timesignature = v.parse().expect("beats"),
            "--duration" => req.duration = v.parse().expect("duration"),
            "--seed" => req.seed = v.parse().expect("seed"),
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
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let a = compose(&req, &|_| {}, &|| false).expect("render");
        times.push(t.elapsed().as_secs_f64());
        audio = Some(a);
    }
    times.sort_by(f64::total_cmp);
    let d = req.duration as f64;
    println!(
        "{} s track: best {:.3} s ({:.0}x realtime), median {:.3} s ({:.0}x realtime) over {} runs",
        req.duration,
        times[0],
        d / times[0],
        times[times.len() / 2],
        d / times[times.len() / 2],
        times.len()
    );
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
