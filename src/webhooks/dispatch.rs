//! The dispatcher: one task that finds due outbox events and delivers them, a bounded number at a
//! time, recording every attempt (request and response) and moving each event along the retry
//! schedule. Modelled on svix-server's worker: the schedule is data, every attempt is a row.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{guard, schedule, sign, GENERATION_USER_AGENT, JOB_USER_AGENT};
use crate::faults::{DeliveryFault, Faults};
use crate::store::states::{EventKind, EventState};
use crate::store::webhooks::{self as wh, Attempt, Event};
use crate::store::{self, Store};

/// Deliveries in flight at once.
const CONCURRENCY: usize = 32;
/// Bytes of a receiver's response body kept in the delivery log.
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// A fleet node holds an event it is sending for the attempt's timeout plus this; if the node
/// dies mid-attempt, another sends the event after the hold.
const ATTEMPT_HOLD_MARGIN: Duration = Duration::from_secs(30);
/// Longest the loop sleeps without a wake-up, so clock-driven retries are never missed.
const MAX_IDLE: Duration = Duration::from_millis(500);
/// First and longest wait between tries to record an attempt while the store cannot write.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(100);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// Settings the dispatcher needs.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub time_scale: f64,
    pub timeout: Duration,
    pub strict: bool,
}

/// Why a manual resend could not be attempted.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("no such event or delivery")]
    NotFound,
    #[error("no webhook endpoint URL is configured")]
    NoEndpoint,
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Cheap to clone; all clones share one outbox loop.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    client: reqwest::Client,
    cfg: DispatchConfig,
    wake: Notify,
    in_flight: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
}

