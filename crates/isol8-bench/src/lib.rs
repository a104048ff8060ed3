//! isol8-bench: `isol8 bench`, the end-to-end latency of isol8's paths against Docker's
//! own, measured in the same run on the same images.
//!
//! It drives the engine (`isol8`) and the HTTP server (`isol8-server`) from outside, as a
//! user would; the CLI (`isol8-cli`) is its only dependent and prints its [`BenchReport`].
//! Nothing in the engine depends on it, so embedding the engine does not compile it.
//!
//! Paths, per runtime, for a hello-world program:
//! * `cold` — an ephemeral execution with no pool (create, attach, start, agent, remove);
//! * `warm` — an ephemeral execution that finds the warm pool ready: its sandbox reset
//!   and, for a runtime with a pre-started interpreter (python, node, deno), that interpreter
//!   waiting (the bench waits, untimed, until the pool is ready before each sample);
//! * `warm_back_to_back` — `warm` with each request sent as soon as the one before
//!   returned, so it also waits for that one's reset and pre-start;
//! * `warm_after_idle` — `warm` with the request sent [`IDLE_PAUSE`] after the pool was
//!   ready, the machine idle meanwhile: what sporadic traffic meets (sleeping CPUs, cold
//!   caches), where `warm` is a request arriving within 20 ms of the pool being ready;
//! * `warm_fresh` (runtimes with a pre-started interpreter or a preloaded library) —
//!   `warm` on an engine that starts every program fresh and plain
//!   (`EngineConfig::fresh_starts`): what pre-starting and the teardown library save;
//! * `warm_stdio` — `warm` with the frames through the container's attached stdio
//!   (`EngineConfig::stdio_frames`), not the data socket: what the socket saves;
//! * `warm_audited` — `warm` on an engine that writes the audit log (config `audit`,
//!   filesystem destination, code and output included, to a directory under the
//!   system's temporary directory removed afterwards): what auditing adds to the warm
//!   path;
//! * `docker_exec` — baseline: create exec + start attached + inspect into a running
//!   container of the same image (what most sandboxes do per execution);
//! * `docker_run` — baseline: create + start + wait + remove of the same image and command
//!   (both baselines: [`baseline`]);
//! * `server`, `server_remote`, `warm_paired` (python only) — the warm path through
//!   `POST /execute` of an in-process server on loopback, with hyper's client connection
//!   and with isol8's remote client, and the library's warm path on the server's own
//!   engine, their samples interleaved (see [`server`]).
//!
//! What measuring resource usage costs (python only): the warm path with the agent
//! measuring each execution (the default) and with measuring off (an engine knob only
//! the bench uses), samples interleaved on two warm engines so drift hits both alike;
//! the difference of the medians is the price (see [`MeasuringCost`]).
//!
//! What the strict seccomp profile costs, the same way ([`SeccompCost`]): a cold bash
//! `echo 1` (no pool: create, start, run, remove — where the OCI runtime compiles and
//! loads the filter) and a warm python hello-world (where every system call passes the
//! filter), each on an engine with `security.seccomp` `strict` and one with
//! `unconfined`, samples interleaved.
//!
//! All containers get the same hardened `HostConfig`. Throughput is measured on the warm
//! path with a pool and `maxConcurrent` sized to the concurrency.
//!
//! Each engine path's rows also carry the median of the program's own time (as the agent
//! timed it, in microseconds, reported to the engine's observer — on the server path the
//! observer of the engine behind the server) and the median engine overhead, end to end
//! minus the program's time per sample.
//! The Docker baselines have neither: nothing inside their containers times the bare
//! command. The warm path (and `warm_after_idle`) is split into the phases the engine
//! reports to its observer
//! ([`phases`]), the engine's peak RSS is measured with a warm pool per language runtime,
//! and every figure is checked against the targets of issue 14 ([`targets`]).

pub mod baseline;
pub mod phases;
pub mod server;
pub mod targets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use isol8::docker::{connect, host_config, EngineConfig};
use isol8::settings::SandboxSettings;
use isol8::{DockerEngine, Engine, RuntimeRegistry};
use isol8_protocol::options::SecurityOptions;
use isol8_protocol::{
    EngineOptions, ExecutionRequest, ExecutionResult, PoolSize, PoolStrategy, SeccompMode,
};
use serde::Serialize;

use phases::{PhaseRecorder, PhaseSample, PhaseTimings, Reported};
use targets::TargetCheck;

