//! The HTTP server of a run: Prometheus `/metrics`, `/healthz`, the JSON API (`/api/sources`, `/api/stats`,
//! `/api/events`), the annotated MJPEG streams (`/stream/<n>.mjpg`) and the live page (`/`).
//!
//! It runs on its own small tokio runtime (two worker threads), started only when an address is given, so the
//! pipelines never share a thread with it. hyper serves the connections with limits that keep a slow or
//! hostile client from blinding the monitoring: at most `MAX_CONNECTIONS` open connections (more are closed
//! at once), request headers within `HEADER_READ_TIMEOUT` and `MAX_HEADER_BYTES`, one request per connection,
//! and at most `MAX_STREAMS` open streams (MJPEG and events). No endpoint reads a request body.

pub mod api;
pub mod live;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use saccade_runtime::budget::rss_bytes;
use saccade_runtime::metrics::{OutputMetrics, PipelineMetrics};
use saccade_runtime::prometheus::{render, SourceMetrics, CONTENT_TYPE};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};

use live::{LiveHub, SourceFeed};

/// Open connections at most; a connection beyond this is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// Open MJPEG and event streams at most; a request for one more is answered 503.
pub const MAX_STREAMS: usize = 32;
/// A client must send its request line and headers within this time of connecting.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Request line and headers, bytes at most (431 beyond).
pub const MAX_HEADER_BYTES: usize = 8192;
/// Worker threads of the server's runtime.
const WORKER_THREADS: usize = 2;
/// Default of `http.stall_s`: `/healthz` answers 503 when a source delivered no frame for this long.
pub const DEFAULT_STALL_S: f64 = 10.0;

const INDEX_HTML: &str = include_str!("index.html");
const MJPEG_BOUNDARY: &str = "saccadeframe";

/// The pipelines the server reports on.
pub struct Registry {
    pub hub: LiveHub,
    /// Failed writes of the events and annotation outputs, shared by every source.
    pub outputs: Arc<OutputMetrics>,
    pub started: Instant,
    pub memory_budget_bytes: u64,
}

impl Registry {
    /// One feed per source, in the order of the sources.
    pub fn new(
        sources: Vec<(String, Arc<PipelineMetrics>)>,
        outputs: Arc<OutputMetrics>,
        memory_budget_bytes: u64,
    ) -> Self {
        let started = Instant::now();
        let feeds = sources
            .into_iter()
            .map(|(uri, metrics)| Arc::new(SourceFeed::new(uri, metrics, started)))
            .collect();
        Self {
            hub: LiveHub::new(feeds),
            outputs,
            started,
            memory_budget_bytes,
        }
    }

    /// Frames processed per second since start.
    pub fn fps(&self, metrics: &PipelineMetrics) -> f64 {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        PipelineMetrics::get(&metrics.frames_processed) as f64 / elapsed
    }

    /// Prometheus text of every source.
    pub fn render(&self) -> String {
        let views: Vec<SourceMetrics<'_>> = self
            .hub
            .feeds
            .iter()
            .map(|feed| SourceMetrics {
                source: &feed.uri,
                metrics: &feed.metrics,
                fps: self.fps(&feed.metrics),
            })
            .collect();
        render(
            &views,
            &self.outputs,
            memory_used_bytes(),
            self.memory_budget_bytes,
        )
    }
}

fn memory_used_bytes() -> u64 {
    rss_bytes().map(|(rss, _)| rss).unwrap_or(0)
}

/// How the server is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerOptions {
    /// HOST:PORT to listen on.
    pub addr: String,
    /// Bearer token required on every path but `/healthz` (absent: none).
    pub token: Option<String>,
    /// `/healthz` answers 503 when a source delivered no frame for this long.
    pub stall: Duration,
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    token: Option<Arc<str>>,
    stall: Duration,
    streams: Arc<Semaphore>,
}

/// A running server; `stop` (or dropping it) ends it.
pub struct HttpServer {
    runtime: Option<tokio::runtime::Runtime>,
    pub local_addr: SocketAddr,
}

impl HttpServer {
    /// Close every connection and stop the server's threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(500));
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start the server. Binding happens before this returns, so a bad or busy address is reported at start.
pub fn spawn(options: &ServerOptions, registry: Arc<Registry>) -> anyhow::Result<HttpServer> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(WORKER_THREADS)
        .thread_name("saccade-http")
        .enable_all()
        .build()
        .context("starting the HTTP server's threads")?;
    let addr = options.addr.clone();
    let listener = runtime
        .block_on(TcpListener::bind(&addr))
        .with_context(|| format!("binding the HTTP server on {addr}"))?;
    let local_addr = listener
        .local_addr()
        .with_context(|| format!("reading the address of the HTTP server bound on {addr}"))?;
    if !local_addr.ip().is_loopback() {
        tracing::warn!(
            "the HTTP server on {local_addr} is reachable from other hosts{}",
            if options.token.is_some() {
                ""
            } else {
                " and has no token (set http.token in the config)"
            }
        );
    }
    let state = AppState {
        registry: registry.clone(),
        token: options.token.as_deref().map(Arc::from),
        stall: options.stall,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
    };
    let app = router(state);
    for feed in &registry.hub.feeds {
        runtime.spawn(encode_loop(feed.clone()));
    }
    runtime.spawn(accept_loop(listener, app));
    tracing::info!("live view on http://{local_addr}/, metrics on http://{local_addr}/metrics");
    Ok(HttpServer {
        runtime: Some(runtime),
        local_addr,
    })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/sources", get(api::sources))
        .route("/api/stats", get(api::stats))
        .route("/api/events", get(events))
        .route("/stream/{file}", get(stream))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorise))
        .with_state(state)
}

