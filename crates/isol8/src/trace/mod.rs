//! The `tracing` span of an execution, and what a front end tells the engine about the
//! executions it starts ([`ExecutionContext`]: the tenant, and the id to run under).
//!
//! Every execution runs inside one `execution` span (target `isol8::execution`) with the
//! fields `execution_id`, `runtime`, `container_id` (recorded once a sandbox is taken)
//! and `tenant` (empty unless a front end named one). The engine's tasks for that
//! execution (its run, the proxy connections of its sandbox, the reset or removal of the
//! sandbox afterwards) are instrumented with it, so every log line the engine, the pool,
//! the egress proxy and the agent relay emit for an execution carries its id. The span
//! is a child of whatever span is current when the execution is launched (the server's
//! `request` span).

use std::cell::RefCell;
use std::future::Future;

/// The span's name.
pub const EXECUTION_SPAN: &str = "execution";

/// What a front end knows about the executions started inside [`ExecutionContext::scope`]:
/// the tenant they run for, and the id the next one takes (so a server's answers and its
/// log name the same execution id). Without a scope an execution gets a new UUID and no
/// tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionContext {
    /// The tenant the execution runs for (the server's caller).
    pub tenant: Option<String>,
    /// The id of the next execution launched in the scope; taken by it (later ones get
    /// new UUIDs).
    pub execution_id: Option<String>,
}

tokio::task_local! {
    static CONTEXT: RefCell<ExecutionContext>;
}

impl ExecutionContext {
    /// Runs `f` with this context: executions launched by `f` (in its task, not in tasks
    /// it spawns) take the tenant and the id.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CONTEXT.scope(RefCell::new(self), f).await
    }

    /// The current scope's tenant and execution id (taken: a second execution in the
    /// scope gets none); `None` outside any scope.
    fn take() -> Option<(Option<String>, Option<String>)> {
        CONTEXT
            .try_with(|c| {
                let mut c = c.borrow_mut();
                (c.tenant.clone(), c.execution_id.take())
            })
            .ok()
    }
}

/// The id and span of a new execution of `runtime`. The id: the current
/// [`ExecutionContext`]'s if it still has one; a new UUID inside a context whose id an
/// earlier execution took (the server nests an audit scope with the same id in it, which
/// must not hand that id out again); outside any context, the audit scope's
/// ([`crate::audit::execution_id`]: its id, else a new UUID).
pub(crate) fn execution_span(runtime: &str) -> (String, tracing::Span) {
    let (tenant, id) = match ExecutionContext::take() {
        Some((tenant, id)) => (
            tenant,
            id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        ),
        None => (None, crate::audit::execution_id()),
    };
    let span = tracing::info_span!(
        target: "isol8::execution",
        "execution",
        execution_id = %id,
        runtime = %runtime,
        container_id = tracing::field::Empty,
        tenant = tracing::field::Empty,
    );
    if let Some(tenant) = tenant {
        span.record("tenant", tracing::field::display(&tenant));
    }
    (id, span)
}

#[cfg(test)]
pub(crate) mod tests;
