//! The HTTP client of the developer tools: which server and keys (`instances::resolve`), the
//! answers turned into errors that say what to fix (a `401` names its key's source, an
//! unreachable server is named as such), and the reader of the `/events` streams.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::RemoteArgs;

/// An HTTP client for one server with its keys.
#[derive(Clone)]
pub(super) struct Client {
    pub(super) base: String,
    pub(super) tl_key: String,
    pub(super) ft_key: String,
    /// Where each key came from ("--api-key", "data directory …"), for the `401` message.
    tl_source: String,
    ft_source: String,
    pub(super) http: reqwest::Client,
    /// The fleet's database, when the server was chosen from it (`--database`, no `--url`): a
    /// long-running command looks there for another API node when this one stops answering.
    fleet: Option<Arc<Fleet>>,
    /// Whether the client was made from a fleet's `--database` (with or without `--url`).
    from_database: bool,
    /// Whether the jobs / generations key came from the fleet's database (not a flag): such a
    /// key is read there again when the fleet is ([`Client::another_node`]), since a node
    /// started with `--tl-key` changes it for every node.
    tl_from_fleet: bool,
    ft_from_fleet: bool,
}

impl Client {
    pub(super) async fn new(args: &RemoteArgs) -> anyhow::Result<Client> {
        // A data directory given wins over a database (which may come from the environment).
        if let Some(url) = args.database.as_deref().filter(|u| !u.is_empty()) {
            if args.data.data_dir.is_none() {
                return Client::for_fleet(args, url).await;
            }
        }
        let target = crate::instances::resolve(
            args.url.as_deref(),
            args.data.data_dir.as_deref(),
            &args.data.path(),
        )?;
        let flag = |name: &str, env: &str| {
            if std::env::var_os(env).is_some() {
                format!("{name} / {env}")
            } else {
                name.to_string()
            }
        };
        let from_dir = || {
            crate::config::DataArgs {
                data_dir: Some(target.data_dir.clone()),
            }
            .existing()
            .and_then(|dir| crate::app::read_secrets(&dir))
            .map_err(|e| match unreachable(&target.url) {
                // Nothing answers there: that, not the keys, is what to fix first.
                Some(why) => anyhow!(
                    "could not reach a soundcheck server at {} (chosen from {}): {why}. Start \
                     one with `soundcheck serve`, or name a running one with --url or --data-dir \
                     (`soundcheck servers` lists them)",
                    target.url,
                    target.how
                ),
                None => e.context(format!(
                    "reading the keys of data directory {} (chosen from {}); pass --data-dir, \
                     or the keys with --api-key and --ft-key",
                    target.data_dir.display(),
                    target.how
                )),
            })
        };
        let dir_source = format!(
            "data directory {} (chosen from {})",
            target.data_dir.display(),
            target.how
        );
        let (tl_key, ft_key, tl_source, ft_source) = match (&args.api_key, &args.ft_key) {
            (Some(tl), Some(ft)) => (
                tl.clone(),
                ft.clone(),
                flag("--api-key", "SOUNDCHECK_TL_KEY"),
                flag("--ft-key", "SOUNDCHECK_FT_KEY"),
            ),
            // One key given and no data directory to read the other from (a fleet node's, say):
            // go on with the one given; a request needing the other answers 401, naming it.
            (tl, ft) if (tl.is_some() || ft.is_some()) && from_dir().is_err() => {
                let missing = "not given: pass --api-key / --ft-key (or SOUNDCHECK_TL_KEY / \
                               SOUNDCHECK_FT_KEY)"
                    .to_string();
                (
                    tl.clone().unwrap_or_default(),
                    ft.clone().unwrap_or_default(),
                    match tl {
                        Some(_) => flag("--api-key", "SOUNDCHECK_TL_KEY"),
                        None => missing.clone(),
                    },
                    match ft {
                        Some(_) => flag("--ft-key", "SOUNDCHECK_FT_KEY"),
                        None => missing,
                    },
                )
            }
            (tl, ft) => {
                let secrets = from_dir()?;
                (
                    tl.clone().unwrap_or(secrets.tl_key),
                    ft.clone().unwrap_or(secrets.ft_key),
                    match tl {
                        Some(_) => flag("--api-key", "SOUNDCHECK_TL_KEY"),
                        None => dir_source.clone(),
                    },
                    match ft {
                        Some(_) => flag("--ft-key", "SOUNDCHECK_FT_KEY"),
                        None => dir_source.clone(),
                    },
                )
            }
        };
        Ok(Client {
            base: target.url,
            tl_key,
            ft_key,
            tl_source,
            ft_source,
            http: http_client()?,
            fleet: None,
            from_database: false,
            tl_from_fleet: false,
            ft_from_fleet: false,
        })
    }

