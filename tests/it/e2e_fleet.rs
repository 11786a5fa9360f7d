//! A fleet on one PostgreSQL: two API nodes (`serve --workers 0`) and workers (`soundcheck
//! worker`), real processes sharing a fresh database and a media directory. A job submitted on
//! one API node is polled on the other and runs on a worker; the poll limit and an
//! `Idempotency-Key` hold across nodes; `kill -9` of the worker running a job hands it, after its lease, to the
//! other worker, which completes it with exactly one webhook.
//!
//! Needs a PostgreSQL server: `SOUNDCHECK_TEST_DATABASE` (an admin URL, e.g. from
//! `scripts/pg/cluster.sh`), which `.ci/run` sets. Without it the test says so and passes only
//! when `SOUNDCHECK_REQUIRE_POSTGRES` is unset.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::util::{fleet_database, form, free_port, wav_bytes, Node, TestReceiver};

/// `soundcheck <kind>` on the fleet's database and media directory, with a 3 s lease.
async fn fleet_node(kind: &str, db: &str, media: &Path, data: &Path, extra: &[&str]) -> Node {
    let media = media.to_string_lossy();
    let mut args = vec![
        "--database",
        db,
        "--lease-secs",
        "3",
        "--time-scale",
        "0.05",
        "--media-dir",
        &media,
    ];
    args.extend_from_slice(extra);
    Node::spawn(kind, data, &args, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_nodes_and_two_workers_share_one_database() {
    let Some(db) = fleet_database().await else {
        return;
    };
    let media = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let rx = TestReceiver::start().await;
    // Result URLs name the fleet's public address: here, node A.
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let addr_a = format!("127.0.0.1:{port}");
    let a = fleet_node(
        "serve",
        &db,
        media.path(),
        dirs[0].path(),
        &[
            "--addr",
            &addr_a,
            "--public-url",
            &public,
            "--workers",
            "0",
            "--webhook-url",
            &rx.url,
        ],
    )
    .await;
    let b = fleet_node(
        "serve",
        &db,
        media.path(),
        dirs[1].path(),
        &[
            "--addr",
            "127.0.0.1:0",
            "--public-url",
            &public,
            "--workers",
            "0",
        ],
    )
    .await;
    assert!(
        !a.tl_key.is_empty() && a.tl_key == b.tl_key,
        "every node has the same keys"
    );
    assert_ne!(
        a.base, b.base,
        "two API nodes, each polled at its own address"
    );
    // Client commands read the fleet's database directly: its keys, its one shared balance.
    let cli = |args: &[&str]| {
        let out = crate::util::soundcheck()
            .args(args)
            .args(["--database", &db])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(cli(&["keys", "--json"])["tl_key"], a.tl_key.as_str());
    let before = cli(&["credits", "show", "--json"])["balance"]
        .as_i64()
        .unwrap();
    let after = cli(&["credits", "add", "7", "--json"])["balance"]
        .as_i64()
        .unwrap();
    assert_eq!(after, before + 7);
    let r = b.req(Method::GET, "/v1/credits").send().await.unwrap();
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["balance"].as_i64(), Some(after), "{seen}");
    let mut w1 = fleet_node(
        "worker",
        &db,
        media.path(),
        dirs[2].path(),
        &["--public-url", &public, "--workers", "1"],
    )
    .await;

    // Submitted on A, polled on B, run by the worker; its result file is served by B.
    let r = a
        .req(Method::POST, "/v1/analyze/upload")
        .multipart(form(wav_bytes(1.0), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    let id = first["job_id"].as_str().unwrap().to_string();
    let done = b.wait_status(&id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "completed", "{done}");

    // The one-poll-per-second limit holds across nodes: a poll on A, then one on B at once → 429.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let poll = |node: &Node| node.req(Method::GET, &format!("/v1/jobs/{id}")).send();
    assert_eq!(poll(&a).await.unwrap().status(), 200);
    let second = poll(&b).await.unwrap();
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");

    // The same Idempotency-Key on either node names the same job.
    let send = |node: &Node| {
        node.req(Method::POST, "/v1/analyze/upload")
            .header("Idempotency-Key", "fleet-key-1")
            .multipart(form(wav_bytes(0.5), &[]))
            .send()
    };
    let on_a: Value = send(&a).await.unwrap().json().await.unwrap();
    let on_b: Value = send(&b).await.unwrap().json().await.unwrap();
    assert_eq!(on_a["job_id"], on_b["job_id"], "{on_a} {on_b}");

    // A job whose worker is killed mid-run completes on the other worker after the lease.
    let r = b
        .req(Method::POST, "/v1/analyze/upload")
        .header("X-Soundcheck-Fault", "delay=4000")
        .multipart(form(wav_bytes(0.5), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let slow: Value = r.json().await.unwrap();
    let slow_id = slow["job_id"].as_str().unwrap().to_string();
    // The idempotent job may run first: wait for ours to be the running one.
    a.wait_status(&slow_id, &["running"], 60).await;
    w1.child.start_kill().unwrap();
    w1.child.wait().await.unwrap();
    let killed = Instant::now();
    let _w2 = fleet_node(
        "worker",
        &db,
        media.path(),
        dirs[3].path(),
        &["--public-url", &public, "--workers", "1"],
    )
    .await;
    let done = a.wait_status(&slow_id, &["completed", "failed"], 60).await;
    assert_eq!(done["status"], "completed", "{done}");
    let took = killed.elapsed();
    // Lease (3 s) + the sweep's half-lease tick + the 4 s delay + start-up and polling slack.
    assert!(took < Duration::from_secs(25), "failover took {took:?}");
    // Exactly one `job.completed` per job, whichever node dispatched it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for job in [&id, &slow_id] {
        let sent: Vec<_> = rx
            .received()
            .into_iter()
            .filter(|r| r.json()["data"]["job_id"] == job.as_str())
            .collect();
        assert_eq!(sent.len(), 1, "{job}: {} webhooks", sent.len());
        assert_eq!(sent[0].json()["type"], "job.completed");
    }
    eprintln!("fleet failover after kill -9: {took:?}");

    // Client commands given only the fleet's database find an API node (B started last) and
    // use the keys stored there: the job, and its webhook in the delivery log.
    let shown = cli(&["jobs", "show", &slow_id]);
    assert_eq!(shown["status"], "completed", "{shown}");
    let log = cli(&["deliveries", "list", "--of", &slow_id, "--json"]);
    let attempts = log["data"].as_array().expect("a list of attempts");
    assert!(
        attempts.iter().any(|d| d["succeeded"] == true),
        "the delivery log of {slow_id}: {log}"
    );

    // A node whose media storage is not the fleet's (its own data directory here) refuses to
    // start, saying why, instead of claiming jobs whose uploads it cannot read.
    let refused = |data: &Path, media: Option<&Path>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_soundcheck"));
        cmd.args(["worker", "--database", &db, "--public-url", &public])
            .args(["--lease-secs", "3", "--time-scale", "0.05"])
            .arg("--data-dir")
            .arg(data)
            .env("XDG_RUNTIME_DIR", data.join("run"))
            .env("XDG_STATE_HOME", data.join("state"))
            .stdin(std::process::Stdio::null());
        if let Some(dir) = media {
            cmd.arg("--media-dir").arg(dir);
        }
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .expect("a worker on other media started instead of refusing")
                .unwrap();
            assert!(!out.status.success());
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    };
    // The fleet's storage was marked more than MARKER_WAIT (10 s) ago (set so here, whatever
    // the test took until now): the refusal is immediate, not after waiting for a marker that a
    // node starting at the same moment might still be writing.
    let store = soundcheck::store::Store::connect(&db).await.unwrap();
    store
        .write(|tx| {
            let long_ago = soundcheck::store::db::now_ms(tx)? - 60_000;
            soundcheck::store::settings::set(tx, "fleet_media_marked_at", &long_ago.to_string())
        })
        .await
        .unwrap();
    let stray = tempfile::tempdir().unwrap();
    let asked = Instant::now();
    let stderr = refused(stray.path(), None).await;
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "refused at once, not after a wait: {:?}",
        asked.elapsed()
    );
    assert!(
        stderr.contains("is not this fleet's media storage")
            && stderr.contains("lacks the marker")
            && stderr.contains(&*media.path().to_string_lossy())
            && stderr.contains("--claim-media"),
        "it names the fleet's storage and the way out: {stderr}"
    );

    // `jobs tail` given only the database follows the fleet through the address B records first
    // (its public URL, which is A); killed A, it goes on through B's own address: a job running
    // when A died, and one submitted on B afterwards, are followed to their end.
    let mut a = a;
    let mut tail = crate::util::soundcheck_async()
        .args(["jobs", "tail", "--json", "--database", &db])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (out, err) = (
        Arc::new(Mutex::new(String::new())),
        Arc::new(Mutex::new(String::new())),
    );
    for (pipe, text) in [
        (
            Box::new(tail.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            out.clone(),
        ),
        (Box::new(tail.stderr.take().unwrap()), err.clone()),
    ] {
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let submit = |node: &Node, delay_ms: u32| {
        node.req(Method::POST, "/v1/analyze/upload")
            .header("X-Soundcheck-Fault", format!("delay={delay_ms}"))
            .multipart(form(wav_bytes(0.5), &[]))
            .send()
    };
    let running: Value = submit(&a, 5000).await.unwrap().json().await.unwrap();
    let running = running["job_id"].as_str().unwrap().to_string();
    a.wait_status(&running, &["running"], 60).await;
    // `trigger` runs a job that queues behind it (one worker, busy), and A dies before the job
    // ends: it follows the job through B and reads the webhook endpoint there, not at dead A.
    let trigger = crate::util::soundcheck_async()
        .args(["trigger", "job.completed", "--json", "--database", &db])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queued: Value = b
            .req(Method::GET, "/v1/jobs?status=queued")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !queued["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "trigger submitted no job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `jobs wait` on the running job goes on through B too.
    let wait = crate::util::soundcheck_async()
        .args(["jobs", "wait", &running, "--json", "--database", &db])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(60), wait.wait_with_output())
        .await
        .expect("jobs wait ends")
        .unwrap();
    let said = String::from_utf8_lossy(&waited.stderr);
    assert!(waited.status.success(), "{said}");
    let job: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    assert!(
        said.contains(&format!(
            "{public} stopped answering; following the fleet through {}",
            b.base
        )),
        "{said}"
    );
    let triggered = tokio::time::timeout(Duration::from_secs(60), trigger.wait_with_output())
        .await
        .expect("trigger ends")
        .unwrap();
    let said = String::from_utf8_lossy(&triggered.stderr);
    assert!(triggered.status.success(), "{said}");
    let outcome: Value = serde_json::from_slice(&triggered.stdout).unwrap();
    assert_eq!(outcome["event"], "job.completed", "{outcome}");
    assert_eq!(outcome["webhook_url"], rx.url.as_str(), "{outcome}");
    assert!(
        said.contains(&format!(
            "{public} stopped answering; following the fleet through {}",
            b.base
        )),
        "{said}"
    );
    let after: Value = submit(&b, 1).await.unwrap().json().await.unwrap();
    let after = after["job_id"].as_str().unwrap().to_string();
    let ended = |id: &str| {
        out.lock().unwrap().lines().any(|l| {
            let l: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            l["event"] == "done" && l["job"]["job_id"] == id && l["job"]["status"] == "completed"
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(ended(&running) && ended(&after)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (out, err) = (out.lock().unwrap().clone(), err.lock().unwrap().clone());
    assert!(
        ended(&running) && ended(&after),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    // The stream reopened at B starts with the job as it is: not printed again when unchanged.
    let running_lines = out
        .lines()
        .filter(|l| {
            let l: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            l["event"] == "status"
                && l["job"]["job_id"] == running.as_str()
                && l["job"]["status"] == "running"
        })
        .count();
    assert_eq!(running_lines, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains(&format!(
            "{public} stopped answering; following the fleet through {}",
            b.base
        )),
        "{err}"
    );
    assert!(tail.try_wait().unwrap().is_none(), "tail runs on: {err}");
}

/// The submit rule under contention from two nodes (two independent connection pools to one
/// database): 60 concurrent submissions of price 1 against a balance of 25 admit exactly 25, the
/// balance ends at 0 and never goes below it, and the ledger adds up; 20 submissions sharing one
/// `Idempotency-Key` from both nodes make one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credits_and_idempotency_hold_under_concurrent_submits_from_two_nodes() {
    use soundcheck::jobs::submit::{admit, Refusal};
    use soundcheck::store::jobs::{NewJob, NewUpload};
    use soundcheck::store::{credits, states::LedgerKind, Store};

    let Some(db) = fleet_database().await else {
        return;
    };
    let nodes = [
        Store::connect(&db).await.unwrap(),
        Store::connect(&db).await.unwrap(),
    ];
    nodes[0]
        .write(|tx| credits::record(tx, None, LedgerKind::Grant, 25))
        .await
        .unwrap();
    let new = |i: usize| {
        (
            NewUpload {
                id: format!("upl_{i}"),
                path: format!("/tmp/upl_{i}"),
                filename: None,
                size: 1,
                sha256: String::new(),
                data: None,
            },
            NewJob {
                id: format!("job_{i:03}"),
                endpoint: "/v1/master".into(),
                engine: "master".into(),
                params: serde_json::json!({}),
                fault: None,
                trace_id: "t".into(),
                price: 1,
                estimated_completion: "2026-01-01T00:00:00Z".into(),
            },
        )
    };
    let mut calls = Vec::new();
    for i in 0..80 {
        let store = nodes[i % 2].clone();
        let (upload, job) = new(i);
        // The first 60 are plain submits; the last 20 share one key and one request.
        let key = (i >= 60).then(|| "shared-key".to_string());
        calls.push(tokio::spawn(async move {
            store
                .write(move |tx| admit(tx, &upload, &job, key.as_deref(), "same-request"))
                .await
        }));
    }
    let (mut admitted, mut broke, mut keyed) = (0, 0, std::collections::BTreeSet::new());
    for (i, call) in calls.into_iter().enumerate() {
        match call.await.unwrap().unwrap() {
            Ok(a) if i >= 60 => {
                keyed.insert(a.job.id);
            }
            Ok(_) => admitted += 1,
            Err(Refusal::InsufficientCredits { .. }) => broke += 1,
            Err(other) => panic!("submit {i}: {other:?}"),
        }
    }
    // The keyed submissions compete for the same credits: together with the plain ones, exactly
    // 25 jobs were made.
    assert!(keyed.len() <= 1, "one key, one job: {keyed:?}");
    assert_eq!(
        admitted + keyed.len(),
        25,
        "admitted {admitted}, refused {broke}"
    );
    let ledger = nodes[1].read(|tx| credits::recent(tx, 1000)).await.unwrap();
    let mut running = 0;
    for m in ledger.iter().rev() {
        running += m.delta;
        assert_eq!(m.balance_after, running, "ledger row {} adds up", m.id);
        assert!(
            m.balance_after >= 0,
            "balance went negative at row {}",
            m.id
        );
    }
    assert_eq!(running, 0);
}

/// Wake-ups cross nodes: a job queued through one node's store reaches another node's `LISTEN`
/// as `Work`, and a due webhook event as `Outbox` (the polling fallback is not what is tested).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_listener_hears_new_work_and_due_events() {
    use soundcheck::store::db::Wake;
    use soundcheck::store::states::{EventKind, EventState};
    use soundcheck::store::{webhooks, Store};

    let Some(db) = fleet_database().await else {
        return;
    };
    let (here, there) = (
        Store::connect(&db).await.unwrap(),
        Store::connect(&db).await.unwrap(),
    );
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = tokio::spawn({
        let stop = stop.clone();
        async move {
            there
                .listen(
                    move |w| {
                        let _ = tx.send(w);
                    },
                    stop,
                )
                .await
        }
    });
    // The listener's connection needs a moment to issue LISTEN; notify until it hears one.
    let heard_one = |want: Wake, heard: &mut tokio::sync::mpsc::UnboundedReceiver<Wake>| {
        while let Ok(w) = heard.try_recv() {
            if w == want {
                return true;
            }
        }
        false
    };
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        n += 1;
        let id = format!("evt_{n}");
        here.write(move |tx| {
            webhooks::insert_event(
                tx,
                &webhooks::NewEvent {
                    id: &id,
                    kind: EventKind::Generation,
                    event_type: "generation.completed",
                    subject_id: "gen_x",
                    url: Some("http://127.0.0.1:9/"),
                    payload: "{}",
                    state: EventState::Pending,
                    next_attempt_at: Some(0),
                },
            )
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if heard_one(Wake::Outbox, &mut heard) {
            break;
        }
        assert!(Instant::now() < deadline, "no Outbox wake-up heard");
    }
    let new = soundcheck::store::generations::NewGeneration {
        id: "gen_wake".into(),
        prompt: "lofi".into(),
        parameters: serde_json::json!({}),
        model: "procedural".into(),
        webhook: None,
        fault: None,
        trace_id: "t".into(),
    };
    here.write(move |tx| soundcheck::store::generations::insert(tx, &new))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !heard_one(Wake::Work, &mut heard) {
        assert!(Instant::now() < deadline, "no Work wake-up heard");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    listener.await.unwrap();
}

/// TLS to PostgreSQL as libpq chooses it from the URL: `disable` is plain, `prefer` (the
/// default) and `require` encrypt, `verify-ca` checks the chain against `sslrootcert`, and
/// `verify-full` also the host name — the test cluster's certificate names `localhost`, not
/// 127.0.0.1, and its CA is not one the system trusts. Needs `SOUNDCHECK_TEST_DATABASE_CA` (the
/// CA `scripts/pg/cluster.sh` makes); CI sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_postgres_use_tls_as_the_url_asks() {
    use soundcheck::params;
    use soundcheck::store::Store;

    let Some(db) = fleet_database().await else {
        return;
    };
    let Some(ca) = std::env::var("SOUNDCHECK_TEST_DATABASE_CA")
        .ok()
        .filter(|c| !c.is_empty())
    else {
        assert!(
            std::env::var_os("SOUNDCHECK_REQUIRE_POSTGRES").is_none(),
            "SOUNDCHECK_REQUIRE_POSTGRES is set but SOUNDCHECK_TEST_DATABASE_CA is not"
        );
        eprintln!("TLS test not run: set SOUNDCHECK_TEST_DATABASE_CA to the cluster's CA file");
        return;
    };
    // Whether this session's connection is encrypted, as the server sees it.
    let encrypted = |url: String| async move {
        let store = Store::connect(&url).await.map_err(|e| e.to_string())?;
        store
            .read(|c| {
                c.query_opt(
                    "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl
                     WHERE pid = pg_backend_pid()",
                    params![],
                    |r| r.get::<i64>(0),
                )
            })
            .await
            .map(|v| v == Some(1))
            .map_err(|e| e.to_string())
    };
    let with = |query: &str| format!("{db}?{query}");
    let by_name = db.replacen("@127.0.0.1:", "@localhost:", 1);
    assert_ne!(by_name, db, "the test cluster's URL names 127.0.0.1: {db}");

    assert_eq!(
        encrypted(db.clone()).await,
        Ok(true),
        "prefer (the default)"
    );
    assert_eq!(encrypted(with("sslmode=require")).await, Ok(true));
    assert_eq!(encrypted(with("sslmode=disable")).await, Ok(false));
    assert_eq!(
        encrypted(with(&format!("sslmode=verify-ca&sslrootcert={ca}"))).await,
        Ok(true),
        "verify-ca accepts the chain whatever the name"
    );
    assert_eq!(
        encrypted(format!("{by_name}?sslmode=verify-full&sslrootcert={ca}")).await,
        Ok(true),
        "verify-full by the certificate's name"
    );
    let wrong_name = encrypted(with(&format!("sslmode=verify-full&sslrootcert={ca}")))
        .await
        .expect_err("verify-full to 127.0.0.1 with a certificate for localhost");
    assert!(
        wrong_name.to_lowercase().contains("certificate"),
        "{wrong_name}"
    );
    let untrusted = encrypted(format!("{by_name}?sslmode=verify-full&sslrootcert=system"))
        .await
        .expect_err("verify-full against the system's roots, which lack the test CA");
    assert!(
        untrusted.contains("sslrootcert="),
        "says what to do: {untrusted}"
    );
    // The cluster's Unix socket (in the directory holding its CA): plain, whatever the mode.
    let socket_dir = Path::new(&ca)
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (rest, name) = db.rsplit_once('/').unwrap();
    let port = rest.rsplit_once(':').unwrap().1;
    let unix = format!("postgres://postgres@/{name}?host={socket_dir}&port={port}");
    assert_eq!(encrypted(unix.clone()).await, Ok(false), "{unix}");
    assert_eq!(
        encrypted(format!("{unix}&sslmode=require")).await,
        Ok(false)
    );
}

/// Two workers started at the same moment on a fresh database, each with its own media
/// directory: the check is one serialised decision, so exactly one marks its storage and runs;
/// the other (after waiting for a marker that never comes to its storage) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_nodes_starting_at_once_on_different_media_one_is_refused() {
    let Some(db) = fleet_database().await else {
        return;
    };
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |data: &Path, media: &Path| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_soundcheck"))
            .args([
                "worker",
                "--database",
                &db,
                "--public-url",
                "http://127.0.0.1:9",
            ])
            .arg("--data-dir")
            .arg(data)
            .arg("--media-dir")
            .arg(media)
            .env("XDG_RUNTIME_DIR", data.join("run"))
            .env("XDG_STATE_HOME", data.join("state"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut a = start(dirs[0].path(), dirs[2].path());
    let mut b = start(dirs[1].path(), dirs[3].path());
    // The loser gives up 10 s after the winner marked its storage.
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        let done = [a.try_wait().unwrap(), b.try_wait().unwrap()];
        if done.iter().any(Option::is_some) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exited = [a.try_wait().unwrap(), b.try_wait().unwrap()];
    let refused: Vec<_> = exited.iter().flatten().collect();
    assert_eq!(refused.len(), 1, "exactly one is refused: {exited:?}");
    assert!(!refused[0].success());
    let marked: Vec<bool> = [&dirs[2], &dirs[3]]
        .iter()
        .map(|d| d.path().join(".soundcheck-fleet").exists())
        .collect();
    assert_eq!(
        marked,
        [exited[0].is_none(), exited[1].is_none()],
        "the running one's storage, and only it, is marked"
    );
}

/// A node started with `--tl-key` stores the fleet's new key, and the nodes already running take
/// it within seconds (each kept the key it read at start: behind a load balancer, half of all
/// requests were refused). Client commands given the fleet's database take it too: `jobs tail`
/// when its node refuses the old key, `jobs wait` when it moves to another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_changed_by_one_node_is_taken_by_the_others() {
    use tokio::io::AsyncBufReadExt;
    let Some(db) = fleet_database().await else {
        return;
    };
    let media = tempfile::tempdir().unwrap();
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let api = [
        "--addr",
        "127.0.0.1:0",
        "--public-url",
        "http://127.0.0.1:9",
        "--workers",
        "0",
    ];
    let mut a = fleet_node("serve", &db, media.path(), da.path(), &api).await;
    let old = a.tl_key.clone();
    // No worker: a job stays queued until cancelled.
    let submit = |key: &str| {
        reqwest::Client::new()
            .post(format!("{}/v1/analyze/upload", a.base))
            .bearer_auth(key)
            .multipart(form(wav_bytes(0.2), &[]))
            .send()
    };
    let queued: Value = submit(&old).await.unwrap().json().await.unwrap();
    let queued = queued["job_id"].as_str().unwrap().to_string();
    let client = |args: &[&str]| {
        crate::util::soundcheck_async()
            .args(args)
            .args(["--json", "--database", &db])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut tail = client(&["jobs", "tail"]);
    let wait = client(&["jobs", "wait", &queued]);
    let mut tail_out = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), tail_out.next_line())
        .await
        .expect("tail prints the queued job")
        .unwrap()
        .unwrap();
    assert!(line.contains(&queued), "{line}");
    let new = "tl_test_NewKeyOfTheFleet00000000";
    assert_eq!(new.len(), 8 + 24);
    let mut args = api.to_vec();
    args.extend(["--tl-key", new]);
    let b = fleet_node("serve", &db, media.path(), db_dir.path(), &args).await;
    assert_eq!(b.tl_key, new);
    let status = |key: &str| {
        let req = reqwest::Client::new()
            .get(format!("{}/v1/jobs", a.base))
            .bearer_auth(key);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while status(new).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "node A still refuses the fleet's new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status(&old).await, 401, "the old key is refused everywhere");

    // `jobs tail`'s next look at A was refused; it read the new key and goes on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        tail.try_wait().unwrap().is_none(),
        "tail ended on the new key"
    );
    let next: Value = submit(new).await.unwrap().json().await.unwrap();
    let next = next["job_id"].as_str().unwrap().to_string();
    let line = tokio::time::timeout(Duration::from_secs(30), tail_out.next_line())
        .await
        .expect("tail prints the job submitted with the new key")
        .unwrap()
        .unwrap();
    assert!(line.contains(&next), "{line}");
    // `jobs wait` followed A's stream; A dies, and it goes on through B with the new key: the
    // job's end (cancelled through B) is what it prints.
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/jobs/{queued}", b.base))
        .bearer_auth(new)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let waited = tokio::time::timeout(Duration::from_secs(60), wait.wait_with_output())
        .await
        .expect("jobs wait ends")
        .unwrap();
    let said = String::from_utf8_lossy(&waited.stderr);
    let job: Value =
        serde_json::from_slice(&waited.stdout).unwrap_or_else(|e| panic!("{e}: {said}"));
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "cancelled", "{job}");
    assert!(
        said.contains("stopped answering; following the fleet through")
            && !said.contains("401 unauthorized"),
        "{said}"
    );
}

/// The fleet's database goes away while a long job runs and a client follows its `/events`
/// stream, first down (connections dropped, 6 s: two leases), then frozen (bytes held, longer
/// than the 20 s a request waits for it):
/// - the stream stays open through both and ends with `done`, `completed`;
/// - a request during the freeze answers `503 service_unavailable` after about 20 s, not when
///   the database comes back;
/// - the job is not taken from its worker (it runs once), though every lease ran out meanwhile:
///   the node sweeps only after it reached the database for a whole lease, and by then the
///   worker has renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_waited_out_by_streams_requests_and_leases() {
    use crate::util::{DbRelay, RelayMode};
    use futures_util::StreamExt;
    let Some(db) = fleet_database().await else {
        return;
    };
    let relay = DbRelay::start(&db).await;
    let (media, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = fleet_node(
        "serve",
        &relay.url,
        media.path(),
        data.path(),
        &["--addr", "127.0.0.1:0", "--workers", "1"],
    )
    .await;
    let r = node
        .req(Method::POST, "/v1/analyze/upload")
        .header("X-Soundcheck-Fault", "delay=45000")
        .multipart(form(wav_bytes(0.5), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    node.wait_status(&id, &["running"], 30).await;

    // The stream's event names, and whether it has ended.
    let seen = Arc::new(Mutex::new((Vec::<String>::new(), None::<Value>, false)));
    let stream = node
        .req(Method::GET, &format!("/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut body = stream.bytes_stream();
            let mut text = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let frame: String = text.drain(..end + 2).collect();
                    let event = frame.lines().find_map(|l| l.strip_prefix("event:"));
                    let data = frame.lines().find_map(|l| l.strip_prefix("data:"));
                    if let (Some(event), Some(data)) = (event, data) {
                        let mut s = seen.lock().unwrap();
                        s.0.push(event.trim().to_string());
                        s.1 = serde_json::from_str(data.trim()).ok();
                    }
                }
            }
            seen.lock().unwrap().2 = true;
        })
    };

    // A stream may end only with `done`. The job outlasts the outage by some 15 s, so the stream
    // is open through it; on a slow machine the job may end as the freeze ends, and its stream
    // with it, which is the same promise kept (the CI run of f345fdf did so).
    let ended_without_done = || {
        let s = seen.lock().unwrap();
        s.2 && s.0.last().map(String::as_str) != Some("done")
    };
    relay.set(RelayMode::Cut);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!ended_without_done(), "the stream ended in the outage");
    relay.set(RelayMode::Open);
    tokio::time::sleep(Duration::from_secs(2)).await;

    relay.set(RelayMode::Frozen);
    let asked = Instant::now();
    let r = node
        .req(Method::GET, &format!("/v1/jobs/{id}"))
        .send()
        .await
        .unwrap();
    let waited = asked.elapsed();
    relay.set(RelayMode::Open);
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
    assert!(
        waited >= Duration::from_secs(15) && waited < Duration::from_secs(35),
        "answered after {waited:?}"
    );
    assert!(!ended_without_done(), "the stream ended in the freeze");

    let done = node.wait_status(&id, &["completed", "failed"], 90).await;
    assert_eq!(done["status"], "completed", "{done}");
    tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends after the job")
        .unwrap();
    let (events, last, _) = seen.lock().unwrap().clone();
    assert_eq!(
        events.first().map(String::as_str),
        Some("status"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("done"),
        "{events:?}"
    );
    assert_eq!(last.unwrap()["status"], "completed");
    let direct = soundcheck::store::Store::connect(&db).await.unwrap();
    let key = id.clone();
    let job = direct
        .read(move |c| soundcheck::store::jobs::get(c, &key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        job.runs, 1,
        "the job was taken from its worker and run again"
    );
}

/// Nodes must agree on the settings a fleet shares: one started with another `--lease-secs`
/// (its leases would be swept on another clock) or `--time-scale` is refused, naming the node it
/// disagrees with; `--claim-media` is refused while another node runs. A node stopped cleanly
/// leaves the fleet at once: client commands find the API node still running, and with none
/// running the next may claim new storage and start with new values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_agree_on_shared_settings_and_claim_media_waits_for_the_others() {
    let Some(db) = fleet_database().await else {
        return;
    };
    let media = tempfile::tempdir().unwrap();
    let (da, dn) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = fleet_node(
        "serve",
        &db,
        media.path(),
        da.path(),
        &["--addr", "127.0.0.1:0", "--workers", "0"],
    )
    .await;
    let public = a.base.clone();
    let start = |extra: &[&str]| {
        let mut cmd = crate::util::soundcheck();
        cmd.args(["worker", "--database", &db, "--public-url", &public])
            .arg("--media-dir")
            .arg(media.path())
            .arg("--data-dir")
            .arg(dn.path())
            .args(extra)
            .env("XDG_RUNTIME_DIR", dn.path().join("run"))
            .env("XDG_STATE_HOME", dn.path().join("state"));
        cmd
    };
    let refused = |extra: &[&str]| {
        let out = start(extra).output().unwrap();
        assert!(!out.status.success(), "{extra:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let a_dir = std::fs::canonicalize(da.path()).unwrap();
    let a_dir = a_dir.to_string_lossy();
    let err = refused(&["--lease-secs", "30", "--time-scale", "0.05"]);
    assert!(
        err.contains("this node's --lease-secs is 30, but serve ")
            && err.contains(&*a_dir)
            && err.contains("runs with 3."),
        "{err}"
    );
    let err = refused(&["--lease-secs", "3", "--time-scale", "1"]);
    assert!(err.contains("this node's --time-scale is 1, but"), "{err}");
    let err = refused(&["--lease-secs", "3", "--time-scale", "0.05", "--claim-media"]);
    assert!(
        err.contains("--claim-media: other nodes of the fleet are running (serve ")
            && err.contains(&*a_dir),
        "{err}"
    );
    let marker = std::fs::read_to_string(media.path().join(".soundcheck-fleet")).unwrap();
    // A copy of A's data directory carries A's node id: refused, or the two would share one row.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(da.path().join("node-id"), copy.path().join("node-id")).unwrap();
    let out = crate::util::soundcheck()
        .args(["worker", "--database", &db, "--public-url", &public])
        .args(["--lease-secs", "3", "--time-scale", "0.05", "--media-dir"])
        .arg(media.path())
        .arg("--data-dir")
        .arg(copy.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("runs with this node's id") && err.contains(&*a_dir),
        "{err}"
    );

    // A node that joined while the others' rows were stale (a database outage longer than
    // 30 s, played here by ageing A's row) with other settings is accepted, then stops with the
    // reason at its next heartbeat once A's row is fresh again; A, which joined first, runs on.
    let store = soundcheck::store::Store::connect(&db).await.unwrap();
    store
        .write(|tx| {
            tx.execute(
                "UPDATE nodes SET seen_at = seen_at - 60000",
                soundcheck::store::db::params![],
            )
        })
        .await
        .unwrap();
    let late = start(&["--lease-secs", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(40),
        tokio::task::spawn_blocking(move || late.wait_with_output()),
    )
    .await
    .expect("the late node stops once it sees A")
    .unwrap()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("stopping: this node's --lease-secs is 30, but serve ")
            && err.contains(&*a_dir),
        "{err}"
    );
    assert!(a.child.try_wait().unwrap().is_none(), "A runs on");

    // Client commands given only the database go to an API node that answers. B gives A's
    // address as its public URL (one public address for the fleet, as in docs/fleet.md) and
    // starts last; A stops and a proxy's 502 answers there: they reach B at its own address.
    let db_b = tempfile::tempdir().unwrap();
    let mut b = fleet_node(
        "serve",
        &db,
        media.path(),
        db_b.path(),
        &[
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "0",
            "--public-url",
            &public,
        ],
    )
    .await;
    crate::util::sigterm(&a.child);
    tokio::time::timeout(Duration::from_secs(40), a.child.wait())
        .await
        .unwrap()
        .unwrap();
    // What a proxy answers for a backend that is gone, on the fleet's public address.
    let proxy = tokio::net::TcpListener::bind(public.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut conn, _)) = proxy.accept().await {
            let _ = conn
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let out = crate::util::soundcheck()
        .args(["jobs", "list", "--json", "--database", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "with A gone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::util::sigterm(&b.child);
    tokio::time::timeout(Duration::from_secs(40), b.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(media.path().join(".soundcheck-fleet")).unwrap(),
        marker,
        "nothing refused changed the fleet's storage"
    );
    // Alone now, a node may claim new storage (the old was replaced), with new values too; a node
    // still on the old storage is refused from then on.
    let replaced = tempfile::tempdir().unwrap();
    let replaced_dir = replaced.path().to_string_lossy().into_owned();
    let mut claimed = Node::spawn(
        "worker",
        dn.path(),
        &[
            "--database",
            &db,
            "--public-url",
            &public,
            "--media-dir",
            &replaced_dir,
            "--lease-secs",
            "30",
            "--claim-media",
        ],
        &[],
    )
    .await;
    let claimed_marker =
        std::fs::read_to_string(replaced.path().join(".soundcheck-fleet")).unwrap();
    assert!(
        claimed_marker.starts_with("fleet_") && claimed_marker != marker,
        "{marker} {claimed_marker}"
    );
    let late = tempfile::tempdir().unwrap();
    let out = crate::util::soundcheck()
        .args(["worker", "--database", &db, "--public-url", &public])
        .args(["--lease-secs", "30", "--media-dir"])
        .arg(media.path())
        .arg("--data-dir")
        .arg(late.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("names fleet"),
        "{err}"
    );
    claimed.child.start_kill().unwrap();
}

/// A node frozen (SIGSTOP) for longer than its row stays fresh (30 s) wakes with other settings
/// than the fleet that formed without it: it stops, as a node starting now would be refused,
/// and the fleet runs on (it once counted as having joined first and stopped every other node).
/// A database outage, by contrast, leaves every node its place (the nodes test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_wakes_from_a_freeze_with_other_settings_stops_alone() {
    let Some(db) = fleet_database().await else {
        return;
    };
    let media = tempfile::tempdir().unwrap();
    let (dx, dy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let media_dir = media.path().to_string_lossy().into_owned();
    let x = crate::util::soundcheck_async()
        .args([
            "worker",
            "--database",
            &db,
            "--public-url",
            "http://127.0.0.1:9",
        ])
        .args([
            "--lease-secs",
            "60",
            "--media-dir",
            &media_dir,
            "--data-dir",
        ])
        .arg(dx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let node_id = dx.path().join("node-id");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node_id.exists() {
        assert!(Instant::now() < deadline, "X never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let signal = crate::util::signal;
    let pid = x.id().unwrap();
    // Frozen past the 30 s a row stays fresh: the fleet forms again without it.
    signal("-STOP", pid);
    tokio::time::sleep(Duration::from_secs(32)).await;
    let mut y = fleet_node(
        "serve",
        &db,
        media.path(),
        dy.path(),
        &["--addr", "127.0.0.1:0", "--workers", "0"],
    )
    .await;
    signal("-CONT", pid);
    let out = tokio::time::timeout(Duration::from_secs(40), x.wait_with_output())
        .await
        .expect("the woken node stops")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("stopping: this node's --lease-secs is 60, but serve "),
        "{err}"
    );
    // It says it is shutting down, as a node stopped by a signal does.
    assert!(err.contains("shutting down: "), "{err}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(y.child.try_wait().unwrap().is_none(), "the fleet runs on");
}
