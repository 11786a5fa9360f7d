//! The HTTP/1.1 listener: accepts connections and serves the router on each through hyper, with
//! the timeouts `axum::serve` does not offer. A client must send a request's headers within the
//! header-read timeout, counted from the moment the connection opens or the previous response was
//! sent (hyper's timer): a half-sent request line is closed, and so is a keep-alive connection that
//! sends no next request. A connection that in one idle period writes nothing and reads fewer than
//! [`MIN_READ`] bytes (a stalled or dripped request body) is asked to close once its request in
//! flight is answered, and dropped if it stays idle another period. On shutdown every
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
    let counts = Arc::new(Counts::default());
    let io = TokioIo::new(Tracked {
        inner: tcp,
        counts: counts.clone(),
    });
    let (mut window_start, mut window_read, mut window_written) = (Duration::ZERO, 0u64, 0u64);
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
                // A window of `idle` in which nothing was written and fewer than MIN_READ bytes
                // were read makes the connection idle: silence, or a body dripped a byte at a time.
                let now = started.elapsed();
                if now.saturating_sub(window_start) < timeouts.idle {
                    continue;
                }
                let (read, written) = (counts.read.load(Ordering::Relaxed), counts.written.load(Ordering::Relaxed));
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

/// Fewer bytes than this read in an idle period, with nothing written, count as idle: a request
/// body dripped a byte every few seconds must not hold a connection forever.
const MIN_READ: u64 = 1024;

/// Bytes moved on a connection, for the idle timeout.
#[derive(Default)]
struct Counts {
    read: AtomicU64,
    written: AtomicU64,
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