    /// A client of a fleet given its `--database`: the keys stored there, and `--url` or else the
    /// public URL of the API node that started last.
    async fn for_fleet(args: &RemoteArgs, database: &str) -> anyhow::Result<Client> {
        anyhow::ensure!(
            crate::store::postgres::is_url(database),
            "--database must be a postgres:// URL (a fleet's database); for a single server, use \
             --data-dir or --url"
        );
        let (secrets, api_urls) = crate::app::read_fleet_client(database).await?;
        let http = http_client()?;
        let base = match &args.url {
            Some(url) => url.trim_end_matches('/').to_string(),
            // The first API node that answers (one may have stopped or frozen since it last
            // said it runs); if none does, the first that refused the key, or else the first,
            // whose error names it.
            None => match first_answering(
                &http,
                &api_urls,
                args.api_key.as_deref().unwrap_or(&secrets.tl_key),
            )
            .await
            {
                Ok(url) => url,
                Err(refusing) => refusing
                    .into_iter()
                    .chain(api_urls.iter().cloned())
                    .next()
                    .ok_or_else(|| {
                        anyhow!(
                            "no API node of this fleet has started yet (the --database records \
                         the public URL of each that starts): start one with `soundcheck \
                         serve --database …`, or pass --url"
                        )
                    })?,
            },
        };
        let source = |name: &str, env: &str, given: bool| {
            if given {
                format!("{name} / {env}")
            } else {
                "the fleet's database (--database / SOUNDCHECK_DATABASE)".to_string()
            }
        };
        Ok(Client {
            base,
            tl_source: source("--api-key", "SOUNDCHECK_TL_KEY", args.api_key.is_some()),
            ft_source: source("--ft-key", "SOUNDCHECK_FT_KEY", args.ft_key.is_some()),
            tl_key: args.api_key.clone().unwrap_or(secrets.tl_key),
            ft_key: args.ft_key.clone().unwrap_or(secrets.ft_key),
            http,
            fleet: args.url.is_none().then(|| {
                Arc::new(Fleet {
                    url: database.to_string(),
                    store: Default::default(),
                    last: Default::default(),
                })
            }),
            from_database: true,
            tl_from_fleet: args.api_key.is_none(),
            ft_from_fleet: args.ft_key.is_none(),
        })
    }

    /// Whether this client may move to another API node ([`Client::another_node`]).
    pub(super) fn in_fleet(&self) -> bool {
        self.fleet.is_some()
    }

    /// For a client that chose its server from the fleet's database: the fleet read from there
    /// again, with the keys stored now (for those that came from there) and the API node that
    /// answers now (the one in use may have stopped). Clones share the last reading when it
    /// was made after `since`: the streams `jobs tail` follows all ask at once when their node
    /// stops, and one read answers them. An error when the database cannot be read; `None` for
    /// a client of one server.
    pub(super) async fn another_node(
        &self,
        since: tokio::time::Instant,
    ) -> anyhow::Result<Option<Found>> {
        let Some(fleet) = &self.fleet else {
            return Ok(None);
        };
        let mut last = fleet.last.lock().await;
        if let Some((_, found)) = last.as_ref().filter(|(at, _)| *at >= since) {
            return found.clone().map(Some).map_err(|e| anyhow!(e));
        }
        let found = self.read_fleet(fleet).await.map_err(|e| format!("{e:#}"));
        *last = Some((tokio::time::Instant::now(), found.clone()));
        found.map(Some).map_err(|e| anyhow!(e))
    }