/// What a receiver did with one request.
struct Outcome {
    url: String,
    request_headers: BTreeMap<String, String>,
    status: Option<u16>,
    response_headers: Option<BTreeMap<String, String>>,
    response_body: Option<String>,
    error: Option<String>,
    duration: Duration,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

impl Dispatcher {
    pub fn new(store: Store, cfg: DispatchConfig) -> Dispatcher {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .build()
            .expect("reqwest client builds with static settings");
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                client,
                cfg,
                wake: Notify::new(),
                in_flight: Mutex::new(HashSet::new()),
                slots: Arc::new(Semaphore::new(CONCURRENCY)),
            }),
        }
    }

    /// Tells the loop that an event may be due now (called after enqueueing).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Runs until `shutdown`. Deliveries cut off by shutdown stay pending and are sent after the
    /// next start.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let started = self.start_due().await;
            let idle = if started {
                Duration::ZERO
            } else {
                self.until_next_due().await
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    /// Starts a delivery for every due event not already in flight; true if any started.
    async fn start_due(&self) -> bool {
        let now = store::now_ms();
        let due = match self
            .inner
            .store
            .read(move |c| wh::due_events(c, now, 256))
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::error!("webhook outbox read failed: {e}");
                return false;
            }
        };
        let mut started = false;
        for event in due {
            if !self
                .inner
                .in_flight
                .lock()
                .unwrap()
                .insert(event.id.clone())
            {
                continue;
            }
            let Ok(permit) = self.inner.slots.clone().acquire_owned().await else {
                return started;
            };
            started = true;
            let this = self.clone();
            tokio::spawn(async move {
                let id = event.id.clone();
                this.deliver_scheduled(event).await;
                this.inner.in_flight.lock().unwrap().remove(&id);
                drop(permit);
                this.wake();
            });
        }
        started
    }

    async fn until_next_due(&self) -> Duration {
        let next = self.inner.store.read(wh::next_due_at).await.ok().flatten();
        match next {
            Some(t) => Duration::from_millis((t - store::now_ms()).max(1) as u64).min(MAX_IDLE),
            None => MAX_IDLE,
        }
    }

    /// One scheduled attempt of an event, then the event's next state.
    async fn deliver_scheduled(&self, listed: Event) {
        // The listing may predate a delivery that finished since: act on the event as it is now.
        let id = listed.id.clone();
        let now = store::now_ms();
        // On a fleet's shared database several nodes list the same due events: each attempt is
        // taken by one of them in a write. Alone on its SQLite file, the `in_flight` set suffices.
        let taken = if self.inner.store.dialect() == crate::store::db::Dialect::Postgres {
            let hold = (self.inner.cfg.timeout + ATTEMPT_HOLD_MARGIN).as_millis() as i64;
            self.inner
                .store
                .write_atomic(move |tx| {
                    // The database's clock: the hold must mean the same on every node.
                    let now = store::db::now_ms(tx)?;
                    wh::take_due(tx, &id, now, now + hold)
                })
                .await
        } else {
            self.inner
                .store
                .read(move |c| wh::event_get(c, &id))
                .await
                .map(|e| {
                    e.filter(|e| {
                        e.state == EventState::Pending
                            && e.next_attempt_at.is_some_and(|t| t <= now)
                    })
                })
        };
        let event = match taken {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(event = %listed.id, "webhook outbox read failed: {e}");
                return;
            }
        };
        let target = match self.target(&event).await {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(event = %event.id, "webhook target lookup failed: {e}");
                return;
            }
        };
        let fault = self.delivery_fault(&event).await;
        let outcome = self.send(&event, &target, fault).await;
        let scale = self.inner.cfg.time_scale;
        // The attempt happened: record it before the event can be picked up again. While the
        // store cannot write (a full disk) this waits and retries, holding the event in flight,
        // instead of letting the loop send the same event again and again unrecorded.
        let attempt = Arc::new((event, outcome));
        let mut delay = RECORD_RETRY_FIRST;
        loop {
            let a = attempt.clone();
            match self
                .inner
                .store
                .write(move |tx| record_scheduled(tx, &a.0, &a.1, scale))
                .await
            {
                Ok(()) => return,
                Err(e) if e.is_transient() => {
                    tracing::error!(event = %attempt.0.id, "recording a webhook attempt failed ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECORD_RETRY_MAX);
                }
                Err(e) => {
                    tracing::error!(event = %attempt.0.id, "recording a webhook attempt failed: {e}");
                    return;
                }
            }
        }
    }

    /// Where an event goes now: `(url, signing secret)`. `None` (after updating the event) when a
    /// job event has no enabled endpoint any more.
    async fn target(&self, event: &Event) -> store::Result<Option<(String, Option<String>)>> {
        if event.kind == EventKind::Generation {
            return Ok(Some((event.url.clone().unwrap_or_default(), None)));
        }
        let endpoint = self.inner.store.read(wh::endpoint_get).await?;
        match (endpoint.url, endpoint.enabled) {
            (Some(url), true) => Ok(Some((url, Some(endpoint.secret)))),
            (url, _) => {
                let state = if url.is_none() {
                    EventState::Skipped
                } else {
                    EventState::Held
                };
                let (id, attempts) = (event.id.clone(), event.attempts);
                self.inner
                    .store
                    .write(move |tx| wh::event_update(tx, &id, state, attempts, None))
                    .await?;
                Ok(None)
            }
        }
    }

    /// Sends an event once, outside the schedule (the delivery log's "resend"). `id` is an event
    /// id (`evt_…`) or the id of one of its attempts (`del_…`).
    pub async fn resend(&self, id: &str) -> Result<Attempt, ResendError> {
        let id = id.to_string();
        let event = self
            .inner
            .store
            .read(move |c| {
                let event_id = match wh::attempt_get(c, &id)? {
                    Some(a) => a.event_id,
                    None => id,
                };
                wh::event_get(c, &event_id)
            })
            .await?
            .ok_or(ResendError::NotFound)?;
        let target = if event.kind == EventKind::Generation {
            (event.url.clone().unwrap_or_default(), None)
        } else {
            let endpoint = self.inner.store.read(wh::endpoint_get).await?;
            (
                endpoint.url.ok_or(ResendError::NoEndpoint)?,
                Some(endpoint.secret),
            )
        };
        // A resend is sent for real even when the item asked for webhook faults: it is how a
        // developer delivers an event after watching its scheduled attempts fail.
        let outcome = self.send(&event, &target, None).await;
        let attempt = self
            .inner
            .store
            .write(move |tx| record_manual(tx, &event, &outcome))
            .await?;
        Ok(attempt)
    }

    /// The webhook fault (`X-Soundcheck-Fault: webhook_fail|webhook_slow=ms`) the event's job or
    /// generation was submitted with, if any.
    async fn delivery_fault(&self, event: &Event) -> Option<DeliveryFault> {
        let (kind, id) = (event.kind.clone(), event.subject_id.clone());
        let stored = self
            .inner
            .store
            .read(move |c| {
                Ok(if kind == EventKind::Job {
                    store::jobs::get(c, &id)?.and_then(|j| j.fault)
                } else {
                    store::generations::get(c, &id)?.and_then(|g| g.fault)
                })
            })
            .await
            .ok()
            .flatten();
        Faults::stored(stored.as_deref()).delivery
    }

    /// Performs one HTTP POST of the event's payload, never failing: errors become the outcome.
    /// An injected `fault` fails the attempt before sending, or delays it.
    async fn send(
        &self,
        event: &Event,
        (url, secret): &(String, Option<String>),
        fault: Option<DeliveryFault>,
    ) -> Outcome {
        let started = Instant::now();
        let mut headers = BTreeMap::new();
        headers.insert("Content-Type".to_string(), "application/json".to_string());
        match secret {
            Some(secret) => {
                headers.insert("User-Agent".into(), JOB_USER_AGENT.into());
                let ts = chrono::Utc::now().timestamp();
                headers.insert(
                    sign::HEADER.into(),
                    sign::header_value(secret, ts, event.payload.as_bytes()),
                );
                headers.insert("X-TuneLab-Event".into(), event.event_type.clone());
                headers.insert("X-TuneLab-Event-Id".into(), event.id.clone());
            }
            None => {
                headers.insert("User-Agent".into(), GENERATION_USER_AGENT.into());
            }
        }
        let mut outcome = Outcome {
            url: url.clone(),
            request_headers: headers,
            status: None,
            response_headers: None,
            response_body: None,
            error: None,
            duration: Duration::ZERO,
        };
        let timeout = self.inner.cfg.timeout;
        let posted = match fault {
            Some(DeliveryFault::Fail) => Err(
                "injected fault (X-Soundcheck-Fault: webhook_fail): the delivery was not sent"
                    .to_string(),
            ),
            Some(DeliveryFault::Slow(wait)) if wait >= timeout => {
                tokio::time::sleep(timeout).await;
                Err(format!(
                    "timed out waiting for the receiver (injected fault: webhook_slow={})",
                    wait.as_millis()
                ))
            }
            Some(DeliveryFault::Slow(wait)) => {
                tokio::time::sleep(wait).await;
                self.post(url, &outcome.request_headers, &event.payload)
                    .await
            }
            None => {
                self.post(url, &outcome.request_headers, &event.payload)
                    .await
            }
        };
        match posted {
            Ok(answer) => {
                outcome.status = Some(answer.status);
                outcome.response_headers = Some(answer.headers);
                outcome.response_body = Some(answer.body);
                // The status is the answer: a body that trickles past the timeout or is cut
                // short is noted beside it, and a 2xx still counts as delivered.
                outcome.error = answer.body_error;
            }
            Err(e) => outcome.error = Some(e),
        }
        outcome.duration = started.elapsed();
        tracing::info!(
            event = %event.id, kind = %event.kind, url = %url,
            status = outcome.status, error = outcome.error.as_deref(),
            ms = outcome.duration.as_millis() as u64, "webhook attempt"
        );
        outcome
    }

    async fn post(
        &self,
        url: &str,
        headers: &BTreeMap<String, String>,
        body: &str,
    ) -> Result<Answer, String> {
        let parsed = Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        let client = if self.inner.cfg.strict {
            if parsed.scheme() != "https" {
                return Err("strict mode: only https webhook URLs are called".into());
            }
            // Check the addresses the name resolves to now and connect only to those.
            let addrs = guard::resolve_public(&parsed).await?;
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(self.inner.cfg.timeout);
            if let Some(host) = parsed.host_str() {
                builder = builder.resolve_to_addrs(host, &addrs);
            }
            builder.build().map_err(|e| e.to_string())?
        } else {
            self.inner.client.clone()
        };
        let mut req = client.post(parsed).body(body.to_string());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let mut resp = req.send().await.map_err(describe)?;
        let status = resp.status().as_u16();
        let resp_headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut bytes = Vec::new();
        let mut body_error = None;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BODY.saturating_sub(bytes.len());
                    bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if room <= chunk.len() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(format!(
                        "the receiver answered {status}, but its body could not be read: {}",
                        describe(e)
                    ));
                    break;
                }
            }
        }
        Ok(Answer {
            status,
            headers: resp_headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            body_error,
        })
    }
}

