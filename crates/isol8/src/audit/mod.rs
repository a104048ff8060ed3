//! The audit log (config `audit.*`, SPEC section 9): one JSON line per execution.
//!
//! An engine with an [`AuditLog`] (`EngineConfig::audit`, opened from the configuration
//! file's `audit` section) writes one [`AuditRecord`] for every execution it is asked
//! for — buffered, streamed, interactive (a server's WebSocket), in a persistent session
//! — whether the program ran to its end (`outcome: "completed"`), the run failed
//! (`"failed"`: sandbox lost, package install failed…), its consumer went away while
//! it was queued or ran (`"cancelled"`) or the engine refused it before anything ran (`"refused"`: invalid
//! request, queue timeout, stopped engine). A server also records the requests its own
//! policy refuses, and names the caller (tenant and key id) of every record through
//! [`scope`].
//!
//! # Writing
//!
//! [`AuditLog::record`] hands the record to a channel and returns: a dedicated writer
//! thread serialises it and appends it as one line (`write_all` of the whole line, by
//! that one thread only, so lines never interleave or split), flushing after each batch.
//! The channel is unbounded, so no record is dropped when executions run concurrently.
//! Records reach the channel before the execution's result reaches its caller, and
//! [`AuditLog::flush`] waits until everything recorded before it is written; an
//! engine's `flush_audit()` calls it, its `stop()` too (after letting the executions
//! it cut off record themselves, up to 5 s), and dropping the
//! last handle drains the channel and joins the writer, so a CLI that exits right after
//! a run loses nothing.
//!
//! # Destinations
//!
//! - `filesystem` (default): daily files `executions-YYYY-MM-DD.jsonl` (UTC date of the
//!   write) in `logDir` (default `ISOL8_AUDIT_DIR`, else `./.isol8_audit`), created with
//!   mode 0600 in a directory created with mode 0700. Files of that name whose date is
//!   more than `retentionDays` days before today are deleted when the log opens and at
//!   each change of day (`0` keeps every file). Other files in the directory are never
//!   touched.
//! - `stdout`: each record as one line on standard output.
//!
//! `postLogScript` (filesystem only) runs after records are written, with the path of
//! the file written as its only argument, on a thread of its own: the writer never
//! waits for it. At most one script process runs at a time; records written while it
//! runs lead to one more run after it ends (not one per record). A script still running
//! after [`SCRIPT_TIMEOUT`] is killed.
//!
//! # Record fields
//!
//! Field names are camelCase; optional fields are absent (never `null`) when unset.
//!
//! | field | type | when | meaning |
//! |---|---|---|---|
//! | `executionId` | string | always | the execution's id (UUID); the result's `executionId`, and on a server the id its logs and 5xx answers name |
//! | `timestamp` | string | always | RFC 3339 UTC time, milliseconds, the execution was accepted |
//! | `outcome` | string | always | `completed`, `failed`, `cancelled` or `refused` (above) |
//! | `runtime` | string | always | the request's runtime |
//! | `image` | string | once prepared | the image the sandbox ran |
//! | `codeHash` | string | always | SHA-256 (lowercase hex) of the request's `code`, else its `cmd` (of the fetched code for `codeUrl`), else of nothing |
//! | `userId` | string | always | the request's `metadata.userId`, else `""` (as the reference) |
//! | `tenant` | string | server | the caller's tenant (`master` for the master key) |
//! | `keyId` | string | server, database keys | the API key's id |
//! | `sessionId` | string | session runs on a server | the session's id |
//! | `requestId` | string | server, when sent | the client's `X-Request-Id` |
//! | `containerId` | string | when a sandbox ran it | the container's id |
//! | `exitCode` | integer | `completed` | the program's exit status |
//! | `exitReason` | string | when the result has it | why the program ended (the result's `exitReason`; `sandboxLost` for a lost sandbox) |
//! | `durationMs` | integer | always | `completed`: the program's run time; otherwise the time from acceptance to the end |
//! | `truncated` | boolean | `completed` | output hit `maxOutputSize` |
//! | `resourceUsage` | object | `trackResources` and measured | the result's `resourceUsage` (`cpuPercent`, `memoryMB`, `peakMemoryMB`, `networkBytesIn`, `networkBytesOut`) |
//! | `network` | object | always | `mode` (`none`, `filtered`, `host`); in `filtered` mode also `requests`, `allowed`, `blocked` (counts) and `hosts` (distinct host names asked for, sorted, at most 20, secrets masked) |
//! | `metadata` | object | when given | the request's `metadata` (values with secrets masked) |
//! | `error` | string | `failed`, `refused` | what went wrong (secrets masked) |
//! | `code` | string | `includeCode` | the code (or `cmd`), secrets masked |
//! | `stdout` | string | `includeOutput` | the output the caller got (masked, capped) |
//! | `stderr` | string | `includeOutput` | likewise |

mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use isol8_protocol::{
    ExecutionRequest, ExecutionResult, ExitReason, NetworkLog, NetworkMode, ResourceUsage,
};
use serde::Serialize;
use sha2::Digest as _;

use crate::config::{AuditConfig, AuditDestination};
use crate::output::Secrets;
use crate::{Error, Result};

pub use writer::{AuditLog, Clock, SystemClock};

/// How long a `postLogScript` run may take before it is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `logDir` when neither the configuration nor `ISOL8_AUDIT_DIR` names one.
pub const DEFAULT_DIR: &str = ".isol8_audit";

/// Environment variable naming the default `logDir`.
pub const DIR_ENV: &str = "ISOL8_AUDIT_DIR";

/// At most this many host names in a record's `network.hosts`.
pub const MAX_HOSTS: usize = 20;

/// How an audited execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The program ran and exited (any exit code, timeout and memory kills included).
    Completed,
    /// The execution started but failed without an exit code of the program (sandbox
    /// lost, failed package install, engine stopped).
    Failed,
    /// Its consumer went away (client disconnected) and the execution was killed.
    Cancelled,
    /// Refused before anything ran (invalid request, server policy, queue timeout).
    Refused,
}

/// The network part of a record: the mode, and in `filtered` mode what the egress
/// proxy saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSummary {
    /// `none`, `filtered` or `host`.
    pub mode: Option<NetworkMode>,
    /// Requests the egress proxy decided on (filtered mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Of those, allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<u64>,
    /// Of those, refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<u64>,
    /// Distinct host names asked for, sorted, at most [`MAX_HOSTS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
}

impl NetworkSummary {
    /// The summary of an execution in `mode` whose proxy logged `logs` (filtered mode;
    /// host names masked with `secrets`).
    pub fn new(mode: NetworkMode, logs: Option<&[NetworkLog]>, secrets: &Secrets) -> Self {
        let mut s = NetworkSummary {
            mode: Some(mode),
            ..Default::default()
        };
        if mode != NetworkMode::Filtered {
            return s;
        }
        let logs = logs.unwrap_or_default();
        let allowed = logs.iter().filter(|l| l.action == "ALLOW").count() as u64;
        let mut hosts: Vec<String> = logs
            .iter()
            .map(|l| secrets.mask_str(&l.host).into_owned())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts.truncate(MAX_HOSTS);
        s.requests = Some(logs.len() as u64);
        s.allowed = Some(allowed);
        s.blocked = Some(logs.len() as u64 - allowed);
        s.hosts = Some(hosts);
        s
    }
}

/// One line of the audit log. See the module documentation for the field table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// The execution's id (UUID).
    pub execution_id: String,
    /// RFC 3339 UTC time the execution was accepted (milliseconds).
    pub timestamp: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The request's runtime.
    pub runtime: String,
    /// The image the sandbox ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// SHA-256 (lowercase hex) of the code (or `cmd`).
    pub code_hash: String,
    /// `metadata.userId`, else empty.
    pub user_id: String,
    /// The caller's tenant (server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The caller's API key id (server, database keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The session's id (server sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The client's `X-Request-Id` (server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The container that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The program's exit status (`completed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the program ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<ExitReason>,
    /// Milliseconds: the program's run time (`completed`), else acceptance to end.
    pub duration_ms: u64,
    /// Output hit `maxOutputSize` (`completed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Resource figures (with `trackResources`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_usage: Option<ResourceUsage>,
    /// Network mode and egress summary.
    pub network: NetworkSummary,
    /// The request's metadata (masked).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// What went wrong (`failed`, `refused`; masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The code (with `includeCode`; masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Standard output (with `includeOutput`; masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Standard error (with `includeOutput`; masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