/// Result alias of the benchmark.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Why a benchmark run stopped. The engine's and the daemon's errors pass through as
/// [`BenchError::Engine`].
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The engine (or the Docker daemon under it) failed.
    #[error(transparent)]
    Engine(#[from] isol8::Error),
    /// There is no hello-world program for the runtime.
    #[error("no benchmark program for runtime `{0}`")]
    UnknownRuntime(String),
    /// The hello-world program did not print `1` and exit 0 through the engine.
    #[error("benchmark program failed in {runtime}: exit {exit_code} stdout {stdout:?} stderr {stderr:?}")]
    ProgramFailed {
        /// Runtime.
        runtime: String,
        /// Its exit code.
        exit_code: i32,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A Docker baseline's command failed.
    #[error("docker {path} baseline failed for {runtime}: {detail}")]
    BaselineFailed {
        /// `exec` or `run`.
        path: &'static str,
        /// Runtime.
        runtime: String,
        /// Exit code and output.
        detail: String,
    },
    /// A throughput worker task panicked or was cancelled.
    #[error("a throughput worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// The in-process server of the `server` path could not be started.
    #[error("server benchmark: cannot {op}: {source}")]
    ServerIo {
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A request of the `server` path failed or its answer was not the expected result.
    #[error("server benchmark request failed: {0}")]
    ServerRequest(String),
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Runtimes to measure.
    pub runtimes: Vec<String>,
    /// Samples per path and runtime.
    pub n: usize,
    /// Concurrency levels of the throughput test.
    pub concurrency: Vec<usize>,
    /// Executions per throughput measurement.
    pub throughput_execs: usize,
    /// Runtimes whose throughput is measured.
    pub throughput_runtimes: Vec<String>,
}

impl BenchOptions {
    /// The options of `isol8 bench`: `runtimes` (empty: every built-in language runtime
    /// of [`RuntimeRegistry::builtin`]; not `agent`, whose code is a prompt to a model), `n` samples per path (default 30), throughput of every
    /// runtime at concurrency 1, 4 and 8 with 200 executions each. `quick` makes it short:
    /// 10 samples by default, python's throughput only (when python is measured), 40
    /// executions per level.
    pub fn new(runtimes: Vec<String>, n: Option<usize>, quick: bool) -> BenchOptions {
        let runtimes = if runtimes.is_empty() {
            language_runtimes()
        } else {
            runtimes
        };
        let throughput_runtimes: Vec<String> = if quick {
            runtimes
                .iter()
                .filter(|r| r.as_str() == "python")
                .take(1)
                .cloned()
                .collect()
        } else {
            runtimes.clone()
        };
        BenchOptions {
            runtimes,
            n: n.unwrap_or(if quick { 10 } else { 30 }),
            concurrency: vec![1, 4, 8],
            throughput_execs: if quick { 40 } else { 200 },
            throughput_runtimes,
        }
    }
}

/// Latency of one path for one runtime.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PathResult {
    /// Runtime.
    pub runtime: String,
    /// `cold`, `warm`, `warm_back_to_back`, `warm_fresh`, `warm_stdio`, `warm_audited`,
    /// `docker_exec`, `docker_run`, `server`, `server_remote` or `warm_paired`.
    pub path: String,
    /// Samples.
    pub n: usize,
    /// Fastest sample, ms.
    pub min_ms: f64,
    /// Median, ms.
    pub median_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// Median of the program's own `durationMs` from the execution result (whole
    /// milliseconds, truncated by the agent), ms. `null` for the Docker baselines: nothing
    /// inside their containers times the bare command.
    pub program_ms: Option<f64>,
    /// Median engine overhead, ms: end to end minus the program's `durationMs`, taken per
    /// sample, then the median. As `durationMs` is truncated, this reads up to 1 ms high
    /// (the true median lies in `(overhead_ms - 1, overhead_ms]`). `null` with
    /// `program_ms`.
    pub overhead_ms: Option<f64>,
}

/// One measured execution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// End to end, as the caller saw it, ms.
    pub total_ms: f64,
    /// The program's own `durationMs` from the result, ms (absent for the baselines).
    pub program_ms: Option<f64>,
}

/// Warm-path throughput at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Runtime.
    pub runtime: String,
    /// `warm` (the library) or `server` (through `POST /execute`).
    pub path: String,
    /// Concurrent executions.
    pub concurrency: usize,
    /// Completed executions per second.
    pub execs_per_s: f64,
    /// The engine's `maxConcurrent` during the measurement.
    pub max_concurrent: usize,
    /// Most executions the engine reported running at once (between "sandbox acquired"
    /// and "run finished" to its observer); absent where the engine is not observed (the
    /// `server` path).
    pub peak_running: Option<usize>,
}

/// The engine's peak resident memory with a warm pool per language runtime.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolsRss {
    /// Warm pools held (one per runtime in `runtimes`).
    pub pools: usize,
    /// Their runtimes.
    pub runtimes: Vec<String>,
    /// Peak resident memory (`VmHWM`) of this process while the engine held them and ran
    /// a few executions in each, MiB.
    pub peak_rss_mb: f64,
    /// True when the peak was reset (`/proc/self/clear_refs`) just before the engine was
    /// built, so it is not an earlier peak of the process; false: since process start.
    pub since_reset: bool,
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory, GiB.
    pub memory_gb: f64,
    /// Kernel release.
    pub kernel: String,
    /// Docker server version.
    pub docker: String,
    /// Docker API version in use.
    pub docker_api: String,
    /// CPU model.
    pub cpu_model: String,
}

/// The most measuring resource usage may add to a warm execution, ms (issue 13).
pub const MEASURING_TARGET_MS: f64 = 0.5;