/// A receiver's answer: its status line and headers arrived; its body may not have.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    /// As much of the body as was read, up to `MAX_RESPONSE_BODY`.
    body: String,
    /// Why the rest of the body could not be read (it timed out, or the connection closed early).
    body_error: Option<String>,
}

/// What went wrong with a delivery, as the attempt records it: reqwest's own message and the
/// causes under it ("invalid peer certificate: …" is two levels down from "error sending
/// request"), each once.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out waiting for the receiver".to_string();
    }
    let mut said = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        cause = c.source();
    }
    if e.is_connect() {
        format!("could not connect: {said}")
    } else {
        said
    }
}

fn attempt_row(
    event: &Event,
    number: i64,
    o: &Outcome,
    manual: bool,
    next: Option<i64>,
) -> Attempt {
    Attempt {
        id: crate::ids::new_id("del"),
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        subject_id: event.subject_id.clone(),
        attempt: number,
        url: o.url.clone(),
        request_headers: json!(o.request_headers),
        request_body: event.payload.clone(),
        response_status: o.status.map(i64::from),
        response_headers: o.response_headers.as_ref().map(|h| json!(h)),
        response_body: o.response_body.clone(),
        error: o.error.clone(),
        duration_ms: o.duration.as_millis() as i64,
        succeeded: o.succeeded(),
        manual,
        next_attempt_at: next,
        created_at: store::now_rfc3339(),
    }
}

