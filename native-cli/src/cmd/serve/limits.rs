//! The connection loop: each accepted socket is served by hyper's HTTP/1
//! connection (what `axum::serve` does), with the limits that keep slow or
//! idle clients from holding memory and sockets:
//!
//! - a connection cap: sockets past `--max-connections` get a 503 in
//!   OpenAI's shape and are closed;
//! - a header timeout: a request head (from its first byte) must arrive
//!   within `--header-timeout-secs`;
//! - an idle timeout: a connection with no request in flight and nothing
//!   received for `--idle-timeout-secs` is closed;
//! - the body timeout (`--body-timeout-secs`) is the handler's, around
//!   reading the body ([`super::routes`]).
//!
//! A request in flight is never cut by these: a streamed response (SSE)
//! runs as long as it runs, and the clock restarts when its body ends.
//! Graceful shutdown stops accepting and lets open connections finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower_service::Service;
use tracing::{debug, warn};

/// How often a connection's watchdog looks at its clocks at most.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One connection's clocks, shared by its I/O, its requests and its watchdog.
#[derive(Default)]
struct ConnState {
    inner: Mutex<Phase>,
}

struct Phase {
    /// Requests whose response body has not ended yet.
    in_flight: usize,
    /// When the connection went idle (opened, or its last response ended).
    since: Instant,
    /// The first byte received since then: a request head is coming.
    head_started: Option<Instant>,
}

impl Default for Phase {
    fn default() -> Phase {
        Phase {
            in_flight: 0,
            since: Instant::now(),
            head_started: None,
        }
    }
}

impl ConnState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_read(&self) {
        let mut p = self.lock();
        if p.in_flight == 0 && p.head_started.is_none() {
            p.head_started = Some(Instant::now());
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut p = self.lock();
        p.in_flight += 1;
        p.head_started = None;
        InFlight(self.clone())
    }

    /// When the connection is to be closed, or `None` while a request runs.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let p = self.lock();
        if p.in_flight > 0 {
            return None;
        }
        Some(match p.head_started {
            Some(t) => (t + limits.header_timeout, "header"),
            None => (p.since + limits.idle_timeout, "idle"),
        })
    }
}

/// A request in flight on its connection, until its response body ends or is dropped.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut p = self.0.lock();
        p.in_flight = p.in_flight.saturating_sub(1);
        if p.in_flight == 0 {
            p.since = Instant::now();
            p.head_started = None;
        }
    }
}

/// A response body that holds its request's [`InFlight`].
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive.
struct Watched {
    io: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Resolves when the connection has been idle, or sending a head, too long.
async fn watchdog(state: Arc<ConnState>, limits: Limits) -> &'static str {
    loop {
        let now = Instant::now();
        match state.deadline(&limits) {
            Some((d, why)) if d <= now => return why,
            Some((d, _)) => tokio::time::sleep((d - now).min(TICK)).await,
            None => tokio::time::sleep(TICK).await,
        }
    }
}

/// The 503 a connection over the cap gets.
fn over_cap_response(max: usize) -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "message": format!("The server has too many open connections (--max-connections {max}); retry later."),
        "type": "service_unavailable",
        "param": null,
        "code": "too_many_connections",
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers 503 and closes, reading (and dropping) what the client sent so
/// that closing does not reset the connection before it reads the answer.
async fn refuse(mut stream: TcpStream, answer: Arc<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for the open connections to end.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusal = Arc::new(over_cap_response(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("refusing a connection: --max-connections reached");
            tokio::spawn(refuse(stream, refusal.clone()));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::default());
        let io = TokioIo::new(Watched {
            io: stream,
            state: state.clone(),
        });
        let svc = {
            let state = state.clone();
            let router = router.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let in_flight = state.begin();
                let mut router = router.clone();
                async move {
                    let resp: Response<Body> = match router.call(req.map(Body::new)).await {
                        Ok(r) => r,
                        Err(e) => match e {},
                    };
                    Ok::<_, Infallible>(resp.map(|inner| Tracked {
                        inner,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    debug!("connection ended: {e}");
                },
                why = watchdog(state, limits) => debug!("closing a connection: {why} timeout"),
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
