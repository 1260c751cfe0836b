//! Specifications of the event output: the JSON line shape, the sinks and their rotation, and rate-limited logging.

#![allow(clippy::unwrap_used)]

use super::*;
use std::sync::Mutex;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn target(path: &Path, max_bytes: Option<u64>, keep: usize) -> FileTarget {
    FileTarget {
        path: path.to_path_buf(),
        max_bytes,
        keep,
    }
}

#[test]
fn rotating_file_keeps_whole_lines_and_the_newest_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ev.jsonl");
    let mut f = EventFile::open(&target(&path, Some(25), 2)).unwrap();
    for i in 0..10 {
        // 10-byte lines: two fit in 25 bytes, the third rotates.
        f.write_line(format!("line {i:04}\n").as_bytes()).unwrap();
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
    let mut f = EventFile::open(&target(&path, Some(25), 2)).unwrap();
    f.write_line(b"line 0010\n").unwrap();
    assert_eq!(lines(&path), ["line 0010"]);
    assert_eq!(
        lines(&dir.path().join("ev.jsonl.1")),
        ["line 0008", "line 0009"]
    );
}

#[test]
fn a_file_without_rotation_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ev.jsonl");
    std::fs::write(&path, "old line\n").unwrap();
    let mut f = EventFile::open(&target(&path, None, 5)).unwrap();
    f.write_line(b"new line\n").unwrap();
    assert_eq!(lines(&path), ["new line"]);
}

#[test]
fn rotating_file_refuses_a_zero_size() {
    let dir = tempfile::tempdir().unwrap();
    let err = EventFile::open(&target(&dir.path().join("e"), Some(0), 1))
        .err()
        .unwrap();
    assert!(err.to_string().contains("0 bytes"), "{err}");
}

/// A real file on a pretend disk of `free` bytes: a write takes what still fits (a partial write) and
/// fails with ENOSPC once nothing does; cutting a file back gives its bytes back, like a real file system.
#[derive(Clone)]
struct TinyDisk {
    free: Arc<Mutex<u64>>,
}

struct TinyDiskFile {
    file: File,
    len: u64,
    free: Arc<Mutex<u64>>,
}

impl TinyDisk {
    fn new(free: u64) -> Self {
        Self {
            free: Arc::new(Mutex::new(free)),
        }
    }

    fn set_free(&self, free: u64) {
        *self.free.lock().unwrap() = free;
    }

    fn opener(&self) -> FileOpener {
        let free = self.free.clone();
        Box::new(move |path, truncate| {
            let (_, len) = open_std_file(path, truncate)?;
            let file = OpenOptions::new().append(true).open(path)?;
            let file: Box<dyn LineFile> = Box::new(TinyDiskFile {
                file,
                len,
                free: free.clone(),
            });
            Ok((file, len))
        })
    }
}

impl Write for TinyDiskFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut free = self.free.lock().unwrap();
        let n = (*free).min(buf.len() as u64) as usize;
        if n == 0 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        self.file.write_all(&buf[..n])?;
        *free -= n as u64;
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LineFile for TinyDiskFile {
    fn cut_back_to(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        *self.free.lock().unwrap() += self.len.saturating_sub(len);
        self.len = len;
        Ok(())
    }
}

/// Events of frames `indices` (all the same length: 3-digit indices), one JSON line each.
fn write_frames(sink: &mut EventSink, indices: std::ops::Range<u64>) -> Vec<bool> {
    let outcome = FocusOutcome::default();
    indices
        .map(|i| {
            let mut frame = Frame::from_rgb(0, 2, 2, vec![0; 12]).unwrap();
            frame.index = i;
            sink.write(&FrameEvent::new("test", "topk", &frame, &outcome, 1.0))
        })
        .collect()
}

/// The frame index of every line of `path`; panics on a line that is not a whole JSON event.
fn frames_in(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a torn line: {text:?}",
        path.display()
    );
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("torn line in {}: {l:?}: {e}", path.display()));
            v["frame"].as_u64().unwrap()
        })
        .collect()
}