/// Applies the retry policy after a scheduled attempt (in the caller's transaction).
fn record_scheduled(
    tx: &dyn crate::store::Tx,
    event: &Event,
    o: &Outcome,
    time_scale: f64,
) -> store::Result<()> {
    let attempts = event.attempts + 1;
    let number = wh::last_attempt_number(tx, &event.id)? + 1;
    let is_job = event.kind == EventKind::Job;
    // In a fleet, a node that stalled past its hold on the event may wake after another node
    // attempted (and recorded) it again: this late attempt goes in the log but moves nothing —
    // not the event's state, not the endpoint's failure count.
    let current = wh::event_get(tx, &event.id)?;
    if current.is_none_or(|c| c.state != EventState::Pending || c.attempts != event.attempts) {
        tracing::warn!(event = %event.id, "a late webhook attempt: logged, the event is unchanged");
        return wh::insert_attempt(tx, &attempt_row(event, number, o, false, None));
    }
    let (state, next) = if o.succeeded() {
        (EventState::Succeeded, None)
    } else if !is_job {
        (EventState::Failed, None) // generations: fire-once
    } else {
        match schedule::wait_before(attempts + 1, time_scale) {
            Some(wait) => (
                EventState::Pending,
                Some(store::now_ms() + wait.as_millis() as i64),
            ),
            None => (EventState::Failed, None),
        }
    };
    wh::insert_attempt(tx, &attempt_row(event, number, o, false, next))?;
    if !is_job {
        return wh::event_update(tx, &event.id, state, attempts, next);
    }
    let endpoint = wh::endpoint_get(tx)?;
    match state {
        EventState::Succeeded => wh::endpoint_set_failures(tx, 0)?,
        EventState::Failed => {
            let failures = endpoint.consecutive_failures + 1;
            wh::endpoint_set_failures(tx, failures)?;
            if failures >= schedule::DISABLE_AFTER && endpoint.enabled {
                wh::event_update(tx, &event.id, state, attempts, None)?;
                return wh::endpoint_disable(
                    tx,
                    &format!(
                        "{failures} consecutive events failed every delivery attempt; \
                         fix the receiver and re-enable the endpoint"
                    ),
                );
            }
        }
        _ => {}
    }
    // The endpoint may have been disabled while this attempt was in flight.
    let state = if state == EventState::Pending && !endpoint.enabled {
        EventState::Held
    } else {
        state
    };
    wh::event_update(
        tx,
        &event.id,
        state,
        attempts,
        next.filter(|_| state == EventState::Pending),
    )
}

