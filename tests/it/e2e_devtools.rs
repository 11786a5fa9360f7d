//! The developer tools, driven as a user would: the real binary's `listen`, `trigger`, `jobs`,
//! `deliveries` and `webhook` commands against a running server.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::util::{form, verify_like_flask, wav_bytes, Options, TestReceiver, TestServer};

/// Runs one command to completion; returns its stdout (panics on failure).
async fn sc(args: &[&str]) -> String {
    let out = crate::util::soundcheck_async()
        .args(args)
        .env("SOUNDCHECK_LOG", "warn")
        .env_remove("SOUNDCHECK_TL_KEY")
        .env_remove("SOUNDCHECK_FT_KEY")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Starts a long-running command; returns it and its stdout lines.
fn spawn(args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = crate::util::soundcheck_async()
        .args(args)
        .env("SOUNDCHECK_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Submits `n` analyses of `secs` of audio; returns their job ids in order.
async fn submit_analyses(s: &TestServer, n: usize, secs: f32) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = s
            .tl(Method::POST, "/v1/analyze/upload")
            .multipart(form(wav_bytes(secs), &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let job: Value = r.json().await.unwrap();
        ids.push(job["job_id"].as_str().unwrap().to_string());
    }
    ids
}

/// Reads lines until one contains every needle; returns that line.
async fn line_with(lines: &mut Lines<BufReader<ChildStdout>>, needles: &[&str]) -> String {
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line with {needles:?}; saw {seen:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("output ended; saw {seen:#?}"));
        if needles.iter().all(|n| line.contains(n)) {
            return line;
        }
        seen.push(line);
    }
}

#[tokio::test]
async fn listen_trigger_forward_rotate_and_resend_work_end_to_end() {
    let s = TestServer::start(Options::default()).await;
    let app = TestReceiver::start().await; // the developer's app behind `listen --forward-to`
    let dir = s.data_dir.path().to_str().unwrap().to_string();
    let key = s.secrets.tl_key.clone();
    let base = s.base.clone();
    // Keys read from the data directory, as `soundcheck keys` does; a server on PostgreSQL keeps
    // them in its database, so the suite's PostgreSQL run gives them as flags.
    let ft = s.secrets.ft_key.clone();
    let remote = if crate::util::test_database_server().is_none() {
        vec!["--url", base.as_str(), "--data-dir", dir.as_str()]
    } else {
        vec![
            "--url",
            base.as_str(),
            "--api-key",
            key.as_str(),
            "--ft-key",
            ft.as_str(),
        ]
    };
    let with = |cmd: &[&str]| -> Vec<String> {
        cmd.iter()
            .chain(remote.iter())
            .map(|s| s.to_string())
            .collect()
    };

    let listen_args = with(&[
        "listen",
        "--forward-to",
        &app.url,
        "--forward-generations-to",
        &app.url,
    ]);
    let (_listen, mut out) = spawn(&listen_args.iter().map(String::as_str).collect::<Vec<_>>());
    line_with(&mut out, &["Ready!"]).await;
    let ep: Value = s
        .tl(Method::GET, "/v1/webhook")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ep["url"].as_str().unwrap().starts_with("http://127.0.0.1:"),
        "{ep}"
    );

    // job.completed: a real job, its signed event printed, verified and relayed verbatim. The
    // app fetches the job a moment after the event arrives, while `trigger` may still be
    // waiting: the one poll per second a job allows is the app's (`trigger` follows the job's
    // event stream; its polls, 1.1 s apart, once took it, and `trigger` got a 429).
    let args = with(&["trigger", "job.completed"]);
    let trigger =
        tokio::spawn(async move { sc(&args.iter().map(String::as_str).collect::<Vec<_>>()).await });
    let event = app.wait_for(1, 30).await[0].json();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fetched = s
        .tl(
            Method::GET,
            &format!("/v1/jobs/{}", event["data"]["job_id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200, "the app's fetch of the job");
    let said = trigger.await.unwrap();
    assert!(said.contains("completed"), "{said}");
    let job_id = said.split_whitespace().nth(1).unwrap().to_string();
    assert!(job_id.starts_with("job_"), "{said}");
    assert_eq!(event["data"]["job_id"], job_id.as_str());
    let line = line_with(&mut out, &["job.completed", &job_id]).await;
    assert!(line.contains("signature verified"), "{line}");
    let line = line_with(&mut out, &["<--"]).await;
    assert!(line.contains("[200]"), "{line}");
    let got = app.wait_for(1, 10).await;
    assert_eq!(got[0].json()["data"]["job_id"], job_id.as_str());
    assert!(verify_like_flask(
        &s.secrets.webhook_secret,
        got[0].header("x-tunelab-signature"),
        &got[0].body
    ));
    assert_eq!(got[0].header("x-tunelab-event"), "job.completed");

    // Rotate the secret with the CLI (key given explicitly); the next event verifies with it.
    let rotated = sc(&[
        "webhook",
        "rotate-secret",
        "--url",
        &base,
        "--api-key",
        &key,
        "--ft-key",
        "unused",
    ])
    .await;
    let secret = rotated
        .lines()
        .find_map(|l| l.strip_prefix("secret:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(secret.starts_with("whsec_") && secret != s.secrets.webhook_secret);
    let said = sc(&with(&["trigger", "job.failed"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
    .await;
    assert!(
        said.contains("failed") && said.contains("internal_error"),
        "{said}"
    );
    let line = line_with(&mut out, &["job.failed"]).await;
    assert!(line.contains("signature verified"), "{line}");
    let got = app.wait_for(2, 10).await;
    assert!(verify_like_flask(
        &secret,
        got[1].header("x-tunelab-signature"),
        &got[1].body
    ));
    assert!(!verify_like_flask(
        &s.secrets.webhook_secret,
        got[1].header("x-tunelab-signature"),
        &got[1].body
    ));

    // The app answers 500: listen reports it and soundcheck records a failed attempt.
    app.set_status(500);
    let said = sc(&with(&["trigger", "generation.failed"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
    .await;
    assert!(said.contains("failed"), "{said}");
    let line = line_with(&mut out, &["generation.failed"]).await;
    assert!(line.contains("unsigned"), "{line}");
    let line = line_with(&mut out, &["<--"]).await;
    assert!(line.contains("[500]"), "{line}");

    // deliveries list shows the attempts; resend one once the app is fixed.
    let list = sc(&with(&["deliveries", "list"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
    .await;
    assert!(list.contains(&job_id) && list.contains("ok 200"), "{list}");
    app.set_status(200);
    let del = list
        .lines()
        .find(|l| l.contains(&job_id))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let resent = sc(&with(&["deliveries", "resend", &del])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
    .await;
    assert!(
        resent.contains("ok 200") && resent.contains(&job_id),
        "{resent}"
    );
    line_with(&mut out, &["job.completed", &job_id]).await;

    // jobs list / show.
    let jobs = sc(&with(&["jobs", "list"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
    .await;
    assert!(
        jobs.contains(&job_id) && jobs.contains("completed"),
        "{jobs}"
    );
    // Polled by the app a moment ago, the job is shown all the same: `jobs show` waits out the
    // `429`'s Retry-After once.
    let poll = || s.tl(Method::GET, &format!("/v1/jobs/{job_id}")).send();
    while poll().await.unwrap().status() == 429 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let shown: Value = serde_json::from_str(
        &sc(&with(&["jobs", "show", &job_id])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>())
        .await,
    )
    .unwrap();
    assert_eq!(shown["status"], "completed");

    // webhook disable / enable / set-url.
    let off = sc(&with(&["webhook", "disable"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
    .await;
    assert!(off.contains("enabled:  false"), "{off}");
    let on = sc(&with(&["webhook", "enable"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
    .await;
    assert!(
        on.contains("enabled:  true") && on.contains("released:"),
        "{on}"
    );
    let set = sc(&with(&["webhook", "set-url", "http://127.0.0.1:9/hook"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())
    .await;
    assert!(set.contains("url:      http://127.0.0.1:9/hook"), "{set}");

    // Errors come back as the envelope's code and message, with a failing exit status.
    let out = crate::util::soundcheck_async()
        .args([
            "jobs",
            "show",
            "job_nope",
            "--url",
            &base,
            "--api-key",
            &key,
            "--ft-key",
            "x",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404 not_found"));

    // An id is one path segment: one that holds `/` or `?` cannot reach another route (this once
    // disabled the webhook and printed the credit ledger as a job), and `..` is refused.
    let hostile = [
        (vec!["deliveries", "resend", "../disable?"], "404 not_found"),
        (vec!["jobs", "show", "../credits"], "404 not_found"),
        (vec!["jobs", "cancel", "../webhook"], "404 not_found"),
        (vec!["jobs", "show", ".."], "is not an id"),
        (vec!["jobs", "wait", "."], "is not an id"),
    ];
    for (args, said) in hostile {
        let out = crate::util::soundcheck_async()
            .args(&args)
            .args(["--url", &base, "--api-key", &key, "--ft-key", "x"])
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(said), "{args:?}: {err}");
    }
    let endpoint: Value = s
        .tl(Method::GET, "/v1/webhook")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(endpoint["enabled"], true, "{endpoint}");
    s.stop().await;
}

#[tokio::test]
async fn jobs_tail_prints_a_job_as_it_runs() {
    let s = TestServer::start(Options::default()).await;
    let key = s.secrets.tl_key.clone();
    let (tail, mut out) = spawn(&[
        "jobs",
        "tail",
        "--url",
        &s.base,
        "--api-key",
        &key,
        "--ft-key",
        "x",
    ]);
    let r = s
        .tl(Method::POST, "/v1/analyze/upload")
        .header("X-Soundcheck-Fault", "delay=1500")
        .multipart(form(wav_bytes(0.5), &[]))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Claimed at once, the job then waits out its delay while `running`.
    let running = line_with(&mut out, &[&id, "running"]).await;
    let done = line_with(&mut out, &[&id, "completed", "100%"]).await;
    // Each change starts with its local time, HH:MM:SS.mmm, and they run forward.
    let time = |l: &str| chrono::NaiveTime::parse_from_str(&l[..12], "%H:%M:%S%.3f");
    let (t0, t1) = (time(&running).unwrap(), time(&done).unwrap());
    assert!(
        t1 >= t0 || t0 - t1 > chrono::Duration::hours(12),
        "{running}\n{done}"
    );

    // More jobs than a page of the list (50) start and end while `tail` cannot look (frozen
    // here; a frozen node or a move to another has the same effect): each one's end is printed
    // when it looks again, none skipped.
    let pid = tail.id().unwrap();
    crate::util::signal("-STOP", pid);
    let ids = submit_analyses(&s, 60, 0.1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let list: Value = s
            .tl(Method::GET, "/v1/jobs?limit=100")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ended = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| ids.contains(&j["job_id"].as_str().unwrap().to_string()))
            .filter(|j| j["status"] == "completed")
            .count();
        if ended == ids.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{ended} of 60 ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crate::util::signal("-CONT", pid);
    let mut printed = std::collections::HashSet::new();
    while printed.len() < ids.len() {
        let line = tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .unwrap_or_else(|_| panic!("{} of 60 ends printed", printed.len()))
            .unwrap()
            .expect("tail runs on");
        if let Some(id) = ids.iter().find(|id| line.contains(id.as_str())) {
            assert!(line.contains("completed"), "{line}");
            assert!(printed.insert(id.clone()), "printed twice: {line}");
        }
    }
    s.stop().await;
}

/// More jobs than a status page (500) are queued when `jobs tail` starts, and more than it has
/// file descriptors (256 here) end at once: every end is printed once. (It opened a stream per
/// job with no bound, and failed with "could not reach soundcheck" when it ran out; it followed
/// only the newest 500 queued jobs.)
#[tokio::test]
async fn jobs_tail_follows_every_queued_job_within_its_file_descriptors() {
    let s = TestServer::start_with(Options::default(), |c| c.workers = 0).await;
    let key = s.secrets.tl_key.clone();
    let r = s
        .tl(Method::POST, "/v1/credits")
        .json(&serde_json::json!({"amount": 50000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let ids = submit_analyses(&s, 520, 0.05).await;
    let mut tail = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_soundcheck"))
        .args(["jobs", "tail", "--url", &s.base, "--api-key", &key])
        .args(["--ft-key", "x"])
        .env("SOUNDCHECK_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(tail.stdout.take().unwrap()).lines();
    // The oldest queued job is followed too: its `queued` line comes.
    line_with(&mut out, &[&ids[0], "queued"]).await;
    for id in &ids {
        let r = s
            .tl(Method::DELETE, &format!("/v1/jobs/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut ended = std::collections::HashSet::new();
    while ended.len() < ids.len() {
        let line = tokio::time::timeout(Duration::from_secs(60), out.next_line())
            .await
            .unwrap_or_else(|_| panic!("{} of {} ends printed", ended.len(), ids.len()))
            .unwrap()
            .unwrap_or_else(|| panic!("tail ended after {} of {} ends", ended.len(), ids.len()));
        if !line.contains("failed") {
            continue;
        }
        let id = ids
            .iter()
            .find(|id| line.contains(id.as_str()))
            .expect(&line);
        assert!(ended.insert(id.clone()), "printed twice: {line}");
    }
    assert!(tail.try_wait().unwrap().is_none(), "tail runs on");
    s.stop().await;
}

#[tokio::test]
async fn the_dashboard_is_embedded_and_gives_its_keys_to_loopback_clients() {
    let s = TestServer::start(Options::default()).await;
    let page = s.client.get(s.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("/dashboard/app.js") && html.contains("/openapi.json"));
    for (path, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(!r.text().await.unwrap().contains("cdn"), "no CDN");
    }
    // This test connects from 127.0.0.1: the config carries the real keys.
    let cfg: Value = s
        .client
        .get(s.url("/dashboard/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["tl_key"], s.secrets.tl_key.as_str());
    assert_eq!(cfg["ft_key"], s.secrets.ft_key.as_str());
    assert_eq!(cfg["base_url"], s.base.as_str());
    assert!(cfg["engines"].as_array().unwrap().len() >= 4, "{cfg}");
    // The overview's model list and "what to do next": nothing installed in a fresh data dir, so
    // the catalog shows every model as not installed and the hints say what to pull.
    let models = cfg["models"].as_array().unwrap();
    let htdemucs = models.iter().find(|m| m["id"] == "htdemucs").unwrap();
    assert_eq!(htdemucs["kind"], "separate");
    assert_eq!(htdemucs["installed"], false);
    assert_eq!(htdemucs["loaded"], false);
    assert_eq!(cfg["default_generator"], "procedural");
    let hints: Vec<&str> = cfg["hints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        hints
            .iter()
            .any(|h| h.contains("soundcheck models pull htdemucs")),
        "{hints:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_dashboard_serves_a_jobs_upload_to_loopback_clients_with_ranges() {
    // One worker, kept busy by a delayed job: the second job waits in the queue with its small
    // upload still held in the database, and the dashboard serves it from there.
    let s = TestServer::start_with(Options::default(), |c| c.workers = 1).await;
    let busy = s
        .tl(Method::POST, "/v1/analyze/upload")
        .header("X-Soundcheck-Fault", "delay=3000")
        .multipart(form(wav_bytes(0.1), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wav = wav_bytes(0.5);
    let sub = s.submit("/v1/analyze/upload", form(wav.clone(), &[])).await;
    let id = sub["job_id"].as_str().unwrap();
    let list: Value = s
        .tl(Method::GET, "/v1/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == id)
        .unwrap();
    assert_eq!(row["status"], "queued", "behind the delayed job");
    let queued = s
        .client
        .get(s.url(&format!("/dashboard/jobs/{id}/input")))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 200);
    assert_eq!(queued.bytes().await.unwrap().as_ref(), wav.as_slice());
    // Once run, the upload is on disk and served with ranges.
    assert_eq!(s.wait_job(id, 30).await["status"], "completed");
    let whole = s
        .client
        .get(s.url(&format!("/dashboard/jobs/{id}/input")))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap().as_ref(), wav.as_slice());
    let part = s
        .client
        .get(s.url(&format!("/dashboard/jobs/{id}/input")))
        .header("Range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"RIFF");
    let missing = s
        .client
        .get(s.url("/dashboard/jobs/job_nope/input"))
        .send()
        .await
        .unwrap();
    crate::util::assert_error(missing, 404, "not_found").await;
    s.stop().await;
}

#[tokio::test]
async fn a_large_upload_streamed_to_disk_is_stored_byte_for_byte() {
    // Over the 1 MiB kept in the database, an upload streams to disk through a buffer of 1 MiB:
    // 2.31 MiB ends part-way through the third buffer, so the last partial buffer must be written.
    let s = TestServer::start(Options::default()).await;
    let wav = wav_bytes(13.75);
    assert!(
        wav.len() > 2 << 20 && wav.len() % (1 << 20) != 0,
        "{}",
        wav.len()
    );
    let sub = s.submit("/v1/analyze/upload", form(wav.clone(), &[])).await;
    let id = sub["job_id"].as_str().unwrap();
    assert_eq!(s.wait_job(id, 60).await["status"], "completed");
    let stored = s
        .client
        .get(s.url(&format!("/dashboard/jobs/{id}/input")))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    let stored = stored.bytes().await.unwrap();
    assert_eq!(stored.len(), wav.len());
    assert!(
        stored.as_ref() == wav.as_slice(),
        "the stored upload differs"
    );
    s.stop().await;
}
