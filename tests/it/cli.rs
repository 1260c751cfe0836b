//! The `saccade` binary end to end: demo, replay, signals, metrics, config.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn saccade() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saccade"));
    c.env("RAYON_NUM_THREADS", "1");
    c
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn samples() -> PathBuf {
    repo().join("tools").join("samples")
}

fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn read_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l}: {e}")))
        .collect()
}

#[test]
fn demo_runs_on_bundled_samples_and_writes_summary_events_and_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let json = dir.path().join("summary.json");
    let (_, stderr) = run_ok(
        saccade()
            .args(["demo", "--out"])
            .arg(&out)
            .arg("--json")
            .arg(&json),
    );
    assert!(stderr.contains("frames"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n_samples = std::fs::read_dir(samples())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "jpg")
        })
        .count() as u64;
    assert_eq!(summary["frames"].as_u64().unwrap(), n_samples);
    for key in [
        "fps",
        "patches_per_frame",
        "early_exit_rate",
        "dropped_frames",
        "detections",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}: {summary}");
    }
    for stage in ["capture", "glance", "focus", "classify"] {
        assert!(summary["stages"][stage]["p50_ms"].is_number(), "{summary}");
        assert!(summary["stages"][stage]["p99_ms"].is_number(), "{summary}");
    }
    let events = read_events(&out.join("events.jsonl"));
    assert_eq!(events.len() as u64, n_samples);
    let pngs = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count() as u64;
    assert_eq!(pngs, n_samples);
}

/// Width and height from a baseline or progressive JPEG's start-of-frame segment.
fn jpeg_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| Some(u32::from(*bytes.get(i)?) << 8 | u32::from(*bytes.get(i + 1)?));
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    while *bytes.get(i)? == 0xFF {
        let marker = *bytes.get(i + 1)?;
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return Some((be16(i + 7)?, be16(i + 5)?));
        }
        i += 2 + be16(i + 2)? as usize;
    }
    None
}

#[test]
fn bundled_samples_are_annotated_gtsdb_test_frames_listed_in_provenance() {
    let mut frames: Vec<String> = std::fs::read_dir(samples())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.ends_with(".jpg"))
        .collect();
    frames.sort();
    assert_eq!(frames.len(), 8, "{frames:?}");
    let provenance = std::fs::read_to_string(samples().join("PROVENANCE.md")).unwrap();
    for name in &frames {
        let number: u32 = name.trim_end_matches(".jpg").parse().unwrap();
        assert!(
            (600..900).contains(&number),
            "{name} is not a GTSDB test frame (00600–00899)"
        );
        assert!(
            provenance.contains(&format!("`{name}`")),
            "PROVENANCE.md does not list {name}"
        );
        let bytes = std::fs::read(samples().join(name)).unwrap();
        assert_eq!(jpeg_size(&bytes), Some((1360, 800)), "{name}");
    }

    let csv = std::fs::read_to_string(samples().join("annotations.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax")
    );
    let mut annotated = std::collections::BTreeSet::new();
    let mut smallest_box_px = u32::MAX;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 9, "{line}");
        assert!(
            frames.iter().any(|name| name == f[0]),
            "{line}: no such frame"
        );
        assert_eq!((f[1], f[2]), ("1360", "800"), "{line}");
        let class_id: usize = f[4].parse().unwrap();
        assert_eq!(f[3], saccade_models::class_name(class_id), "{line}");
        let [xmin, ymin, xmax, ymax]: [u32; 4] = std::array::from_fn(|k| f[5 + k].parse().unwrap());
        assert!(
            xmin <= xmax && xmax < 1360 && ymin <= ymax && ymax < 800,
            "{line}"
        );
        smallest_box_px = smallest_box_px.min(xmax - xmin + 1);
        annotated.insert(f[0].to_string());
    }
    assert!(annotated.len() < frames.len(), "no frame without a sign");
    assert!(smallest_box_px < 32, "no small sign");
}

fn detections_of(events: &[serde_json::Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e["file"].to_string(), e["detections"].to_string()))
        .collect()
}

#[test]
fn replayed_folder_yields_the_same_detections_twice() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("dir://{}", samples().display());
    let mut runs = Vec::new();
    for i in 0..2 {
        let events = dir.path().join(format!("events{i}.jsonl"));
        run_ok(
            saccade()
                .args(["run", "--source", &source, "--events"])
                .arg(&events),
        );
        let ev = read_events(&events);
        assert!(!ev.is_empty());
        for e in &ev {
            for key in [
                "frame",
                "source",
                "file",
                "width",
                "height",
                "strategy",
                "patches",
                "exit",
                "latency_ms",
                "detections",
            ] {
                assert!(e.get(key).is_some(), "event lacks {key}: {e}");
            }
        }
        runs.push(detections_of(&ev));
    }
    assert_eq!(runs[0], runs[1]);
}

