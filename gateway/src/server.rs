//! The HTTP server under the router, with the connection limits `axum::serve` lacks.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// File descriptors kept free of client connections: outbound pools (store, model,
/// collector), the listener, log files.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Limits on client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a whole request head once its first byte arrived.
    pub header_read_timeout: Duration,
    /// Time a connection may sit with no request in progress.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// `max_connections` lowered to what the process's open-file limit allows, after
    /// raising the soft limit to the hard one (as Go's runtime does at start-up).
    pub fn fitted_to_descriptor_limit(mut self) -> Self {
        let descriptors = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
        let room = descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(1);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if room < self.max_connections {
            tracing::info!(
                configured = self.max_connections,
                allowed = room,
                open_file_limit = descriptors,
                "connection cap lowered to fit the open-file limit"
            );
            self.max_connections = room;
        }
        self
    }
}

/// The stages of a shutdown, driven by [`crate::startup::Application`].
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// `true` once responses should close their connections (the drain delay began).
    closing: Arc<AtomicBool>,
    /// `Some(grace)` once the server must stop accepting and finish within `grace`.
    stop: watch::Sender<Option<Duration>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            closing: Arc::default(),
            stop: watch::channel(None).0,
        }
    }
}

impl Shutdown {
    /// From now on every response says `Connection: close`, so clients leave on their own.
    pub fn close_connections_after_responses(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Stop accepting; in-flight requests get `grace` to finish, then connections close.
    pub fn stop_accepting(&self, grace: Duration) {
        self.closing.store(true, Ordering::Relaxed);
        self.stop.send_replace(Some(grace));
    }
}

/// Serves `router` on `listener` within `limits` until [`Shutdown::stop_accepting`],
/// then returns once every connection finished or the grace period ran out. `registry`
/// counts the connections toward the cap; accept loops that share one share the cap
/// (one loop per serving thread, [`crate::serving_threads`]).
///
/// The HTTP server under the router: accepts connections within a cap, closes those that
/// are slow to send a request head or sit idle, and shuts down in stages (stop accepting,
/// let in-flight requests finish within a grace period, close the rest).
///
/// `axum::serve` sets none of these limits (hyper has no timer there), so slow or idle
/// clients could hold connections and file descriptors without bound.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: Shutdown,
    registry: Registry,
) {
    let mut stop = shutdown.stop.subscribe();
    let mut connections = JoinSet::new();
    let grace = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if !registry.make_room(limits.max_connections) {
                        tracing::warn!(
                            max_connections = limits.max_connections,
                            "connection cap reached with every connection busy: refusing one"
                        );
                        continue;
                    }
                    let state = registry.add();
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        router.clone(),
                        limits,
                        state,
                        registry.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: back off
                    // briefly instead of spinning.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            grace = grace_period(&mut stop) => break grace,
        }
    };
    drop(listener);
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            open = connections.len(),
            "shutdown grace period over: closing the remaining connections"
        );
        connections.shutdown().await;
    }
}

