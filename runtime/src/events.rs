//! JSON-lines events: one line per processed frame, the product's main output.
//!
//! Schema version 1 (documented in `docs/EVENTS.md`). Each event is written as soon as its frame is done, so a
//! stop at any moment loses no detection already computed.
//!
//! Every line is written whole or not at all. The events file remembers the length of its last complete line;
//! when a write fails part-way (a full disk), the partial line is cut back. A line that could not be written is
//! counted as not written (by the sink, and in `saccade_output_errors_total{output="events"}`), the error is
//! logged at most once a minute, the pipeline goes on, and the next event simply tries again: writing resumes by
//! itself when the disk has room again, and rotation goes on after it.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::focus::{Detection, FocusOutcome, PatchVisit};
use crate::frame::Frame;
use crate::metrics::OutputMetrics;

/// An output's write errors are logged at most this often (the count in between is in the next message).
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

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
    /// The stream's own presentation timestamp in milliseconds (video files and network streams only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pts_ms: Option<f64>,
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
            pts_ms: frame.pts_ns.map(|ns| ns as f64 / 1e6),
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

/// Where events go: stdout, a file (optionally rotated by size), both, or nowhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventTarget {
    pub stdout: bool,
    pub file: Option<FileTarget>,
}

/// A JSON-lines file; with `max_bytes` it is rotated before a line would take it past that size:
/// `events.jsonl` becomes `events.jsonl.1`, `.1` becomes `.2`, … and the oldest beyond `keep` is removed.
#[derive(Debug, Clone, PartialEq)]
pub struct FileTarget {
    pub path: PathBuf,
    pub max_bytes: Option<u64>,
    pub keep: usize,
}

impl EventTarget {
    pub fn discard() -> Self {
        Self::default()
    }

    pub fn stdout() -> Self {
        Self {
            stdout: true,
            file: None,
        }
    }
}