fn event_line_bytes() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.jsonl");
    let mut sink = EventSink::from_file(EventFile::open(&target(&path, None, 0)).unwrap());
    write_frames(&mut sink, 100..101);
    std::fs::metadata(&path).unwrap().len()
}

#[test]
fn a_full_disk_loses_whole_events_only_counts_them_and_writing_resumes_when_space_returns() {
    let line = event_line_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ev.jsonl");
    // Room for three and a half lines: the fourth is written in part, then cut back.
    let disk = TinyDisk::new(3 * line + line / 2);
    let metrics = Arc::new(OutputMetrics::default());
    let file = EventFile::open_with(&target(&path, None, 0), disk.opener()).unwrap();
    let mut sink = EventSink::from_file(file).with_metrics(metrics.clone());
    let taken = write_frames(&mut sink, 100..110);
    assert_eq!(
        taken,
        [true, true, true, false, false, false, false, false, false, false]
    );
    assert_eq!(frames_in(&path), [100, 101, 102]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * line);
    assert_eq!((sink.written(), sink.not_written()), (3, 7));
    assert_eq!(metrics.events_errors.load(Ordering::Relaxed), 7);
    let reason = sink.failure().unwrap();
    assert!(
        reason.contains("ev.jsonl") && reason.contains("os error 28"),
        "{reason}"
    );
    // Space comes back: the next events are written, after the last whole line.
    disk.set_free(100 * line);
    assert!(write_frames(&mut sink, 110..115).iter().all(|&ok| ok));
    assert_eq!(frames_in(&path), [100, 101, 102, 110, 111, 112, 113, 114]);
    assert_eq!((sink.written(), sink.not_written()), (8, 7));
    assert_eq!(metrics.events_errors.load(Ordering::Relaxed), 7);
}

#[test]
fn rotation_goes_on_after_a_full_disk() {
    let line = event_line_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ev.jsonl");
    let disk = TinyDisk::new(5 * line + 7);
    // Three lines a file, two rotated files kept.
    let file = EventFile::open_with(&target(&path, Some(3 * line + 1), 2), disk.opener()).unwrap();
    let mut sink = EventSink::from_file(file);
    let taken = write_frames(&mut sink, 100..108);
    assert_eq!(taken.iter().filter(|&&ok| ok).count(), 5, "{taken:?}");
    assert_eq!(sink.not_written(), 3);
    assert_eq!(frames_in(&dir.path().join("ev.jsonl.1")), [100, 101, 102]);
    assert_eq!(frames_in(&path), [103, 104]);
    disk.set_free(100 * line);
    assert!(write_frames(&mut sink, 108..115).iter().all(|&ok| ok));
    // 103 104 108 | 109 110 111 | 112 113 114: the oldest file (100..102) is gone.
    assert_eq!(frames_in(&dir.path().join("ev.jsonl.2")), [103, 104, 108]);
    assert_eq!(frames_in(&dir.path().join("ev.jsonl.1")), [109, 110, 111]);
    assert_eq!(frames_in(&path), [112, 113, 114]);
    assert!(!dir.path().join("ev.jsonl.3").exists());
    assert_eq!((sink.written(), sink.not_written()), (12, 3));
}

