//! The MQTT output against a real `mosquitto` broker that the test starts on a free port (skipped with the
//! reason printed when mosquitto is not installed): a subscriber (rumqttc) reads every event; the broker is
//! restarted mid-run and nothing is lost beyond the bounded buffer; snapshots of the same run are checked.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join("samples")
}

fn mosquitto() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A mosquitto with persistence in a temp folder (so a restart keeps the subscriber's session and queue).
struct Broker {
    child: Child,
}

impl Broker {
    /// Starts mosquitto on `conf`, its log appended to `log` (printed when the test fails).
    fn start(bin: &Path, conf: &Path, port: u16, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }

    /// SIGTERM: mosquitto saves its persistence file and exits.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Marks the subscription acknowledged in the received list.
const SUBACK: &str = "$suback";

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A subscriber with a persistent session (QoS 1) that reconnects on its own.
fn subscribe(port: u16, filter: &str) -> Received {
    let received: Received = Arc::default();
    let mut options = MqttOptions::new("saccade-test-subscriber", "127.0.0.1", port);
    options.set_clean_session(false);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 100);
    let (out, filter) = (received.clone(), filter.to_string());
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(&filter, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    out.lock().unwrap().push((SUBACK.to_string(), Vec::new()));
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    out.lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                // Back slowly after a broker restart: the run under test reconnects and publishes first,
                // so what it sends meanwhile must wait in this subscriber's persistent session (the
                // broker's queue, saved across its restart).
                Err(_) => std::thread::sleep(Duration::from_millis(1500)),
            }
        }
    });
    received
}

fn event_frames(received: &Received) -> BTreeSet<u64> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t.ends_with("/events"))
        .map(|(_, p)| {
            serde_json::from_slice::<serde_json::Value>(p).unwrap()["frame"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// The name of the user running the tests (`id -un`).
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Every frame with detections reaches a subscriber, across a broker restart mid-run; the retained
/// availability ends `offline`; snapshots of the same run are written and pruned to their cap.
#[test]
fn every_event_reaches_the_broker_across_a_broker_restart() {
    let Some(bin) = mosquitto() else {
        eprintln!("SKIPPED every_event_reaches_the_broker_across_a_broker_restart: mosquitto is not installed (Debian: mosquitto)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    // `user`: started as root, mosquitto would switch to the `mosquitto` user, which cannot write its
    // persistence file into this private temp folder, and the subscriber's session (its queue) would not
    // survive the restart. Started as any other user, mosquitto ignores the option.
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser {}\npersistence true\npersistence_location {}/\nmax_queued_messages 10000\nlog_dest stderr\nlog_type all\n",
            current_user(),
            dir.path().display()
        ),
    )
    .unwrap();
    let broker_log = dir.path().join("mosquitto.log");
    let broker = Broker::start(&bin, &conf, port, &broker_log);
    let received = subscribe(port, "it/#");
    assert!(
        wait_until(Duration::from_secs(10), || received
            .lock()
            .unwrap()
            .iter()
            .any(|(t, _)| t == SUBACK)),
        "the test subscriber did not subscribe"
    );
    let events = dir.path().join("events.jsonl");
    let snaps = dir.path().join("snaps");
    let config = dir.path().join("saccade.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}/it\"\nclient_id = \"saccade-it\"\nbuffer = 500\n\
             [snapshots]\ndir = \"{}\"\nmin_interval_s = 0.5\nmax_mb = 0.5\n\
             [[sources]]\nuri = \"dir://{}?fps=4&loop=true\"\n",
            snaps.display(),
            samples().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_saccade"))
        .env("RAYON_NUM_THREADS", "1")
        .args(["run", "--config"])
        .arg(&config)
        .arg("--events")
        .arg(&events)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || event_frames(&received).len()
            >= 3),
        "no events reached the subscriber"
    );
    broker.stop();
    let log = std::fs::read_to_string(&broker_log).unwrap_or_default();
    assert!(
        log.contains("Saving in-memory database") && !log.contains("Error saving"),
        "mosquitto did not save its persistence file on SIGTERM:\n{log}"
    );
    let before_restart = event_frames(&received).len();
    std::thread::sleep(Duration::from_secs(3));
    let broker = Broker::start(&bin, &conf, port, &broker_log);
    assert!(
        wait_until(Duration::from_secs(60), || event_frames(&received).len()
            >= before_restart + 6),
        "events did not flow again after the broker restart"
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let written: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let with_detections: BTreeSet<u64> = written
        .iter()
        .filter(|e| !e["detections"].as_array().unwrap().is_empty())
        .map(|e| e["frame"].as_u64().unwrap())
        .collect();
    let offline = || {
        received
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(t, _)| t == "it/available")
            .is_some_and(|(_, p)| p == b"offline")
    };
    wait_until(Duration::from_secs(10), || {
        event_frames(&received).len() >= with_detections.len() && offline()
    });
    let got = event_frames(&received);
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("mqtt:"))
        .unwrap_or_default()
        .to_string();
    // After the restart, who came back first: when the run did, its events waited in the broker's queue for
    // the subscriber's session.
    let log = std::fs::read_to_string(&broker_log).unwrap_or_default();
    let after_restart = log.rsplit("starting").next().unwrap_or_default();
    let (run_at, sub_at) = (
        after_restart.find("as saccade-it "),
        after_restart.find("as saccade-test-subscriber "),
    );
    eprintln!(
        "mqtt: after the restart the run reconnected {} the subscriber",
        if run_at < sub_at { "before" } else { "after" }
    );
    eprintln!(
        "mqtt: {} frames, {} with detections, {} event messages received ({} before the broker restart); {line}",
        written.len(),
        with_detections.len(),
        got.len(),
        before_restart
    );
    assert!(line.contains(" 0 dropped"), "{stderr}");
    assert!(line.contains(" 1 reconnects"), "{stderr}");
    let missing: Vec<_> = with_detections.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "frames never received: {missing:?}\nbroker log:\n{}",
        std::fs::read_to_string(&broker_log).unwrap_or_default()
    );
    assert!(offline(), "the retained availability ends `offline`");
    drop(broker);

    let snapshots: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let bytes: u64 = snapshots.iter().map(|e| e.metadata().unwrap().len()).sum();
    let crops = snapshots
        .iter()
        .filter(|e| e.file_name().to_string_lossy().ends_with("-crop.jpg"))
        .count();
    eprintln!(
        "snapshots: {} files ({crops} crops), {bytes} bytes",
        snapshots.len()
    );
    assert!(
        crops > 0 && snapshots.len() > crops,
        "crops and annotated frames"
    );
    assert!(bytes <= 512 * 1024, "pruned to max_mb: {bytes} bytes");
    assert!(stderr.contains("snapshots:"), "{stderr}");
}
