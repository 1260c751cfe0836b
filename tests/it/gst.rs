//! GStreamer sources with real parts (cargo feature `gstreamer`): a video file that GStreamer's own encoder
//! makes from the shipped sample frames, replayed through `file://` and compared with `dir://` on the same
//! frames; and an RTSP stream served by gst-rtsp-server (the `saccade-rtsp-test-server` helper), restarted
//! mid-stream. A test whose system parts are missing prints why and is skipped.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn samples() -> PathBuf {
    repo().join("tools").join("samples")
}

fn saccade() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saccade"));
    c.env("RAYON_NUM_THREADS", "1");
    c
}

/// `None` when every element is installed, else why the test is skipped.
fn missing_elements(elements: &[&str]) -> Option<String> {
    for e in elements {
        let found = Command::new("gst-inspect-1.0")
            .arg(e)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "GStreamer element `{e}` is missing (Debian: gstreamer1.0-tools, gstreamer1.0-plugins-good/bad/ugly, gstreamer1.0-libav)"
            ));
        }
    }
    None
}

fn read_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn iou(a: &[f64], b: &[f64]) -> f64 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f64]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    inter / (area(a) + area(b) - inter).max(1e-9)
}

fn scores(event: &serde_json::Value) -> Vec<f64> {
    event["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["score"].as_f64().unwrap())
        .collect()
}

fn boxes(event: &serde_json::Value) -> Vec<(u64, Vec<f64>)> {
    event["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["class_id"].as_u64().unwrap(),
                d["box"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect()
}

/// The sample frames, encoded by x264 at high quality into an MP4, decode through `file://` into the same
/// detections as `dir://` gives on the JPEGs: same classes per frame, each box at IoU ≥ 0.5 with its twin.
#[test]
fn a_video_file_made_by_gstreamer_gives_the_detections_of_its_frames() {
    if let Some(why) =
        missing_elements(&["multifilesrc", "jpegdec", "x264enc", "mp4mux", "avdec_h264"])
    {
        eprintln!(
            "SKIPPED a_video_file_made_by_gstreamer_gives_the_detections_of_its_frames: {why}"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(samples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    names.sort();
    for (i, p) in names.iter().enumerate() {
        std::fs::copy(p, frames.join(format!("{i:04}.jpg"))).unwrap();
    }
    let video = dir.path().join("road video.mp4");
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args([
            "multifilesrc",
            &format!("location={}/%04d.jpg", frames.display()),
        ])
        .args(["index=0", &format!("stop-index={}", names.len() - 1)])
        .arg("caps=image/jpeg,framerate=5/1")
        .args([
            "!",
            "jpegdec",
            "!",
            "videoconvert",
            "!",
            "video/x-raw,format=I420",
        ])
        .args([
            "!",
            "x264enc",
            "pass=quant",
            "quantizer=10",
            "speed-preset=ultrafast",
        ])
        .args([
            "!",
            "mp4mux",
            "!",
            "filesink",
            &format!("location={}", video.display()),
        ])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "gst-launch-1.0 could not encode the samples"
    );
    let run = |uri: &str, events: &Path| {
        let out = saccade()
            .args(["run", "--source", uri, "--events"])
            .arg(events)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{uri}: {stderr}");
        stderr
    };
    let dir_events = dir.path().join("dir.jsonl");
    let file_events = dir.path().join("file.jsonl");
    run(&format!("dir://{}", frames.display()), &dir_events);
    let uri = format!("file://{}", video.display().to_string().replace(' ', "%20"));
    let stderr = run(&uri, &file_events);
    let (a, b) = (read_events(&dir_events), read_events(&file_events));
    eprintln!(
        "video file: {} frames from dir://, {} from file:// ({} and {} detections)\n{stderr}",
        a.len(),
        b.len(),
        a.iter().map(|e| boxes(e).len()).sum::<usize>(),
        b.iter().map(|e| boxes(e).len()).sum::<usize>()
    );
    assert_eq!(a.len(), names.len());
    assert_eq!(
        b.len(),
        names.len(),
        "every frame of the video is processed"
    );
    let mut detections = 0;
    for (i, (ea, eb)) in a.iter().zip(&b).enumerate() {
        assert_eq!(eb["frame"].as_u64(), Some(i as u64));
        let pts = eb["pts_ms"].as_f64().unwrap();
        assert!((pts - i as f64 * 200.0).abs() < 1.0, "frame {i} pts {pts}");
        let (da, db) = (boxes(ea), boxes(eb));
        // Within the codec's loss: every confident detection of either run is in the other (same class, IoU ≥
        // 0.5); a marginal one (score < 0.99, e.g. a 15 px sign near the threshold) may come and go, one a
        // frame at most.
        assert!(da.len().abs_diff(db.len()) <= 1, "frame {i}: {ea} vs {eb}");
        for (from, to, scores) in [(&da, &db, scores(ea)), (&db, &da, scores(eb))] {
            for ((class, bx), score) in from.iter().zip(scores) {
                if score < 0.99 {
                    continue;
                }
                let best = to
                    .iter()
                    .filter(|(c, _)| c == class)
                    .map(|(_, by)| iou(bx, by))
                    .fold(0.0, f64::max);
                assert!(
                    best >= 0.5,
                    "frame {i} class {class} (score {score}): IoU {best}: {ea} vs {eb}"
                );
                detections += 1;
            }
        }
    }
    assert!(
        detections > 0,
        "the samples have signs: detections expected"
    );
}

/// The RTSP server, killed and restarted by the test.
struct Server {
    child: Child,
}

impl Server {
    fn start(port: u16) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_saccade-rtsp-test-server"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the RTSP test server did not start");
        Self { child }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_events(path: &Path, at_least: usize, within: Duration) -> usize {
    let t = Instant::now();
    loop {
        let n = read_events(path).len();
        if n >= at_least || t.elapsed() > within {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A stream from gst-rtsp-server: frames arrive with the stream's PTS; the server is killed mid-stream and
/// started again; the source counts one outage, reconnects, and frames flow again.
#[test]
fn an_rtsp_stream_reconnects_after_the_server_restarts() {
    if let Some(why) = missing_elements(&[
        "videotestsrc",
        "jpegenc",
        "rtpjpegpay",
        "rtspsrc",
        "jpegdec",
    ]) {
        eprintln!("SKIPPED an_rtsp_stream_reconnects_after_the_server_restarts: {why}");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(port);
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let summary = dir.path().join("summary.json");
    let uri = format!("rtsp://127.0.0.1:{port}/test?timeout_ms=1500&transport=tcp");
    let mut child = saccade()
        .args(["run", "--source", &uri, "--events"])
        .arg(&events)
        .arg("--json")
        .arg(&summary)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let before = wait_for_events(&events, 10, Duration::from_secs(60));
    assert!(
        before >= 10,
        "only {before} frames arrived before the restart"
    );
    server.stop();
    std::thread::sleep(Duration::from_secs(3));
    let during = read_events(&events).len();
    let server = Server::start(port);
    let after = wait_for_events(&events, during + 10, Duration::from_secs(60));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = {
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if t.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("saccade did not stop after SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    drop(server);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(out.success(), "{stderr}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let all = read_events(&events);
    eprintln!(
        "rtsp: {before} frames before the restart, {during} when it came back, {after} after, {} in all; outages {}",
        all.len(),
        s["source_outages"]
    );
    assert!(
        after >= during + 10,
        "frames stopped after the restart: {after} vs {during}\n{stderr}"
    );
    assert!(s["source_outages"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        all.iter().all(|e| e["pts_ms"].is_number()),
        "PTS in every event"
    );
    assert!(all.iter().all(|e| e["width"] == 320 && e["height"] == 240));
}
