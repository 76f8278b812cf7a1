//! The server's telemetry in the benchmark process, behind a switch, so `steps` can measure
//! rounds with metrics and OTLP span export on against rounds with both off in one run: the
//! Prometheus recorder and the OpenTelemetry layer of `everruns_server::telemetry`, exporting to a
//! local sink (an HTTP server that reads and drops each export request).
//!
//! Off, metrics registered per update get no-op handles and no span is enabled: as a process
//! without a recorder or an exporter. Handles registered once at start (each plugin's, when it
//! loads) are real in both variants, which slightly understates the cost of metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context;
use axum::body::Bytes;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{DynFilterFn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether telemetry records now.
static ON: AtomicBool = AtomicBool::new(true);

/// Turns the process's telemetry on or off.
pub(crate) fn set(on: bool) {
    ON.store(on, Ordering::SeqCst);
}

/// Telemetry installed in this process.
pub(crate) struct Observed {
    tracer: SdkTracerProvider,
    /// Export requests the sink received, and their bytes.
    pub exports: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
}

impl Observed {
    /// Exports what is buffered and stops the exporter.
    pub(crate) async fn finish(self) -> anyhow::Result<()> {
        let tracer = self.tracer;
        tokio::task::spawn_blocking(move || tracer.shutdown())
            .await?
            .context("stopping the span exporter")
    }
}

/// Installs the switchable recorder and span layer (on), with the sink they export to.
pub(crate) async fn install() -> anyhow::Result<Observed> {
    let exports = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let sink = {
        let (exports, bytes) = (exports.clone(), bytes.clone());
        axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                exports.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                ""
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, sink).await });

    metrics::set_global_recorder(Switch(everruns_server::telemetry::prometheus_recorder()))
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    let tracer = everruns_server::telemetry::otlp_tracer(&endpoint, 1.0)?;
    let switch = DynFilterFn::new(|_, _| ON.load(Ordering::Relaxed));
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer.tracer("everruns"))
                .with_filter(everruns_server::telemetry::span_targets().and(switch)),
        )
        .try_init()
        .context("installing the span layer")?;
    Ok(Observed {
        tracer,
        exports,
        bytes,
    })
}

/// The Prometheus recorder, recording only while the switch is on.
struct Switch(PrometheusRecorder);

impl Recorder for Switch {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if ON.load(Ordering::Relaxed) {
            self.0.register_counter(key, metadata)
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if ON.load(Ordering::Relaxed) {
            self.0.register_gauge(key, metadata)
        } else {
            Gauge::noop()
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if ON.load(Ordering::Relaxed) {
            self.0.register_histogram(key, metadata)
        } else {
            Histogram::noop()
        }
    }
}
