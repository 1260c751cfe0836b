//! JSON-lines events: one line per processed frame, the product's main output.
//!
//! Schema version 1 (documented in `docs/EVENTS.md`). The sink flushes after every frame, so a stop at any
//! moment loses no detection already computed; a write failure (full disk, closed stdout) is reported once and
//! counted, never a panic.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::focus::{Detection, FocusOutcome, PatchVisit};
use crate::frame::Frame;

/// Version of the event schema; bumped on any incompatible change.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// One processed frame, as written to the events stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameEvent<'a> {
    pub v: u32,
    pub frame: u64,
    pub source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<&'a str>,
    /// Capture time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub width: u32,
    pub height: u32,
    pub strategy: &'a str,
    /// Patches the backbone examined.
    pub patches: usize,
    pub exit: &'static str,
    pub early_exit: bool,
    /// Capture to event, milliseconds.
    pub latency_ms: f64,
    pub backbone_mflops: f64,
    pub detections: &'a [Detection],
    /// The patches examined, in order, with why each was chosen.
    pub looked_at: &'a [PatchVisit],
}

impl<'a> FrameEvent<'a> {
    pub fn new(
        source: &'a str,
        strategy: &'a str,
        frame: &'a Frame,
        outcome: &'a FocusOutcome,
        latency_ms: f64,
    ) -> Self {
        let exit = outcome.exit.map(|e| e.as_str()).unwrap_or("max_steps");
        Self {
            v: EVENT_SCHEMA_VERSION,
            frame: frame.index,
            source,
            file: frame.file.as_deref(),
            timestamp_ms: frame
                .captured_wall
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            width: frame.width,
            height: frame.height,
            strategy,
            patches: outcome.patches.len(),
            exit,
            early_exit: outcome.exit.is_some_and(|e| e.is_early()),
            latency_ms,
            backbone_mflops: outcome.backbone_mflops,
            detections: &outcome.detections,
            looked_at: &outcome.patches,
        }
    }
}

/// Where events go.
pub enum EventTarget {
    Stdout,
    File(std::path::PathBuf),
    Discard,
}

/// Writes events as JSON lines, flushing after each; reports the first write error once.
pub struct EventSink {
    out: Option<Box<dyn Write + Send>>,
    name: String,
    failed: Option<String>,
    written: u64,
    line: Vec<u8>,
}

impl EventSink {
    pub fn open(target: &EventTarget) -> std::io::Result<Self> {
        let (out, name): (Option<Box<dyn Write + Send>>, String) = match target {
            EventTarget::Stdout => (
                Some(Box::new(BufWriter::new(std::io::stdout()))),
                "stdout".into(),
            ),
            EventTarget::File(path) => (
                Some(Box::new(BufWriter::new(create_file(path)?))),
                path.display().to_string(),
            ),
            EventTarget::Discard => (None, "nowhere".into()),
        };
        Ok(Self {
            out,
            name,
            failed: None,
            written: 0,
            line: Vec::with_capacity(4096),
        })
    }

    /// A sink writing into any writer (tests, custom outputs).
    pub fn from_writer(out: Box<dyn Write + Send>, name: &str) -> Self {
        Self {
            out: Some(out),
            name: name.into(),
            failed: None,
            written: 0,
            line: Vec::with_capacity(4096),
        }
    }

    /// Write one event and flush. Returns false once the sink has failed (the failure is logged once).
    pub fn write(&mut self, event: &FrameEvent<'_>) -> bool {
        let Some(out) = self.out.as_mut() else {
            return true;
        };
        if self.failed.is_some() {
            return false;
        }
        self.line.clear();
        let result = serde_json::to_writer(&mut self.line, event)
            .map_err(std::io::Error::other)
            .and_then(|()| {
                self.line.push(b'\n');
                out.write_all(&self.line)
            })
            .and_then(|()| out.flush());
        match result {
            Ok(()) => {
                self.written += 1;
                true
            }
            Err(e) => {
                tracing::error!(
                    "events output {} failed after {} events: {e}; further events are dropped",
                    self.name,
                    self.written
                );
                self.failed = Some(e.to_string());
                false
            }
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn flush(&mut self) {
        if let (Some(out), None) = (self.out.as_mut(), &self.failed) {
            if let Err(e) = out.flush() {
                tracing::error!("events output {} failed to flush: {e}", self.name);
                self.failed = Some(e.to_string());
            }
        }
    }
}

fn create_file(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    File::create(path)
}