fn wait_for_lines(path: &Path, n: usize, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if std::fs::read_to_string(path)
            .map(|s| s.lines().count())
            .unwrap_or(0)
            >= n
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigint_mid_run_ends_cleanly_with_every_event_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let json = dir.path().join("summary.json");
    let mut child = saccade()
        .args([
            "run",
            "--source",
            "synthetic://?width=640&height=480&seed=3",
            "--events",
        ])
        .arg(&events)
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_lines(&events, 3, Duration::from_secs(120)),
        "no events appeared"
    );
    interrupt(&child);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ev = read_events(&events);
    assert_eq!(
        ev.len() as u64,
        summary["frames"].as_u64().unwrap(),
        "{stderr}"
    );
    // Frame indices are consecutive: nothing was lost between processing and output.
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["frame"].as_u64().unwrap(), i as u64);
    }
}

fn scrape(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn metrics_endpoint_counters_grow_between_scrapes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = saccade()
        .args([
            "run",
            "--source",
            "synthetic://?width=640&height=480&seed=5",
            "--metrics-addr",
            &addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let first = loop {
        if let Ok(mut s) = TcpStream::connect(&addr) {
            drop(s.write_all(b""));
            let body = scrape(&addr, "/metrics");
            if counter(&body, "saccade_frames_processed_total") >= 1.0 {
                break body;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "metrics never showed a frame"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(scrape(&addr, "/healthz").ends_with("ok\n"));
    std::thread::sleep(Duration::from_millis(1500));
    let second = scrape(&addr, "/metrics");
    interrupt(&child);
    assert!(child.wait().unwrap().success());
    let name = "saccade_frames_captured_total";
    assert!(
        counter(&second, name) > counter(&first, name),
        "{name} did not grow"
    );
    assert!(second.contains("saccade_stage_latency_seconds_bucket"));
}

#[test]
fn default_config_round_trips_and_a_two_source_config_runs_two_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let (default_toml, _) = run_ok(saccade().args(["config", "--print-default"]));
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &default_toml).unwrap();
    run_ok(saccade().args(["config", "--check"]).arg(&path));

    let events = dir.path().join("events.jsonl");
    let config = format!(
        "strategy = \"topk\"\n[output]\nevents = \"{}\"\n[threads]\nbatch_wait_ms = 2.0\n[[sources]]\nuri = \"synthetic://?width=640&height=480&seed=1&frames=3\"\n[[sources]]\nuri = \"synthetic://?width=320&height=240&seed=2&frames=4\"\n",
        events.display()
    );
    let cfg = dir.path().join("two.toml");
    std::fs::write(&cfg, config).unwrap();
    // Two sources on this machine: a shared classify worker per core, up to one per source.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (plan, _) = run_ok(saccade().args(["run", "--dry-run", "--config"]).arg(&cfg));
    assert!(
        plan.contains("2 source(s)")
            && plan.contains(&format!(
                "{} classify worker(s) (batching across sources)",
                cores.min(2)
            )),
        "{plan}"
    );
    run_ok(saccade().args(["run", "--config"]).arg(&cfg));
    let ev = read_events(&events);
    assert_eq!(ev.len(), 7);
    let from_second = ev
        .iter()
        .filter(|e| e["source"].as_str().unwrap().contains("seed=2"))
        .count();
    assert_eq!(from_second, 4);
}

#[test]
fn dry_run_prints_the_memory_plan_and_a_too_small_budget_is_refused() {
    let (stdout, _) =
        run_ok(saccade().args(["run", "--source", "synthetic://?seed=1", "--dry-run"]));
    assert!(
        stdout.contains("frame pool") && stdout.contains("model weights"),
        "{stdout}"
    );
    let out = saccade()
        .args([
            "run",
            "--source",
            "synthetic://?seed=1",
            "--memory-budget-mb",
            "8",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("memory budget exceeded")
            && stderr.contains("frame pool")
            && stderr.contains("raise memory_budget_mb to at least"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_and_files_get_clear_errors() {
    let out = saccade()
        .args(["run", "--source", "ftp://camera"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ftp://camera"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUFnot really").unwrap();
    let out = saccade()
        .args([
            "run",
            "--source",
            "synthetic://?seed=1&frames=1",
            "--classifier-weights",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.gguf"));
}

/// Runs `saccade` with `args`, expecting it to fail with an error (an exit code, not a signal such as an
/// allocation abort); returns its stderr.
fn run_fails(args: &[&str]) -> String {
    let out = saccade().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should fail with exit code 1, got {}:\n{stderr}",
        out.status
    );
    stderr
}

#[test]
fn a_huge_frame_size_is_an_error_naming_size_and_limit_with_and_without_a_memory_budget() {
    let uri = "synthetic://?width=100000&height=100000&frames=1";
    for budget in [None, Some("512")] {
        let mut args = vec!["run", "--source", uri];
        args.extend(budget.iter().flat_map(|b| ["--memory-budget-mb", b]));
        let stderr = run_fails(&args);
        assert!(
            stderr.contains(uri)
                && stderr.contains("100000×100000")
                && stderr.contains("limit of 67108864 px"),
            "{stderr}"
        );
        assert!(!stderr.contains("memory allocation"), "{stderr}");
    }
}

#[test]
fn without_a_memory_budget_the_plan_is_checked_against_the_available_memory() {
    // The largest frames allowed in the deepest queues: 772 frames of 192 MiB, 145 GiB.
    let available_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    if available_kb * 3 / 4 > 145 << 20 {
        eprintln!(
            "skipped: this machine has {available_kb} kB available, more than the plan needs"
        );
        return;
    }
    let stderr = run_fails(&[
        "run",
        "--source",
        "synthetic://?width=8192&height=8192&frames=1",
        "--queue-depth",
        "256",
    ]);
    assert!(
        stderr.contains("memory budget exceeded")
            && stderr.contains("the default budget")
            && stderr.contains("available")
            && stderr.contains("frame pool"),
        "{stderr}"
    );
}

#[test]
fn events_to_a_full_device_are_counted_as_not_written_and_the_run_goes_on_then_fails() {
    // `/dev/full` answers every write with ENOSPC, like a disk with no room left.
    let stderr = run_fails(&[
        "run",
        "--source",
        "synthetic://?width=320&height=240&frames=4",
        "--events",
        "/dev/full",
    ]);
    assert!(stderr.contains("saccade: 4 frames"), "{stderr}");
    assert!(
        stderr.contains("4 events not written (/dev/full: No space left on device (os error 28))"),
        "{stderr}"
    );
    // Logged once, not once per event.
    assert_eq!(
        stderr.matches("events output /dev/full failed").count(),
        1,
        "{stderr}"
    );
}

/// A tmpfs of `size` mounted for the test's lifetime; `None` where this process may not mount (not root).
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with one file, until it is full.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        path
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_file_system_loses_whole_events_only_and_writing_resumes_when_space_returns() {
    // Room for about a hundred events once the filler is gone: the run's 40 fit.
    let Some(fs) = TinyFs::mount("256k") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let filler = fs.fill();
    let events = fs.path().join("events.jsonl");
    let frames = 40;
    let mut child = saccade()
        .args([
            "run",
            "--source",
            &format!("synthetic://?width=320&height=240&frames={frames}&fps=10"),
            "--events",
        ])
        .arg(&events)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first failure to be logged, then make room.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() == 0 {
            panic!("the run ended without an events error:\n{log}");
        }
        log.push_str(&line);
        if line.contains("events output") && line.contains("failed") {
            break;
        }
    }
    std::fs::remove_file(filler).unwrap();
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    let written = read_events(&events);
    let lost: u64 = log
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_suffix(")")?
                .split_once(" events not written (")
        })
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of events not written:\n{log}"));
    assert!(lost > 0 && !written.is_empty(), "{lost} lost:\n{log}");
    assert_eq!(written.len() as u64 + lost, frames, "{log}");
    // Writing resumed: the events after the failures are there, up to the last frame.
    let indices: Vec<u64> = written
        .iter()
        .map(|e| e["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(indices.last(), Some(&(frames - 1)), "{indices:?}");
    assert!(log.contains("writes again"), "{log}");
    assert!(log.contains("os error 28"), "{log}");
}

#[cfg(not(feature = "gstreamer"))]
#[test]
fn a_video_or_stream_uri_without_the_gstreamer_feature_names_the_uri_and_the_feature() {
    for uri in ["file:///videos/road.mp4", "rtsp://127.0.0.1:8554/cam"] {
        let out = saccade().args(["run", "--source", uri]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{uri}: {stderr}");
        assert!(
            stderr.contains(uri) && stderr.contains("--features gstreamer"),
            "{uri}: {stderr}"
        );
    }
}
