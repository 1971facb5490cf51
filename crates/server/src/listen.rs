//! The accept loop: hyper's HTTP/1 connections with the limits `axum::serve` has no knobs
//! for.
//!
//! - **Header timeout.** A request's headers must arrive within [`Limits::header_timeout`],
//!   counted from when the connection opens or its previous response ends; so it is also the
//!   keep-alive idle timeout. A client that sends a byte a second is closed, whatever its
//!   API key (which can only be checked once the headers are in).
//! - **Body timeout.** A pause of more than [`Limits::body_timeout`] while a request body is
//!   read fails the request.
//! - **Connection cap.** At most [`Limits::max_connections`] connections are held. One more
//!   closes the connection that has waited longest with no request in progress (an idle
//!   keep-alive one, or one still sending its headers): a flood of half-open connections
//!   cannot lock real clients out, and a real request in progress is never cut. When every
//!   held connection is busy, the new one is closed at once rather than left to hang.

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tower::ServiceExt;

/// Default for [`Limits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`Limits::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// What one connection may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// One held connection.
struct Conn {
    /// Requests in progress, responses still streaming included.
    busy: AtomicUsize,
    /// When it last had nothing in progress (its start, or its last response's end).
    idle_since: Mutex<Instant>,
}

impl Conn {
    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks a connection busy while it lives (a request, then its response body).
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: &Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its connection marked busy until it ends.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The held connections, by id.
#[derive(Default)]
struct Table {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, (Arc<Conn>, AbortHandle)>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<Conn>, AbortHandle)>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for one more connection: true when there is room (closing the longest
    /// idle connection if needed), false when every held one is busy.
    fn make_room(&self, max: usize) -> bool {
        let mut conns = self.lock();
        if conns.len() < max {
            return true;
        }
        let victim = conns
            .iter()
            .filter(|(_, (c, _))| c.busy.load(Ordering::SeqCst) == 0)
            .min_by_key(|(_, (c, _))| c.idle_since())
            .map(|(&id, _)| id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some((_, abort)) => {
                abort.abort();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the table when its task ends, however it ends.
struct Unlist(Arc<Table>, u64);

impl Drop for Unlist {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the connections
/// finish their requests.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let table = Arc::new(Table::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: wait a little rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if !table.make_room(limits.max_connections.max(1)) {
            // Every held connection is busy: closed now, not left waiting.
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        });
        let service = {
            let conn = Arc::clone(&conn);
            let router = router.clone();
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let busy = Busy::new(&conn);
                let router = router.clone();
                async move {
                    let resp = router.oneshot(req.map(Body::new)).await?;
                    Ok::<_, std::convert::Infallible>(
                        resp.map(|inner| Body::new(Tracked { inner, _busy: busy })),
                    )
                }
            })
        };
        let served = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let id = table.next.fetch_add(1, Ordering::Relaxed);
        {
            // Listed before it starts, so the task's own unlisting cannot come first.
            let mut conns = table.lock();
            let unlist = Unlist(Arc::clone(&table), id);
            let task = tokio::spawn(async move {
                let _unlist = unlist;
                let _ = served.await;
            });
            conns.insert(id, (conn, task.abort_handle()));
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
