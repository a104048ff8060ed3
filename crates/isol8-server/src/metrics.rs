//! `GET /metrics`: what the server and its engine do, in the Prometheus text format
//! (the `prometheus` crate).
//!
//! [`Metrics`] holds every series. The server counts executions (by runtime and outcome,
//! where a request ends: buffered, SSE, WebSocket, in a session or not; see
//! [`Execution`]) and HTTP requests (by matched route template, method and status; the
//! router's outermost middleware); the engine reports the rest through its
//! [`EngineObserver`](isol8::stats::EngineObserver) hook, which [`Metrics`] implements:
//! the slot wait, sandbox acquisition (pool hit or miss) and run time, containers
//! created and removed, failed resets, egress decisions. Pool sizes and live sessions are
//! read when the endpoint (`routes::metrics`) is scraped.
//!
//! Series (all prefixed `isol8_`; times in seconds):
//! * `executions_total{runtime,outcome}`: `outcome` is `ok` (exit 0), `nonzero_exit`,
//!   `timeout`, `memory_limit` (`exitReason: memoryLimit`), `error` (the sandbox failed, or the client left before the end) or
//!   `refused` (policy, validation, no slot, shutting down); `runtime` is a built-in
//!   runtime's name or `other` (clients choose it: the label stays bounded);
//! * `queue_wait_seconds`, `sandbox_acquire_seconds{pool="hit|miss"}`,
//!   `run_seconds{runtime}`: histograms;
//! * `pool_acquires_total{result="hit|miss"}`, `pool_sandboxes{state="clean|dirty|busy|starting"}`
//!   (the shared engine's pool);
//! * `containers_created_total`, `containers_destroyed_total`, `sandbox_reset_failures_total`;
//! * `egress_requests_total{action="allow|block"}`;
//! * `http_requests_total{route,method,status}`: `route` is the route template
//!   (`/session/{id}`), `unmatched` for a path no route has;
//! * `sessions_live`.
//!
//! The endpoint needs an API key like every other route unless the configuration says
//! `metrics.public: true`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use isol8::{ExecutionResult, StreamEvent, StreamEventType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::ApiError;

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram buckets, in seconds: from a warm pool's milliseconds to a long run.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How an execution request ended, as counted in `isol8_executions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The program exited with 0.
    Ok,
    /// The program exited with another status.
    NonzeroExit,
    /// The program was killed by its timeout.
    Timeout,
    /// The program went over its memory limit and was stopped (`exitReason: memoryLimit`).
    MemoryLimit,
    /// The sandbox failed (lost, unresponsive, a server error), or the client left
    /// before the end.
    Error,
    /// Refused before it ran: policy, validation, no slot in time, shutting down.
    Refused,
}

impl Outcome {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NonzeroExit => "nonzero_exit",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Error => "error",
            Outcome::Refused => "refused",
        }
    }

    /// The outcome of a finished program, from its exit code, whether it timed out and
    /// its `exitReason` (absent from results of engines that do not say).
    fn of_exit(code: i32, timed_out: bool, reason: Option<isol8::ExitReason>) -> Outcome {
        match (timed_out, reason, code) {
            (true, _, _) | (_, Some(isol8::ExitReason::Timeout), _) => Outcome::Timeout,
            (_, Some(isol8::ExitReason::MemoryLimit), _) => Outcome::MemoryLimit,
            (_, Some(isol8::ExitReason::SandboxLost), _) => Outcome::Error,
            (false, _, 0) => Outcome::Ok,
            (false, _, _) => Outcome::NonzeroExit,
        }
    }

    /// The outcome of a request that failed with `e`: the server's own failures (an
    /// unreachable daemon included) are errors, everything else (4xx, busy, shutting
    /// down) a refusal.
    pub fn of_error(e: &ApiError) -> Outcome {
        if let ApiError::Engine {
            source: isol8::Error::DockerUnavailable { .. },
            ..
        } = e
        {
            return Outcome::Error;
        }
        let status = e.status();
        if status.is_server_error()
            && status != StatusCode::SERVICE_UNAVAILABLE
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            Outcome::Error
        } else {
            Outcome::Refused
        }
    }
}

