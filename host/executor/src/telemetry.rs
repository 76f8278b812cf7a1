//! What the executor tells operators: the run's OpenTelemetry context (a W3C `traceparent`
//! stored with each run, so its spans continue one trace across takeovers and processes) and
//! the label values of its Prometheus figures (names in `everruns_core::metrics`).

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The current span's context as a W3C `traceparent`, when spans are exported (with tracing
/// off there is no valid context, and runs store none).
pub(crate) fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span = span.span_context();
    span.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags().to_u8()
        )
    })
}

/// The parts of a stored `traceparent` (the store accepts only well-formed ones).
fn parse(traceparent: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let mut parts = traceparent.split('-');
    let (_, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(flags),
    ))
}

/// The remote parent a run's stored `traceparent` names.
pub(crate) fn parent_of(traceparent: &str) -> Option<Context> {
    let (trace, span, flags) = parse(traceparent)?;
    let parent = SpanContext::new(trace, span, flags, true, TraceState::default());
    parent
        .is_valid()
        .then(|| Context::new().with_remote_span_context(parent))
}

/// Makes `span` (a run's `invoke_agent`) continue the trace `traceparent` names and records
/// the trace id in its `trace_id` field, so every log line of the run carries it (also when
/// spans are not exported: then the stored trace id is the one logged).
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(parent) = traceparent.and_then(parent_of) {
        // Fails only for a span already entered; this one is new.
        let _ = span.set_parent(parent);
    }
    let exported = span.context().span().span_context().trace_id();
    if exported != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(exported));
    } else if let Some((trace, ..)) = traceparent.and_then(parse) {
        span.record("trace_id", tracing::field::display(trace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_traceparents_become_remote_parents() {
        let parent = parent_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .expect("a valid traceparent");
        let span = parent.span();
        let context = span.span_context();
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(context.span_id().to_string(), "b7ad6b7169203331");
        let unsampled = parent_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
            .expect("a valid traceparent");
        assert!(!unsampled.span().span_context().is_sampled());
        // All-zero ids are invalid in W3C trace context.
        assert!(parent_of("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none());
        assert!(parent_of("garbage").is_none());
        // Without an exporting subscriber there is no current context to store.
        assert_eq!(current_traceparent(), None);
    }
}