/// What measuring each execution's resource usage costs on the warm path.
#[derive(Debug, Clone, Serialize)]
pub struct MeasuringCost {
    /// Warm python hello-world, the agent measuring (the default).
    pub measured: PathResult,
    /// The same, measuring off.
    pub unmeasured: PathResult,
    /// Median measured − median unmeasured, ms (noise can make it negative).
    pub difference_ms: f64,
    /// The target the difference should stay within, ms.
    pub target_ms: f64,
}

/// The most the strict seccomp profile may add to a cold start, ms (issue 14).
pub const SECCOMP_COLD_TARGET_MS: f64 = 5.0;

/// The most the strict seccomp profile may add to a warm run, ms (issue 14).
pub const SECCOMP_WARM_TARGET_MS: f64 = 0.3;

/// One path measured under the strict seccomp profile and under none.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileCost {
    /// The path with `security.seccomp` `strict` (the default).
    pub strict: PathResult,
    /// The same with `unconfined` (no filter).
    pub unconfined: PathResult,
    /// Median strict − median unconfined, ms (noise can make it negative).
    pub difference_ms: f64,
    /// The target the difference should stay within, ms.
    pub target_ms: f64,
}

/// What the strict seccomp profile costs, against no filter, in this run.
#[derive(Debug, Clone, Serialize)]
pub struct SeccompCost {
    /// Cold bash `echo 1` (path `cold`): the OCI runtime builds and loads the filter.
    pub cold: ProfileCost,
    /// Warm python hello-world (path `warm`): the program's system calls pass it.
    pub warm: ProfileCost,
}

/// Everything `isol8 bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The machine.
    pub machine: Machine,
    /// Latency per runtime and path.
    pub results: Vec<PathResult>,
    /// Warm throughput.
    pub throughput: Vec<Throughput>,
    /// Peak resident memory of this (engine) process, MiB.
    pub peak_rss_mb: f64,
    /// What measuring resource usage costs (when python is measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measuring: Option<MeasuringCost>,
    /// What the strict seccomp profile costs (when bash and python are measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompCost>,
    /// Where the warm path's time goes, per runtime (the phases the engine reports).
    pub phases: Vec<PhaseTimings>,
    /// The engine's peak RSS with a warm pool per language runtime (absent when it could
    /// not be measured).
    pub pools_rss: Option<PoolsRss>,
    /// Issue 14's targets against this run's figures.
    pub targets: Vec<TargetCheck>,
}

/// Hello-world code and its plain command line (for the Docker baselines).
fn hello(runtime: &str) -> Result<(&'static str, Vec<&'static str>)> {
    Ok(match runtime {
        "python" => ("print(1)", vec!["python3", "-c", "print(1)"]),
        "node" => ("console.log(1)", vec!["node", "-e", "console.log(1)"]),
        "bun" => ("console.log(1)", vec!["bun", "-e", "console.log(1)"]),
        "deno" => ("console.log(1)", vec!["deno", "eval", "console.log(1)"]),
        "bash" => ("echo 1", vec!["bash", "-c", "echo 1"]),
        other => return Err(BenchError::UnknownRuntime(other.to_string())),
    })
}

/// The `q` quantile of sorted `samples` (nearest rank; `None` when empty).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let idx = (last as f64 * q).round() as usize;
    sorted.get(idx.min(last)).copied()
}

/// Median of `samples` as [`summarize`] picks it (`None` when empty).
pub fn median(mut samples: Vec<f64>) -> Option<f64> {
    samples.sort_by(f64::total_cmp);
    quantile(&samples, 0.5)
}

/// Mean of `samples` (`None` when empty).
pub fn mean(samples: &[f64]) -> Option<f64> {
    (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64)
}

/// Min, median and p95 of `samples` (milliseconds) as a result row, without program
/// times (the Docker baselines).
pub fn summarize(runtime: &str, path: &str, mut samples: Vec<f64>) -> PathResult {
    samples.sort_by(f64::total_cmp);
    PathResult {
        runtime: runtime.to_string(),
        path: path.to_string(),
        n: samples.len(),
        min_ms: samples.first().copied().unwrap_or(0.0),
        median_ms: quantile(&samples, 0.5).unwrap_or(0.0),
        p95_ms: quantile(&samples, 0.95).unwrap_or(0.0),
        program_ms: None,
        overhead_ms: None,
    }
}

/// [`summarize`] of the end-to-end times, plus the median program time and the median
/// engine overhead (end to end − program, per sample, then the median) over the samples
/// that have a program time.
pub fn summarize_samples(runtime: &str, path: &str, samples: &[Sample]) -> PathResult {
    let timed: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.total_ms, s.program_ms?)))
        .collect();
    PathResult {
        program_ms: median(timed.iter().map(|t| t.1).collect()),
        overhead_ms: median(timed.iter().map(|t| t.0 - t.1).collect()),
        ..summarize(runtime, path, samples.iter().map(|s| s.total_ms).collect())
    }
}

/// Times one execution of `req` on `engine` (which must print `1` and exit 0), whose
/// observer is `recorder`: the end-to-end time, the program's own time (as the agent
/// timed it, in microseconds; the result's whole-millisecond `durationMs` where the
/// engine did not report it) and the phases the engine reported.
async fn timed(
    engine: &DockerEngine,
    recorder: &PhaseRecorder,
    req: &ExecutionRequest,
) -> Result<(Sample, Reported)> {
    timed_run(recorder, async {
        Ok(check(engine, req).await?.duration_ms as f64)
    })
    .await
}

