//! The offline commands run engines on files without a server.

use crate::util::wav_bytes;

fn run(args: &[&std::ffi::OsStr]) -> String {
    let out = crate::util::soundcheck().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn analyze_master_transcribe_and_separate_work_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    std::fs::write(&input, wav_bytes(3.0)).unwrap();
    let os = |s: &str| std::ffi::OsString::from(s);

    let report: serde_json::Value =
        serde_json::from_str(&run(&[&os("analyze"), input.as_os_str(), &os("--json")])).unwrap();
    assert!(
        report["loudness"]["integrated_lufs"].as_f64().is_some(),
        "{report}"
    );

    let mastered = dir.path().join("out.wav");
    let m: serde_json::Value = serde_json::from_str(&run(&[
        &os("master"),
        input.as_os_str(),
        &os("-o"),
        mastered.as_os_str(),
        &os("--target-lufs"),
        &os("-16"),
        &os("--json"),
    ]))
    .unwrap();
    assert!(
        (m["after"]["integrated_lufs"].as_f64().unwrap() + 16.0).abs() <= 0.5,
        "{m}"
    );
    assert_eq!(
        hound::WavReader::open(&mastered).unwrap().duration(),
        3 * 44_100
    );

    let midi = dir.path().join("out.mid");
    let said = run(&[
        &os("transcribe"),
        input.as_os_str(),
        &os("-o"),
        midi.as_os_str(),
        &os("-p"),
        &os("onset_threshold=0.5"),
    ]);
    assert!(said.contains("notes written"), "{said}");
    assert!(std::fs::read(&midi).unwrap().starts_with(b"MThd"));

    let stems = dir.path().join("stems");
    let listed = run(&[
        &os("separate"),
        input.as_os_str(),
        &os("--stems"),
        &os("2"),
        &os("-o"),
        stems.as_os_str(),
    ]);
    assert_eq!(listed.lines().count(), 2);
    assert!(stems.join("vocals.wav").is_file() && stems.join("accompaniment.wav").is_file());
}
