//! MQTT output: one message per frame with detections (the JSON event of the events file) on
//! `<prefix>/events`, and a retained `<prefix>/available` that reads `online` while the run is connected and
//! `offline` after it (the broker publishes `offline` itself, as the last will, when the run dies).
//!
//! A broker that is down or slow never stalls the pipeline: [`MqttSink::publish`] only offers the message to a
//! bounded buffer (`buffer` messages, the client's request channel) and counts it as dropped when the buffer
//! is full. A thread runs the client's event loop: it reconnects with capped backoff, and with a persistent
//! session (`clean_session = false`) the broker's acknowledgements let the client resend what was in flight
//! when the connection broke. Counts go to `OutputMetrics` (`saccade_mqtt_*` in `/metrics`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{Client, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
use saccade_runtime::capture::reconnect::Backoff;
use saccade_runtime::events::{FrameEvent, RateLimitedLog, ERROR_LOG_INTERVAL};
use saccade_runtime::metrics::OutputMetrics;

/// `[mqtt]` in the config; `--mqtt URL` sets `url`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://HOST[:PORT]/TOPIC-PREFIX` (`mqtts://` for TLS, port 8883 by default); absent: no MQTT.
    pub url: Option<String>,
    pub client_id: String,
    /// 0, 1 or 2.
    pub qos: u8,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://`; absent: the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// Messages waiting for the broker at most; more are dropped and counted.
    pub buffer: usize,
    /// Publish every frame's event, not only frames with detections.
    pub all_frames: bool,
    pub keep_alive_s: u64,
    /// At the end of a run, wait this long for the broker to take what is still buffered.
    pub drain_timeout_s: f64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: None,
            client_id: "saccade".into(),
            qos: 1,
            username: None,
            password: None,
            ca_file: None,
            buffer: 1000,
            all_frames: false,
            keep_alive_s: 30,
            drain_timeout_s: 5.0,
        }
    }
}

/// The parts of an MQTT URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub tls: bool,
}

/// Parses `mqtt://HOST[:PORT]/PREFIX` or `mqtts://…`; errors name the URL and what is wrong.
pub fn parse_mqtt_url(url: &str) -> anyhow::Result<MqttUrl> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("MQTT URL `{url}`: expected mqtt://HOST[:PORT]/TOPIC-PREFIX"))?;
    let (tls, default_port) = match scheme {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        other => bail!("MQTT URL `{url}`: scheme `{other}`, expected `mqtt` or `mqtts`"),
    };
    let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_end_matches('/');
    if prefix.contains(['#', '+']) {
        bail!("MQTT URL `{url}`: topic prefix `{prefix}` has a wildcard (`#` or `+`)");
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .with_context(|| format!("MQTT URL `{url}`: port `{port}` is not 1..=65535"))?,
        ),
        None => (authority, default_port),
    };
    if host.is_empty() {
        bail!("MQTT URL `{url}`: no host");
    }
    Ok(MqttUrl {
        host: host.to_string(),
        port,
        prefix: if prefix.is_empty() {
            "saccade".into()
        } else {
            prefix.to_string()
        },
        tls,
    })
}

impl MqttConfig {
    /// Checks every key; errors name the key and the value.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.url {
            parse_mqtt_url(url).context("key `mqtt.url`")?;
        }
        if self.qos > 2 {
            bail!("key `mqtt.qos` is {}, expected 0, 1 or 2", self.qos);
        }
        if self.client_id.is_empty() || self.client_id.len() > 128 {
            bail!(
                "key `mqtt.client_id` is `{}`, expected 1 to 128 characters",
                self.client_id
            );
        }
        if !(1..=1_000_000).contains(&self.buffer) {
            bail!("key `mqtt.buffer` is {}, expected 1..=1000000", self.buffer);
        }
        if self.password.is_some() && self.username.is_none() {
            bail!("key `mqtt.password` is set without `mqtt.username`");
        }
        if !(self.drain_timeout_s.is_finite() && self.drain_timeout_s >= 0.0) {
            bail!(
                "key `mqtt.drain_timeout_s` is {}, expected a number ≥ 0",
                self.drain_timeout_s
            );
        }
        if self.keep_alive_s < 5 {
            bail!(
                "key `mqtt.keep_alive_s` is {}, expected ≥ 5",
                self.keep_alive_s
            );
        }
        Ok(())
    }
}

