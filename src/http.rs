//! The HTTP/1.1 listener: accepts connections and serves the router on each through hyper, with
//! the timeouts `axum::serve` does not offer. A client must send a request's headers within the
//! header-read timeout, counted from the moment the connection opens or the previous response was
//! sent (hyper's timer): a half-sent request line is closed, and so is a keep-alive connection that
//! sends no next request. A connection with no bytes in either direction for the idle timeout
//! (a request whose body stalls, a client that stops reading) is asked to close once its request
//! in flight is answered, and dropped if it stays silent another idle period. On shutdown every
//! connection finishes its request in flight and closes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
    if tokio::time::timeout(DRAIN, connections.wait()).await.is_err() {
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
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked {
        inner: tcp,
        started,
        activity: activity.clone(),
    });
    // Peer addresses let the dashboard hand its keys to loopback clients only.
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req.map(axum::body::Body::new))
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
                let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                let idle = started.elapsed().saturating_sub(last);
                match closing_since {
                    None if idle >= timeouts.idle => {
                        conn.as_mut().graceful_shutdown();
                        closing_since = Some(started.elapsed());
                    }
                    // Asked to close and still silent: a request stalled mid-body; drop it.
                    Some(since) if idle >= timeouts.idle
                        && started.elapsed().saturating_sub(since) >= timeouts.idle => {
                        tracing::debug!(%peer, "closing a connection silent for {idle:?}");
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A TCP stream that records when bytes last moved, for the idle timeout.
struct Tracked {
    inner: TcpStream,
    started: Instant,
    /// Milliseconds since `started` of the last read or write that moved bytes.
    activity: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        self.activity
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
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
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
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
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