async fn accept_loop(listener: TcpListener, app: Router) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192) * 2)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(false);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("HTTP server: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(
                "HTTP server: {MAX_CONNECTIONS} connections open, closing the one from {peer}"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
}

/// Encode each frame the sink hands over, on a blocking thread, and publish it to the streams.
async fn encode_loop(feed: Arc<SourceFeed>) {
    let mut errors =
        saccade_runtime::events::RateLimitedLog::new(saccade_runtime::events::ERROR_LOG_INTERVAL);
    loop {
        let frame = feed.next_frame().await;
        let index = frame.index;
        let encoded = {
            let feed = feed.clone();
            tokio::task::spawn_blocking(move || {
                let (jpeg, rgb) = live::encode_annotated(frame);
                feed.recycle(rgb);
                jpeg
            })
            .await
        };
        let failure = match encoded {
            Ok(Ok(jpeg)) => {
                feed.publish_jpeg(mjpeg_part(&jpeg));
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("encoding live frame {index} of {} stopped: {e}", feed.uri),
        };
        if let Some(held_back) = errors.due(Instant::now()) {
            tracing::error!("{failure} ({held_back} errors since the last message)");
        }
    }
}

/// One part of a `multipart/x-mixed-replace` stream: boundary, headers, the JPEG.
fn mjpeg_part(jpeg: &[u8]) -> Bytes {
    let head = format!(
        "--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        jpeg.len()
    );
    let mut part = Vec::with_capacity(head.len() + jpeg.len() + 2);
    part.extend_from_slice(head.as_bytes());
    part.extend_from_slice(jpeg);
    part.extend_from_slice(b"\r\n");
    Bytes::from(part)
}

/// Bearer token on every path but `/healthz`: in the `Authorization` header, or as `?token=` (for the page's
/// image and event requests, which a browser sends without headers).
async fn authorise(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let from_query = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(str::to_owned)
    });
    let given = from_header.map(str::to_owned).or(from_query);
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "a bearer token is required: Authorization: Bearer TOKEN (or ?token=TOKEN)\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"saccade\""),
    );
    response
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.registry.render(),
    )
        .into_response()
}

/// `ok` while every source delivered a frame within the stall time (counted from start before the first
/// frame); 503 naming the stalled sources otherwise.
async fn healthz(State(state): State<AppState>) -> Response {
    let stalled: Vec<String> = state
        .registry
        .hub
        .feeds
        .iter()
        .filter(|feed| feed.since_last_frame() > state.stall)
        .map(|feed| {
            format!(
                "{}: no frame for {:.1} s (limit {:.1} s)",
                feed.uri,
                feed.since_last_frame().as_secs_f64(),
                state.stall.as_secs_f64()
            )
        })
        .collect();
    if stalled.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled\n{}\n", stalled.join("\n")),
        )
            .into_response()
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn too_many_streams() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{MAX_STREAMS} streams are open already; try again later\n"),
    )
        .into_response()
}

/// `/api/events`: the JSON event of each processed frame, as server-sent events. A subscriber that reads too
/// slowly loses the oldest events (an `: N events dropped` comment says how many); the pipeline never waits.
async fn events(State(state): State<AppState>) -> Response {
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        return too_many_streams();
    };
    let rx = state.registry.hub.subscribe_events();
    let stream = futures_util::stream::unfold((rx, permit), |(mut rx, permit)| async move {
        let event = match rx.recv().await {
            Ok(json) => Event::default().data(&*json),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                Event::default().comment(format!("{n} events dropped"))
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<Event, Infallible>(event), (rx, permit)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `/stream/<n>.mjpg`: the annotated frames of source `n` (from 0, in config order) as multipart MJPEG, at
/// most `live::LIVE_FPS` frames a second. Frames are copied and encoded only while a stream is open.
async fn stream(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let feed = file
        .strip_suffix(".mjpg")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| state.registry.hub.feeds.get(n));
    let Some(feed) = feed else {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no stream `{file}`: expected /stream/N.mjpg with N from 0 to {}\n",
                state.registry.hub.feeds.len().saturating_sub(1)
            ),
        )
            .into_response();
    };
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        return too_many_streams();
    };
    let (mut rx, guard) = feed.watch();
    // The frame encoded last goes out at once, when there is one.
    rx.mark_changed();
    let parts = futures_util::stream::unfold(
        (rx, guard, permit),
        |(mut rx, guard, permit): (_, _, OwnedSemaphorePermit)| async move {
            loop {
                if rx.changed().await.is_err() {
                    return None;
                }
                let part = rx.borrow_and_update().clone();
                if let Some(part) = part {
                    return Some((Ok::<Bytes, Infallible>(part), (rx, guard, permit)));
                }
            }
        },
    );
    (
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        axum::body::Body::from_stream(parts),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secres", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn mjpeg_parts_carry_boundary_length_and_image() {
        let part = mjpeg_part(&[0xFF, 0xD8, 1, 2]);
        let text = String::from_utf8_lossy(&part);
        assert!(text.starts_with("--saccadeframe\r\n"), "{text}");
        assert!(text.contains("Content-Length: 4\r\n\r\n"), "{text}");
        assert!(part.ends_with(&[0xFF, 0xD8, 1, 2, b'\r', b'\n']));
    }
}
