//! A newcomer's first minutes, driven through the real binary with a temporary HOME and XDG
//! directories: `serve` on a non-default data directory, then client commands with no flags find
//! it; a wrong key says where it came from; a busy port names its holder; a clean exit removes
//! the server's entry and a crashed one's is ignored.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A user's home: HOME and the XDG directories all under one temp dir, so nothing leaks between
/// tests or into the machine's real runtime directory.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// The binary with this home's environment and no key/URL/data-dir overrides.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_soundcheck"));
        c.env("HOME", self.dir.path())
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("SOUNDCHECK_LOG", "warn")
            .env("RUST_BACKTRACE", "1")
            .env_remove("SOUNDCHECK_FT_KEY")
            .env_remove("SOUNDCHECK_TL_KEY")
            .env_remove("SOUNDCHECK_DATA_DIR")
            .env_remove("SOUNDCHECK_URL")
            .env_remove("SOUNDCHECK_ADDR")
            .kill_on_drop(true);
        c
    }

    /// Runs a command to completion: (success, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cmd().args(args).output().await.unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a command that must succeed; returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args).await;
        assert!(ok, "{args:?} failed: {err}");
        out
    }

    /// The servers' entries in this home's runtime directory.
    pub fn entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path("run/soundcheck/servers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// A `serve` subprocess and what its banner said.
pub struct Served {
    pub child: Child,
    pub base: String,
    pub banner: Vec<String>,
}

impl Served {
    pub async fn start(home: &Home, data_dir: &Path, extra: &[&str]) -> Served {
        let mut child = home
            .cmd()
            .args(["serve", "--addr", "127.0.0.1:0", "--workers", "1"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut base, mut banner) = (String::new(), Vec::new());
        while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
        {
            if let Some(url) = line.split("listening on ").nth(1) {
                base = url.trim().to_string();
            }
            let last = line.starts_with("next:");
            banner.push(line);
            if last {
                break;
            }
        }
        assert!(!base.is_empty(), "{banner:#?}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Served {
            child,
            base,
            banner,
        }
    }

    /// The banner line starting with `prefix`, without it.
    pub fn line(&self, prefix: &str) -> String {
        self.banner
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {:#?}", self.banner))
            .to_string()
    }

    /// Submits a half-second analysis held `delay_ms` by a fault header; returns its job id.
    pub async fn submit_held(&self, delay_ms: u32) -> String {
        let sub: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/v1/analyze/upload", self.base))
            .bearer_auth(self.line("SOUNDCHECK_TL_KEY="))
            .header("X-Soundcheck-Fault", format!("delay={delay_ms}"))
            .multipart(crate::util::form(crate::util::wav_bytes(0.5), &[]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sub["job_id"].as_str().unwrap().to_string()
    }
    /// SIGTERM, then wait for the exit.
    pub async fn terminate(mut self) {
        crate::util::terminate(&mut self.child, 40).await;
    }
}

#[tokio::test]
async fn client_commands_find_the_running_server_and_its_keys_without_flags() {
    let home = Home::new();
    let data = home.path("elsewhere");
    let s = Served::start(&home, &data, &[]).await;
    // The banner names the dashboard and the next command.
    assert_eq!(s.line("dashboard: "), format!("{}/", s.base));
    assert!(
        s.line("next: ").contains("soundcheck listen"),
        "{:#?}",
        s.banner
    );
    let secret = s.line("SOUNDCHECK_WEBHOOK_SECRET=");
    let tl_key = s.line("SOUNDCHECK_TL_KEY=");
    // One entry, naming the URL, the data directory and the pid.
    let entries = home.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&entries[0]).unwrap()).unwrap();
    assert_eq!(entry["url"], s.base.as_str());
    assert_eq!(entry["pid"], s.child.id().unwrap());
    assert_eq!(entry["data_dir"], data.to_str().unwrap());

    // The dashboard's copyable commands carry this server's --url and --data-dir.
    let cfg: serde_json::Value = reqwest::get(format!("{}/dashboard/config", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["data_dir"], data.to_str().unwrap());
    assert_eq!(cfg["base_url"], s.base.as_str());

    // The walk that used to fail: no --data-dir, no --url.
    let set = home
        .ok(&["webhook", "set-url", "http://127.0.0.1:9/hook"])
        .await;
    assert!(set.contains("url:      http://127.0.0.1:9/hook"), "{set}");
    let shown = home.ok(&["webhook", "show"]).await;
    assert!(shown.contains(&secret), "{shown}");
    assert!(home.ok(&["keys"]).await.contains(&tl_key));
    assert_eq!(home.ok(&["credits", "show"]).await.trim(), "1000");
    assert_eq!(home.ok(&["credits", "add", "7"]).await.trim(), "1007");
    // --url naming the running server: its data directory gives the keys.
    home.ok(&["jobs", "list", "--url", &s.base]).await;
    // --data-dir alone: the server running on it gives the URL.
    home.ok(&["deliveries", "list", "--data-dir", data.to_str().unwrap()])
        .await;
    // No client command created the default data directory.
    assert!(!home.path("data/soundcheck").exists());

    // A wrong key: the 401 names where the key came from and how to fix it; no backtrace.
    let (ok, _, err) = home
        .run(&[
            "webhook",
            "show",
            "--api-key",
            "tl_test_wrong",
            "--ft-key",
            "x",
        ])
        .await;
    assert!(!ok);
    assert!(err.contains("401 unauthorized"), "{err}");
    assert!(err.contains("--api-key"), "{err}");
    assert!(err.contains("Fix:"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");

    // A busy port: the address, the server holding it, and --addr.
    let addr = s.base.trim_start_matches("http://").to_string();
    let other = home.path("other");
    let (ok, _, err) = home
        .run(&[
            "serve",
            "--addr",
            &addr,
            "--data-dir",
            other.to_str().unwrap(),
        ])
        .await;
    assert!(!ok);
    assert!(
        err.contains(&format!("could not listen on {addr}")),
        "{err}"
    );
    assert!(err.contains("already in use"), "{err}");
    assert!(
        err.contains(&format!("pid {}", s.child.id().unwrap())),
        "{err}"
    );
    assert!(err.contains("--addr"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");

    // A clean exit removes the entry; then nothing runs, and the defaults are reported plainly.
    s.terminate().await;
    assert!(home.entries().is_empty(), "{:?}", home.entries());
    let (ok, _, err) = home.run(&["jobs", "list"]).await;
    assert!(!ok);
    // Nothing at the default URL: that is said first (unless this machine runs something on
    // 8080, when the missing default database is).
    assert!(
        err.contains("could not reach a soundcheck server at http://127.0.0.1:8080")
            || err.contains("no soundcheck database"),
        "{err}"
    );
    assert!(!home.path("data/soundcheck").exists());
}

#[tokio::test]
async fn a_crashed_servers_entry_is_ignored_and_removed() {
    let home = Home::new();
    let data = home.path("d");
    let mut s = Served::start(&home, &data, &[]).await;
    s.child.kill().await.unwrap();
    s.child.wait().await.unwrap();
    // kill -9 leaves the entry behind; its pid no longer holds the data directory.
    assert_eq!(home.entries().len(), 1);
    let (ok, _, err) = home.run(&["webhook", "show"]).await;
    assert!(!ok);
    assert!(
        err.contains("no soundcheck database") || err.contains("could not reach"),
        "{err}"
    );
    assert!(
        home.entries().is_empty(),
        "the stale entry is removed when seen"
    );
    // With --data-dir and no server on it: say so.
    let (ok, _, err) = home
        .run(&["jobs", "list", "--data-dir", data.to_str().unwrap()])
        .await;
    assert!(!ok);
    assert!(err.contains("no server is running on"), "{err}");
}

/// With two servers running, commands that cannot choose say so and list the flags naming each
/// one (never a fallback to the home directory's database); `servers` lists them.
#[tokio::test]
async fn with_two_servers_client_commands_ask_which_one_and_servers_lists_them() {
    let home = Home::new();
    let (a, b) = (home.path("a"), home.path("b"));
    let sa = Served::start(&home, &a, &[]).await;
    let sb = Served::start(&home, &b, &[]).await;
    for args in [
        vec!["keys"],
        vec!["credits", "show"],
        vec!["credits", "add", "3"],
    ] {
        let (ok, _, err) = home.run(&args).await;
        assert!(!ok, "{args:?}");
        assert!(
            err.contains("2 soundcheck servers are running"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&format!("--data-dir {}", a.display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("--data-dir {}", b.display())),
            "{err}"
        );
        assert!(!err.contains("no soundcheck database"), "{err}");
        assert!(!err.contains("backtrace"), "{err}");
    }
    let (ok, _, err) = home.run(&["jobs", "list"]).await;
    assert!(!ok);
    assert!(err.contains("--url or --data-dir"), "{err}");
    assert!(err.contains(&format!("--url {}", sa.base)), "{err}");
    assert!(err.contains(&format!("--url {}", sb.base)), "{err}");
    // Named, each works.
    let keys = home.ok(&["keys", "--data-dir", b.to_str().unwrap()]).await;
    assert!(keys.contains(&sb.line("SOUNDCHECK_TL_KEY=")), "{keys}");
    // `servers` lists both, as a table and as JSON.
    let table = home.ok(&["servers"]).await;
    assert!(
        table.contains(&sa.base) && table.contains(&sb.base),
        "{table}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&home.ok(&["servers", "--json"]).await).unwrap();
    let urls: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2, "{listed}");
    assert!(urls.contains(&sa.base.as_str()) && urls.contains(&sb.base.as_str()));
    sa.terminate().await;
    sb.terminate().await;
    assert!(home
        .ok(&["servers"])
        .await
        .contains("no soundcheck server is running"));
}

/// `--url` naming a port where nothing listens is reported as an unreachable server, not as a
/// problem with keys or the home directory's database.
#[tokio::test]
async fn an_unreachable_url_is_named_as_such() {
    let home = Home::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["jobs", "list", "--url", url.as_str()],
        vec!["webhook", "show", "--url", url.as_str()],
    ] {
        let (ok, _, err) = home.run(&args).await;
        assert!(!ok);
        assert!(
            err.contains(&format!("could not reach a soundcheck server at {url}")),
            "{err}"
        );
        assert!(!err.contains("keys"), "{err}");
        assert!(!err.contains("no soundcheck database"), "{err}");
    }
}

/// `SOUNDCHECK_STRICT` takes the usual spellings of a switch: 1/true/yes turn the hosted rules
/// on (a private `--webhook-url` is refused at start), 0/false/no leave them off.
#[tokio::test]
async fn soundcheck_strict_accepts_one_and_zero() {
    let home = Home::new();
    let data = home.path("d");
    for on in ["1", "true", "yes"] {
        let out = home
            .cmd()
            .env("SOUNDCHECK_STRICT", on)
            .args(["serve", "--addr", "127.0.0.1:0", "--webhook-url"])
            .arg("http://127.0.0.1:9/hook")
            .arg("--data-dir")
            .arg(&data)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{on}");
        assert!(!err.contains("invalid value"), "{on}: {err}");
        assert!(err.contains("--webhook-url"), "{on}: {err}");
    }
    for off in ["0", "false", "no"] {
        let mut child = home
            .cmd()
            .env("SOUNDCHECK_STRICT", off)
            .args(["serve", "--addr", "127.0.0.1:0", "--webhook-url"])
            .arg("http://127.0.0.1:9/hook")
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_default();
        assert!(first.contains("listening on"), "{off}: {first}");
        child.kill().await.unwrap();
        child.wait().await.unwrap();
    }
}

/// Every binary the integration tests start runs with the test home (`util::soundcheck`): a
/// `serve` records itself there, never in the developer's real runtime directory.
#[tokio::test]
async fn test_binaries_record_themselves_in_the_test_home_only() {
    let data = tempfile::tempdir().unwrap();
    let mut child = crate::util::soundcheck_async()
        .args(["serve", "--addr", "127.0.0.1:0", "--workers", "1"])
        .arg("--data-dir")
        .arg(data.path())
        .env("SOUNDCHECK_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    assert!(first.contains("listening on"), "{first}");
    let pid = child.id().unwrap();
    let entry = format!("soundcheck/servers/{pid}.json");
    let ours = crate::util::test_home().join("run").join(&entry);
    crate::util::wait_until(10, || ours.is_file()).await;
    if let Some(real) = std::env::var_os("XDG_RUNTIME_DIR") {
        assert!(!Path::new(&real).join(&entry).exists());
    }
    if let Some(home) = std::env::var_os("HOME") {
        assert!(!Path::new(&home).join(".local/state").join(&entry).exists());
    }
    child.kill().await.unwrap();
    child.wait().await.unwrap();
}

/// Commands that print data print it as JSON with `--json`: the keys, the balance, the webhook
/// endpoint (every action), a cancelled job, a resent attempt.
#[tokio::test]
async fn data_commands_print_json() {
    let home = Home::new();
    let s = Served::start(&home, &home.path("d"), &[]).await;
    let tl_key = s.line("SOUNDCHECK_TL_KEY=");
    let json = |out: String| -> serde_json::Value {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    };
    let keys = json(home.ok(&["keys", "--json"]).await);
    assert_eq!(keys["tl_key"], tl_key.as_str());
    assert_eq!(
        keys["webhook_secret"],
        s.line("SOUNDCHECK_WEBHOOK_SECRET=").as_str()
    );
    assert_eq!(
        json(home.ok(&["credits", "show", "--json"]).await)["balance"],
        1000
    );
    assert_eq!(
        json(home.ok(&["credits", "add", "5", "--json"]).await)["balance"],
        1005
    );
    let ep = json(
        home.ok(&["webhook", "set-url", "http://127.0.0.1:9/hook", "--json"])
            .await,
    );
    assert_eq!(ep["url"], "http://127.0.0.1:9/hook");
    assert_eq!(
        json(home.ok(&["webhook", "--json", "show"]).await)["enabled"],
        true
    );

    // A job held by a delay, cancelled: the job as the API answers it.
    let id = s.submit_held(30_000).await;
    let id = id.as_str();
    let job = json(home.ok(&["jobs", "cancel", id, "--json"]).await);
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "cancelled", "{job}");
    // Its job.failed event went to the dead URL; resent, the new attempt comes back as JSON.
    let mut attempts = serde_json::Value::Null;
    for _ in 0..100 {
        attempts = json(home.ok(&["deliveries", "list", "--of", id, "--json"]).await);
        if attempts["data"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let del = attempts["data"][0]["id"]
        .as_str()
        .expect("an attempt")
        .to_string();
    let resent = json(home.ok(&["deliveries", "resend", &del, "--json"]).await);
    assert_eq!(resent[0]["subject_id"], id, "{resent}");
    assert_eq!(resent[0]["manual"], true, "{resent}");
    s.terminate().await;
}

/// The next line a running command prints (it must print one within a minute).
async fn next<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> String {
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("a line within 60 s")
        .unwrap()
        .expect("the command is still running")
}

/// The streaming commands print one JSON object per line with `--json`, and nothing else on
/// stdout: `listen` one per event (with its signature check and payload), `jobs tail` one per
/// change; `trigger --json` prints its outcome as one object.
#[tokio::test]
async fn streaming_commands_print_one_json_object_per_line() {
    let home = Home::new();
    let s = Served::start(&home, &home.path("d"), &[]).await;
    let json = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
    };
    let secret = json(&home.ok(&["listen", "--print-secret", "--json"]).await);
    assert_eq!(
        secret["secret"],
        s.line("SOUNDCHECK_WEBHOOK_SECRET=").as_str()
    );

    // listen --json: its notes on stderr, the events on stdout.
    let mut listen = home
        .cmd()
        .args(["listen", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut events = BufReader::new(listen.stdout.take().unwrap()).lines();
    let mut notes = BufReader::new(listen.stderr.take().unwrap()).lines();
    loop {
        let note = next(&mut notes).await;
        if note.starts_with("Ready!") {
            break;
        }
    }
    let mut tail = home
        .cmd()
        .args(["jobs", "tail", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut changes = BufReader::new(tail.stdout.take().unwrap()).lines();
    // Let `jobs tail` take its first look before the job exists.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let outcome = json(&home.ok(&["trigger", "job.completed", "--json"]).await);
    assert_eq!(outcome["event"], "job.completed", "{outcome}");
    assert_eq!(outcome["job"]["status"], "completed", "{outcome}");
    let id = outcome["job"]["job_id"].as_str().unwrap().to_string();
    let inbox = outcome["webhook_url"].as_str().unwrap().to_string();
    assert!(inbox.starts_with("http://127.0.0.1:"), "{outcome}");

    let event = json(&next(&mut events).await);
    assert_eq!(event["type"], "job.completed", "{event}");
    assert_eq!(event["subject"], id.as_str(), "{event}");
    assert_eq!(event["signature"], "verified", "{event}");
    assert_eq!(event["payload"]["data"]["job_id"], id.as_str(), "{event}");
    assert!(event["event_id"].as_str().unwrap().starts_with("evt_"));
    assert!(event["forwarded"].is_null(), "{event}");
    assert!(chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap()).is_ok());

    loop {
        let change = json(&next(&mut changes).await);
        assert!(
            change["time"].is_string() && change["event"].is_string(),
            "{change}"
        );
        if change["job"]["job_id"] == id.as_str() && change["job"]["status"] == "completed" {
            break;
        }
    }

    // A generation's event: unsigned, and named by its status.
    let outcome = json(&home.ok(&["trigger", "generation.failed", "--json"]).await);
    assert_eq!(outcome["event"], "generation.failed", "{outcome}");
    assert_eq!(outcome["generation"]["status"], "failed", "{outcome}");
    assert_eq!(outcome["webhook_url"], inbox.as_str(), "{outcome}");
    let event = json(&next(&mut events).await);
    assert_eq!(event["type"], "generation.failed", "{event}");
    assert_eq!(event["subject"], outcome["generation"]["id"], "{event}");
    assert_eq!(event["signature"], "unsigned", "{event}");

    // One job followed by id: each change a line, the last `done`, then the command ends.
    let one = s.submit_held(1000).await;
    let one = one.as_str();
    let out = home.ok(&["jobs", "tail", one, "--json"]).await;
    let lines: Vec<serde_json::Value> = out.lines().map(json).collect();
    let last = lines.last().expect("at least the final line");
    assert_eq!(last["event"], "done", "{out}");
    assert_eq!(last["job"]["status"], "completed", "{out}");
    assert!(lines.iter().all(|l| l["job"]["job_id"] == one), "{out}");

    // Stopped, listen restores the endpoint URL (none) and says so on stderr only.
    crate::util::terminate(&mut listen, 30).await;
    // The job followed by id sent its event here too; whatever is left is events only.
    while let Some(line) = events.next_line().await.unwrap() {
        assert!(
            json(&line)["type"].is_string(),
            "stdout carries only events: {line}"
        );
    }
    let ep = json(&home.ok(&["webhook", "show", "--json"]).await);
    assert!(ep["url"].is_null(), "{ep}");
    tail.kill().await.unwrap();
    s.terminate().await;
}