/// Every series of `GET /metrics` (see the module docs), in one registry of its own.
pub struct Metrics {
    registry: Registry,
    executions: IntCounterVec,
    queue_wait: Histogram,
    acquire: HistogramVec,
    run: HistogramVec,
    pool_acquires: IntCounterVec,
    pool_sandboxes: IntGaugeVec,
    containers_created: IntCounter,
    containers_destroyed: IntCounter,
    reset_failures: IntCounter,
    egress: IntCounterVec,
    http: IntCounterVec,
    sessions: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers `c` in `r`. Names are fixed and distinct, so registration cannot fail; a
/// failure would only leave the series out of the scrape.
fn registered<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "a metric could not be registered; it is left out of /metrics");
    }
    c
}

/// Options of a series: `isol8_` + `name`.
fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("isol8")
}

/// Options of a histogram: `isol8_` + `name`, with [`BUCKETS`].
fn hopts(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace("isol8")
        .buckets(BUCKETS.to_vec())
}

impl Metrics {
    /// Every series at zero.
    ///
    /// # Panics
    /// Never: the series' names and labels are fixed and valid.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &r,
                IntCounterVec::new(opts(name, help), labels).expect("valid counter"),
            )
        };
        let counter = |name: &str, help: &str| {
            registered(
                &r,
                IntCounter::with_opts(opts(name, help)).expect("valid counter"),
            )
        };
        let executions = counter_vec(
            "executions_total",
            "Execution requests by runtime and outcome (ok, nonzero_exit, timeout, error, refused).",
            &["runtime", "outcome"],
        );
        let queue_wait = registered(
            &r,
            Histogram::with_opts(hopts(
                "queue_wait_seconds",
                "Time an execution waited for a maxConcurrent slot.",
            ))
            .expect("valid histogram"),
        );
        let acquire = registered(
            &r,
            HistogramVec::new(
                hopts(
                    "sandbox_acquire_seconds",
                    "Time an execution waited for its sandbox: from the warm pool (hit) or started for it (miss).",
                ),
                &["pool"],
            )
            .expect("valid histogram"),
        );
        let run = registered(
            &r,
            HistogramVec::new(
                hopts(
                    "run_seconds",
                    "Time from sending an execution to its sandbox until it ended.",
                ),
                &["runtime"],
            )
            .expect("valid histogram"),
        );
        let pool_acquires = counter_vec(
            "pool_acquires_total",
            "Sandboxes taken from the warm pool (hit) or started for an execution (miss).",
            &["result"],
        );
        let pool_sandboxes = registered(
            &r,
            IntGaugeVec::new(
                opts(
                    "pool_sandboxes",
                    "Sandboxes of the shared engine: clean (ready), dirty (being reset), busy (running an execution), starting.",
                ),
                &["state"],
            )
            .expect("valid gauge"),
        );
        let containers_created =
            counter("containers_created_total", "Containers the engine created.");
        let containers_destroyed = counter(
            "containers_destroyed_total",
            "Containers the engine removed.",
        );
        let reset_failures = counter(
            "sandbox_reset_failures_total",
            "Used sandboxes whose reset failed (destroyed instead of reused).",
        );
        let egress = counter_vec(
            "egress_requests_total",
            "Requests the egress proxy of filtered sandboxes allowed or blocked.",
            &["action"],
        );
        let http = counter_vec(
            "http_requests_total",
            "HTTP requests by route template, method and status.",
            &["route", "method", "status"],
        );
        let sessions = registered(
            &r,
            IntGauge::with_opts(opts("sessions_live", "Persistent sessions alive."))
                .expect("valid gauge"),
        );
        Metrics {
            registry: r,
            executions,
            queue_wait,
            acquire,
            run,
            pool_acquires,
            pool_sandboxes,
            containers_created,
            containers_destroyed,
            reset_failures,
            egress,
            http,
            sessions,
        }
    }

    /// Counts one execution request of `runtime` that ended with `outcome`.
    pub fn execution(&self, runtime: &str, outcome: Outcome) {
        self.executions
            .with_label_values(&[runtime_label(runtime), outcome.label()])
            .inc();
    }

    /// Counts one HTTP request.
    pub fn http_request(&self, route: &str, method: &Method, status: StatusCode) {
        self.http
            .with_label_values(&[route, method_label(method), status.as_str()])
            .inc();
    }

    /// Sets the gauges read at scrape time.
    pub fn set_gauges(&self, pool: crate::backend::PoolSizes, sessions: usize) {
        let set = |state: &str, n: usize| {
            self.pool_sandboxes
                .with_label_values(&[state])
                .set(n as i64)
        };
        set("clean", pool.clean);
        set("dirty", pool.dirty);
        set("busy", pool.busy);
        set("starting", pool.starting);
        self.sessions.set(sessions as i64);
    }

    /// Every series in the Prometheus text format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// A client-chosen runtime as a label: a built-in runtime's name, else `other`.
