//! Log capture for tests ([`capture`]: every event as a JSON line with its spans) and
//! the tests of [`ExecutionContext`].

use std::sync::{Arc, Mutex};

use super::*;

/// Log lines captured as JSON objects (`tracing_subscriber`'s JSON format with the
/// span list), for as long as the guard of [`capture`] lives, on this thread.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// One captured line.
#[derive(Debug, Clone)]
pub(crate) struct Line(pub(crate) serde_json::Value);

impl Line {
    /// The event's message.
    pub(crate) fn message(&self) -> &str {
        self.0["fields"]["message"].as_str().unwrap_or("")
    }

    /// The event's target.
    pub(crate) fn target(&self) -> &str {
        self.0["target"].as_str().unwrap_or("")
    }

    /// The fields of the (innermost) span named `name` the event is in.
    pub(crate) fn span(&self, name: &str) -> Option<&serde_json::Value> {
        self.0["spans"]
            .as_array()?
            .iter()
            .rev()
            .find(|s| s["name"] == name)
    }
}

impl Captured {
    /// Every line captured so far.
    pub(crate) fn lines(&self) -> Vec<Line> {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| Line(serde_json::from_str(l).expect("a JSON log line")))
            .collect()
    }

    /// The lines whose message contains `text`.
    pub(crate) fn with_message(&self, text: &str) -> Vec<Line> {
        self.lines()
            .into_iter()
            .filter(|l| l.message().contains(text))
            .collect()
    }
}

/// Captures every event (all levels) of this thread as JSON lines until the guard is
/// dropped. Tests on a current-thread runtime see their spawned tasks' lines too.
pub(crate) fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_span_list(true)
        .with_current_span(false)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_scope_names_the_tenant_of_every_execution_and_the_id_of_the_first() {
    let (captured, _guard) = capture();
    let ids = ExecutionContext {
        tenant: Some("acme".into()),
        execution_id: Some("exec-1".into()),
    }
    .scope(async {
        // As the server runs a route: an audit scope with the same id inside the context.
        let audited = crate::audit::AuditCaller {
            execution_id: Some("exec-1".into()),
            ..Default::default()
        };
        let spans = crate::audit::scope(audited, async {
            [execution_span("bash"), execution_span("python")]
        })
        .await;
        for (_, span) in &spans {
            span.in_scope(|| tracing::info!("inside"));
        }
        spans.map(|(id, _)| id)
    })
    .await;
    assert_eq!(ids[0], "exec-1");
    assert_ne!(ids[1], "exec-1", "the id is the first execution's only");
    let lines = captured.with_message("inside");
    assert_eq!(lines.len(), 2);
    for (line, (id, runtime)) in lines.iter().zip([(&ids[0], "bash"), (&ids[1], "python")]) {
        let span = line.span(EXECUTION_SPAN).expect("in the execution span");
        assert_eq!(span["execution_id"], id.as_str());
        assert_eq!(span["runtime"], runtime);
        assert_eq!(span["tenant"], "acme");
    }
}

#[tokio::test]
async fn without_a_scope_an_execution_gets_a_new_uuid_and_no_tenant() {
    let (captured, _guard) = capture();
    let (id, span) = execution_span("node");
    span.in_scope(|| tracing::info!("inside"));
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let line = &captured.with_message("inside")[0];
    let span = line.span(EXECUTION_SPAN).expect("in the execution span");
    assert_eq!(span["execution_id"], id.as_str());
    assert!(span.get("tenant").is_none(), "{span}");
}