    async fn read_fleet(&self, fleet: &Fleet) -> anyhow::Result<Found> {
        let store = fleet
            .store
            .get_or_try_init(|| crate::store::Store::connect_existing(&fleet.url))
            .await?;
        let (secrets, urls) = crate::app::read_fleet(store).await?;
        let mut next = self.clone();
        if self.tl_from_fleet {
            next.tl_key = secrets.tl_key;
        }
        if self.ft_from_fleet {
            next.ft_key = secrets.ft_key;
        }
        Ok(
            match first_answering(&self.http, &urls, &next.tl_key).await {
                Ok(base) => Found::Node(Client { base, ..next }),
                Err(refusing) if refusing.is_empty() => Found::NoneAnswers(next),
                Err(refusing) => Found::KeyRefused(refusing),
            },
        )
    }

    /// The JSON of a 2xx answer, or an error naming the envelope's code and message; a `401`
    /// also says where the key came from and how to pass the right one.
    pub(super) async fn answer(&self, resp: reqwest::Response, key: Key) -> anyhow::Result<Value> {
        let status = resp.status();
        let result = answer(resp).await;
        if status != reqwest::StatusCode::UNAUTHORIZED {
            return result;
        }
        let (name, source, flag, env) = match key {
            Key::Jobs => (
                "jobs API key",
                &self.tl_source,
                "--api-key",
                "SOUNDCHECK_TL_KEY",
            ),
            Key::Generations => (
                "generations API key",
                &self.ft_source,
                "--ft-key",
                "SOUNDCHECK_FT_KEY",
            ),
        };
        let from_fleet = match key {
            Key::Jobs => self.tl_from_fleet,
            Key::Generations => self.ft_from_fleet,
        };
        result.map_err(|e| {
            let refused = format!(
                "The {name} sent came from {source}, and the server at {} does not accept it",
                self.base
            );
            let hint = if from_fleet {
                // A fleet node's data directory holds no keys: the database is where they are.
                format!(
                    "{refused}: it is not a node of that fleet, or the fleet's keys changed \
                     since.\nFix: check that --database names the fleet that server belongs to \
                     and run the command again (it reads the keys from there), or pass the key \
                     with {flag} (or {env})."
                )
            } else if self.from_database {
                format!(
                    "{refused}.\nFix: leave {flag} (and {env}) out to use the key stored in the \
                     fleet's database, or pass the one `soundcheck keys --database …` prints."
                )
            } else {
                format!(
                    "{refused}.\nFix: pass the data directory that server was started with \
                     (`--data-dir DIR`; its start-up banner prints it), or its key with {flag} \
                     (or {env}; the banner and `soundcheck keys --data-dir DIR` print it)."
                )
            };
            // Still a `Refused` (a waiting command may take the fleet's new keys on it).
            match e.downcast::<Refused>() {
                Ok(r) => Refused {
                    message: format!("{}\n{hint}", r.message),
                    ..r
                }
                .into(),
                Err(e) => anyhow!("{e}\n{hint}"),
            }
        })
    }

