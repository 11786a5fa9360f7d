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

/// `models list` shows the engines in use, built-in ones included; `models remove` of a catalog
/// model that is not installed says so (and how to install it), of an unknown id that it is
/// unknown; `generate` prints the time signature as it was given.
#[test]
fn models_list_shows_built_in_engines_remove_explains_and_generate_echoes_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sc = |args: &[&str]| {
        crate::util::soundcheck()
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    // Reading commands create nothing: a --data-dir that does not exist is named, not made.
    for args in [
        &["models", "list"][..],
        &["models", "remove", "htdemucs"][..],
    ] {
        let missing = sc(args);
        let err = String::from_utf8_lossy(&missing.stderr);
        assert!(!missing.status.success(), "{args:?}");
        assert!(
            err.contains("no data directory at") && err.contains(data.to_str().unwrap()),
            "{err}"
        );
        assert!(!data.exists(), "{args:?} created the data directory");
    }
    // A data directory that is a file is named too.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let pulled = crate::util::soundcheck()
        .args(["models", "pull", "htdemucs", "--data-dir"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&pulled.stderr);
    assert!(!pulled.status.success());
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    std::fs::create_dir(&data).unwrap();

    let list = sc(&["models", "list"]);
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    // The longest endpoint and its engine stay apart.
    assert!(
        text.lines()
            .any(|l| l.starts_with("/v1/analyze/upload ") && l.ends_with(" dsp")),
        "{text}"
    );
    for (endpoint, engine) in [
        ("/v1/separate", "dsp"),
        ("/v1/transcribe", "basic-pitch"),
        ("/v1/generations", "procedural"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(endpoint) && l.contains(engine)),
            "{endpoint} -> {engine} missing from\n{text}"
        );
    }
    assert!(text.lines().any(|l| l.starts_with("htdemucs ")), "{text}");
    let rows: serde_json::Value =
        serde_json::from_slice(&sc(&["models", "list", "--json"]).stdout).unwrap();
    let htdemucs = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "htdemucs")
        .unwrap();
    assert_eq!(htdemucs["installed"], false, "{rows}");

    let absent = sc(&["models", "remove", "htdemucs"]);
    assert!(!absent.status.success());
    let err = String::from_utf8_lossy(&absent.stderr);
    assert!(err.contains("is not installed"), "{err}");
    assert!(err.contains("soundcheck models pull htdemucs"), "{err}");
    let unknown = sc(&["models", "remove", "no-such-model"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown model"));

    let out = dir.path().join("g.mp3");
    let gen = sc(&[
        "generate",
        "lofi piano",
        "--duration",
        "1",
        "--timesignature",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&gen.stderr);
    assert!(gen.status.success(), "{err}");
    assert!(err.contains("timesignature 3"), "{err}");
    assert!(!err.contains("3/x"), "{err}");
    assert!(out.is_file());
}

/// `master` and `separate` take their endpoints' options, checked by the same parsers: the API's
/// ranges and messages (`--target-lufs -40` is refused as `POST /v1/master` refuses it), the
/// format from `--format` (and an output name that disagrees is refused), `--no-eq`,
/// `--no-compress`, MP3 bit rates; `separate --format wav24 --model dsp --json`, and a model that
/// is not installed names the `models pull` command.
#[test]
fn master_and_separate_take_the_apis_options_with_its_ranges_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    std::fs::write(&input, wav_bytes(2.0)).unwrap();
    let data = dir.path().join("data");
    let sc = |args: &[&str]| {
        let out = crate::util::soundcheck()
            .arg(args[0])
            .arg(&input)
            .args(&args[1..])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // The engine's own message for the API's range.
    let (ok, _, err) = sc(&["master", "-o", &out("a.wav"), "--target-lufs", "-40"]);
    assert!(!ok);
    assert!(
        err.contains("target_lufs must be a number from -30 to -6"),
        "{err}"
    );
    assert!(!dir.path().join("a.wav").exists());
    let (ok, _, err) = sc(&["master", "-o", &out("a.wav"), "--format", "mp3"]);
    assert!(!ok);
    assert!(err.contains("writes a .mp3 file"), "{err}");
    let (ok, _, err) = sc(&["master", "-o", &out("a.mp3"), "--bitrate", "100"]);
    assert!(!ok, "{err}");
    // An MP3 at 128 kbit/s without EQ or compression: the report says so.
    let (ok, report, err) = sc(&[
        "master",
        "-o",
        &out("a.mp3"),
        "--bitrate",
        "128",
        "--no-eq",
        "--no-compress",
        "--json",
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["format"], "mp3", "{report}");
    assert_eq!(report["eq_low_shelf_db"], 0.0, "{report}");
    assert_eq!(report["eq_high_shelf_db"], 0.0, "{report}");
    assert_eq!(report["compressor_max_reduction_db"], 0.0, "{report}");
    // Two seconds at 128 kbit/s is about 32 kB (at the default 320, about 80 kB).
    let size = std::fs::read(out("a.mp3")).unwrap().len();
    assert!((20_000..50_000).contains(&size), "{size} bytes");
    // 24-bit WAV by name.
    let (ok, _, err) = sc(&["master", "-o", &out("b.wav"), "--format", "wav24"]);
    assert!(ok, "{err}");
    assert_eq!(
        hound::WavReader::open(out("b.wav"))
            .unwrap()
            .spec()
            .bits_per_sample,
        24
    );

    // separate: the job's fields and messages; --json gives the result with paths.
    let data_flag = ["--data-dir", data.to_str().unwrap()];
    let (ok, _, err) = sc(&[
        "separate",
        "-o",
        &out("s"),
        "--stems",
        "3",
        data_flag[0],
        data_flag[1],
    ]);
    assert!(!ok);
    assert!(err.contains("stems must be 2 or 4"), "{err}");
    let (ok, _, err) = sc(&[
        "separate",
        "-o",
        &out("s"),
        "--format",
        "mp3",
        data_flag[0],
        data_flag[1],
    ]);
    assert!(!ok);
    assert!(
        err.contains("format must be wav16, wav24 or float"),
        "{err}"
    );
    let (ok, _, err) = sc(&[
        "separate",
        "-o",
        &out("s"),
        "--model",
        "htdemucs",
        data_flag[0],
        data_flag[1],
    ]);
    assert!(!ok);
    assert!(err.contains("soundcheck models pull htdemucs"), "{err}");
    let (ok, json, err) = sc(&[
        "separate",
        "-o",
        &out("s"),
        "--stems",
        "2",
        "--format",
        "wav24",
        "--model",
        "dsp",
        "--json",
        data_flag[0],
        data_flag[1],
    ]);
    assert!(ok, "{err}");
    let result: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(result["model"], "dsp", "{result}");
    let vocals = result["stems"]["vocals"].as_str().unwrap();
    assert_eq!(
        hound::WavReader::open(vocals)
            .unwrap()
            .spec()
            .bits_per_sample,
        24
    );
    assert!(!data.exists(), "separate created the data directory");
}

/// `transcribe -p` names the API does not take are refused with the ones it does (not ignored);
/// `generate` writes the format its output's extension names (`.wav` is a WAV, not MP3 bytes)
/// and refuses one it cannot write before generating anything.
#[test]
fn transcribe_refuses_unknown_options_and_generate_writes_what_its_extension_says() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    std::fs::write(&input, wav_bytes(1.0)).unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = crate::util::soundcheck().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let os = std::ffi::OsStr::new;
    let midi = dir.path().join("x.mid");
    let (ok, err) = run(&[
        os("transcribe"),
        input.as_os_str(),
        os("-o"),
        midi.as_os_str(),
        os("-p"),
        os("bogus=1"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("no field \"bogus\"") && err.contains("onset_threshold"),
        "{err}"
    );
    assert!(!midi.exists());

    let gen = |out: &std::path::Path| {
        run(&[
            os("generate"),
            os("lofi"),
            os("--duration"),
            os("1"),
            os("-o"),
            out.as_os_str(),
            os("--data-dir"),
            data.as_os_str(),
        ])
    };
    // The API's ranges and messages, read by the API's request type.
    for (option, value, message) in [
        (
            "--duration",
            "0",
            "duration must be an integer from 1 to 600.",
        ),
        ("--bpm", "301", "bpm must be an integer from 30 to 300."),
        ("--key", "H minor", "keyscale \"H minor\" is not a key"),
    ] {
        let out = dir.path().join("bad.mp3");
        let (ok, err) = run(&[
            os("generate"),
            os("lofi"),
            os(option),
            os(value),
            os("-o"),
            out.as_os_str(),
            os("--data-dir"),
            data.as_os_str(),
        ]);
        assert!(!ok && err.contains(message), "{option} {value}: {err}");
        assert!(!out.exists());
    }
    let ogg = dir.path().join("g.ogg");
    let (ok, err) = gen(&ogg);
    assert!(!ok);
    assert!(err.contains(".mp3") && err.contains(".wav"), "{err}");
    assert!(!ogg.exists());
    let wav = dir.path().join("g.wav");
    let (ok, err) = gen(&wav);
    assert!(ok, "{err}");
    let r = hound::WavReader::open(&wav).unwrap();
    assert!(r.duration() > 0);
    let mp3 = dir.path().join("g.mp3");
    let said = crate::util::soundcheck()
        .args([
            "generate",
            "lofi",
            "--duration",
            "1",
            "--seed",
            "7",
            "--json",
            "-o",
        ])
        .arg(&mp3)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(said.status.success());
    let said: serde_json::Value = serde_json::from_slice(&said.stdout).unwrap();
    assert_eq!(said["seed"], 7, "{said}");
    assert_eq!(said["model"], "procedural", "{said}");
    assert_eq!(said["output"], mp3.to_str().unwrap(), "{said}");
    let bytes = std::fs::read(&mp3).unwrap();
    assert!(bytes.starts_with(b"ID3") || bytes[0] == 0xFF, "not an MP3");
}

/// Every argument of every command says what it is: walks `--help` of each command and
/// subcommand and fails on an argument, option or command listed without a description.
#[test]
fn every_argument_has_help_text() {
    let help = |path: &[String]| {
        let out = crate::util::soundcheck()
            .args(path)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{path:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let mut missing = Vec::new();
    let mut queue: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        seen += 1;
        let text = help(&path);
        let lines: Vec<&str> = text.lines().collect();
        let mut section = "";
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with(' ') && line.ends_with(':') {
                section = line;
                continue;
            }
            // An entry starts two spaces in; its description follows on the same line after a
            // gap, or on the next, more indented line.
            let entry = line.strip_prefix("  ").filter(|l| !l.starts_with(' '));
            let Some(entry) = entry else { continue };
            let documented = entry.trim_end().contains("  ")
                || lines
                    .get(i + 1)
                    .is_some_and(|n| n.starts_with("      ") && !n.trim().is_empty());
            if !documented {
                missing.push(format!("{path:?}: {entry}"));
            }
            if section == "Commands:" {
                let name = entry.split_whitespace().next().unwrap().to_string();
                if name != "help" {
                    let mut sub = path.clone();
                    sub.push(name);
                    queue.push(sub);
                }
            }
        }
    }
    assert!(seen > 30, "walked only {seen} commands");
    assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
}

/// Several files or a directory: each offline verb runs on every audio file under one progress
/// bar and prints one summary line per file (or a JSON array), writing into the `-o` directory;
/// a file that fails is reported and makes the command fail, after the others have run.
#[test]
fn offline_verbs_take_several_files_or_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let songs = dir.path().join("songs");
    std::fs::create_dir(&songs).unwrap();
    for name in ["a.wav", "b.wav"] {
        std::fs::write(songs.join(name), wav_bytes(1.0)).unwrap();
    }
    std::fs::write(songs.join("notes.txt"), "not audio").unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let out = crate::util::soundcheck().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let os = std::ffi::OsStr::new;

    // A directory: its two audio files (the .txt is not one), a JSON array in their order.
    let (ok, out, err) = run(&[os("analyze"), songs.as_os_str(), os("--json")]);
    assert!(ok, "{err}");
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "{out}");
    assert!(all[0]["file"].as_str().unwrap().ends_with("a.wav"));
    assert!(all[1]["result"]["loudness"]["integrated_lufs"].is_number());

    // master into a directory, named after each input with the format's extension.
    let mastered = dir.path().join("mastered");
    let (ok, out, err) = run(&[
        os("master"),
        songs.join("a.wav").as_os_str(),
        songs.join("b.wav").as_os_str(),
        os("-o"),
        mastered.as_os_str(),
        os("--format"),
        os("flac"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        2,
        "{out}"
    );
    assert!(mastered.join("a.flac").is_file() && mastered.join("b.flac").is_file());

    // transcribe and separate the same way.
    let midi = dir.path().join("midi");
    let (ok, _, err) = run(&[
        os("transcribe"),
        songs.as_os_str(),
        os("-o"),
        midi.as_os_str(),
    ]);
    assert!(ok, "{err}");
    assert!(std::fs::read(midi.join("b.mid"))
        .unwrap()
        .starts_with(b"MThd"));
    let stems = dir.path().join("stems");
    let (ok, out, err) = run(&[
        os("separate"),
        songs.as_os_str(),
        os("-o"),
        stems.as_os_str(),
        os("--stems"),
        os("2"),
        os("--data-dir"),
        dir.path().join("data").as_os_str(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("2 stems"), "{out}");
    assert!(stems.join("a/vocals.wav").is_file() && stems.join("b/accompaniment.wav").is_file());

    // One bad file: reported, the others still done, the command fails.
    let bad = songs.join("c.wav");
    std::fs::write(&bad, b"RIFF not really").unwrap();
    let (ok, out, err) = run(&[os("analyze"), songs.as_os_str()]);
    assert!(!ok);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        2,
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAILED") && l.contains("c.wav")),
        "{out}"
    );
    assert!(err.contains("1 of 3 files failed"), "{err}");

    // Two inputs that would write the same output, or an output over its own input: refused
    // before anything runs, nothing written.
    std::fs::remove_file(&bad).unwrap();
    std::fs::write(songs.join("a.flac"), b"fLaC").unwrap();
    let clash = dir.path().join("clash");
    let (ok, _, err) = run(&[
        os("transcribe"),
        songs.as_os_str(),
        os("-o"),
        clash.as_os_str(),
    ]);
    assert!(!ok);
    assert!(err.contains("would both write"), "{err}");
    assert!(std::fs::read_dir(&clash).unwrap().next().is_none());
    std::fs::remove_file(songs.join("a.flac")).unwrap();
    let (ok, _, err) = run(&[os("master"), songs.as_os_str(), os("-o"), songs.as_os_str()]);
    assert!(!ok);
    assert!(err.contains("over its own input"), "{err}");
    assert_eq!(std::fs::read(songs.join("a.wav")).unwrap(), wav_bytes(1.0));
    let a = songs.join("a.wav");
    let (ok, _, err) = run(&[os("master"), a.as_os_str(), os("-o"), a.as_os_str()]);
    assert!(!ok);
    assert!(err.contains("is the input"), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), wav_bytes(1.0));

    // Names that are not UTF-8 keep their bytes: no false collision, no panic in --json.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = dir.path().join("odd");
        std::fs::create_dir(&odd).unwrap();
        for name in [b"b\xff.wav".as_slice(), b"b\xfe.wav"] {
            std::fs::write(odd.join(std::ffi::OsStr::from_bytes(name)), wav_bytes(1.0)).unwrap();
        }
        let midi = dir.path().join("odd-midi");
        let (ok, out, err) = run(&[
            os("transcribe"),
            odd.as_os_str(),
            os("-o"),
            midi.as_os_str(),
            os("--json"),
        ]);
        assert!(ok, "{err}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "{out}"
        );
        for name in [b"b\xff.mid".as_slice(), b"b\xfe.mid"] {
            assert!(midi.join(std::ffi::OsStr::from_bytes(name)).is_file());
        }
    }
}

/// A file the CLI cannot read is named once in its one-line error, and a file that is not audio
/// gets the list of what is read, without the decoding library's own log lines.
#[test]
fn unreadable_files_are_named_once_and_non_audio_says_what_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wav");
    let out = crate::util::soundcheck()
        .arg("analyze")
        .arg(&missing)
        .env_remove("SOUNDCHECK_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "hello").unwrap();
    let out = crate::util::soundcheck()
        .arg("analyze")
        .arg(&text)
        .env_remove("SOUNDCHECK_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("soundcheck reads RIFF WAV"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// A server on its own SQLite file refuses a media directory that a fleet marked as its own: its
/// janitor would have taken the fleet's uploads and results for a crash's leftovers and deleted
/// them. Nothing in the directory is touched.
#[test]
fn serve_without_the_fleets_database_refuses_the_fleets_media() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    let upload = media.join("uploads/ab/upl_01ARZ3NDEKTSV4RRFFQ69G5FAV");
    std::fs::create_dir_all(upload.parent().unwrap()).unwrap();
    std::fs::write(&upload, b"the fleet's upload").unwrap();
    std::fs::write(
        media.join(".soundcheck-fleet"),
        "fleet_01ARZ3NDEKTSV4RRFFQ69G5FAV\n",
    )
    .unwrap();
    let out = crate::util::soundcheck()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--media-dir")
        .arg(&media)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("media storage of fleet fleet_01ARZ3NDEKTSV4RRFFQ69G5FAV")
            && err.contains("--database"),
        "{err}"
    );
    assert_eq!(std::fs::read(&upload).unwrap(), b"the fleet's upload");
}

/// Out-of-range numbers for serve's flags are refused at start, naming the flag: unbounded, they
/// once overflowed (a panic with a backtrace) or started a server whose every finished job
/// panicked on its expiry date.
#[test]
fn serve_refuses_flag_values_out_of_range_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--max-upload-mb", "17592186044417"),
        ("--result-ttl-hours", "4000000000"),
        ("--time-scale", "1e308"),
        ("--time-scale", "NaN"),
        ("--workers", "100000"),
        ("--generation-timeout", "0"),
        ("--webhook-timeout", "99999999999"),
        ("--latency", "60001"),
        // Keys the API would never match lock the data directory out once stored.
        ("--tl-key", ""),
        ("--tl-key", "abc"),
        ("--tl-key", "ft_test_aaaaaaaaaaaaaaaaaaaaaaaa"),
        ("--ft-key", "tl_test_aaaaaaaaaaaaaaaaaaaaaaaa"),
        ("--ft-key", "ft_test_aaaaaaaaaaaaaaaaaaaaaaa!"),
        // Every result URL starts with it.
        ("--public-url", "javascript:alert(1)"),
        ("--public-url", "http://x/a?b#c"),
        ("--public-url", "127.0.0.1:8080"),
    ] {
        let out = crate::util::soundcheck()
            .args(["serve", "--addr", "127.0.0.1:0", flag, value])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(err.contains(flag), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{flag} {value}: {err}");
    }
}

/// A worker's own flags are checked before it opens the database or prints its banner: an
/// `--engines` name it does not have, or no `--public-url`, stops it with the reason at once
/// (the database here is one nobody listens on: reaching for it would fail otherwise, later).
#[test]
fn worker_refuses_its_flags_before_touching_the_database() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            &["--public-url", "http://fleet.test", "--engines", "dsp,nope"][..],
            "no engine or generator named nope (installed: ",
        ),
        (&[][..], "a worker needs --public-url"),
    ] {
        let out = crate::util::soundcheck()
            .args(["worker", "--database", "postgres://nobody@127.0.0.1:9/none"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("127.0.0.1:9") && stdout.is_empty(),
            "{args:?}: no banner, no connection: {stdout} {stderr}"
        );
    }
}

#[test]
fn device_flag_names_what_it_takes_and_refuses_a_gpu_this_build_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |device: &str| {
        crate::util::soundcheck()
            .args(["serve", "--addr", "127.0.0.1:0", "--device", device])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = serve("gpu");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
    if !cfg!(feature = "cuda") {
        let out = serve("cuda:0");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--device cuda:0: this binary was built without CUDA"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A fleet's `SOUNDCHECK_DATABASE` left in the environment does not stop client commands from
/// taking `--data-dir` (the directory wins), nor does an empty one count as a database.
#[test]
fn a_data_dir_wins_over_a_database_from_the_environment() {
    let missing = tempfile::tempdir().unwrap().path().join("nowhere");
    for database in ["postgres://nobody@127.0.0.1:9/none", ""] {
        for args in [vec!["keys"], vec!["credits", "show"], vec!["jobs", "list"]] {
            let out = crate::util::soundcheck()
                .args(&args)
                .arg("--data-dir")
                .arg(&missing)
                .env("SOUNDCHECK_DATABASE", database)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(
                err.contains(&*missing.to_string_lossy()) && !err.contains("cannot be used with"),
                "{args:?} with SOUNDCHECK_DATABASE={database:?}: {err}"
            );
        }
    }
}
