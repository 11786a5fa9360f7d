//! Webhook tooling as a Stripe CLI user expects it, through the real binary with a temporary
//! HOME: `listen --print-secret`; `listen` relays job events to `--forward-to` and generation
//! events to `--forward-generations-to` (never to the jobs route), records the app's answer body
//! in the delivery log, and puts the previous endpoint URL back on SIGTERM; `deliveries resend
//! --failed-since` replays what failed, and refuses a time it cannot read before sending
//! anything; the next retry is shown as ISO 8601; `trigger --param` is checked against the
//! server's OpenAPI document before anything runs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

use crate::e2e_first_contact::{Home, Served};
use crate::util::TestReceiver;

async fn line_with(lines: &mut Lines<BufReader<ChildStdout>>, needle: &str) -> String {
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?}; saw {seen:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("output ended; saw {seen:#?}"));
        if line.contains(needle) {
            return line;
        }
        seen.push(line);
    }
}

#[tokio::test]
async fn listen_relays_by_kind_keeps_bodies_restores_the_url_and_failed_events_are_resent() {
    let home = Home::new();
    let s = Served::start(&home, &home.path("d"), &[]).await;
    let key = s.line("SOUNDCHECK_TL_KEY=");
    let secret = s.line("SOUNDCHECK_WEBHOOK_SECRET=");
    let api = |path: &str| {
        let req = reqwest::Client::new()
            .get(format!("{}{path}", s.base))
            .bearer_auth(&key);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let original = "http://127.0.0.1:9/original";
    home.ok(&["webhook", "set-url", original]).await;
    assert_eq!(home.ok(&["listen", "--print-secret"]).await.trim(), secret);

    let jobs_app = TestReceiver::start().await;
    let gens_app = TestReceiver::start().await;
    jobs_app.set_status(500);
    let mut listen = home
        .cmd()
        .args(["listen", "--forward-to", &jobs_app.url])
        .args(["--forward-generations-to", &gens_app.url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(listen.stdout.take().unwrap()).lines();
    let ready = line_with(&mut out, "Ready!").await;
    assert!(ready.contains(&s.base), "{ready}");
    line_with(&mut out, &format!("goes back to {original}")).await;

    // A job event the app refuses: its 500 and its body are in the delivery log, with the next
    // retry as ISO 8601.
    let said = home.ok(&["trigger", "job.completed"]).await;
    let job_id = said.split_whitespace().nth(1).unwrap().to_string();
    assert!(job_id.starts_with("job_"), "{said}");
    jobs_app.wait_for(1, 30).await;
    line_with(&mut out, "[500]").await;
    let log = api(&format!("/v1/webhook/deliveries?of={job_id}")).await;
    let first = &log["data"][0];
    assert_eq!(first["response_status"], 500, "{log}");
    assert_eq!(first["response_body"], r#"{"received":true}"#, "{log}");
    let next = first["next_attempt_at"]
        .as_str()
        .expect("a retry is scheduled");
    chrono::DateTime::parse_from_rfc3339(next).unwrap();

    // A generation event goes to its own route, not to the jobs app.
    home.ok(&["trigger", "generation.completed"]).await;
    let got = gens_app.wait_for(1, 30).await;
    assert!(got[0].json()["id"].as_str().unwrap().starts_with("gen_"));
    assert!(jobs_app
        .received()
        .iter()
        .all(|r| !r.header("x-tunelab-event").is_empty()));

    // An unreadable time is refused before anything is sent.
    let (ok, _, err) = home
        .run(&["deliveries", "resend", "--failed-since", "yesterday"])
        .await;
    assert!(!ok);
    assert!(err.contains("RFC 3339"), "{err}");
    assert_eq!(jobs_app.received().len(), 1);
    // The app is fixed: everything that failed in the last 10 minutes is sent again.
    jobs_app.set_status(200);
    let resent = home
        .ok(&["deliveries", "resend", "--failed-since", "10m"])
        .await;
    assert!(
        resent.contains(&job_id) && resent.contains("ok 200"),
        "{resent}"
    );
    assert_eq!(jobs_app.received().len(), 2);
    assert_eq!(
        jobs_app.received()[1].json()["data"]["job_id"],
        job_id.as_str()
    );
    // Delivered by the resend: the first attempt's retry will not come, and no longer shows.
    let log = api(&format!("/v1/webhook/deliveries?of={job_id}")).await;
    let attempts = log["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{log}");
    assert!(
        attempts.iter().all(|a| a["next_attempt_at"].is_null()),
        "{log}"
    );
    // The lists as JSON: the API's own answers.
    let listed: Value =
        serde_json::from_str(&home.ok(&["deliveries", "list", "--json"]).await).unwrap();
    assert!(listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["subject_id"] == job_id.as_str() && a["succeeded"] == true));
    let jobs: Value = serde_json::from_str(&home.ok(&["jobs", "list", "--json"]).await).unwrap();
    assert_eq!(jobs["data"][0]["job_id"], job_id.as_str(), "{jobs}");
    // Nothing failed since then.
    let again = home
        .ok(&["deliveries", "resend", "--failed-since", "10m"])
        .await;
    assert!(again.contains("no job event has failed"), "{again}");

    // `trigger --param`: checked against the server's document before anything runs.
    let ft_key = s.line("SOUNDCHECK_FT_KEY=");
    let ft = |path: String| {
        let req = reqwest::Client::new()
            .get(format!("{}{path}", s.base))
            .header("X-API-Key", &ft_key);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let count = |v: Value| v["data"].as_array().unwrap().len();
    let (jobs_before, gens_before) = (
        count(api("/v1/jobs").await),
        count(ft("/v1/generations".into()).await),
    );
    let (ok, _, err) = home
        .run(&[
            "trigger",
            "job.completed",
            "--endpoint",
            "/v1/transcribe",
            "-p",
            "bogus=1",
        ])
        .await;
    assert!(!ok);
    assert!(
        err.contains("no field \"bogus\"") && err.contains("onset_threshold"),
        "{err}"
    );
    let (ok, _, err) = home
        .run(&["trigger", "generation.completed", "-p", "duration=9999"])
        .await;
    assert!(!ok);
    assert!(err.contains("1 to 600"), "{err}");
    assert_eq!(count(api("/v1/jobs").await), jobs_before);
    assert_eq!(count(ft("/v1/generations".into()).await), gens_before);
    // A valid one reaches the request.
    let said = home
        .ok(&["trigger", "generation.completed", "-p", "bpm=90"])
        .await;
    let gen_id = said
        .split_whitespace()
        .find(|w| w.starts_with("gen_"))
        .unwrap()
        .to_string();
    assert_eq!(
        ft(format!("/v1/generations/{gen_id}")).await["parameters"]["bpm"],
        90
    );

    // SIGTERM: the endpoint URL goes back to what it was.
    crate::util::sigterm(&listen);
    line_with(
        &mut out,
        &format!("Restored the endpoint URL to {original}"),
    )
    .await;
    let status = tokio::time::timeout(Duration::from_secs(20), listen.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(api("/v1/webhook").await["url"], original);
    s.terminate().await;
}

/// A reader that goes away (`listen --json | head -1`, `jobs list | head -c10`) is not a crash:
/// client commands end quietly, and `listen` stops as on Ctrl-C, putting the endpoint URL back.
/// A forward target that is not an http(s) URL, or is the inbox itself, is refused at start.
#[tokio::test]
async fn a_closed_stdout_ends_commands_quietly_and_listen_restores_the_url() {
    use tokio::io::AsyncReadExt;

    let home = Home::new();
    let s = Served::start(&home, &home.path("d"), &[]).await;
    let original = "http://127.0.0.1:9/original";
    home.ok(&["webhook", "set-url", original]).await;
    for _ in 0..3 {
        home.ok(&["trigger", "job.completed"]).await;
    }

    // A client command whose reader closes after ten bytes.
    let mut jobs = home
        .cmd()
        .args(["jobs", "list", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = jobs.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).await.unwrap();
    drop(stdout);
    let done = tokio::time::timeout(Duration::from_secs(30), jobs.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(done.status.code(), Some(101), "{err}");

    // `listen --json`: events on stdout; once its reader is gone it stops and restores the URL.
    let mut listen = home
        .cmd()
        .args(["listen", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut notes = BufReader::new(listen.stderr.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), notes.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("listen said it was ready");
        if line.contains("Ready!") {
            break;
        }
    }
    drop(listen.stdout.take());
    home.ok(&["trigger", "job.completed"]).await;
    let status = tokio::time::timeout(Duration::from_secs(30), listen.wait())
        .await
        .expect("listen stops once its stdout is gone")
        .unwrap();
    let mut rest = Vec::new();
    while let Ok(Some(line)) = notes.next_line().await {
        rest.push(line);
    }
    assert!(status.success(), "{rest:#?}");
    assert!(rest.iter().all(|l| !l.contains("panicked")), "{rest:#?}");
    let shown = home.ok(&["webhook", "show"]).await;
    assert!(shown.contains(original), "{shown}");

    // Forward targets are checked before the endpoint changes.
    for (target, said) in [
        ("notaurl", "is not a URL"),
        ("ftp://127.0.0.1/x", "http:// or https://"),
        ("http://127.0.0.1:18777/webhook", "is this inbox itself"),
        ("http://localhost:18777/", "is this inbox itself"),
    ] {
        let (ok, _, err) = home
            .run(&["listen", "--port", "18777", "--forward-to", target])
            .await;
        assert!(!ok && err.contains(said), "{target}: {err}");
    }
    let shown = home.ok(&["webhook", "show"]).await;
    assert!(shown.contains(original), "{shown}");
    drop(s);
}

/// Stacked `listen`s (the README's steps 2 and 3 without stopping the first): stopped in any
/// order, the endpoint URL ends where it was before them. Each goes back to the nearest one below
/// that still runs, and past those that have stopped (it once went back to a dead inbox).
#[tokio::test]
async fn stacked_listens_stopped_in_either_order_leave_the_url_they_found() {
    let home = Home::new();
    let s = Served::start(&home, &home.path("d"), &[]).await;
    let original = "http://127.0.0.1:9/original";
    home.ok(&["webhook", "set-url", original]).await;
    let start = || async {
        let mut child = home
            .cmd()
            .arg("listen")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = line_with(&mut out, "Ready!").await;
        let url = ready.split_whitespace().last().unwrap().to_string();
        (child, out, url)
    };
    let url_now = || async { home.ok(&["webhook", "show", "--json"]).await };
    let to = |url: &str| format!("Restored the endpoint URL to {url}");

    // The first stopped first: the second then goes past it, to the original.
    let (mut a, mut a_out, a_url) = start().await;
    let (mut b, mut b_out, b_url) = start().await;
    line_with(&mut b_out, "another `listen`'s inbox").await;
    stop_saying(&mut a, &mut a_out, "left as it is").await;
    assert!(url_now().await.contains(&b_url));
    stop_saying(&mut b, &mut b_out, &to(original)).await;
    assert!(url_now().await.contains(original), "{}", url_now().await);

    // The second stopped first: it goes back to the first, which then restores the original.
    let (mut a, mut a_out, a_url2) = start().await;
    let (mut b, mut b_out, _) = start().await;
    stop_saying(&mut b, &mut b_out, &to(&a_url2)).await;
    stop_saying(&mut a, &mut a_out, &to(original)).await;
    assert!(url_now().await.contains(original));
    assert_ne!(a_url, b_url);

    // Three, the middle one stopped first: the top one goes back to the bottom one, still
    // running, not past it.
    let (mut a, mut a_out, a_url3) = start().await;
    let (mut b, mut b_out, _) = start().await;
    let (mut c, mut c_out, _) = start().await;
    stop_saying(&mut b, &mut b_out, "left as it is").await;
    stop_saying(&mut c, &mut c_out, &to(&a_url3)).await;
    stop_saying(&mut a, &mut a_out, &to(original)).await;
    assert!(url_now().await.contains(original));
    drop(s);
}

/// Two `listen`s that forward to each other: an event goes round once, then the inbox that finds
/// itself on the event's way answers `508` instead of sending it round again (it once bounced
/// tens of thousands of times a minute).
#[tokio::test]
async fn listens_forwarding_to_each_other_stop_the_loop() {
    let home = Home::new();
    let s = Served::start(&home, &home.path("d"), &[]).await;
    let b_url = "http://127.0.0.1:18783/webhook";
    let mut a = home
        .cmd()
        .args(["listen", "--forward-to", b_url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut a_out = BufReader::new(a.stdout.take().unwrap()).lines();
    let ready = line_with(&mut a_out, "Ready!").await;
    let a_url = ready.split_whitespace().last().unwrap().to_string();
    let mut b = home
        .cmd()
        .args(["listen", "--port", "18783", "--forward-to", &a_url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut b_out = BufReader::new(b.stdout.take().unwrap()).lines();
    line_with(&mut b_out, "Ready!").await;

    home.ok(&["trigger", "job.completed"]).await;
    // The server → B → A → B: B is on the way already, so it stops there.
    let stopped = line_with(&mut b_out, "[508]").await;
    assert!(
        stopped.contains("forwarding loop") && stopped.contains(&a_url),
        "{stopped}"
    );
    // The 508 goes back down the chain: A's relay to B, then B's first relay to A, get it.
    line_with(&mut a_out, &format!("<-- [508] POST {b_url}")).await;
    line_with(&mut b_out, &format!("<-- [508] POST {a_url}")).await;
    // Nothing more comes round.
    let more = tokio::time::timeout(Duration::from_secs(2), b_out.next_line()).await;
    assert!(more.is_err(), "B printed more: {more:?}");
    stop_saying(&mut b, &mut b_out, "Restored").await;
    stop_saying(&mut a, &mut a_out, "Restored").await;
    drop(s);
}

/// Stops a `listen` with SIGTERM and waits for it to say `said` and exit.
async fn stop_saying(
    child: &mut tokio::process::Child,
    out: &mut Lines<BufReader<ChildStdout>>,
    said: &str,
) {
    crate::util::sigterm(child);
    line_with(out, said).await;
    child.wait().await.unwrap();
}