    /// Sends a request, naming the server and what to check when it cannot be reached.
    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        req.send().await.map_err(|e| {
            // reqwest's text leaves out the cause (`connection refused`, `Too many open files`).
            let causes = || std::iter::successors(std::error::Error::source(&e), |e| e.source());
            let cause = causes()
                .last()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            // Out of file descriptors (EMFILE, ENFILE): this process, not the server; passes
            // as streams close.
            let exhausted = causes().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::raw_os_error)
                    .is_some_and(|n| n == 23 || n == 24)
            });
            if exhausted {
                return Exhausted(format!(
                    "could not open a connection to {}: {e}{cause}",
                    self.base
                ))
                .into();
            }
            Lost(format!(
                "could not reach soundcheck at {}: {e}{cause}. Is `soundcheck serve` running \
                 there? (--url names another server)",
                self.base
            ))
            .into()
        })
    }

    pub(super) async fn tl_get(&self, path: &str) -> anyhow::Result<Value> {
        self.tl_send("GET", path, None).await
    }

    /// [`tl_get`](Client::tl_get) read into the shape the server renders (`views`, the API's
    /// bodies).
    pub(super) async fn tl_get_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        decode(self.tl_get(path).await?, path)
    }

    /// [`tl_get_as`](Client::tl_get_as) for a watch loop's repeated look: marked as a poll
    /// ([`crate::app::POLL_HEADER`]), so the server logs it at debug level, not beside the app's
    /// own requests.
    pub(super) async fn tl_poll_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let req = self
            .tl_request("GET", path)?
            .header(crate::app::POLL_HEADER, "1");
        let resp = self.send(req).await?;
        decode(self.answer(resp, Key::Jobs).await?, path)
    }

    /// [`tl_send`](Client::tl_send) read into the shape the server renders.
    pub(super) async fn tl_send_as<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        decode(self.tl_send(method, path, body).await?, path)
    }

    /// A jobs-API request to `path`, with the jobs key.
    fn tl_request(&self, method: &str, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        Ok(self
            .http
            .request(method.parse()?, format!("{}{path}", self.base))
            .bearer_auth(&self.tl_key))
    }

    /// A jobs-API request; a non-2xx answer becomes an error carrying the envelope's message.
    pub(super) async fn tl_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.tl_request(method, path)?;
        if let Some(b) = body {
            req = req.json(&b);
        }
        // A job allows one poll per second, and an app polling it may have just taken it: a
        // read waits out the `Retry-After` (1 s) once, as a polite client does.
        let again = req.try_clone().filter(|_| method == "GET");
        let mut resp = self.send(req).await?;
        if let (Some(req), reqwest::StatusCode::TOO_MANY_REQUESTS) = (again, resp.status()) {
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .filter(|&secs| secs <= 5);
            if let Some(secs) = wait {
                tokio::time::sleep(Duration::from_secs(secs) + Duration::from_millis(50)).await;
                resp = self.send(req).await?;
            }
        }
        self.answer(resp, Key::Jobs).await
    }
}

impl Client {
    /// [`Client::follow`] through what a long wait meets: a `503` (a fleet's database
    /// restarting) is waited out, and a client of a fleet moves to the API node that answers
    /// when its own stops (saying so on stderr when `announce`). A stream opens with the item
    /// as it is, so an end reached meanwhile is not missed (and `on` may see the state it saw
    /// last once more). Returns the final object and the client it came through (another
    /// node's, after a move).
    pub(super) async fn follow_on(
        &self,
        path: &str,
        key: Key,
        announce: bool,
        mut on: impl FnMut(&str, &Value),
    ) -> anyhow::Result<(Value, Client)> {
        let mut c = self.clone();
        let mut waiting = false;
        loop {
            let base = c.base.clone();
            let followed = c.follow(path, key, |event, data| {
                if announce && std::mem::take(&mut waiting) {
                    eprintln!("{base} answers again");
                }
                on(event, data);
            });
            let e = match followed.await {
                Ok(done) => return Ok((done, c)),
                Err(e) => e,
            };
            match c.recover(e).await? {
                Next::Through(next) => {
                    if next.base == c.base {
                        // It answers again (or ended the stream itself): not at once.
                        tokio::time::sleep(WAIT_RETRY).await;
                    } else {
                        if announce {
                            eprintln!(
                                "{} stopped answering; following the fleet through {}",
                                c.base, next.base
                            );
                        }
                        waiting = false;
                    }
                    c = next;
                }
                Next::Wait(why) => {
                    if announce && !std::mem::replace(&mut waiting, true) {
                        eprintln!("{why}");
                    }
                    tokio::time::sleep(WAIT_RETRY).await;
                }
            }
        }
    }