/// Times `run`, an execution on an engine whose observer is `recorder` that yields the
/// result's `durationMs`: the end-to-end time, the program's own time (as the agent timed
/// it, in microseconds, where the engine reported it; else that `durationMs`) and the
/// phases the engine reported.
pub(crate) async fn timed_run(
    recorder: &PhaseRecorder,
    run: impl std::future::Future<Output = Result<f64>>,
) -> Result<(Sample, Reported)> {
    recorder.take();
    let t = Instant::now();
    let duration_ms = run.await?;
    let total_ms = ms(t.elapsed());
    let reported = recorder.take();
    Ok((
        Sample {
            total_ms,
            program_ms: Some(reported.program_ms.unwrap_or(duration_ms)),
        },
        reported,
    ))
}

/// How long the `warm_after_idle` path leaves the machine idle before each sample, once
/// the pool is ready: long enough for the latency to stop growing with the pause (on the
/// bench's VM it grew from 20 to about 300 ms and stayed flat up to 30 s).
pub const IDLE_PAUSE: Duration = Duration::from_millis(500);

/// `n` timed executions of `req`, each sent when `engine`'s pool is ready (its sandbox
/// reset and, where the runtime has one, its interpreter pre-started: an untimed
/// `prewarm` first) and `idle` later (zero: at once; the pool is polled every 20 ms, so
/// "at once" is within 20 ms of the pool becoming ready), after one warm-up that is not
/// counted.
async fn ready_samples(
    engine: &DockerEngine,
    recorder: &PhaseRecorder,
    req: &ExecutionRequest,
    n: usize,
    idle: Duration,
) -> Result<Vec<(Sample, Reported)>> {
    let runtime = std::slice::from_ref(&req.runtime);
    engine.prewarm(runtime).await?;
    check(engine, req).await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        engine.prewarm(runtime).await?;
        if !idle.is_zero() {
            tokio::time::sleep(idle).await;
        }
        out.push(timed(engine, recorder, req).await?);
    }
    Ok(out)
}

/// Whether `runtime` runs its programs differently from a plain fresh start (a
/// pre-started interpreter, a preloaded library): such runtimes get `warm_fresh` rows.
fn starts_differently(runtime: &isol8::runtime::Runtime) -> bool {
    runtime.prestart.is_some() || runtime.code_preload.is_some()
}

/// The samples of [`ready_samples`]' pairs.
fn samples_of(pairs: Vec<(Sample, Reported)>) -> Vec<Sample> {
    pairs.into_iter().map(|(s, _)| s).collect()
}

