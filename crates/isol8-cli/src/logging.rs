//! The CLI's log: one line per event on stderr, as text (the default) or, for `isol8
//! serve --log-format json`, one JSON object per line for log shippers; and, for `isol8
//! serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans exported over OTLP
//! ([`crate::otel`]).
//!
//! Both formats carry the fields of the spans an event is in: the server's `request`
//! span (`method`, `route`, `request_id`, `client_request_id`, `tenant`, `status`) and
//! the engine's `execution` span (`execution_id`, `runtime`, `container_id`, `tenant`).
//! isol8's spans are always recorded, whatever the level filter, so a warning logged
//! during an execution names it even when info lines are filtered out.
//!
//! A JSON line:
//!
//! ```json
//! {"timestamp":"2026-01-01T12:00:00.123456Z","level":"WARN","target":"isol8::docker::pool",
//!  "message":"reset failed; destroying the sandbox","fields":{"container":"3f…","error":"…"},
//!  "spans":["request","execution"],
//!  "span":{"method":"POST","route":"/execute","request_id":"…","tenant":"master",
//!          "execution_id":"…","runtime":"python","container_id":"3f…"}}
//! ```
//!
//! `span` merges the fields of every span the event is in, outermost first (an inner
//! span's field of the same name wins); `spans` names them, outermost first.

use tracing::field::{Field, Visit};
use tracing_subscriber::filter::{filter_fn, FilterExt as _};
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `<time> [LEVEL] message fields span-fields`.
    #[default]
    Text,
    /// One JSON object per line (see the module docs).
    Json,
}

/// Text lines: `<time> [LEVEL] message fields`, then the fields of the spans the event is
/// in (outermost first); the level in brackets, as scripts of the reference CLI look for
/// (`[DEBUG]`).
struct TextFormat;

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime;
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
        write!(writer, " [{}] ", event.metadata().level())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, " {fields}")?;
                    }
                }
            }
        }
        writeln!(writer)
    }
}

/// JSON lines (see the module docs). Span fields come from the layer's [`JsonFields`].
struct JsonFormat;

/// Collects an event's fields as JSON values.
#[derive(Default)]
struct JsonVisitor {
    message: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let meta = event.metadata();
        let mut names = Vec::new();
        let mut span_fields = serde_json::Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                names.push(serde_json::Value::from(span.name()));
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<serde_json::Value>(fields)
                {
                    span_fields.extend(map);
                }
            }
        }
        let line = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "message": visitor.message.unwrap_or_default(),
            "fields": visitor.fields,
            "spans": names,
            "span": span_fields,
        });
        let mut text = line.to_string();
        text.push('\n');
        writer.write_str(&text)
    }
}

/// The log filter when `RUST_LOG` is not set. Without `-v`, a command's stderr belongs to
/// the user's program and the CLI's own one-line messages (`error: …`, the timeout line):
/// the library's warnings (`reset failed; destroying the sandbox` after a memory kill…)
/// are routine for an engine and only noise there, so only `ERROR` log lines show.
/// `isol8 serve` is a service whose log is its stderr: it keeps its warnings.
pub fn default_filter(verbose: u8, serve: bool) -> &'static str {
    match (verbose, serve) {
        (0, false) => "error",
        (0, true) => "warn",
        (1, _) => "info",
        _ => "debug",
    }
}

/// The filter of a layer: `RUST_LOG` (else `default`) for events and spans, and every
/// span of isol8's own (so lines inside them carry their fields whatever the level).
fn filter<S>(default: &str) -> impl tracing_subscriber::layer::Filter<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    env.or(filter_fn(|meta| {
        meta.is_span() && meta.target().starts_with("isol8")
    }))
}

/// What must happen before the process exits (the OpenTelemetry export flushed).
#[must_use = "call finish() before exiting"]
pub struct Logging {
    otel: Option<crate::otel::Exporter>,
}

impl std::fmt::Debug for Logging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logging")
            .field("otel", &self.otel.is_some())
            .finish()
    }
}

impl Logging {
    /// Flushes and stops the OpenTelemetry export (if any). Call outside the async runtime.
    pub fn finish(self) {
        if let Some(otel) = self.otel {
            otel.shutdown();
        }
    }
}

/// The format [`init`] chose (text until then).
static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Prints one of the CLI's own lines on stderr, whatever the level filter (the server's
/// start-up and shutdown lines, a fatal `error:`): as is in the text format; in the JSON
/// format, as a JSON line like the log's (`target` `isol8::cli`, no fields or spans), so
/// a log shipper reads every line of the stream.
pub fn notice(level: tracing::Level, text: &str) {
    match FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => eprintln!("{text}"),
        LogFormat::Json => eprintln!("{}", notice_json(level, text)),
    }
}

/// The JSON line of [`notice`].
fn notice_json(level: tracing::Level, text: &str) -> String {
    serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": level.as_str(),
        "target": "isol8::cli",
        "message": text,
        "fields": {},
        "spans": [],
        "span": {},
    })
    .to_string()
}

