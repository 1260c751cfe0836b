//! Harnesses of the coverage-guided fuzz targets: one function per target that takes the fuzzer's bytes, runs
//! the parser or writer on them and asserts its invariants. A panic is a finding.
//!
//! The same functions serve two callers: the `afl` binaries of this crate (`src/bin/*.rs`, built with
//! `cargo afl`, see `run.sh`) and the workspace's `cargo test --test it fuzz_corpus`, which replays every file of
//! `tests/fuzz-corpus/<target>/` through them, so the corpus (and every crash kept in it) is checked in CI
//! without AFL++ installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use saccade_runtime::capture::convert::{mjpeg_to_rgb, yuyv_to_rgb};
use saccade_runtime::capture::uri::parse_source_uri;
use saccade_runtime::events::{EventFile, EventSink, FileTarget, FrameEvent, LineFile};
use saccade_runtime::focus::{Detection, PatchVisit};
use saccade_runtime::frame::BoxPx;
use saccade_tools::config::Config;

/// The targets, named as their corpus folders and binaries.
pub const TARGETS: [&str; 6] = ["mjpeg", "yuyv", "weights", "config", "uri", "events"];

/// Runs target `name` on `data`. Panics on an unknown name.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "mjpeg" => mjpeg(data),
        "yuyv" => yuyv(data),
        "weights" => weights(data),
        "config" => config(data),
        "uri" => uri(data),
        "events" => events(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// The corpus folder a target reads its seeds from.
pub fn corpus_folder(name: &str) -> &str {
    name
}

/// A JPEG (what an MJPEG camera sends per buffer): `Ok` means `w*h*3` RGB bytes.
pub fn mjpeg(data: &[u8]) {
    let mut rgb = Vec::new();
    if let Ok((w, h)) = mjpeg_to_rgb(data, &mut rgb) {
        assert!(w > 0 && h > 0, "decoded an empty frame {w}x{h}");
        assert_eq!(rgb.len(), w as usize * h as usize * 3, "decoded size");
    }
}

/// `[width u16 LE][height u16 LE][YUYV bytes]`: the converter must check the buffer against the size it is told.
pub fn yuyv(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let w = u16::from_le_bytes([data[0], data[1]]) as u32;
    let h = u16::from_le_bytes([data[2], data[3]]) as u32;
    let mut rgb = Vec::new();
    if yuyv_to_rgb(&data[4..], w, h, &mut rgb).is_ok() {
        assert_eq!(rgb.len(), w as usize * h as usize * 3, "converted size");
        assert!(
            data.len() - 4 >= w as usize * h as usize * 2,
            "short buffer accepted"
        );
    }
}

/// A safetensors or GGUF file given to `load_any` (a model or an error, never a panic) and to `saccade inspect`
/// (the tensor list must add up).
pub fn weights(data: &[u8]) {
    let _ = saccade_models::weights::load_bytes(Path::new("fuzz.bin"), data, &Device::Cpu);
    if let Ok(inspection) = saccade_models::weights::inspect_bytes(Path::new("fuzz.bin"), data) {
        let sum: usize = inspection.tensors.iter().map(|t| t.bytes).sum();
        assert_eq!(inspection.tensor_bytes, sum);
        let _ = inspection.to_string();
    }
}

/// The TOML config: whatever parses survives a round trip through its own serialisation.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = Config::from_toml(&text, "fuzz.toml") {
        let again = toml::to_string(&config).expect("a parsed config serialises");
        Config::from_toml(&again, "round trip")
            .unwrap_or_else(|e| panic!("round trip of a valid config fails: {e:#}\n{again}"));
    }
}

/// A source URI: a spec parses back from its canonical form to the same spec.
pub fn uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = parse_source_uri(text) {
        let canonical = spec.to_string();
        let again = parse_source_uri(&canonical).unwrap_or_else(|e| {
            panic!("canonical URI `{canonical}` of `{text}` does not parse: {e}")
        });
        assert_eq!(
            again, spec,
            "`{text}` → `{canonical}` parses to another spec"
        );
    }
}

/// Reads the fuzzer's bytes as a stream of small values.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }
    fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }
    fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }
    /// A string of up to 255 bytes, lossy UTF-8 (control characters, quotes, newlines all possible).
    fn string(&mut self) -> String {
        let len = (self.u8() as usize).min(self.data.len());
        let (s, rest) = self.data.split_at(len);
        self.data = rest;
        String::from_utf8_lossy(s).into_owned()
    }
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// An events file in memory whose disk holds `space` bytes; the fuzzer fills and frees it, and can make the
/// cut-back of a partial line fail.
struct MemFile {
    data: Arc<Mutex<Vec<u8>>>,
    space: Arc<Mutex<usize>>,
    cut_fails: Arc<Mutex<bool>>,
}

impl Write for MemFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut data = self.data.lock().unwrap();
        let room = self.space.lock().unwrap().saturating_sub(data.len());
        if room == 0 {
            return Err(std::io::Error::other("no space left on device"));
        }
        let n = buf.len().min(room);
        data.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LineFile for MemFile {
    fn cut_back_to(&mut self, len: u64) -> std::io::Result<()> {
        if *self.cut_fails.lock().unwrap() {
            return Err(std::io::Error::other("cut back fails"));
        }
        self.data.lock().unwrap().truncate(len as usize);
        Ok(())
    }
}