/// `pairs` as a path's result row and phase timings, for `runtime` and `path`.
fn row_and_phases(
    runtime: &str,
    path: &str,
    pairs: Vec<(Sample, Reported)>,
) -> (PathResult, phases::PhaseTimings) {
    let split: Vec<PhaseSample> = pairs
        .iter()
        .map(|(s, reported)| PhaseSample::of(s, *reported))
        .collect();
    (
        summarize_samples(runtime, path, &samples_of(pairs)),
        phases::phase_timings(runtime, path, &split),
    )
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn engine(pool: u32, max_concurrent: usize) -> Result<DockerEngine> {
    engine_built(pool, max_concurrent, None, true, None, Starts::default()).await
}

/// How an engine of the bench starts programs, carries frames and filters system calls.
#[derive(Debug, Clone, Copy, Default)]
struct Starts {
    /// Every program starts fresh (`EngineConfig::fresh_starts`).
    fresh: bool,
    /// Frames go through the attached stdio (`EngineConfig::stdio_frames`).
    stdio: bool,
    /// `security.seccomp` (the default, `strict`, when `None`).
    seccomp: Option<SeccompMode>,
}

/// [`engine`], reporting to `recorder`, starting programs and carrying frames as
/// `starts` says.
async fn engine_observed(
    pool: u32,
    max_concurrent: usize,
    recorder: &Arc<PhaseRecorder>,
    starts: Starts,
) -> Result<DockerEngine> {
    let observer: isol8::stats::Observer = recorder.clone();
    engine_built(pool, max_concurrent, None, true, Some(observer), starts).await
}

/// [`engine`], with the agent measuring each execution or not.
async fn engine_measuring(pool: u32, max_concurrent: usize, measure: bool) -> Result<DockerEngine> {
    engine_built(pool, max_concurrent, None, measure, None, Starts::default()).await
}

/// [`engine`], writing the audit log (code and output included) in `audit_dir`, and
/// reporting to `recorder`.
async fn engine_audited(
    pool: u32,
    max_concurrent: usize,
    audit_dir: &std::path::Path,
    recorder: &Arc<PhaseRecorder>,
) -> Result<DockerEngine> {
    let observer: isol8::stats::Observer = recorder.clone();
    engine_built(
        pool,
        max_concurrent,
        Some(audit_dir),
        true,
        Some(observer),
        Starts::default(),
    )
    .await
}

/// An engine with a warm pool of `pool`, the audit log in `audit_dir` (if given), the
/// agent measuring executions or not, reporting to `observer` (if given), and starting
/// programs and carrying frames as `starts` says.
async fn engine_built(
    pool: u32,
    max_concurrent: usize,
    audit_dir: Option<&std::path::Path>,
    measure: bool,
    observer: Option<isol8::stats::Observer>,
    starts: Starts,
) -> Result<DockerEngine> {
    let options = EngineOptions {
        pool_strategy: Some(PoolStrategy::Fast),
        pool_size: Some(PoolSize::Split {
            clean: pool,
            dirty: pool,
        }),
        security: starts.seccomp.map(|mode| SecurityOptions {
            seccomp: Some(mode),
            ..Default::default()
        }),
        ..Default::default()
    };
    let audit = match audit_dir {
        Some(dir) => isol8::config::AuditConfig {
            enabled: Some(true),
            log_dir: Some(dir.to_string_lossy().into_owned()),
            include_code: Some(true),
            include_output: Some(true),
            ..Default::default()
        },
        None => Default::default(),
    };
    Ok(DockerEngine::connect_with(EngineConfig {
        options,
        max_concurrent: Some(max_concurrent),
        skip_usage: !measure,
        audit,
        observer,
        fresh_starts: starts.fresh,
        stdio_frames: starts.stdio,
        ..Default::default()
    })
    .await?)
}

/// Samples per side of the measuring-cost comparison: at least 30, as a median of
/// fewer warm runs moves by more than the half millisecond it is about.
fn measuring_samples(n: usize) -> usize {
    n.max(30)
}

/// Runs warm python hello-worlds alternately on an engine that measures and one that
/// does not, `n` of each (after one unmeasured warm-up each).
pub async fn measuring_cost(n: usize) -> Result<MeasuringCost> {
    let (src, _) = hello("python")?;
    let req = ExecutionRequest {
        runtime: "python".into(),
        code: Some(src.to_string()),
        ..Default::default()
    };
    let on = engine_measuring(1, 1, true).await?;
    let off = engine_measuring(1, 1, false).await?;
    let (with, without) = interleaved(n, [&on, &off], &req, true).await?;
    on.stop().await?;
    off.stop().await?;
    let measured = summarize("python", "warm_measured", with);
    let unmeasured = summarize("python", "warm_unmeasured", without);
    Ok(MeasuringCost {
        difference_ms: measured.median_ms - unmeasured.median_ms,
        measured,
        unmeasured,
        target_ms: MEASURING_TARGET_MS,
    })
}

/// Runs `req` `n` times on each of `engines`, alternating which goes first so neither
/// always follows the other, after one unmeasured run each; the samples in ms, per
/// engine. With `ready`, each sample waits (untimed) for the engine's pool to be ready.
async fn interleaved(
    n: usize,
    engines: [&DockerEngine; 2],
    req: &ExecutionRequest,
    ready: bool,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let runtime = std::slice::from_ref(&req.runtime);
    for e in engines {
        if ready {
            e.prewarm(runtime).await?;
        }
        check(e, req).await?;
    }
    let mut samples = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for i in 0..n {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            if ready {
                engines[k].prewarm(runtime).await?;
            }
            let t = Instant::now();
            check(engines[k], req).await?;
            samples[k].push(ms(t.elapsed()));
        }
    }
    let [a, b] = samples;
    Ok((a, b))
}

/// One path under the strict profile and under none: `n` interleaved samples each on
/// engines with a pool of `pool`.
async fn profile_cost(
    n: usize,
    runtime: &str,
    pool: u32,
    path: &str,
    target_ms: f64,
) -> Result<ProfileCost> {
    let req = hello_request(runtime)?;
    let with = |mode| Starts {
        seccomp: Some(mode),
        ..Default::default()
    };
    let strict = engine_built(pool, 1, None, true, None, with(SeccompMode::Strict)).await?;
    let unconfined = engine_built(pool, 1, None, true, None, with(SeccompMode::Unconfined)).await?;
    let samples = interleaved(n, [&strict, &unconfined], &req, pool > 0).await;
    strict.stop().await?;
    unconfined.stop().await?;
    let (a, b) = samples?;
    let strict = summarize(runtime, &format!("{path}_strict"), a);
    let unconfined = summarize(runtime, &format!("{path}_unconfined"), b);
    Ok(ProfileCost {
        difference_ms: strict.median_ms - unconfined.median_ms,
        strict,
        unconfined,
        target_ms,
    })
}

/// Samples per side of the cold seccomp comparison: at least 120, as a cold start here
/// varies by 20–40 ms between samples: with 30–60 a side the difference of medians of
/// two identical paths moved by ±5–8 ms, more than the 5 ms target it is about.
fn cold_profile_samples(n: usize) -> usize {
    (4 * n).max(120)
}