    /// A jobs-API `GET` through what [`Client::follow_on`] goes through (up to 60 s of it).
    pub(super) async fn tl_get_on<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut c = self.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let e = match c.tl_get_as(path).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(e);
            }
            match c.recover(e).await? {
                Next::Through(next) => c = next,
                Next::Wait(_) => tokio::time::sleep(WAIT_RETRY).await,
            }
        }
    }

    /// What a waiting command does after `e`: go on through the API node that answers now,
    /// when this client of a fleet lost its own, or with the fleet's keys read again after a
    /// `401` (a node started with `--tl-key` changed them); wait [`WAIT_RETRY`] and try again
    /// after a `503`, or while no node answers; any other error ends it (so does a fleet whose
    /// answering nodes all refuse the key, which waiting would not change).
    pub(super) async fn recover(&self, e: anyhow::Error) -> anyhow::Result<Next> {
        if Lost::is(&e) && self.in_fleet() {
            // A reading of the last second will do: the node stopped before this was asked.
            let now = tokio::time::Instant::now();
            let since = now.checked_sub(FLEET_READ_EVERY).unwrap_or(now);
            return match self.another_node(since).await {
                Ok(Some(Found::Node(next))) => Ok(Next::Through(next)),
                Ok(Some(Found::KeyRefused(urls))) => Err(anyhow!(
                    "{e:#}; the API nodes that answer ({}) refuse the jobs API key, which came \
                     from {}: leave --api-key (and SOUNDCHECK_TL_KEY) out to use the key stored \
                     in the fleet's database, or pass the one `soundcheck keys --database …` \
                     prints",
                    urls.join(", "),
                    self.tl_source
                )),
                Ok(_) => Ok(Next::Wait(format!(
                    "{e:#}; no API node of the fleet answers: waiting for one"
                ))),
                Err(db) => Ok(Next::Wait(format!(
                    "{e:#}; the fleet's database cannot be read either ({db:#}): waiting for it"
                ))),
            };
        }
        if Refused::is(&e, 401) && (self.tl_from_fleet || self.ft_from_fleet) {
            // The same node, with the keys the fleet has now (when they changed): a reading
            // made after this refusal.
            if let Ok(Some(found)) = self.another_node(tokio::time::Instant::now()).await {
                let keys = found.client();
                if let Some(keys) =
                    keys.filter(|k| (&k.tl_key, &k.ft_key) != (&self.tl_key, &self.ft_key))
                {
                    return Ok(Next::Through(Client {
                        tl_key: keys.tl_key.clone(),
                        ft_key: keys.ft_key.clone(),
                        ..self.clone()
                    }));
                }
            }
            return Err(e);
        }
        if Refused::is(&e, 503) {
            return Ok(Next::Wait(format!("{e:#}; waiting for it")));
        }
        if e.downcast_ref::<Exhausted>().is_some() {
            return Ok(Next::Wait(format!("{e:#}; waiting for one to close")));
        }
        Err(e)
    }

    /// Reads an item's `/events` stream (server-sent events), calling `on(event, data)` for
    /// each event, until `done`; returns the final object. A stream silent for
    /// [`STREAM_SILENCE`] is lost: its server froze, or the network between went away.
    pub(super) async fn follow(
        &self,
        path: &str,
        key: Key,
        on: impl FnMut(&str, &Value),
    ) -> anyhow::Result<Value> {
        self.follow_within(path, key, STREAM_SILENCE, on).await
    }

    async fn follow_within(
        &self,
        path: &str,
        key: Key,
        silence: Duration,
        mut on: impl FnMut(&str, &Value),
    ) -> anyhow::Result<Value> {
        use futures_util::StreamExt;
        let req = self.http.get(format!("{}{path}", self.base));
        let req = match key {
            Key::Jobs => req.bearer_auth(&self.tl_key),
            Key::Generations => req.header("X-API-Key", &self.ft_key),
        };
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            self.answer(resp, key).await?;
            bail!("{path} did not answer with an event stream");
        }
        let mut body = resp.bytes_stream();
        let (mut buf, mut event, mut data) = (String::new(), String::new(), String::new());
        loop {
            let chunk = match tokio::time::timeout(silence, body.next()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) => {
                    return Err(Lost(format!(
                        "the event stream of {path} from {} sent nothing for {} s (keep-alives \
                         come at least every {} s)",
                        self.base,
                        silence.as_secs(),
                        crate::api::lifecycle::KEEP_ALIVE_MAX.as_secs()
                    ))
                    .into())
                }
            };
            let chunk = chunk.map_err(|e| {
                Lost(format!(
                    "the event stream of {path} from {} broke: {e}",
                    self.base
                ))
            })?;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find('\n') {
                let line: String = buf.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !data.is_empty() {
                        let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                        on(&event, &value);
                        if event == "done" {
                            return Ok(value);
                        }
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                } // ':' lines are keep-alive comments
            }
        }
        Err(Lost(format!(
            "the event stream of {path} from {} ended before the item did (is the server \
             stopping?)",
            self.base
        ))
        .into())
    }
}

