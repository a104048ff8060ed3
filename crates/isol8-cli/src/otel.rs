//! OpenTelemetry export of `isol8 serve`'s spans: on only when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) environment
//! variable is set and not empty; otherwise nothing is built (no exporter, no thread).
//!
//! Spans go over OTLP/HTTP with protobuf bodies (`POST <endpoint>/v1/traces`; the
//! traces variable is used as is), in batches from a background thread, with the
//! exporter's standard variables (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`,
//! `OTEL_BSP_*`…). The service name is `isol8` unless `OTEL_SERVICE_NAME` (or
//! `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) names another. The spans are the
//! server's `request` spans and the engine's `execution` spans (their fields become
//! attributes, `execution_id` among them); log events inside them become span events.
//! [`Exporter::shutdown`] flushes what is still buffered (waiting at most 5 s, the SDK's
//! shutdown limit).

use anyhow::{Context as _, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// The environment variables that turn the export on.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/// The service name unless the environment names one.
pub const SERVICE_NAME: &str = "isol8";

/// The span export (see the module docs).
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// True when the environment asks for the export.
fn enabled(var: impl Fn(&str) -> Option<String>) -> bool {
    ENDPOINT_VARS
        .iter()
        .any(|v| var(v).is_some_and(|s| !s.trim().is_empty()))
}

/// True when the environment names the service (so `isol8` must not override it).
fn service_named(var: impl Fn(&str) -> Option<String>) -> bool {
    var("OTEL_SERVICE_NAME").is_some_and(|s| !s.trim().is_empty())
        || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
            attrs
                .split(',')
                .any(|kv| kv.split('=').next().map(str::trim) == Some("service.name"))
        })
}

impl Exporter {
    /// The export the environment asks for: `None` when no endpoint variable is set;
    /// an error when the exporter cannot be built (a malformed endpoint…). Call outside
    /// any async runtime (the exporter's blocking HTTP client has a runtime of its own).
    pub fn from_env() -> Result<Option<Exporter>> {
        let var = |name: &str| std::env::var(name).ok();
        if !enabled(var) {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .context("cannot build the OTLP/HTTP span exporter from OTEL_EXPORTER_OTLP_* (check the endpoint URL)")?;
        let mut resource = Resource::builder();
        if !service_named(var) {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Some(Exporter { provider }))
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(SERVICE_NAME))
    }

    /// Exports what is still buffered and stops the export thread.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: OpenTelemetry export did not finish: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_export_is_on_only_with_an_endpoint() {
        assert!(!enabled(env(&[])));
        assert!(!enabled(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(!enabled(env(&[("OTEL_SERVICE_NAME", "x")])));
        assert!(enabled(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318"
        )])));
        assert!(enabled(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces"
        )])));
    }

    #[test]
    fn the_service_is_isol8_unless_the_environment_names_it() {
        assert!(!service_named(env(&[])));
        assert!(!service_named(env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=a"
        )])));
        assert!(service_named(env(&[("OTEL_SERVICE_NAME", "sandbox-eu")])));
        assert!(service_named(env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=a, service.name=sandbox-eu"
        )])));
    }

    #[test]
    fn without_an_endpoint_nothing_is_built() {
        // The process's own environment has no endpoint in tests unless a developer set
        // one; only then is this vacuous.
        if !enabled(|name| std::env::var(name).ok()) {
            assert!(Exporter::from_env().expect("no error").is_none());
        }
    }
}