/// The resolved `audit` section: what an [`AuditLog`] does.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    /// Where records go.
    pub destination: AuditDestination,
    /// Directory of the daily files (filesystem).
    pub dir: PathBuf,
    /// Run after writes with the file's path (filesystem).
    pub post_log_script: Option<PathBuf>,
    /// Put `resourceUsage` in records.
    pub track_resources: bool,
    /// Days of files kept (0: all).
    pub retention_days: u32,
    /// Put the code in records.
    pub include_code: bool,
    /// Put the output in records.
    pub include_output: bool,
}

impl AuditSettings {
    /// The settings of `config`; `None` when auditing is off (`enabled` unset or false).
    /// Errors name the key: `audit.postLogScript` that is not an executable file, or set
    /// with the `stdout` destination. The directory is checked when the log opens.
    pub fn resolve(config: &AuditConfig) -> Result<Option<AuditSettings>> {
        if config.enabled != Some(true) {
            return Ok(None);
        }
        let destination = config.destination.unwrap_or_default();
        let dir = match &config.log_dir {
            Some(d) if d.trim().is_empty() => {
                return Err(Error::option("audit.logDir", "must not be empty"))
            }
            Some(d) => PathBuf::from(d),
            None => std::env::var_os(DIR_ENV)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)),
        };
        let post_log_script = match &config.post_log_script {
            None => None,
            Some(_) if destination == AuditDestination::Stdout => {
                return Err(Error::option(
                    "audit.postLogScript",
                    "runs with the path of an audit file, so it needs `audit.destination: \"filesystem\"`; remove it or write to files",
                ))
            }
            Some(s) => Some(check_script(s)?),
        };
        Ok(Some(AuditSettings {
            destination,
            dir,
            post_log_script,
            track_resources: config.track_resources.unwrap_or(true),
            retention_days: config.retention_days.unwrap_or(AuditConfig::RETENTION_DAYS),
            include_code: config.include_code.unwrap_or(false),
            include_output: config.include_output.unwrap_or(false),
        }))
    }
}

/// The absolute path of an executable `postLogScript`.
fn check_script(script: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let bad = |why: String| Error::option("audit.postLogScript", why);
    let path = std::fs::canonicalize(script).map_err(|e| bad(format!("`{script}`: {e}")))?;
    let meta = std::fs::metadata(&path).map_err(|e| bad(format!("`{script}`: {e}")))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(bad(format!(
            "`{script}` is not an executable file; `chmod +x` it"
        )));
    }
    Ok(path)
}

/// Who asked for the executions run inside a [`scope`]: what a server knows of its
/// caller, copied into every record (and the execution id it assigned, which becomes
/// the execution's id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditCaller {
    /// The caller's tenant.
    pub tenant: Option<String>,
    /// The caller's API key id.
    pub key_id: Option<String>,
    /// The session the execution runs in.
    pub session_id: Option<String>,
    /// The client's request id.
    pub request_id: Option<String>,
    /// The id to give the execution (instead of a new UUID).
    pub execution_id: Option<String>,
}

tokio::task_local! {
    static CALLER: AuditCaller;
}

/// Runs `fut` with `caller` as the caller of every execution it launches: an engine
/// reads it when the execution is admitted (in the calling task, before anything is
/// spawned), so it holds for buffered, streamed and interactive runs alike.
pub async fn scope<F: std::future::Future>(caller: AuditCaller, fut: F) -> F::Output {
    CALLER.scope(caller, fut).await
}

/// The caller of the current [`scope`], if any.
pub fn current_caller() -> Option<AuditCaller> {
    CALLER.try_with(Clone::clone).ok()
}

/// SHA-256 of `text`, lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The current time as records write it.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The start of a record: everything known when an execution is admitted. The engine
/// builds one per execution (only when auditing) and completes it when the run ends.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The record so far.
    pub record: AuditRecord,
    /// When it was accepted (for `durationMs` of runs that did not finish).
    pub started: std::time::Instant,
}