/// A fleet's database as a client reads it again ([`Client::another_node`]): one connection,
/// and the last reading, shared by every clone of the client.
pub(super) struct Fleet {
    url: String,
    store: tokio::sync::OnceCell<crate::store::Store>,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<Found, String>)>>,
}

/// How old a shared reading of the fleet may be for a client that lost its node.
const FLEET_READ_EVERY: Duration = Duration::from_secs(1);

/// What a fleet read again says ([`Client::another_node`]); each client carries the fleet's
/// keys as they are now.
#[derive(Clone)]
pub(super) enum Found {
    /// An API node that answers and takes the key.
    Node(Client),
    /// No API node answers.
    NoneAnswers(Client),
    /// Those that answer all refuse the jobs key (their URLs).
    KeyRefused(Vec<String>),
}

impl Found {
    /// The client with the fleet's keys now (none when the key was refused).
    fn client(&self) -> Option<&Client> {
        match self {
            Found::Node(c) | Found::NoneAnswers(c) => Some(c),
            Found::KeyRefused(_) => None,
        }
    }
}

/// See [`Client::recover`].
pub(super) enum Next {
    /// Go on through this client (another API node, the same one answering again, or the
    /// fleet's new keys).
    Through(Client),
    /// Wait and try again; the line to print says what went wrong and what is waited for.
    Wait(String),
}

/// How often a waiting command asks again while its server answers `503`, or no API node of
/// its fleet answers.
pub(super) const WAIT_RETRY: Duration = Duration::from_secs(2);

/// How long an event stream may stay silent before it counts as lost: two of the server's
/// longest keep-alive gaps and some slack (a frozen node is noticed in about half a minute, not
/// at the 60 s read timeout).
const STREAM_SILENCE: Duration = Duration::from_secs(35);

/// The first of `urls` where soundcheck answers within 3 s and takes `tl_key`: a node that is
/// frozen still accepts connections, so a TCP connect is not enough, and a proxy's `502` for a
/// stopped node, or another program on a dead node's port, is not soundcheck (its answers carry
/// `X-Trace-Id: sc-…`; no key is sent before one is found). A soundcheck that refuses the key
/// (`401`) is not a node of this fleet (a developer's own server on a dead node's port), or the
/// key is wrong: `Err` lists those, empty when nothing answered.
async fn first_answering(
    http: &reqwest::Client,
    urls: &[String],
    tl_key: &str,
) -> Result<String, Vec<String>> {
    let mut refusing = Vec::new();
    let within =
        |req: reqwest::RequestBuilder| tokio::time::timeout(Duration::from_secs(3), req.send());
    for url in urls {
        let Ok(Ok(resp)) = within(http.head(url.as_str())).await else {
            continue;
        };
        let ours = resp
            .headers()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("sc-"));
        if !ours || resp.status().is_server_error() {
            continue;
        }
        let keyed = http
            .get(format!("{url}/v1/jobs?limit=1"))
            .bearer_auth(tl_key)
            .header(crate::app::POLL_HEADER, "1");
        match within(keyed).await {
            Ok(Ok(resp)) if resp.status() == reqwest::StatusCode::UNAUTHORIZED => {
                refusing.push(url.clone())
            }
            Ok(Ok(_)) => return Ok(url.clone()),
            _ => continue,
        }
    }
    Err(refusing)
}