/// Installs the process's subscriber: lines on stderr in `format` at the level of
/// `verbose` (see [`default_filter`]; `RUST_LOG` overrides it) and, for `isol8 serve`
/// with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the OpenTelemetry export. Call before the
/// async runtime starts (the exporter's HTTP client must not be made inside it).
pub fn init(verbose: u8, serve: bool, format: LogFormat) -> Logging {
    let default = default_filter(verbose, serve);
    let _ = FORMAT.set(format);
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours only on a terminal: a file or a pipe gets plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .fmt_fields(DefaultFields::new())
            .event_format(TextFormat)
            .with_filter(filter(default))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(JsonFormat)
            .with_filter(filter(default))
            .boxed(),
    };
    let (otel, otel_error) = if serve {
        match crate::otel::Exporter::from_env() {
            Ok(e) => (e, None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    // Only isol8's own spans and events: never the HTTP client's that exports them.
    let otel_layer = otel.as_ref().map(|o| {
        o.layer()
            .with_filter(filter(default).and(filter_fn(|meta| meta.target().starts_with("isol8"))))
    });
    tracing_subscriber::registry()
        .with(lines)
        .with(otel_layer)
        .init();
    if let Some(e) = otel_error {
        tracing::error!("OpenTelemetry export is off: {e:#}");
    }
    Logging { otel }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer the tests' subscribers write to.
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
        }
    }

    /// Logs a warning inside a request span and an execution span (whose container is
    /// recorded late), with `layer` writing to the returned buffer at level `warn`.
    fn log_in_spans(json: bool) -> String {
        let buf = Buf::default();
        let writer = {
            let buf = buf.clone();
            move || buf.clone()
        };
        let layer = if json {
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .fmt_fields(JsonFields::new())
                .event_format(JsonFormat)
                .with_filter(filter("warn"))
                .boxed()
        } else {
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .fmt_fields(DefaultFields::new())
                .event_format(TextFormat)
                .with_filter(filter("warn"))
                .boxed()
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(target: "isol8_server::request", "request", route = "/execute", tenant = "outer");
            let _r = request.enter();
            let execution = tracing::info_span!(
                target: "isol8::execution",
                "execution",
                execution_id = "e-1",
                container_id = tracing::field::Empty,
                tenant = "inner",
            );
            execution.record("container_id", tracing::field::display("c-9"));
            let _e = execution.enter();
            tracing::info!(target: "isol8::docker::run", "filtered out");
            tracing::warn!(target: "isol8::docker::pool", container = "c-9", attempt = 2, "reset failed");
        });
        buf.text()
    }

    #[test]
    fn text_lines_carry_the_fields_of_the_spans_even_below_the_level() {
        let text = log_in_spans(false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = lines[0];
        assert!(
            line.contains(" [WARN] reset failed container=\"c-9\" attempt=2"),
            "{line}"
        );
        assert!(
            line.ends_with(" route=\"/execute\" tenant=\"outer\" execution_id=\"e-1\" tenant=\"inner\" container_id=c-9"),
            "{line}"
        );
    }

    #[test]
    fn json_lines_merge_the_span_fields_inner_last_and_name_the_spans() {
        let text = log_in_spans(true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "isol8::docker::pool");
        assert_eq!(v["message"], "reset failed");
        assert_eq!(
            v["fields"],
            serde_json::json!({"container": "c-9", "attempt": 2})
        );
        assert_eq!(v["spans"], serde_json::json!(["request", "execution"]));
        assert_eq!(
            v["span"],
            serde_json::json!({"route": "/execute", "tenant": "inner", "execution_id": "e-1", "container_id": "c-9"})
        );
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );
    }

    #[test]
    fn a_notice_in_json_has_the_fields_of_a_log_line() {
        let v: serde_json::Value =
            serde_json::from_str(&notice_json(tracing::Level::INFO, "isol8 listening on x"))
                .expect("JSON");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "isol8::cli");
        assert_eq!(v["message"], "isol8 listening on x");
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );
        assert!(v["fields"].is_object() && v["span"].is_object() && v["spans"].is_array());
    }

    #[test]
    fn library_warnings_show_only_with_dash_v_except_in_serve() {
        use tracing::level_filters::LevelFilter;
        let max = |verbose, serve| {
            EnvFilter::new(default_filter(verbose, serve))
                .max_level_hint()
                .expect("a level")
        };
        assert_eq!(max(0, false), LevelFilter::ERROR);
        assert_eq!(max(1, false), LevelFilter::INFO);
        assert_eq!(max(2, false), LevelFilter::DEBUG);
        assert_eq!(max(0, true), LevelFilter::WARN);
        assert_eq!(max(1, true), LevelFilter::INFO);
        assert_eq!(max(2, true), LevelFilter::DEBUG);
    }
}