/// What the strict seccomp profile costs: cold bash and warm python, interleaved samples
/// per side ([`cold_profile_samples`] cold, [`measuring_samples`] warm).
pub async fn seccomp_cost(n: usize) -> Result<SeccompCost> {
    Ok(SeccompCost {
        cold: profile_cost(
            cold_profile_samples(n),
            "bash",
            0,
            "cold",
            SECCOMP_COLD_TARGET_MS,
        )
        .await?,
        warm: profile_cost(
            measuring_samples(n),
            "python",
            1,
            "warm",
            SECCOMP_WARM_TARGET_MS,
        )
        .await?,
    })
}

pub(crate) async fn check<E: Engine>(
    engine: &E,
    req: &ExecutionRequest,
) -> Result<ExecutionResult> {
    let r = engine.execute(req.clone()).await?;
    if r.exit_code != 0 || r.stdout.trim() != "1" {
        return Err(BenchError::ProgramFailed {
            runtime: req.runtime.clone(),
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
        });
    }
    Ok(r)
}

/// Executions per runtime in the engine holding every warm pool, before its peak RSS is
/// read (so the run path, not only the pools, has allocated what it needs).
const RSS_RUNS: usize = 3;

/// Every built-in language runtime (not `agent`, whose code is a prompt to a model).
fn language_runtimes() -> Vec<String> {
    RuntimeRegistry::builtin()
        .names()
        .into_iter()
        .filter(|n| *n != isol8::runtime::agent::NAME)
        .map(str::to_string)
        .collect()
}

/// A hello-world request for `runtime`.
pub(crate) fn hello_request(runtime: &str) -> Result<ExecutionRequest> {
    let (src, _) = hello(runtime)?;
    Ok(ExecutionRequest {
        runtime: runtime.to_string(),
        code: Some(src.to_string()),
        ..Default::default()
    })
}

