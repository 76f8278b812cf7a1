//! The process's telemetry: log lines on stderr (text or JSON, filtered by `RUST_LOG`), spans
//! exported over OTLP/HTTP (protobuf, in batches) when `otlp_endpoint` is set, and the
//! Prometheus recorder every process installs once (served by the API's `/metrics`).

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use everruns_core::metrics::{LATENCY_BUCKETS, METRICS, MetricKind};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::{Config, LogFormat};

/// How long shutdown waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The installed telemetry; [`Telemetry::shutdown`] exports what is still buffered.
#[derive(Debug)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (bounded by a timeout), then stops the exporter.
    pub async fn shutdown(self) {
        let Some(tracer) = self.tracer else {
            return;
        };
        // The SDK blocks until its export thread is done, and that thread sends on this
        // runtime: keep the blocking call off the runtime's workers.
        let stopping =
            tokio::task::spawn_blocking(move || tracer.shutdown_with_timeout(FLUSH_TIMEOUT));
        match stopping.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: exporting the last spans failed: {e}"),
            Err(e) => eprintln!("warning: exporting the last spans failed: {e}"),
        }
    }
}

/// Installs the global subscriber: log lines filtered by `RUST_LOG` (default: Everruns at
/// `info`, dependencies at `warn`), and with `otlp_endpoint` set, Everruns' spans exported
/// over OTLP. Must run inside the Tokio runtime (the exporter sends on it).
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,everruns=info,everruns_server=info,everruns_api=info,everruns_store=info,\
             everruns_executor=info",
        )
    });
    let logs = match config.log_format {
        // Colours only for a terminal, never into a log file or a collector.
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let (spans, tracer) = match &config.otlp_endpoint {
        Some(endpoint) => {
            let tracer = otlp_tracer(endpoint, config.trace_sample_ratio)?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer.tracer("everruns"))
                .with_filter(span_targets());
            (Some(layer), Some(tracer))
        }
        None => (None, None),
    };
    // `try_init` fails only when a subscriber is already set (tests); keeping it is fine.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init();
    Ok(Telemetry { tracer })
}

/// Which spans are exported: Everruns' own (HTTP requests, runs, model and tool calls), at
/// `info` and above, whatever `RUST_LOG` shows in the logs.
pub fn span_targets() -> Targets {
    Targets::new()
        .with_target("everruns_api", LevelFilter::INFO)
        .with_target("everruns_executor", LevelFilter::INFO)
}

/// A tracer provider exporting to `endpoint` over OTLP/HTTP protobuf in batches (the
/// `OTEL_BSP_*` variables tune the batches), sampling `ratio` of new traces and following a
/// remote parent's decision. Also installs the W3C trace-context propagator, which reads
/// incoming `traceparent` headers. Must run inside the Tokio runtime.
pub fn otlp_tracer(endpoint: &str, ratio: f64) -> anyhow::Result<SdkTracerProvider> {
    let endpoint = endpoint.trim_end_matches('/');
    let endpoint = if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{endpoint}/v1/traces")
    };
    let client = OtlpClient {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        runtime: tokio::runtime::Handle::current(),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .with_http_client(client)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name("everruns")
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(provider)
}

/// The OTLP exporter's HTTP client: our reqwest, sending on our runtime (the SDK's batch
/// processor exports from a thread of its own, which has no Tokio reactor).
#[derive(Debug, Clone)]
struct OtlpClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, HttpError> {
        let http = self.http.clone();
        self.runtime
            .spawn(async move {
                let response = http.execute(request.try_into()?).await?;
                let mut answer = http::Response::builder().status(response.status());
                if let Some(headers) = answer.headers_mut() {
                    *headers = response.headers().clone();
                }
                // A collector answers with a small protobuf message; nothing reads more.
                let body = response.bytes().await?;
                Ok::<_, HttpError>(answer.body(body.slice(..body.len().min(64 * 1024)))?)
            })
            .await?
    }
}

/// The Prometheus recorder Everruns' figures are recorded with: histograms with
/// [`LATENCY_BUCKETS`], every metric described.
pub fn prometheus_recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .expect("the latency buckets are not empty")
        .build_recorder()
}

/// The process's recorder, installed on first use; its handle renders `/metrics`.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = prometheus_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics shows nothing");
            }
            describe();
            handle
        })
        .clone()
}

/// Registers every metric's help text (and so its `# HELP` and `# TYPE` lines).
fn describe() {
    for metric in METRICS {
        match metric.kind {
            MetricKind::Counter => metrics::describe_counter!(metric.name, metric.help),
            MetricKind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            MetricKind::Histogram => {
                metrics::describe_histogram!(metric.name, metrics::Unit::Seconds, metric.help)
            }
        }
    }
}