/// Why nothing accepts connections at `url`'s host and port (`None`: something does, or the
/// URL cannot be checked). A quick TCP connect, so a wrong `--url` is reported as such before
/// any key is looked for.
pub(super) fn unreachable(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let addrs = match parsed.socket_addrs(|| None) {
        Ok(a) => a,
        Err(e) => return Some(e.to_string()),
    };
    let mut last = None;
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(_) => return None,
            Err(e) => last = Some(e.to_string()),
        }
    }
    last
}

/// Reads an answer into the shape the server renders; one that does not fit is a server of
/// another version, and is named as such.
pub(super) fn decode<T: DeserializeOwned>(v: Value, path: &str) -> anyhow::Result<T> {
    serde_json::from_value(v).map_err(|e| {
        anyhow!("the answer of {path} is not what this soundcheck expects ({e}); is the server another version?")
    })
}

/// The server in use stopped answering: it could not be reached, or an event stream broke or
/// ended early. A client of a fleet ([`Client::in_fleet`]) may go on through another API node.
#[derive(Debug)]
pub(super) struct Lost(String);

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Lost {}

impl Lost {
    pub(super) fn is(e: &anyhow::Error) -> bool {
        e.downcast_ref::<Lost>().is_some()
    }
}

/// This process ran out of file descriptors opening a connection (many streams at once, a low
/// `ulimit -n`): waited out by the commands that wait ([`Client::recover`]).
#[derive(Debug)]
pub(super) struct Exhausted(String);

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Exhausted {}

/// Which of the two keys a request carried (for the `401` message).
#[derive(Debug, Clone, Copy)]
pub(super) enum Key {
    Jobs,
    Generations,
}

/// The developer tools' HTTP client: a server that does not accept the connection within 10 s,
/// or goes silent for 60 s mid-answer, is an error, never a hang (event streams carry
/// keep-alive comments well within that).
fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()?)
}

/// The JSON of a 2xx answer, or an error naming the envelope's code and message.
pub(super) async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    match serde_json::from_value::<crate::error::ErrorEnvelope>(body.clone()) {
        Ok(e) => Err(Refused {
            status: status.as_u16(),
            code: e.error.code.as_str().to_string(),
            message: e.error.message,
        }
        .into()),
        // Not the envelope (a proxy's page, or a code this build does not know): as it came.
        Err(_) => bail!(
            "{} {}: {body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error")
        ),
    }
}

/// A server's refusal in the contract's envelope, as the commands print it (`503
/// service_unavailable: …`); a command that can wait out a passing one (`jobs tail` through a
/// database restart) finds it with `downcast_ref`.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) status: u16,
    pub(super) code: String,
    pub(super) message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// Whether `e` is a refusal with `status`: `503`, the server is up but cannot answer now
    /// (its database restarting); `401`, the key.
    pub(super) fn is(e: &anyhow::Error, status: u16) -> bool {
        e.downcast_ref::<Refused>()
            .is_some_and(|r| r.status == status)
    }
}

