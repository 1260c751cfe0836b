//! Running pipelines from a resolved [`Config`]: every source opened, the models loaded once, the memory plan
//! checked, one pipeline per source until they end or a signal stops them (`saccade run` and `saccade demo`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use saccade_runtime::budget::MemoryBudget;
use saccade_runtime::capture::open_source;
use saccade_runtime::capture::uri::parse_source_uri;
use saccade_runtime::events::{
    EventSink, EventTarget, FileTarget, FrameEvent, RateLimitedLog, ERROR_LOG_INTERVAL,
};
use saccade_runtime::metrics::{OutputMetrics, PipelineMetrics};
use saccade_runtime::pipeline::{run_pipeline, PipelineOptions};

use crate::config::Config;
use crate::engine::{self, ModelArgs, StrategyArgs};
use crate::serve::{self, Registry, ServerOptions};
use crate::summary::Summary;

fn model_args(config: &Config) -> ModelArgs {
    ModelArgs {
        weights_dir: config.models.weights_dir.clone(),
        glance_weights: config.models.glance_weights.clone(),
        classifier_weights: config.models.classifier_weights.clone(),
        dtype: config.models.dtype,
    }
}

fn strategy_args(config: &Config) -> StrategyArgs {
    StrategyArgs {
        strategy: config.strategy,
        max_patches: config.max_patches,
        deadline_ms: config.deadline_ms.filter(|d| *d > 0.0),
    }
}

