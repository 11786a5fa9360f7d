//! The HTTP/1.1 listener: accepts connections and serves the router on each through hyper, with
//! the timeouts `axum::serve` does not offer. A client must send a request's headers within the
//! header-read timeout, counted from the moment the connection opens or the previous response was
//! sent (hyper's timer): a half-sent request line is closed, and so is a keep-alive connection that
//! sends no next request. A connection that in one idle period writes nothing and reads fewer than
//! [`MIN_READ`] bytes (a stalled or dripped request body) is asked to close once its request in
//! flight is answered, and dropped if it stays idle another period. Time the server spends on a
//! request is the server's, not the client's, and never counts as idle, except while a handler
//! waits for body bytes the client has not sent. On shutdown every connection finishes its
//! request in flight and closes. A connection that opens with the HTTP/2 preface gets an HTTP/2
//! GOAWAY saying `HTTP_1_1_REQUIRED`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The connection timeouts (`serve --header-timeout-secs`, `--idle-timeout-secs`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest a client may take to send a request's headers.
    pub header_read: Duration,
    /// Longest a connection may stay open with no bytes read or written.
    pub idle: Duration,
}

/// How long shutdown waits for requests in flight before closing their connections.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` fires, then drains the open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Responses go out as soon as they are written (no Nagle delay waiting for an ACK).
        let _ = tcp.set_nodelay(true);
        connections.spawn(serve_connection(
            tcp,
            peer,
            app.clone(),
            timeouts,
            shutdown.clone(),
        ));
    }
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy {DRAIN:?} after shutdown began");
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    match first_bytes(&tcp, timeouts.header_read, &shutdown).await {
        Opening::Http1 => {}
        // Nothing within the header-read timeout, closed, or shutdown: what hyper would do.
        Opening::Nothing => return,
        Opening::Http2 => return refuse_http2(tcp, peer).await,
    }
    let counts = Arc::new(Counts::default());
    let io = TokioIo::new(Tracked {
        inner: tcp,
        counts: counts.clone(),
    });
    let (mut window_start, mut window_read, mut window_written) = (Duration::ZERO, 0u64, 0u64);
    // Peer addresses let the dashboard hand its keys to loopback clients only.
    let in_service = counts.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let turn = ServerTurn::new(in_service.clone());
        let body_turn = turn.clone();
        let response = app.clone().oneshot(req.map(|inner| {
            axum::body::Body::new(TurnBody {
                inner,
                turn: body_turn,
            })
        }));
        async move {
            let r = response.await;
            turn.end();
            r
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(timeouts.idle.min(Duration::from_secs(1)));
    let mut closing_since: Option<Duration> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = shutdown.cancelled(), if closing_since.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing_since = Some(started.elapsed());
            }
            _ = tick.tick() => {
                // A window of `idle` in which nothing was written and fewer than MIN_READ bytes
                // were read makes the connection idle: silence, or a body dripped a byte at a time.
                let now = started.elapsed();
                if now.saturating_sub(window_start) < timeouts.idle {
                    continue;
                }
                let (read, written) = (counts.read.load(Ordering::Relaxed), counts.written.load(Ordering::Relaxed));
                if counts.serving.load(Ordering::Relaxed) > 0 {
                    // A request is the server's to answer or read (a slow analysis, a queue for
                    // a slot, `--latency` before the body is read): not idle.
                    (window_start, window_read, window_written) = (now, read, written);
                    continue;
                }
                let idle = written == window_written && read.saturating_sub(window_read) < MIN_READ;
                (window_start, window_read, window_written) = (now, read, written);
                if !idle {
                    continue;
                }
                match closing_since {
                    None => {
                        conn.as_mut().graceful_shutdown();
                        closing_since = Some(now);
                    }
                    // Asked to close and still idle: a request stalled mid-body; drop it.
                    Some(_) => {
                        tracing::debug!(%peer, "closing a connection idle for two periods");
                        return;
                    }
                }
            }
        }
    }
}

/// The connection preface a client with HTTP/2 "prior knowledge" opens with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection's first bytes say.
enum Opening {
    Http1,
    Http2,
    Nothing,
}

/// Looks at (without reading) a connection's first bytes until they tell an HTTP/2 preface from
/// anything else: a request line differs from the preface by its first or second byte, so this
/// is one `peek` but for a client that sends its first bytes apart. hyper's HTTP/1 parser closes
/// the connection on a preface without a word; [`refuse_http2`] answers it.
async fn first_bytes(tcp: &TcpStream, within: Duration, shutdown: &CancellationToken) -> Opening {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Opening::Nothing,
            peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut buf)) => match peeked {
                Ok(Ok(n)) if n > 0 => n,
                _ => return Opening::Nothing,
            },
        };
        if !H2_PREFACE.starts_with(&buf[..n]) {
            return Opening::Http1;
        }
        if n == H2_PREFACE.len() {
            return Opening::Http2;
        }
        // A prefix of the preface so far: wait for the rest (peek would return at once).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Answers an HTTP/2 preface in HTTP/2, as RFC 9113 has a server that requires HTTP/1.1 do: its