const CLASS_NAMES: [&str; 4] = ["stop", "speed_limit_50", "", "\"quoted\"\n\u{0}"];

/// Arbitrary events (any strings, any floats, NaN and infinities included) written to an events file whose
/// disk fills up and frees again at arbitrary points: the file always holds exactly the lines whose write
/// succeeded, each one whole JSON object on its own line with the fields it was given; a partial line is
/// cut back before the next line goes in; written + not written = events.
pub fn events(data: &[u8]) {
    let mut input = Bytes { data };
    let file_data = Arc::new(Mutex::new(Vec::new()));
    let space = Arc::new(Mutex::new(usize::MAX));
    let cut_fails = Arc::new(Mutex::new(false));
    let opener = {
        let (file_data, space, cut_fails) = (file_data.clone(), space.clone(), cut_fails.clone());
        Box::new(move |_: &Path, truncate: bool| {
            let mut data = file_data.lock().unwrap();
            if truncate {
                data.clear();
            }
            let len = data.len() as u64;
            let file: Box<dyn LineFile> = Box::new(MemFile {
                data: file_data.clone(),
                space: space.clone(),
                cut_fails: cut_fails.clone(),
            });
            Ok((file, len))
        })
    };
    let target = FileTarget {
        path: "events.jsonl".into(),
        max_bytes: None,
        keep: 0,
    };
    let mut sink = EventSink::from_file(EventFile::open_with(&target, opener).unwrap());
    let mut expected: Vec<u8> = Vec::new();
    let mut events = 0u64;
    while !input.is_empty() && events < 64 {
        // Disk and cut-back faults for this event.
        let op = input.u8();
        if op & 1 != 0 {
            let used = file_data.lock().unwrap().len();
            *space.lock().unwrap() = used + input.u8() as usize * 4;
        } else if op & 2 != 0 {
            *space.lock().unwrap() = usize::MAX;
        }
        *cut_fails.lock().unwrap() = op & 4 != 0;

        let source = input.string();
        let strategy = input.string();
        let file = (op & 8 != 0).then(|| input.string());
        let detections: Vec<Detection> = (0..input.u8() % 4)
            .map(|_| Detection {
                class_id: input.u8() as usize,
                class_name: CLASS_NAMES[input.u8() as usize % CLASS_NAMES.len()],
                score: input.f32(),
                bbox: BoxPx::new(input.f32(), input.f32(), input.f32(), input.f32()),
            })
            .collect();
        let looked_at: Vec<PatchVisit> = (0..input.u8() % 4)
            .map(|_| PatchVisit {
                step: input.u8() as usize,
                bbox: BoxPx::new(input.f32(), input.f32(), input.f32(), input.f32()),
                score: input.f32(),
            })
            .collect();
        let event = FrameEvent {
            v: 1,
            frame: input.u64(),
            source: &source,
            file: file.as_deref(),
            timestamp_ms: input.u64(),
            pts_ms: (op & 32 != 0).then(|| input.f64()),
            width: input.u32(),
            height: input.u32(),
            strategy: &strategy,
            patches: looked_at.len(),
            exit: "max_steps",
            early_exit: op & 16 != 0,
            latency_ms: input.f64(),
            backbone_mflops: input.f64(),
            detections: &detections,
            looked_at: &looked_at,
        };
        events += 1;
        let ok = sink.write(&event);
        let now = file_data.lock().unwrap().clone();
        if ok {
            let start = expected.len();
            assert!(now.starts_with(&expected), "an earlier line changed");
            let line = &now[start..];
            assert!(line.ends_with(b"\n"), "line not terminated");
            assert_eq!(
                line.iter().filter(|&&b| b == b'\n').count(),
                1,
                "one event, one line"
            );
            let value: serde_json::Value = serde_json::from_slice(line).expect("line is JSON");
            assert_eq!(value["source"].as_str(), Some(source.as_str()));
            assert_eq!(value["strategy"].as_str(), Some(strategy.as_str()));
            assert_eq!(value["file"].as_str(), file.as_deref());
            assert_eq!(value["frame"].as_u64(), Some(event.frame));
            assert_eq!(
                value["detections"].as_array().map(Vec::len),
                Some(detections.len())
            );
            expected = now;
        } else {
            assert!(
                now.starts_with(&expected),
                "a failed line damaged earlier lines"
            );
            if op & 4 == 0 {
                assert_eq!(now, expected, "a partial line was left behind");
            }
        }
    }
    assert_eq!(sink.written() + sink.not_written(), events);
    // The file holds only whole lines once the cut back works again.
    *cut_fails.lock().unwrap() = false;
    *space.lock().unwrap() = usize::MAX;
    let before = expected.len();
    let probe = FrameEvent {
        v: 1,
        frame: 0,
        source: "probe",
        file: None,
        timestamp_ms: 0,
        pts_ms: None,
        width: 1,
        height: 1,
        strategy: "probe",
        patches: 0,
        exit: "max_steps",
        early_exit: false,
        latency_ms: 0.0,
        backbone_mflops: 0.0,
        detections: &[],
        looked_at: &[],
    };
    assert!(sink.write(&probe), "writing resumes once the disk has room");
    let now = file_data.lock().unwrap().clone();
    assert_eq!(&now[..before], &expected[..], "earlier lines kept");
    assert_eq!(
        now.iter().filter(|&&b| b == b'\n').count(),
        expected.iter().filter(|&&b| b == b'\n').count() + 1
    );
}