/// An id from the command line as one path segment: percent-encoded, so that `/`, `?` or `#` in
/// it cannot reach another route (`deliveries resend '../disable?'` once disabled the webhook).
/// Ids made only of dots are refused: URL parsing resolves `.` and `..` even when encoded.
pub(super) fn segment(id: &str) -> anyhow::Result<String> {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');
    if id.is_empty() || id.chars().all(|c| c == '.') {
        anyhow::bail!("{id:?} is not an id (ids look like job_01J…, evt_01J…, gen_01J…)");
    }
    Ok(utf8_percent_encode(id, SEGMENT).to_string())
}

/// A value from the command line as a query parameter's value.
pub(super) fn query(value: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn client(base: String) -> Client {
        Client {
            base,
            tl_key: "tl".into(),
            ft_key: "ft".into(),
            tl_source: "a test".into(),
            ft_source: "a test".into(),
            http: http_client().unwrap(),
            fleet: None,
            from_database: false,
            tl_from_fleet: false,
            ft_from_fleet: false,
        }
    }

    /// A frozen server keeps the connection open and sends nothing: the stream is counted as
    /// lost after its silence limit, not after the HTTP client's 60 s read timeout (a fleet
    /// client then moves to another node half a minute sooner).
    #[tokio::test]
    async fn a_stream_that_goes_silent_is_lost_at_its_silence_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = sock.read(&mut request).await;
            let event = "event: status\ndata: {\"status\":\"running\"}\n\n:\n\n";
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            let chunk = format!("{head}{:x}\r\n{event}\r\n", event.len());
            sock.write_all(chunk.as_bytes()).await.unwrap();
            // Frozen: the connection stays, nothing more comes.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let c = client(format!("http://{addr}"));
        let started = Instant::now();
        let mut seen = Vec::new();
        let e = c
            .follow_within(
                "/v1/jobs/job_x/events",
                Key::Jobs,
                Duration::from_secs(1),
                |event, data| seen.push((event.to_string(), data.clone())),
            )
            .await
            .unwrap_err();
        assert!(Lost::is(&e), "{e:#}");
        assert!(e.to_string().contains("sent nothing for 1 s"), "{e:#}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(seen.len(), 1, "the event before the silence: {seen:?}");
        assert_eq!(seen[0].1["status"], "running");
    }

    /// An address nothing listens on.
    fn free_addr() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// A soundcheck server at `/`, whose job list takes only `key`.
    async fn soundcheck_taking(key: &'static str) -> String {
        let list = move |headers: HeaderMap| async move {
            let sent = headers.get("authorization").and_then(|v| v.to_str().ok());
            let status = if sent == Some(&format!("Bearer {key}")) {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            (status, [("x-trace-id", "sc-test")], "{}")
        };
        let app = axum::Router::new()
            .route(
                "/",
                get(|| async { ([("x-trace-id", "sc-test")], "soundcheck") }),
            )
            .route("/v1/jobs", get(list));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// Of the fleet's recorded URLs, a soundcheck that refuses the fleet's key (a developer's own
    /// server on a dead node's port) is passed over for the node that takes it.
    #[tokio::test]
    async fn the_node_chosen_is_one_that_takes_the_fleets_key() {
        let stranger = soundcheck_taking("tl_someone_else").await;
        let node = soundcheck_taking("tl_fleet").await;
        let http = http_client().unwrap();
        let urls = [stranger.clone(), node.clone()];
        assert_eq!(
            first_answering(&http, &urls, "tl_fleet").await,
            Ok(node.clone())
        );
        assert_eq!(
            first_answering(&http, &urls, "tl_someone_else").await,
            Ok(stranger.clone())
        );
        // Every server that answers refuses the key: they are named (a command ends on that
        // rather than waiting for a node); none answering is an empty list.
        assert_eq!(
            first_answering(&http, std::slice::from_ref(&stranger), "tl_fleet").await,
            Err(vec![stranger])
        );
        let nothing = format!("http://{}", free_addr());
        assert_eq!(
            first_answering(&http, &[nothing], "tl_fleet").await,
            Err(vec![])
        );
    }
}