/// own (empty) SETTINGS frame, then GOAWAY with the error code `HTTP_1_1_REQUIRED` and a sentence
/// as debug data (`curl -v --http2-prior-knowledge` shows `received GOAWAY, error=13`). Then it
/// closes; what the client sent is read first and after, so that closing does not reset the
/// connection and lose the answer.
async fn refuse_http2(mut tcp: TcpStream, peer: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tracing::info!(%peer, "refused an HTTP/2 connection preface: this server speaks HTTP/1.1");
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(50), tcp.read(&mut sink)).await;
    if tcp.write_all(&h2_refusal()).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    // Drain until the client closes (briefly), so the answer is not lost to a reset.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The two frames [`refuse_http2`] sends: SETTINGS (empty), and GOAWAY (last stream 0, error
/// `HTTP_1_1_REQUIRED`, the reason as debug data). A frame is a 9-byte header (24-bit length,
/// type, flags, stream id 0 here) and its payload.
fn h2_refusal() -> Vec<u8> {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const HTTP_1_1_REQUIRED: u32 = 0xd;
    let frame = |kind: u8, payload: &[u8]| {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, 0, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    };
    let mut goaway = Vec::new();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    goaway.extend_from_slice(&HTTP_1_1_REQUIRED.to_be_bytes());
    goaway.extend_from_slice(H2_REFUSAL.as_bytes());
    [frame(SETTINGS, &[]), frame(GOAWAY, &goaway)].concat()
}

/// Why an HTTP/2 connection is refused (GOAWAY's debug data).
const H2_REFUSAL: &str =
    "soundcheck speaks HTTP/1.1 only: send the request as HTTP/1.1 (no h2c prior knowledge)";

/// Fewer bytes than this read in an idle period, with nothing written, count as idle: a request
/// body dripped a byte every few seconds must not hold a connection forever.
const MIN_READ: u64 = 1024;

/// Bytes moved on a connection, for the idle timeout, and how many of its requests are the
/// server's turn: received and not yet answered, and not waiting for more of their body.
#[derive(Default)]
struct Counts {
    read: AtomicU64,
    written: AtomicU64,
    serving: AtomicU64,
}

/// Where one request stands, for [`Counts::serving`].
const SERVER: u8 = 0;
const WAITING_ON_CLIENT: u8 = 1;
const ANSWERED: u8 = 2;

/// One request's turns. It is the server's from the moment its headers are read (a handler that
/// has not read the body yet, because it sleeps for `--latency` or waits for a slot, is not a
/// client being idle) to its response, except while the handler waits for body bytes that have
/// not come: that time is the client's.
#[derive(Clone)]
struct ServerTurn {
    counts: Arc<Counts>,
    state: Arc<AtomicU8>,
}

impl ServerTurn {
    fn new(counts: Arc<Counts>) -> ServerTurn {
        counts.serving.fetch_add(1, Ordering::Relaxed);
        ServerTurn {
            counts,
            state: Arc::new(AtomicU8::new(SERVER)),
        }
    }

    fn go(&self, from: u8, to: u8) {
        if self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if to == SERVER {
                self.counts.serving.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counts.serving.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The handler asked for body bytes that have not arrived.
    fn wait_on_client(&self) {
        self.go(SERVER, WAITING_ON_CLIENT);
    }

    /// Body bytes came, or the handler let the body go.
    fn back_to_server(&self) {
        self.go(WAITING_ON_CLIENT, SERVER);
    }

    /// The response is made.
    fn end(&self) {
        if self.state.swap(ANSWERED, Ordering::AcqRel) == SERVER {
            self.counts.serving.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A request body that tells its [`ServerTurn`] when the handler waits on the client for it.
struct TurnBody {
    inner: Incoming,
    turn: ServerTurn,
}

impl hyper::body::Body for TurnBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match poll {
            Poll::Pending => self.turn.wait_on_client(),
            Poll::Ready(_) => self.turn.back_to_server(),
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TurnBody {
    fn drop(&mut self) {
        self.turn.back_to_server();
    }
}

/// A TCP stream that counts the bytes it moves.
struct Tracked {
    inner: TcpStream,
    counts: Arc<Counts>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) {
            let n = (buf.filled().len() - before) as u64;
            self.counts.read.fetch_add(n, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