fn runtime_label(runtime: &str) -> &str {
    static BUILTIN: OnceLock<Vec<String>> = OnceLock::new();
    let builtin = BUILTIN.get_or_init(|| {
        isol8::RuntimeRegistry::builtin()
            .names()
            .into_iter()
            .map(str::to_string)
            .collect()
    });
    if builtin.iter().any(|b| b == runtime) {
        runtime
    } else {
        "other"
    }
}

/// A method as a label: the standard ones by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl isol8::stats::EngineObserver for Metrics {
    fn queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(seconds(waited));
    }

    fn sandbox_acquired(&self, _runtime: &str, took: Duration, warm: bool) {
        let result = if warm { "hit" } else { "miss" };
        self.acquire
            .with_label_values(&[result])
            .observe(seconds(took));
        self.pool_acquires.with_label_values(&[result]).inc();
    }

    fn run_finished(&self, runtime: &str, took: Duration) {
        self.run
            .with_label_values(&[runtime])
            .observe(seconds(took));
    }

    fn container_created(&self) {
        self.containers_created.inc();
    }

    fn container_destroyed(&self) {
        self.containers_destroyed.inc();
    }

    fn reset_failed(&self) {
        self.reset_failures.inc();
    }

    fn egress(&self, allowed: bool) {
        let action = if allowed { "allow" } else { "block" };
        self.egress.with_label_values(&[action]).inc();
    }
}

/// One execution request being counted: its outcome is recorded once, when it is known
/// ([`Execution::finish`]) or, if it never is (the stream ended without an exit, the
/// client left), as `error` when this is dropped.
#[derive(Debug)]
pub(crate) struct Execution {
    metrics: Arc<Metrics>,
    runtime: String,
    timed_out: bool,
    done: bool,
}

impl Execution {
    /// Starts counting a request of `runtime`.
    pub(crate) fn new(metrics: Arc<Metrics>, runtime: &str) -> Execution {
        Execution {
            metrics,
            runtime: runtime.to_string(),
            timed_out: false,
            done: false,
        }
    }

    /// Records `outcome` (only the first call counts).
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if !self.done {
            self.done = true;
            self.metrics.execution(&self.runtime, outcome);
        }
    }

    /// Records a request that failed with `e`.
    pub(crate) fn failed(&mut self, e: &ApiError) {
        self.finish(Outcome::of_error(e));
    }

    /// Records a buffered result (one whose sandbox was lost under the program is the
    /// sandbox layer failing: an error, as when such a run had no result).
    pub(crate) fn result(&mut self, r: &ExecutionResult) {
        let timed_out = r.stderr.ends_with(isol8::output::TIMEOUT_TRAILER);
        self.finish(Outcome::of_exit(r.exit_code, timed_out, r.exit_reason));
    }

    /// Follows a streamed event: a timeout error, then the exit, decide the outcome.
    pub(crate) fn event(&mut self, ev: &StreamEvent) {
        match ev.kind {
            StreamEventType::Error if ev.data == isol8::output::TIMEOUT_EVENT => {
                self.timed_out = true
            }
            StreamEventType::Exit => {
                let code = ev.data.trim().parse().unwrap_or(-1);
                self.finish(Outcome::of_exit(code, self.timed_out, ev.exit_reason));
            }
            _ => {}
        }
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        self.finish(Outcome::Error);
    }
}