fn qos_of(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// What the event-loop thread and the publishers share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Messages the broker took: acknowledged (QoS 1 and 2) or written to the socket (QoS 0).
    delivered: AtomicU64,
    /// Messages the buffer accepted, availability included.
    offered: AtomicU64,
    /// Availability messages among them.
    availability: AtomicU64,
}

/// The MQTT output of a run.
pub struct MqttSink {
    client: Client,
    events_topic: String,
    available_topic: String,
    qos: QoS,
    all_frames: bool,
    drain_timeout: Duration,
    shared: Arc<Shared>,
    metrics: Arc<OutputMetrics>,
    thread: Option<JoinHandle<()>>,
    url: String,
}

impl MqttSink {
    /// Starts the client (it connects in the background: a broker that is down now is retried, not an
    /// error). Errors are bad settings or an unreadable CA file.
    pub fn start(config: &MqttConfig, metrics: Arc<OutputMetrics>) -> anyhow::Result<Option<Self>> {
        let Some(url) = config.url.clone() else {
            return Ok(None);
        };
        config.validate()?;
        let parsed = parse_mqtt_url(&url)?;
        let available_topic = format!("{}/available", parsed.prefix);
        let mut options = MqttOptions::new(&config.client_id, &parsed.host, parsed.port);
        options
            .set_keep_alive(Duration::from_secs(config.keep_alive_s))
            .set_clean_session(false)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_last_will(LastWill::new(
                &available_topic,
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &config.username {
            options.set_credentials(user, config.password.clone().unwrap_or_default());
        }
        if parsed.tls {
            // rustls needs one crypto provider for the process; another part may have installed it already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let transport = match &config.ca_file {
                Some(path) => {
                    let ca = std::fs::read(path).with_context(|| {
                        format!("reading key `mqtt.ca_file` {}", path.display())
                    })?;
                    Transport::tls(ca, None, None)
                }
                None => Transport::tls_with_default_config(),
            };
            options.set_transport(transport);
        }
        let (client, connection) = Client::new(options, config.buffer);
        let shared = Arc::new(Shared::default());
        let thread = {
            let (client, shared, metrics, url) =
                (client.clone(), shared.clone(), metrics.clone(), url.clone());
            let topic = available_topic.clone();
            let qos0 = config.qos == 0;
            std::thread::Builder::new()
                .name("mqtt".into())
                .spawn(move || {
                    event_loop(connection, client, &topic, qos0, &shared, &metrics, &url)
                })
                .context("starting the MQTT thread")?
        };
        Ok(Some(Self {
            client,
            events_topic: format!("{}/events", parsed.prefix),
            available_topic,
            qos: qos_of(config.qos),
            all_frames: config.all_frames,
            drain_timeout: Duration::from_secs_f64(config.drain_timeout_s),
            shared,
            metrics,
            thread: Some(thread),
            url,
        }))
    }

    /// Offers a frame's event to the buffer (never blocks); a full buffer drops it and counts it.
    pub fn publish(&self, event: &FrameEvent<'_>) {
        if !self.all_frames && event.detections.is_empty() {
            return;
        }
        let payload = match serde_json::to_vec(event) {
            Ok(p) => p,
            Err(_) => return,
        };
        match self
            .client
            .try_publish(&self.events_topic, self.qos, false, payload)
        {
            Ok(()) => {
                self.shared.offered.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.metrics.mqtt_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Publishes `offline`, waits up to `drain_timeout_s` for the broker to take what is buffered, and
    /// disconnects. Messages still buffered then are counted as dropped. Returns (delivered, dropped).
    pub fn finish(mut self) -> (u64, u64) {
        if self
            .client
            .try_publish(&self.available_topic, QoS::AtLeastOnce, true, "offline")
            .is_ok()
        {
            self.shared.offered.fetch_add(1, Ordering::Relaxed);
            self.shared.availability.fetch_add(1, Ordering::Relaxed);
        }
        let deadline = Instant::now() + self.drain_timeout;
        while self.shared.delivered.load(Ordering::Relaxed)
            < self.shared.offered.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let undelivered = self
            .shared
            .offered
            .load(Ordering::Relaxed)
            .saturating_sub(self.shared.delivered.load(Ordering::Relaxed));
        if undelivered > 0 {
            tracing::warn!(url = %self.url, undelivered, "MQTT broker did not take every message before the end of the run");
            self.metrics
                .mqtt_dropped
                .fetch_add(undelivered, Ordering::Relaxed);
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        (
            self.metrics.mqtt_published.load(Ordering::Relaxed),
            self.metrics.mqtt_dropped.load(Ordering::Relaxed),
        )
    }
}

fn event_loop(
    mut connection: rumqttc::Connection,
    client: Client,
    available_topic: &str,
    qos0: bool,
    shared: &Shared,
    metrics: &OutputMetrics,
    url: &str,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut log = RateLimitedLog::new(ERROR_LOG_INTERVAL);
    let mut was_connected = false;
    let publish_count = |shared: &Shared| {
        let delivered = shared.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        metrics.mqtt_published.store(
            delivered.saturating_sub(shared.availability.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    };
    for notification in connection.iter() {
        match notification {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                metrics.mqtt_connected.store(1, Ordering::Relaxed);
                if was_connected {
                    metrics.mqtt_reconnects.fetch_add(1, Ordering::Relaxed);
                }
                was_connected = true;
                tracing::info!(url, "MQTT broker connected");
                if !shared.stop.load(Ordering::Relaxed)
                    && client
                        .try_publish(available_topic, QoS::AtLeastOnce, true, "online")
                        .is_ok()
                {
                    // Counted before it can be acknowledged, so `published` never counts it as an event.
                    shared.availability.fetch_add(1, Ordering::Relaxed);
                    shared.offered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => publish_count(shared),
            Ok(Event::Outgoing(Outgoing::Publish(_))) if qos0 => publish_count(shared),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                metrics.mqtt_connected.store(0, Ordering::Relaxed);
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let delay = backoff.next_delay();
                if let Some(held_back) = log.due(Instant::now()) {
                    tracing::warn!(url, error = %e, retry_in_ms = delay.as_millis() as u64, held_back, "MQTT broker unreachable; events wait in the buffer");
                }
                std::thread::sleep(delay);
            }
        }
        if shared.stop.load(Ordering::Relaxed)
            && shared.delivered.load(Ordering::Relaxed) >= shared.offered.load(Ordering::Relaxed)
            && metrics.mqtt_connected.load(Ordering::Relaxed) == 0
        {
            break;
        }
    }
    metrics.mqtt_connected.store(0, Ordering::Relaxed);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_prefix_and_tls() {
        assert_eq!(
            parse_mqtt_url("mqtt://broker.local:1884/site/cam1").unwrap(),
            MqttUrl {
                host: "broker.local".into(),
                port: 1884,
                prefix: "site/cam1".into(),
                tls: false
            }
        );
        let u = parse_mqtt_url("mqtts://b").unwrap();
        assert_eq!((u.port, u.prefix.as_str(), u.tls), (8883, "saccade", true));
        for (bad, needle) in [
            ("http://b/x", "`http`"),
            ("mqtt://b:0/x", "`0`"),
            ("mqtt://:1883/x", "no host"),
            ("mqtt://b/x/#", "wildcard"),
            ("broker", "`broker`"),
        ] {
            let err = format!("{:#}", parse_mqtt_url(bad).unwrap_err());
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_settings_name_the_key() {
        for (config, key) in [
            (
                MqttConfig {
                    qos: 3,
                    ..MqttConfig::default()
                },
                "mqtt.qos",
            ),
            (
                MqttConfig {
                    buffer: 0,
                    ..MqttConfig::default()
                },
                "mqtt.buffer",
            ),
            (
                MqttConfig {
                    password: Some("p".into()),
                    ..MqttConfig::default()
                },
                "mqtt.password",
            ),
            (
                MqttConfig {
                    url: Some("mqtt://".into()),
                    ..MqttConfig::default()
                },
                "mqtt.url",
            ),
        ] {
            let err = format!("{:#}", config.validate().unwrap_err());
            assert!(err.contains(key), "{err}");
        }
    }
}
