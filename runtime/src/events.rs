//! JSON-lines events: one line per processed frame, the product's main output.
//!
//! Schema version 1 (documented in `docs/EVENTS.md`). The sink flushes after every frame, so a stop at any
//! moment loses no detection already computed; a write failure (full disk, closed stdout) is reported once and
//! counted, never a panic.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
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

/// One output of the sink and its own failure state: a failing file does not silence stdout.
struct Output {
    out: Box<dyn Write + Send>,
    name: String,
    failed: Option<String>,
}

/// Writes events as JSON lines to each output, flushing after each; reports each output's first write error
/// once and goes on with the others.
pub struct EventSink {
    outs: Vec<Output>,
    written: u64,
    line: Vec<u8>,
}

impl EventSink {
    pub fn open(target: &EventTarget) -> std::io::Result<Self> {
        let mut outs = Vec::new();
        if target.stdout {
            outs.push(Output {
                out: Box::new(BufWriter::new(std::io::stdout())),
                name: "stdout".into(),
                failed: None,
            });
        }
        if let Some(file) = &target.file {
            let out: Box<dyn Write + Send> = match file.max_bytes {
                Some(max_bytes) => Box::new(RotatingFile::open(&file.path, max_bytes, file.keep)?),
                None => Box::new(BufWriter::new(create_file(&file.path)?)),
            };
            outs.push(Output {
                out,
                name: file.path.display().to_string(),
                failed: None,
            });
        }
        Ok(Self {
            outs,
            written: 0,
            line: Vec::with_capacity(4096),
        })
    }

    /// A sink writing into any writer (tests, custom outputs).
    pub fn from_writer(out: Box<dyn Write + Send>, name: &str) -> Self {
        Self {
            outs: vec![Output {
                out,
                name: name.into(),
                failed: None,
            }],
            written: 0,
            line: Vec::with_capacity(4096),
        }
    }

    /// Write one event to every working output and flush. Returns false once every output has failed (each
    /// failure is logged once).
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
            return self.outs.iter().any(|o| o.failed.is_none());
        }
        self.line.push(b'\n');
        let mut any_ok = false;
        for o in self.outs.iter_mut().filter(|o| o.failed.is_none()) {
            match o.out.write_all(&self.line).and_then(|()| o.out.flush()) {
                Ok(()) => any_ok = true,
                Err(e) => {
                    tracing::error!(
                        "events output {} failed after {} events: {e}; further events to it are dropped",
                        o.name,
                        self.written
                    );
                    o.failed = Some(e.to_string());
                }
            }
        }
        if any_ok {
            self.written += 1;
        }
        any_ok
    }

    /// Events written to at least one output.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The first output failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.outs.iter().find_map(|o| o.failed.as_deref())
    }

    pub fn flush(&mut self) {
        for o in self.outs.iter_mut().filter(|o| o.failed.is_none()) {
            if let Err(e) = o.out.flush() {
                tracing::error!("events output {} failed to flush: {e}", o.name);
                o.failed = Some(e.to_string());
            }
        }
    }
}

/// A file that rotates before a write would take it past `max_bytes` (writes are whole lines, so a line is
/// never split across files). A single line longer than `max_bytes` still goes into a fresh file of its own.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: BufWriter<File>,
    bytes: u64,
}

impl RotatingFile {
    /// Opens `path` for appending (an existing file keeps its lines and counts towards `max_bytes`).
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        if max_bytes == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("rotation size of {} is 0 bytes", path.display()),
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let bytes = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file: BufWriter::new(file),
            bytes,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let oldest = self.rotated(self.keep);
            if oldest.exists() {
                std::fs::remove_file(&oldest)?;
            }
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.file = BufWriter::new(File::create(&self.path)?);
        self.bytes = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes > 0 && self.bytes + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn create_file(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    File::create(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn rotating_file_keeps_whole_lines_and_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ev.jsonl");
        let mut f = RotatingFile::open(&path, 25, 2).unwrap();
        for i in 0..10 {
            // 10-byte lines: two fit in 25 bytes, the third rotates.
            f.write_all(format!("line {i:04}\n").as_bytes()).unwrap();
            f.flush().unwrap();
        }
        assert_eq!(lines(&path), ["line 0008", "line 0009"]);
        assert_eq!(
            lines(&dir.path().join("ev.jsonl.1")),
            ["line 0006", "line 0007"]
        );
        assert_eq!(
            lines(&dir.path().join("ev.jsonl.2")),
            ["line 0004", "line 0005"]
        );
        assert!(!dir.path().join("ev.jsonl.3").exists());
        // Reopening appends and counts the bytes already there.
        let mut f = RotatingFile::open(&path, 25, 2).unwrap();
        f.write_all(b"line 0010\n").unwrap();
        f.flush().unwrap();
        assert_eq!(lines(&path), ["line 0010"]);
        assert_eq!(
            lines(&dir.path().join("ev.jsonl.1")),
            ["line 0008", "line 0009"]
        );
    }

    #[test]
    fn rotating_file_refuses_a_zero_size() {
        let dir = tempfile::tempdir().unwrap();
        let err = RotatingFile::open(&dir.path().join("e"), 0, 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("0 bytes"), "{err}");
    }

    /// A writer that fails every write, like a full disk.
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("no space left on device"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_is_reported_once_and_the_other_goes_on() {
        let good = Shared::default();
        let mut sink = EventSink::from_writer(Box::new(Full), "disk");
        sink.outs.push(Output {
            out: Box::new(good.clone()),
            name: "stdout".into(),
            failed: None,
        });
        let frame = Frame::from_rgb(0, 2, 2, vec![0; 12]).unwrap();
        let outcome = FocusOutcome::default();
        let event = FrameEvent::new("test", "topk", &frame, &outcome, 1.0);
        for _ in 0..3 {
            assert!(sink.write(&event));
        }
        assert_eq!(sink.written(), 3);
        assert!(sink.failure().unwrap().contains("no space"));
        let text = String::from_utf8(good.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 3);
        let mut only_full = EventSink::from_writer(Box::new(Full), "disk");
        assert!(!only_full.write(&event));
    }
}