/// One connection: HTTP/1.1 or HTTP/2 (prior knowledge), closed when its head is slow,
/// when it idles, when the cap needs room, or when the grace period ends.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    state: Arc<ConnectionState>,
    registry: Registry,
    shutdown: Shutdown,
) {
    let service = {
        let state = Arc::clone(&state);
        let closing = Arc::clone(&shutdown.closing);
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let in_flight = InFlight::start(&state);
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            let closing = Arc::clone(&closing);
            async move {
                let mut response = router.oneshot(request).await.unwrap_or_else(|e| match e {});
                drop(in_flight);
                if closing.load(Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let io = TokioIo::new(TrackedIo::new(stream, Arc::clone(&state)));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stop = shutdown.stop.subscribe();
    let mut draining = false;
    loop {
        let deadline = state.deadline(&limits);
        tokio::select! {
            _ = connection.as_mut() => break,
            () = tokio::time::sleep_until(deadline), if !draining => {
                if state.expired(&limits) {
                    break;
                }
            }
            // A head began: the header-read deadline is earlier than the idle one.
            () = state.head_started.notified(), if !draining => {}
            () = state.evict.notified(), if !draining => {
                if state.is_idle() {
                    break;
                }
            }
            _ = grace_period(&mut stop), if !draining => {
                // Idle connections close at once; busy ones after their response.
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
    registry.remove(state.id);
}

/// Completes with the grace period once the server must stop accepting.
async fn grace_period(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    let grace = stop
        .wait_for(Option::is_some)
        .await
        .ok()
        .map(|grace| grace.unwrap_or_default());
    match grace {
        Some(grace) => grace,
        // The stages were dropped: nobody can ask for a shutdown any more.
        None => std::future::pending().await,
    }
}

/// The open connections, for the cap: one per process, shared by every accept loop.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<RegistryInner>>,
}

#[derive(Default)]
struct RegistryInner {
    next_id: u64,
    open: HashMap<u64, Arc<ConnectionState>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self) -> Arc<ConnectionState> {
        let mut inner = self.lock();
        inner.next_id += 1;
        let state = Arc::new(ConnectionState::new(inner.next_id));
        inner.open.insert(state.id, Arc::clone(&state));
        state
    }

    fn remove(&self, id: u64) {
        self.lock().open.remove(&id);
    }

    /// Whether a new connection may be served: under the cap, or after asking the
    /// longest-idle connection to close (it leaves the registry when it has).
    fn make_room(&self, max: usize) -> bool {
        let inner = self.lock();
        if inner.open.len() < max {
            return true;
        }
        let idlest = inner
            .open
            .values()
            .filter(|state| state.is_idle() && !state.evicting.load(Ordering::Relaxed))
            .min_by_key(|state| state.since.load(Ordering::Relaxed));
        match idlest {
            Some(state) => {
                state.evicting.store(true, Ordering::Relaxed);
                state.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// What the server knows of one connection's activity.
struct ConnectionState {
    id: u64,
    /// When the state last changed, in milliseconds since `origin`: the connection became
    /// idle, or the first byte of a request head arrived.
    since: AtomicU64,
    origin: Instant,
    /// Requests being served (several on HTTP/2).
    in_flight: AtomicUsize,
    /// Bytes of a request head arrived and no request was dispatched yet.
    reading_head: AtomicBool,
    /// HTTP/2 (frames arrive while idle; only the idle timeout applies).
    http2: AtomicBool,
    /// Asked to close to make room under the cap.
    evicting: AtomicBool,
    evict: Notify,
    /// Signalled when the first byte of a request head arrives.
    head_started: Notify,
}

impl ConnectionState {
    fn new(id: u64) -> Self {
        Self {
            id,
            since: AtomicU64::new(0),
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            reading_head: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
            head_started: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// The timeout that applies now: the header-read one while a head arrives, the idle
    /// one otherwise; none while a request is served (the request deadline covers it).
    fn timeout(&self, limits: &ConnectionLimits) -> Option<Duration> {
        if !self.is_idle() {
            None
        } else if self.reading_head.load(Ordering::Relaxed) {
            Some(limits.header_read_timeout)
        } else {
            Some(limits.idle_timeout)
        }
    }

    /// When to look again.
    fn deadline(&self, limits: &ConnectionLimits) -> Instant {
        let since = self.origin + Duration::from_millis(self.since.load(Ordering::Relaxed));
        match self.timeout(limits) {
            Some(timeout) => (since + timeout).max(Instant::now() + Duration::from_millis(1)),
            None => Instant::now() + limits.header_read_timeout.min(limits.idle_timeout),
        }
    }

    fn expired(&self, limits: &ConnectionLimits) -> bool {
        self.timeout(limits).is_some_and(|timeout| {
            let waited = self
                .now_ms()
                .saturating_sub(self.since.load(Ordering::Relaxed));
            Duration::from_millis(waited) >= timeout
        })
    }

    fn head_bytes_arrived(&self) {
        if self.is_idle()
            && !self.http2.load(Ordering::Relaxed)
            && !self.reading_head.swap(true, Ordering::Relaxed)
        {
            self.since.store(self.now_ms(), Ordering::Relaxed);
            self.head_started.notify_one();
        }
    }
}

/// Counts one request as in progress on its connection until dropped (also when the
/// client goes away and hyper drops the request's future).
struct InFlight {
    state: Arc<ConnectionState>,
}

impl InFlight {
    fn start(state: &Arc<ConnectionState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.reading_head.store(false, Ordering::Relaxed);
        Self {
            state: Arc::clone(state),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state
            .since
            .store(self.state.now_ms(), Ordering::Relaxed);
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's socket, watched: reads tell the server when a request head starts
/// arriving; hyper's own answer to an unparsable head (400, 414, 431, written with no
/// body) is replaced by the same status with the API's JSON error body.
struct TrackedIo {
    stream: TcpStream,
    state: Arc<ConnectionState>,
    first_read: bool,
    /// The rest of a replacement answer the socket did not take yet.
    pending: Vec<u8>,
}

/// HTTP/2's connection preface, which a prior-knowledge client sends first.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl TrackedIo {
    fn new(stream: TcpStream, state: Arc<ConnectionState>) -> Self {
        Self {
            stream,
            state,
            first_read: true,
            pending: Vec::new(),
        }
    }

    /// Writes what is left of a replacement answer; ready when nothing is left.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written =
                std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        let arrived = &buf.filled()[before..];
        if matches!(result, Poll::Ready(Ok(()))) && !arrived.is_empty() {
            if self.first_read {
                self.first_read = false;
                if arrived.starts_with(HTTP2_PREFACE) {
                    self.state.http2.store(true, Ordering::Relaxed);
                }
            }
            self.state.head_bytes_arrived();
        }
        result
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        let parse_error = self.state.is_idle()
            && self.state.reading_head.load(Ordering::Relaxed)
            && !self.state.http2.load(Ordering::Relaxed);
        if parse_error && let Some(answer) = json_parse_error_answer(buf) {
            self.pending = answer;
            std::task::ready!(self.poll_pending(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The JSON answer replacing hyper's bodiless answer `head` to an unparsable request
/// head (hyper writes it itself and offers no hook: its `on_parse_error`), or `None`
/// if `head` is not one.
fn json_parse_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    // The router's own answers carry a body and its type; hyper's automatic one does not.
    if head
        .windows(b"content-type".len())
        .any(|w| w.eq_ignore_ascii_case(b"content-type"))
    {
        return None;
    }
    let (code, reason, message) = match status {
        b"400" => (
            "bad_request",
            "Bad Request",
            "the request line or a header could not be parsed",
        ),
        b"414" => (
            "uri_too_long",
            "URI Too Long",
            "the request target is longer than the gateway accepts",
        ),
        b"431" => (
            "request_header_fields_too_large",
            "Request Header Fields Too Large",
            "the request head has more or larger header fields than the gateway accepts",
        ),
        _ => return None,
    };
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "trace_id": ""}
    })
    .to_string();
    let status = std::str::from_utf8(status).ok()?;
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_parse_error_answers_become_json_with_the_same_status() {
        for status in [
            "400 Bad Request",
            "414 URI Too Long",
            "431 Request Header Fields Too Large",
        ] {
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            let answer =
                String::from_utf8(json_parse_error_answer(head.as_bytes()).unwrap()).unwrap();
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{answer}"
            );
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(body["error"]["code"].is_string());
        }
    }

    #[test]
    fn other_answers_are_left_alone() {
        for head in [
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 413 Payload Too Large\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\r\n{}",
        ] {
            assert!(json_parse_error_answer(head.as_bytes()).is_none(), "{head}");
        }
    }

    #[test]
    fn an_idle_connection_expires_after_the_idle_timeout_and_a_slow_head_after_the_header_timeout()
    {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(0),
            idle_timeout: Duration::from_secs(3600),
            max_connections: 10,
        };
        let state = ConnectionState::new(1);
        assert!(!state.expired(&limits), "idle for less than an hour");
        state.head_bytes_arrived();
        assert!(
            state.expired(&limits),
            "a head started and the header timeout is 0"
        );
        let request = InFlight::start(&Arc::new(ConnectionState::new(2)));
        assert!(
            !request.state.expired(&limits),
            "a request in progress never expires"
        );
    }

    #[test]
    fn at_the_cap_the_idlest_connection_is_asked_to_make_room() {
        let registry = Registry::default();
        let busy = registry.add();
        let _request = InFlight::start(&busy);
        let idle = registry.add();
        assert!(registry.make_room(2), "room is made");
        assert!(
            idle.evicting.load(Ordering::Relaxed),
            "the idle one is asked to close"
        );
        assert!(
            !busy.evicting.load(Ordering::Relaxed),
            "the busy one is left alone"
        );
        assert!(
            !registry.make_room(2),
            "nothing else is idle: the new connection is refused"
        );
    }
}