/// Records a manual resend; a success completes the event and resets the failure count.
fn record_manual(tx: &dyn crate::store::Tx, event: &Event, o: &Outcome) -> store::Result<Attempt> {
    let number = wh::last_attempt_number(tx, &event.id)? + 1;
    let row = attempt_row(event, number, o, true, None);
    wh::insert_attempt(tx, &row)?;
    if o.succeeded() {
        wh::event_update(tx, &event.id, EventState::Succeeded, event.attempts, None)?;
        if event.kind == EventKind::Job {
            wh::endpoint_set_failures(tx, 0)?;
        }
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// The recorded error goes down to the cause (reqwest's own message stops at "error sending
    /// request", which hid a refused connection or a bad certificate).
    #[tokio::test]
    async fn a_failed_delivery_says_why_down_to_the_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        let said = describe(e);
        assert!(said.starts_with("could not connect: "), "{said}");
        assert!(said.to_lowercase().contains("refused"), "{said}");
    }

    fn outcome(status: u16) -> Outcome {
        Outcome {
            url: "http://127.0.0.1:9/hook".into(),
            request_headers: BTreeMap::new(),
            status: Some(status),
            response_headers: None,
            response_body: None,
            error: None,
            duration: Duration::from_millis(1),
        }
    }

    /// A receiver that answers 2xx and then cuts its body short (or trickles it past the
    /// timeout) has answered: the attempt is delivered, with the status kept and the body's
    /// problem noted. A 500 answered the same way still fails.
    #[tokio::test]
    async fn a_2xx_whose_body_is_cut_short_is_delivered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let dispatcher = Dispatcher::new(
            store,
            DispatchConfig {
                time_scale: 1.0,
                timeout: Duration::from_millis(1500),
                strict: false,
            },
        );
        let event = Event {
            id: "evt_a".into(),
            kind: EventKind::Job,
            event_type: "job.completed".into(),
            subject_id: "job_a".into(),
            url: None,
            payload: "{}".into(),
            state: EventState::Pending,
            attempts: 0,
            next_attempt_at: Some(0),
            created_at: String::new(),
        };
        // (status line, what follows the headers, whether the connection then stays open)
        let answers = [
            ("200 OK", "Content-Length: 100\r\n\r\nok", false),
            ("204 No Content", "Content-Length: 0\r\n\r\n", false),
            ("200 OK", "Content-Length: 100\r\n\r\nslow", true),
            (
                "500 Internal Server Error",
                "Content-Length: 100\r\n\r\nno",
                false,
            ),
        ];
        for (status, rest, hold) in answers {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/hook", listener.local_addr().unwrap());
            let server = tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let head = format!("HTTP/1.1 {status}\r\n{rest}");
                sock.write_all(head.as_bytes()).await.unwrap();
                if hold {
                    tokio::time::sleep(Duration::from_secs(4)).await;
                }
            });
            let o = dispatcher
                .send(&event, &(url, Some("whsec_dGVzdA==".into())), None)
                .await;
            let code: u16 = status[..3].parse().unwrap();
            assert_eq!(o.status, Some(code), "{status} {rest}: {:?}", o.error);
            assert_eq!(o.succeeded(), code < 300, "{status} {rest}");
            if code == 204 {
                assert_eq!(o.error, None);
            } else {
                let note = o.error.clone().unwrap_or_default();
                assert!(note.contains("body could not be read"), "{note}");
            }
            server.abort();
        }
    }

    /// Two nodes attempted the same event (the first stalled past its hold): the second's success
    /// is recorded; the first's late failure is logged but leaves the event succeeded and the
    /// endpoint's failure count at zero.
    #[test]
    fn a_late_attempt_is_logged_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        store
            .write_blocking(|tx| {
                wh::endpoint_ensure(tx, "whsec_dGVzdA==")?;
                wh::endpoint_set_url(tx, Some("http://127.0.0.1:9/hook"))?;
                wh::insert_event(
                    tx,
                    &wh::NewEvent {
                        id: "evt_a",
                        kind: EventKind::Job,
                        event_type: "job.completed",
                        subject_id: "job_a",
                        url: None,
                        payload: "{}",
                        state: EventState::Pending,
                        next_attempt_at: Some(0),
                    },
                )
            })
            .unwrap();
        let taken = store
            .write_blocking(|tx| wh::event_get(tx, "evt_a"))
            .unwrap()
            .unwrap();
        // The second node's attempt succeeds and is recorded first.
        store
            .write_blocking(|tx| record_scheduled(tx, &taken, &outcome(200), 1.0))
            .unwrap();
        // The stalled node wakes with the same taken event and a failure.
        store
            .write_blocking(|tx| record_scheduled(tx, &taken, &outcome(500), 1.0))
            .unwrap();
        let (event, attempts, endpoint) = store
            .write_blocking(|tx| {
                Ok((
                    wh::event_get(tx, "evt_a")?.unwrap(),
                    wh::recent_attempts(tx, wh::AttemptFilter::Subject("job_a"), 10)?,
                    wh::endpoint_get(tx)?,
                ))
            })
            .unwrap();
        assert_eq!((event.state, event.attempts), (EventState::Succeeded, 1));
        assert_eq!(attempts.len(), 2, "both attempts are in the log");
        assert_eq!(endpoint.consecutive_failures, 0);
    }
}