/// Lets an error through to the log at most once per `interval`, counting the ones it held back.
#[derive(Debug, Clone)]
pub struct RateLimitedLog {
    interval: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)` when a message is due at `now` (`n`: messages held back since the last one), else `None`.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// A file the events go to: it is written to and, after a partial write, cut back. [`File`] in production;
/// tests wrap a file to fail like a full disk.
pub trait LineFile: Write + Send {
    /// Shrinks the file to `len` bytes and moves the write position there.
    fn cut_back_to(&mut self, len: u64) -> std::io::Result<()>;
}

impl LineFile for File {
    fn cut_back_to(&mut self, len: u64) -> std::io::Result<()> {
        // A character device or FIFO (`/dev/full`, a pipe) keeps nothing to cut back.
        if !self.metadata()?.is_file() {
            return Ok(());
        }
        self.set_len(len)?;
        self.seek(SeekFrom::Start(len))?;
        Ok(())
    }
}

/// Opens a file for the events: `(file, its length)`, positioned at its end; `truncate` starts it empty.
pub type FileOpener =
    Box<dyn FnMut(&Path, bool) -> std::io::Result<(Box<dyn LineFile>, u64)> + Send>;

/// The [`FileOpener`] of real files: creates the folder and the file as needed.
pub fn open_std_file(path: &Path, truncate: bool) -> std::io::Result<(Box<dyn LineFile>, u64)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(truncate)
        .open(path)?;
    let len = if file.metadata()?.is_file() {
        file.seek(SeekFrom::End(0))?
    } else {
        0
    };
    Ok((Box::new(file), len))
}

/// The events file: whole lines only, rotated by size when `max_bytes` is set.
///
/// It tracks `committed_bytes`, the length up to the end of the last complete line. A write that fails part-way
/// is cut back to it; if even that fails, the cut is retried before the next line, which is refused until it
/// succeeds. A file that could not be reopened after a rotation is opened again by the next line.
pub struct EventFile {
    target: FileTarget,
    opener: FileOpener,
    file: Option<Box<dyn LineFile>>,
    committed_bytes: u64,
    /// Bytes of a partial line may lie past `committed_bytes`.
    torn: bool,
}

impl EventFile {
    /// Opens the target's file. Without rotation a run starts the file afresh; with rotation it appends (the
    /// rotated files are one stream across restarts) and the bytes already there count towards `max_bytes`.
    pub fn open(target: &FileTarget) -> std::io::Result<Self> {
        Self::open_with(target, Box::new(open_std_file))
    }

    /// [`open`](Self::open) through `opener` (tests inject files that fail).
    pub fn open_with(target: &FileTarget, mut opener: FileOpener) -> std::io::Result<Self> {
        if target.max_bytes == Some(0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("rotation size of {} is 0 bytes", target.path.display()),
            ));
        }
        let (file, len) = opener(&target.path, target.max_bytes.is_none())?;
        Ok(Self {
            target: target.clone(),
            opener,
            file: Some(file),
            committed_bytes: len,
            torn: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.target.path
    }

    /// Length of the current file up to its last complete line.
    pub fn committed_bytes(&self) -> u64 {
        self.committed_bytes
    }

    /// Appends `line` (a complete line, newline included) whole, or leaves the file as it was and returns the
    /// error. Rotates first when the line would take the file past `max_bytes`; a line longer than `max_bytes`
    /// still goes into a fresh file of its own.
    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.reopen_if_closed()?;
        self.cut_back_if_torn()?;
        if let Some(max_bytes) = self.target.max_bytes {
            if self.committed_bytes > 0 && self.committed_bytes + line.len() as u64 > max_bytes {
                self.rotate()?;
            }
        }
        let file = self.reopen_if_closed()?;
        let mut done = 0;
        let result = loop {
            if done == line.len() {
                break Ok(());
            }
            match file.write(&line[done..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                self.committed_bytes += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                if done > 0 {
                    self.torn = true;
                    // Cutting back frees the space the partial line took; a failure is retried next line.
                    if let Err(cut) = self.cut_back_if_torn() {
                        tracing::warn!(
                            "events file {}: a partial line could not be cut back to {} bytes: {cut}",
                            self.target.path.display(),
                            self.committed_bytes
                        );
                    }
                }
                Err(e)
            }
        }
    }

    fn reopen_if_closed(&mut self) -> std::io::Result<&mut Box<dyn LineFile>> {
        if self.file.is_none() {
            let (file, len) = (self.opener)(&self.target.path, false)?;
            self.file = Some(file);
            self.committed_bytes = len;
            self.torn = false;
        }
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("events file is closed"))
    }

    fn cut_back_if_torn(&mut self) -> std::io::Result<()> {
        if self.torn {
            if let Some(file) = self.file.as_mut() {
                file.cut_back_to(self.committed_bytes)?;
            }
            self.torn = false;
        }
        Ok(())
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.target.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// `events.jsonl` → `.1` → `.2` …, the oldest beyond `keep` removed, then a fresh `events.jsonl`. The current
    /// file is closed first, so a failure part-way leaves at most a gap in the numbering and the next line
    /// reopens (and, if still too big, rotates) the file at `path`.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.flush()?;
        }
        let path = self.target.path.clone();
        let keep = self.target.keep;
        if keep == 0 {
            std::fs::remove_file(&path)?;
        } else {
            let oldest = self.rotated(keep);
            if oldest.exists() {
                std::fs::remove_file(&oldest)?;
            }
            for n in (1..keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&path, self.rotated(1))?;
        }
        let (file, len) = (self.opener)(&path, true)?;
        self.file = Some(file);
        self.committed_bytes = len;
        Ok(())
    }
}

/// Where one output of the sink puts its lines.
enum Lines {
    /// The events file: whole lines or nothing.
    File(EventFile),
    /// Stdout or any writer: flushed after each line; a partial line cannot be taken back.
    Stream(Box<dyn Write + Send>),
}

impl Lines {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Lines::File(file) => file.write_line(line),
            Lines::Stream(out) => out.write_all(line).and_then(|()| out.flush()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Lines::File(_) => Ok(()),
            Lines::Stream(out) => out.flush(),
        }
    }
}

/// One output of the sink and its own failure state: a failing file does not silence stdout.
struct Output {
    lines: Lines,
    name: String,
    /// Events this output did not take.
    not_written: u64,
    last_error: Option<String>,
    /// The last write failed: the next success is logged as the output's recovery.
    failing: bool,
    log: RateLimitedLog,
}

impl Output {
    fn new(lines: Lines, name: String) -> Self {
        Self {
            lines,
            name,
            not_written: 0,
            last_error: None,
            failing: false,
            log: RateLimitedLog::new(ERROR_LOG_INTERVAL),
        }
    }
}

/// Writes events as JSON lines to each output. An output that fails loses that event only: the error is counted
/// and logged (at most once a minute per output) and the next event tries again.
pub struct EventSink {
    outs: Vec<Output>,
    /// Events that reached every output.
    written: u64,
    /// Events that missed at least one output.
    not_written: u64,
    /// Why the last event that could not even be serialised failed.
    serialise_error: Option<String>,
    line: Vec<u8>,
    metrics: Arc<OutputMetrics>,
}

impl EventSink {
    pub fn open(target: &EventTarget) -> std::io::Result<Self> {
        let mut outs = Vec::new();
        if target.stdout {
            outs.push(Output::new(
                Lines::Stream(Box::new(std::io::stdout())),
                "stdout".into(),
            ));
        }
        if let Some(file) = &target.file {
            outs.push(Output::new(
                Lines::File(EventFile::open(file)?),
                file.path.display().to_string(),
            ));
        }
        Ok(Self::with_outputs(outs))
    }

    fn with_outputs(outs: Vec<Output>) -> Self {
        Self {
            outs,
            written: 0,
            not_written: 0,
            serialise_error: None,
            line: Vec::with_capacity(4096),
            metrics: Arc::new(OutputMetrics::default()),
        }
    }

    /// A sink writing into any writer (tests, custom outputs); a partial line there cannot be taken back.
    pub fn from_writer(out: Box<dyn Write + Send>, name: &str) -> Self {
        Self::with_outputs(vec![Output::new(Lines::Stream(out), name.into())])
    }

    /// A sink writing whole lines into an events file.
    pub fn from_file(file: EventFile) -> Self {
        let name = file.path().display().to_string();
        Self::with_outputs(vec![Output::new(Lines::File(file), name)])
    }

    /// Count failed writes in `metrics` (shared with the metrics endpoint) instead of a private counter.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<OutputMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Write one event to every output. Returns whether every output took it; an output that did not is
    /// counted (and logged at most once a minute) and tries again with the next event.
    pub fn write(&mut self, event: &FrameEvent<'_>) -> bool {
        if self.outs.is_empty() {
            return true;
        }
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, event) {
            tracing::error!(
                "event of frame {} could not be serialised: {e}",
                event.frame
            );
            self.serialise_error = Some(format!("serialisation failed: {e}"));
            self.not_written += 1;
            return false;
        }
        self.line.push(b'\n');
        let mut all_ok = true;
        let now = Instant::now();
        for o in &mut self.outs {
            match o.lines.write_line(&self.line) {
                Ok(()) => {
                    if o.failing {
                        o.failing = false;
                        tracing::warn!(
                            "events output {} writes again; {} events were not written to it so far",
                            o.name,
                            o.not_written
                        );
                    }
                }
                Err(e) => {
                    all_ok = false;
                    o.failing = true;
                    o.not_written += 1;
                    self.metrics.events_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = o.log.due(now) {
                        tracing::error!(
                            "events output {} failed at frame {}: {e}; {} events not written to it so far \
                             ({held_back} errors since the last message); the next event tries again",
                            o.name,
                            event.frame,
                            o.not_written
                        );
                    }
                    o.last_error = Some(e.to_string());
                }
            }
        }
        if all_ok {
            self.written += 1;
        } else {
            self.not_written += 1;
        }
        all_ok
    }

    /// Events written to every output.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Events that at least one output did not take.
    pub fn not_written(&self) -> u64 {
        self.not_written
    }

    /// Why events were not written: the last error of each output that failed, `name: error`; `None` when
    /// every event was written.
    pub fn failure(&self) -> Option<String> {
        let mut reasons: Vec<String> = self
            .outs
            .iter()
            .filter_map(|o| o.last_error.as_ref().map(|e| format!("{}: {e}", o.name)))
            .collect();
        reasons.extend(self.serialise_error.clone());
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    pub fn flush(&mut self) {
        for o in &mut self.outs {
            if let Err(e) = o.lines.flush() {
                tracing::error!("events output {} failed to flush: {e}", o.name);
                o.last_error = Some(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests;