impl Draft {
    /// The draft of `req` (code already fetched, if it came from a `codeUrl`), with the
    /// current [`scope`]'s caller, its values masked with `secrets`.
    pub fn new(
        settings: &AuditSettings,
        execution_id: String,
        req: &ExecutionRequest,
        secrets: &Secrets,
        network: Option<NetworkMode>,
    ) -> Draft {
        let caller = current_caller().unwrap_or_default();
        let code = req.code.as_deref().or(req.cmd.as_deref()).unwrap_or("");
        let metadata: BTreeMap<String, String> = req
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), secrets.mask_str(v).into_owned()))
            .collect();
        Draft {
            record: AuditRecord {
                execution_id,
                timestamp: timestamp(Utc::now()),
                outcome: Outcome::Refused,
                runtime: req.runtime.clone(),
                image: None,
                code_hash: sha256_hex(code),
                user_id: metadata.get("userId").cloned().unwrap_or_default(),
                tenant: caller.tenant,
                key_id: caller.key_id,
                session_id: caller.session_id,
                request_id: caller.request_id,
                container_id: None,
                exit_code: None,
                exit_reason: None,
                duration_ms: 0,
                truncated: None,
                resource_usage: None,
                network: NetworkSummary {
                    mode: network,
                    ..Default::default()
                },
                metadata,
                error: None,
                code: settings
                    .include_code
                    .then(|| secrets.mask_str(code).into_owned()),
                stdout: None,
                stderr: None,
            },
            started: std::time::Instant::now(),
        }
    }

    /// The record of an execution whose program ran and ended as `result` says: its
    /// exit code, `exitReason`, duration, truncation and container, and its
    /// `resourceUsage` when `trackResources` is on (all when present in `result`);
    /// `network`, the egress summary, when known.
    pub fn completed(
        mut self,
        settings: &AuditSettings,
        result: &ExecutionResult,
        network: Option<NetworkSummary>,
    ) -> AuditRecord {
        let r = &mut self.record;
        r.outcome = Outcome::Completed;
        r.exit_code = Some(result.exit_code);
        r.exit_reason = result.exit_reason;
        r.duration_ms = result.duration_ms;
        r.truncated = Some(result.truncated);
        r.container_id = result.container_id.clone();
        r.resource_usage = result
            .resource_usage
            .clone()
            .filter(|_| settings.track_resources);
        if let Some(n) = network {
            r.network = n;
        }
        self.record
    }

    /// The record of an execution that started and did not end with an exit of its
    /// program: `error` (already masked) when it failed, `None` when its consumer went
    /// away (cancelled). A lost sandbox's `exitReason` is `sandboxLost`.
    pub fn ended_early(mut self, error: Option<&crate::Error>) -> AuditRecord {
        let r = &mut self.record;
        r.outcome = match error {
            Some(_) => Outcome::Failed,
            None => Outcome::Cancelled,
        };
        r.error = error.map(ToString::to_string);
        if error.is_some_and(crate::Error::is_sandbox_lost) {
            r.exit_reason = Some(ExitReason::SandboxLost);
        }
        r.duration_ms = self.started.elapsed().as_millis() as u64;
        self.record
    }

    /// The record of an execution refused with `error` (masked with `secrets`).
    pub fn refused(mut self, error: &str, secrets: &Secrets) -> AuditRecord {
        self.record.outcome = Outcome::Refused;
        self.record.error = Some(secrets.mask_str(error).into_owned());
        self.record.duration_ms = self.started.elapsed().as_millis() as u64;
        self.record
    }
}

/// The execution id a new execution gets: the current [`scope`]'s, else a new UUID.
pub fn execution_id() -> String {
    current_caller()
        .and_then(|c| c.execution_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The name of the daily file of `date` (`executions-YYYY-MM-DD.jsonl`).
pub fn file_name(date: chrono::NaiveDate) -> String {
    format!("executions-{}.jsonl", date.format("%Y-%m-%d"))
}

/// The date in a daily file's name, if it is one.
pub fn file_date(name: &str) -> Option<chrono::NaiveDate> {
    let date = name.strip_prefix("executions-")?.strip_suffix(".jsonl")?;
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

/// Deletes the daily files in `dir` dated more than `days` days before `today`
/// (nothing when `days` is 0); returns how many were deleted.
pub fn prune(dir: &Path, today: chrono::NaiveDate, days: u32) -> usize {
    if days == 0 {
        return 0;
    }
    let Some(cutoff) = today.checked_sub_days(chrono::Days::new(days.into())) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(date) = name.to_str().and_then(file_date) else {
            continue;
        };
        if date < cutoff {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot delete an old audit file")
                }
            }
        }
    }
    removed
}