/// Resets this process's peak resident memory (`VmHWM`) to its current RSS (Linux 4.0+);
/// false when the kernel refused.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The engine's peak RSS with a warm pool (the default size) for every language runtime
/// whose pool can be filled — runtimes in `measured` must be, the others are left out
/// when their image is missing (`pools` says how many were held) — after [`RSS_RUNS`]
/// executions in each. Run first, before any other engine of the bench exists.
pub async fn pools_rss(
    measured: &[String],
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<PoolsRss> {
    let since_reset = reset_peak_rss();
    let e = engine(1, 1).await?;
    let outcome = async {
        let mut warmed = Vec::new();
        for rt in language_runtimes() {
            match e.prewarm(std::slice::from_ref(&rt)).await {
                Ok(()) => warmed.push(rt),
                Err(err) if !measured.contains(&rt) => {
                    progress(format!("{rt}: no warm pool for the RSS measurement: {err}"))
                }
                Err(err) => return Err(err.into()),
            }
        }
        for rt in &warmed {
            let req = hello_request(rt)?;
            for _ in 0..RSS_RUNS {
                check(&e, &req).await?;
            }
        }
        Ok::<_, BenchError>(warmed)
    }
    .await;
    let peak_rss_mb = peak_rss_mb();
    e.stop().await?;
    let runtimes = outcome?;
    Ok(PoolsRss {
        pools: runtimes.len(),
        runtimes,
        peak_rss_mb,
        since_reset,
    })
}

/// Runs the benchmark (with the `server` path when python is measured); `progress`
/// receives a line per step.
pub async fn run(
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<BenchReport> {
    let docker = connect().await?;
    let machine = machine(&docker).await;
    progress(format!(
        "engine peak RSS with {} warm pools",
        targets::POOLS
    ));
    let pools_rss = pools_rss(&opts.runtimes, progress).await?;
    let settings = SandboxSettings::resolve(&EngineOptions::default())?;
    let host: bollard::models::HostConfig = host_config(&settings)?.into();
    let registry = RuntimeRegistry::builtin();
    let mut results = Vec::new();
    let mut phases = Vec::new();
    let cold_recorder = PhaseRecorder::new();
    let cold_engine = engine_observed(0, 1, &cold_recorder, Starts::default()).await?;
    let recorder = PhaseRecorder::new();
    let warm_engine = engine_observed(1, 1, &recorder, Starts::default()).await?;
    let fresh_recorder = PhaseRecorder::new();
    let fresh = Starts {
        fresh: true,
        ..Default::default()
    };
    let fresh_engine = engine_observed(1, 1, &fresh_recorder, fresh).await?;
    let stdio_recorder = PhaseRecorder::new();
    let stdio = Starts {
        stdio: true,
        ..Default::default()
    };
    let stdio_engine = engine_observed(1, 1, &stdio_recorder, stdio).await?;
    let audit_dir = std::env::temp_dir().join(format!(
        "isol8-bench-audit-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let audited_recorder = PhaseRecorder::new();
    let audited_engine = engine_audited(1, 1, &audit_dir, &audited_recorder).await?;

    for runtime in &opts.runtimes {
        let (_, argv) = hello(runtime)?;
        let image = registry.get(runtime)?.image.clone();
        let req = hello_request(runtime)?;

        // `warm`: a request that finds the pool ready — its sandbox reset and, where the
        // runtime has one, its interpreter pre-started and waiting (untimed `prewarm`
        // before each sample). `warm_back_to_back`: each request sent as soon as the
        // one before returned, so it waits for that one's reset and pre-start.
        progress(format!("{runtime}: warm"));
        let warm = ready_samples(&warm_engine, &recorder, &req, opts.n, Duration::ZERO).await?;
        let (row, split) = row_and_phases(runtime, "warm", warm);
        results.push(row);
        phases.push(split);
        let mut back_to_back = Vec::new();
        for _ in 0..opts.n {
            back_to_back.push(timed(&warm_engine, &recorder, &req).await?.0);
        }
        results.push(summarize_samples(
            runtime,
            "warm_back_to_back",
            &back_to_back,
        ));
        // `warm_after_idle`: the same ready pool, the request sent after the machine sat
        // idle for a while, as sporadic traffic arrives (the CPUs have gone to sleep and
        // the program's memory is no longer in their caches).
        progress(format!("{runtime}: warm after an idle pause"));
        let after_idle = ready_samples(&warm_engine, &recorder, &req, opts.n, IDLE_PAUSE).await?;
        let (row, split) = row_and_phases(runtime, "warm_after_idle", after_idle);
        results.push(row);
        phases.push(split);

        if starts_differently(registry.get(runtime)?) {
            // The same ready pool with every program started fresh and plain: what
            // pre-starting and the teardown library save, measured in this run.
            progress(format!("{runtime}: warm, started fresh"));
            let fresh =
                ready_samples(&fresh_engine, &fresh_recorder, &req, opts.n, Duration::ZERO).await?;
            results.push(summarize_samples(runtime, "warm_fresh", &samples_of(fresh)));
        }

        // The same ready pool with the frames through dockerd's attach stream: what the
        // data socket saves, measured in this run.
        progress(format!(
            "{runtime}: warm, frames through the attached stdio"
        ));
        let stdio =
            ready_samples(&stdio_engine, &stdio_recorder, &req, opts.n, Duration::ZERO).await?;
        results.push(summarize_samples(runtime, "warm_stdio", &samples_of(stdio)));

        progress(format!("{runtime}: warm, audited"));
        let audited = ready_samples(
            &audited_engine,
            &audited_recorder,
            &req,
            opts.n,
            Duration::ZERO,
        )
        .await?;
        results.push(summarize_samples(
            runtime,
            "warm_audited",
            &samples_of(audited),
        ));

        progress(format!("{runtime}: docker exec"));
        results.push(summarize(
            runtime,
            "docker_exec",
            baseline::docker_exec(&docker, &image, runtime, &argv, &host, opts.n).await?,
        ));

        progress(format!("{runtime}: cold"));
        let mut cold = Vec::new();
        for _ in 0..opts.n {
            cold.push(timed(&cold_engine, &cold_recorder, &req).await?.0);
        }
        results.push(summarize_samples(runtime, "cold", &cold));

        progress(format!("{runtime}: docker run"));
        let mut run = Vec::new();
        for _ in 0..opts.n {
            run.push(baseline::docker_run(&docker, &image, runtime, &argv, &host).await?);
        }
        results.push(summarize(runtime, "docker_run", run));
    }
    warm_engine.stop().await?;
    fresh_engine.stop().await?;
    stdio_engine.stop().await?;
    audited_engine.stop().await?;
    let _ = std::fs::remove_dir_all(&audit_dir);
    cold_engine.stop().await?;

    let mut throughput = Vec::new();
    let mut kinds = Vec::new();
    for runtime in &opts.throughput_runtimes {
        kinds.push((runtime, false));
        // Pre-starting moves the interpreter's start-up off the request's path but not
        // off the CPU: the same ready pool with fresh starts, measured beside it.
        if starts_differently(registry.get(runtime)?) {
            kinds.push((runtime, true));
        }
    }
    for (runtime, fresh) in kinds {
        let req = hello_request(runtime)?;
        let path = if fresh { "warm_fresh" } else { "warm" };
        for &c in &opts.concurrency {
            progress(format!("{runtime}: {path} throughput at concurrency {c}"));
            let recorder = PhaseRecorder::new();
            let starts = Starts {
                fresh,
                ..Default::default()
            };
            let e = engine_observed(c as u32, c, &recorder, starts).await?;
            e.prewarm(std::slice::from_ref(runtime)).await?;
            check(&e, &req).await?;
            let t = Instant::now();
            let per_worker = opts.throughput_execs.div_ceil(c);
            let workers = (0..c).map(|_| {
                let e = e.clone();
                let req = req.clone();
                tokio::spawn(async move {
                    for _ in 0..per_worker {
                        check(&e, &req).await?;
                    }
                    Ok::<_, BenchError>(())
                })
            });
            for w in futures_util::future::join_all(workers).await {
                w??;
            }
            let elapsed = t.elapsed().as_secs_f64();
            throughput.push(Throughput {
                runtime: runtime.clone(),
                path: path.into(),
                concurrency: c,
                execs_per_s: (per_worker * c) as f64 / elapsed,
                max_concurrent: c,
                peak_running: Some(recorder.peak_running()),
            });
            e.stop().await?;
        }
    }
    let measuring = if opts.runtimes.iter().any(|r| r == "python") {
        progress("python: warm with and without measuring resource usage".to_string());
        Some(measuring_cost(measuring_samples(opts.n)).await?)
    } else {
        None
    };
    let seccomp = if ["python", "bash"]
        .iter()
        .all(|r| opts.runtimes.iter().any(|m| m == r))
    {
        progress("seccomp: cold bash and warm python, strict and unconfined".to_string());
        Some(seccomp_cost(opts.n).await?)
    } else {
        None
    };
    // The engine's own peak, before the server path adds the server's.
    let peak_rss_mb = peak_rss_mb();
    if opts.runtimes.iter().any(|r| r == "python") {
        progress("python through the HTTP server".to_string());
        let server = server::run(opts.n, opts.throughput_execs).await?;
        results.extend(server.rows);
        phases.extend(server.phases);
        throughput.push(server.throughput);
    }
    let mut report = BenchReport {
        machine,
        results,
        throughput,
        peak_rss_mb,
        measuring,
        seccomp,
        phases,
        pools_rss: Some(pools_rss),
        targets: Vec::new(),
    };
    report.targets = targets::check(&report, &opts.runtimes);
    Ok(report)
}

async fn machine(docker: &bollard::Docker) -> Machine {
    let version = docker.version().await.ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_gb: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        docker: version
            .as_ref()
            .and_then(|v| v.version.clone())
            .unwrap_or_default(),
        docker_api: docker.client_version().to_string(),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
    }
}

/// Peak resident memory of this process (VmHWM), MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0 * 10.0).round() / 10.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_sorted_samples() {
        let r = summarize("python", "warm", vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((r.min_ms, r.median_ms, r.p95_ms, r.n), (1.0, 3.0, 5.0, 5));
        let empty = summarize("python", "warm", vec![]);
        assert_eq!(empty.n, 0);
    }

    #[test]
    fn overhead_is_taken_per_sample_then_the_median() {
        let s = |total_ms, program_ms| Sample {
            total_ms,
            program_ms: Some(program_ms),
        };
        // Overheads 1, 10, 2: median 2 — not median total − median program (20 − 10).
        let r = summarize_samples(
            "python",
            "warm",
            &[s(10.0, 9.0), s(20.0, 10.0), s(30.0, 28.0)],
        );
        assert_eq!((r.n, r.median_ms), (3, 20.0));
        assert_eq!(r.program_ms, Some(10.0));
        assert_eq!(r.overhead_ms, Some(2.0));
        // Samples without a program time count for the latency only.
        let untimed = Sample {
            total_ms: 100.0,
            program_ms: None,
        };
        let r = summarize_samples("python", "warm", &[s(3.0, 2.0), untimed]);
        assert_eq!(
            (r.n, r.overhead_ms, r.program_ms),
            (2, Some(1.0), Some(2.0))
        );
        let baseline = summarize("python", "docker_exec", vec![50.0]);
        assert_eq!((baseline.program_ms, baseline.overhead_ms), (None, None));
        assert_eq!(median(vec![]), None);
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
    }

    #[test]
    fn the_json_report_keeps_its_fields_and_adds_the_new_ones() {
        let r = summarize_samples(
            "python",
            "warm",
            &[Sample {
                total_ms: 3.0,
                program_ms: Some(2.0),
            }],
        );
        let v = serde_json::to_value(&r).expect("json");
        for key in ["runtime", "path", "n", "min_ms", "median_ms", "p95_ms"] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["program_ms"], 2.0);
        assert_eq!(v["overhead_ms"], 1.0);
        // The baselines say "not measured" with null, not a made-up zero.
        let b = serde_json::to_value(summarize("python", "docker_exec", vec![1.0])).expect("json");
        assert!(
            b["program_ms"].is_null() && b["overhead_ms"].is_null(),
            "{b}"
        );
    }

    #[test]
    fn options_default_to_every_builtin_runtime_and_quick_shortens_the_run() {
        let full = BenchOptions::new(vec![], None, false);
        assert_eq!(full.runtimes, ["python", "node", "bun", "bash", "deno"]);
        assert_eq!(full.throughput_runtimes, full.runtimes);
        assert_eq!((full.n, full.throughput_execs), (30, 200));
        assert_eq!(full.concurrency, [1, 4, 8]);
        let quick = BenchOptions::new(vec!["bash".into(), "python".into()], None, true);
        assert_eq!(quick.runtimes, ["bash", "python"]);
        assert_eq!(quick.throughput_runtimes, ["python"]);
        assert_eq!((quick.n, quick.throughput_execs), (10, 40));
        let bash = BenchOptions::new(vec!["bash".into()], Some(2), true);
        assert_eq!(bash.n, 2);
        assert!(bash.throughput_runtimes.is_empty());
    }

    #[test]
    fn every_builtin_runtime_has_a_benchmark_program() {
        // Every language runtime: the agent's code is a prompt to a model, not benchmarked.
        for rt in BenchOptions::new(vec![], None, false).runtimes {
            assert!(hello(&rt).is_ok(), "{rt}");
        }
        assert!(RuntimeRegistry::builtin().names().contains(&"agent"));
        assert!(hello("cobol").is_err());
    }
}
