//! The metrics endpoint: Prometheus text on `GET /metrics`, `ok` on `GET /healthz`, on a plain TCP listener
//! (one thread, one request per connection: scrapes are rare and small).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use saccade_runtime::budget::rss_bytes;
use saccade_runtime::metrics::{OutputMetrics, PipelineMetrics};
use saccade_runtime::prometheus::{render, SourceMetrics};

/// The pipelines the endpoint reports on.
pub struct Registry {
    pub sources: Vec<(String, Arc<PipelineMetrics>)>,
    /// Failed writes of the events and annotation outputs, shared by every source.
    pub outputs: Arc<OutputMetrics>,
    pub started: Instant,
    pub memory_budget_bytes: u64,
}

impl Registry {
    pub fn render(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let views: Vec<SourceMetrics<'_>> = self
            .sources
            .iter()
            .map(|(source, m)| SourceMetrics {
                source,
                metrics: m,
                fps: PipelineMetrics::get(&m.frames_processed) as f64 / elapsed,
            })
            .collect();
        let used = rss_bytes().map(|(rss, _)| rss).unwrap_or(0);
        render(&views, &self.outputs, used, self.memory_budget_bytes)
    }
}

/// Serve until `stop` is set. Binding happens before this returns, so a bad address is reported at start.
pub fn spawn(
    addr: &str,
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("binding the metrics endpoint on {addr}"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!("metrics endpoint on {local} is reachable from other hosts");
    }
    listener.set_nonblocking(true)?;
    tracing::info!("metrics on http://{local}/metrics");
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, &registry) {
                        tracing::debug!("metrics request failed: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!("metrics endpoint accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
    Ok((local, handle))
}

fn answer(stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            registry.render(),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