/// Open every source, load the models once, check the memory plan, run one pipeline per source until they
/// end or a signal stops them; print and return the summaries.
pub fn execute(config: &Config, json: Option<&str>, dry_run: bool) -> anyhow::Result<Vec<Summary>> {
    let margs = model_args(config);
    let sargs = strategy_args(config);
    let threads = engine::thread_budget(config.sources.len(), &config.threads);
    engine::apply_thread_budget(&threads);
    let models = engine::load_models(&margs)?;
    let mut sources = Vec::new();
    let mut frame_sizes = Vec::new();
    for s in &config.sources {
        let spec = parse_source_uri(&s.uri).with_context(|| format!("source {}", s.uri))?;
        frame_sizes.push(engine::frame_size_hint(&spec));
        if !dry_run {
            let source = open_source(&s.uri).with_context(|| format!("opening {}", s.uri))?;
            let policy = s.policy.unwrap_or_else(|| source.default_policy());
            sources.push((s.uri.clone(), source, policy));
        }
    }
    let plan = engine::memory_plan(&models, &margs, config, &frame_sizes);
    tracing::info!("{plan}");
    if dry_run {
        println!("{plan}");
        println!("{threads}");
        println!("{}", toml::to_string_pretty(config)?);
    }
    // Without memory_budget_mb the plan is checked against a share of the memory available now.
    let budget = MemoryBudget::resolve(config.memory_budget_mb);
    match &budget {
        Some(budget) => {
            plan.check_budget(budget)?;
            if dry_run {
                println!("fits {budget}");
            }
        }
        None => tracing::warn!(
            "/proc/meminfo is unreadable and no memory_budget_mb is set: the memory plan is not checked"
        ),
    }
    if dry_run {
        return Ok(Vec::new());
    }

    let output = &config.output;
    let target = match output.events.as_deref() {
        None => EventTarget::discard(),
        Some("-") => EventTarget::stdout(),
        Some(path) => EventTarget {
            stdout: output.events_stdout,
            file: Some(FileTarget {
                path: PathBuf::from(path),
                max_bytes: output
                    .events_max_mb
                    .map(|mb| (mb * 1024.0 * 1024.0).round() as u64),
                keep: output.events_keep,
            }),
        },
    };
    let outputs = Arc::new(OutputMetrics::default());
    let sink = Mutex::new(
        EventSink::open(&target)
            .context("opening the events output")?
            .with_metrics(outputs.clone()),
    );
    if let Some(dir) = &config.output.annotate {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating annotation folder {}", dir.display()))?;
    }
    let mqtt = crate::mqtt::MqttSink::start(&config.mqtt, outputs.clone())?;
    let snapshots = crate::snapshots::Snapshots::open(&config.snapshots)?.map(Mutex::new);
    let stop = install_signal_handlers()?;
    let metrics: Vec<Arc<PipelineMetrics>> = sources
        .iter()
        .map(|_| Arc::new(PipelineMetrics::default()))
        .collect();
    let registry = Arc::new(Registry::new(
        sources
            .iter()
            .zip(&metrics)
            .map(|((uri, _, _), m)| (uri.clone(), m.clone()))
            .collect(),
        outputs.clone(),
        budget.map_or(0, |b| b.budget_bytes()),
    ));
    let server = match config.http_addr() {
        Some(addr) => {
            let options = ServerOptions {
                addr: addr.to_string(),
                token: config.http.token.clone(),
                stall: std::time::Duration::from_secs_f64(config.http.stall_s),
            };
            let server = serve::spawn(&options, registry.clone())?;
            let local = server.local_addr;
            eprintln!("saccade: live view on http://{local}/, metrics on http://{local}/metrics");
            Some(server)
        }
        None => None,
    };
    let multi = sources.len() > 1;
    let batcher =
        engine::batching_classifier(&models, &threads, sargs.max_patches, &config.threads)?;
    let annotate = config.output.annotate.clone();
    let mut runs = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for (i, ((uri, source, policy), m)) in sources.into_iter().zip(&metrics).enumerate() {
            let processor = engine::build_processor(
                &engine::models_for_source(&models, batcher.as_ref()),
                &sargs,
                &config.strategies,
            )?;
            let options = PipelineOptions {
                queue_depth: config.queue_depth,
                policy,
                budget: sargs.budget(),
            };
            let (stop, sink, annotate, strategy) = (
                stop.clone(),
                &sink,
                annotate.clone(),
                config.strategy.name(),
            );
            let (mqtt, snapshots) = (mqtt.as_ref(), snapshots.as_ref());
            let m = m.clone();
            let outputs = outputs.clone();
            let source_metrics = m.clone();
            let registry = registry.clone();
            handles.push(scope.spawn(move || {
                let mut annotate_log = RateLimitedLog::new(ERROR_LOG_INTERVAL);
                let mut snapshot_log = RateLimitedLog::new(ERROR_LOG_INTERVAL);
                let run = run_pipeline(source, processor, options, m, stop, |done| {
                    let event = FrameEvent::new(
                        &uri,
                        strategy,
                        &done.frame,
                        &done.outcome,
                        done.latency_ms,
                    );
                    let written = match sink.lock() {
                        Ok(mut sink) => sink.write(&event),
                        Err(_) => false,
                    };
                    if !written {
                        PipelineMetrics::add(&source_metrics.events_write_errors, 1);
                    }
                    if let Some(mqtt) = mqtt {
                        mqtt.publish(&event);
                    }
                    registry.hub.frame_done(i, &done, &event);
                    if let Some(snapshots) = snapshots {
                        let taken = match snapshots.lock() {
                            Ok(mut s) => s.take(i, &done, std::time::Instant::now()),
                            Err(_) => Err(anyhow::anyhow!("snapshot writer poisoned")),
                        };
                        match taken {
                            Ok(n) => PipelineMetrics::add(&outputs.snapshots_written, n as u64),
                            Err(e) => {
                                PipelineMetrics::add(&outputs.snapshots_errors, 1);
                                if let Some(held_back) = snapshot_log.due(std::time::Instant::now()) {
                                    tracing::error!(
                                        "{e:#}; the next detection tries again ({held_back} errors since the last message)"
                                    );
                                }
                            }
                        }
                    }
                    if let Some(dir) = &annotate {
                        let stem = match &done.frame.file {
                            Some(file) => file
                                .rsplit_once('.')
                                .map_or(file.as_str(), |(s, _)| s)
                                .to_string(),
                            None => format!("{:06}", done.frame.index),
                        };
                        let name = if multi {
                            format!("source{i}-{stem}.png")
                        } else {
                            format!("{stem}.png")
                        };
                        if let Err(e) = crate::annotate::write_annotated(&done, &dir.join(name)) {
                            PipelineMetrics::add(&outputs.annotations_errors, 1);
                            if let Some(held_back) = annotate_log.due(std::time::Instant::now()) {
                                tracing::error!(
                                    "{e:#}; the next frame tries again ({held_back} errors since the last message)"
                                );
                            }
                        }
                    }
                });
                (uri, run)
            }));
        }
        for h in handles {
            match h.join() {
                Ok(r) => runs.push(r),
                Err(_) => bail!("a pipeline thread panicked"),
            }
        }
        Ok(())
    })?;
    if let Some(batcher) = &batcher {
        let stats = batcher.stats();
        tracing::info!(
            "classify batching: {} batches of {:.2} calls on average ({} merged), {:.1} ms waited",
            stats.batches,
            stats.requests_per_batch(),
            stats.merged_batches,
            stats.waited_ms
        );
    }
    if let Some(server) = server {
        server.stop();
    }
    let mut sink = sink
        .into_inner()
        .map_err(|_| anyhow::anyhow!("events sink poisoned"))?;
    sink.flush();
    let summaries: Vec<Summary> = runs
        .iter()
        .zip(&metrics)
        .map(|((uri, run), m)| {
            Summary::new(
                uri,
                config.strategy.name(),
                run,
                m,
                models.glance.mflops(),
                sink.written(),
            )
            .with_events_error(sink.failure())
        })
        .collect();
    for s in &summaries {
        eprint!("{}", s.human());
    }
    if let Some(mqtt) = mqtt {
        let (published, dropped) = mqtt.finish();
        eprintln!(
            "  mqtt: {published} messages published, {dropped} dropped, {} reconnects",
            PipelineMetrics::get(&outputs.mqtt_reconnects)
        );
    }
    if snapshots.is_some() {
        eprintln!(
            "  snapshots: {} written, {} failed",
            PipelineMetrics::get(&outputs.snapshots_written),
            PipelineMetrics::get(&outputs.snapshots_errors)
        );
    }
    let annotations_lost = PipelineMetrics::get(&outputs.annotations_errors);
    if annotations_lost > 0 {
        eprintln!("  {annotations_lost} annotated frames not written (see the errors above)");
    }
    if let Some(path) = json {
        let text = if summaries.len() == 1 {
            serde_json::to_string_pretty(&summaries[0])?
        } else {
            serde_json::to_string_pretty(&summaries)?
        };
        if path == "-" {
            println!("{text}");
        } else {
            crate::output::write_whole_file(std::path::Path::new(path), (text + "\n").as_bytes())
                .with_context(|| format!("writing summary JSON to {path}"))?;
        }
    }
    if sink.not_written() > 0 {
        bail!(
            "{} events not written ({})",
            sink.not_written(),
            sink.failure().unwrap_or_else(|| "unknown error".into())
        );
    }
    Ok(summaries)
}

/// SIGINT/SIGTERM: the first stops capture and lets the queues drain; a second exits at once.
pub fn install_signal_handlers() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal: exits on the second one.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}