#[test]
fn a_partial_line_that_cannot_be_cut_back_at_once_is_cut_before_the_next_line() {
    struct FlakyCut {
        inner: TinyDiskFile,
        refuse_cuts: u32,
    }
    impl Write for FlakyCut {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.inner.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl LineFile for FlakyCut {
        fn cut_back_to(&mut self, len: u64) -> std::io::Result<()> {
            if self.refuse_cuts > 0 {
                self.refuse_cuts -= 1;
                return Err(std::io::Error::other("cut refused"));
            }
            self.inner.cut_back_to(len)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ev.jsonl");
    let disk = TinyDisk::new(15);
    let free = disk.free.clone();
    let opener: FileOpener = Box::new(move |path, truncate| {
        let (_, len) = open_std_file(path, truncate)?;
        let inner = TinyDiskFile {
            file: OpenOptions::new().append(true).open(path)?,
            len,
            free: free.clone(),
        };
        Ok((
            Box::new(FlakyCut {
                inner,
                refuse_cuts: 2,
            }) as Box<dyn LineFile>,
            len,
        ))
    });
    let mut f = EventFile::open_with(&target(&path, None, 0), opener).unwrap();
    f.write_line(b"first\n").unwrap();
    assert!(f.write_line(b"second line\n").is_err());
    // The cut failed twice (after the write, and before the next line): that line is refused too.
    assert!(f.write_line(b"third\n").is_err());
    disk.set_free(100);
    f.write_line(b"fourth\n").unwrap();
    assert_eq!(lines(&path), ["first", "fourth"]);
}

#[test]
fn a_file_that_could_not_be_made_after_a_rotation_is_made_by_the_next_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ev.jsonl");
    let opens = Arc::new(Mutex::new(0u32));
    let counted = opens.clone();
    // The second open (the fresh file after the first rotation) fails, like a disk out of inodes.
    let opener: FileOpener = Box::new(move |path, truncate| {
        let mut n = counted.lock().unwrap();
        *n += 1;
        if *n == 2 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        open_std_file(path, truncate)
    });
    let mut f = EventFile::open_with(&target(&path, Some(25), 3), opener).unwrap();
    f.write_line(b"line 0000\n").unwrap();
    f.write_line(b"line 0001\n").unwrap();
    assert!(f.write_line(b"line 0002\n").is_err());
    f.write_line(b"line 0003\n").unwrap();
    f.write_line(b"line 0004\n").unwrap();
    f.write_line(b"line 0005\n").unwrap();
    assert_eq!(*opens.lock().unwrap(), 4);
    assert_eq!(lines(&path), ["line 0005"]);
    assert_eq!(
        lines(&dir.path().join("ev.jsonl.1")),
        ["line 0003", "line 0004"]
    );
    assert_eq!(
        lines(&dir.path().join("ev.jsonl.2")),
        ["line 0000", "line 0001"]
    );
}

#[test]
fn the_error_log_lets_one_message_through_per_interval_and_counts_the_rest() {
    let mut log = RateLimitedLog::new(Duration::from_secs(60));
    let t0 = Instant::now();
    assert_eq!(log.due(t0), Some(0));
    assert_eq!(log.due(t0 + Duration::from_secs(1)), None);
    assert_eq!(log.due(t0 + Duration::from_secs(59)), None);
    assert_eq!(log.due(t0 + Duration::from_secs(60)), Some(2));
    assert_eq!(log.due(t0 + Duration::from_secs(61)), None);
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
struct Shared(Arc<Mutex<Vec<u8>>>);
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
fn a_failing_output_loses_its_events_and_the_other_goes_on() {
    let good = Shared::default();
    let mut sink = EventSink::from_writer(Box::new(Full), "disk");
    sink.outs.push(Output::new(
        Lines::Stream(Box::new(good.clone())),
        "stdout".into(),
    ));
    let taken = write_frames(&mut sink, 100..103);
    assert_eq!(taken, [false, false, false]);
    assert_eq!((sink.written(), sink.not_written()), (0, 3));
    let reason = sink.failure().unwrap();
    assert!(reason.contains("disk: no space"), "{reason}");
    let text = String::from_utf8(good.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 3);
}

#[test]
fn a_sink_without_outputs_takes_everything() {
    let mut sink = EventSink::open(&EventTarget::discard()).unwrap();
    assert!(write_frames(&mut sink, 100..102).iter().all(|&ok| ok));
    assert_eq!(sink.not_written(), 0);
    assert!(sink.failure().is_none());
}
