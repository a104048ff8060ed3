//! The public JSON contract of isol8 (SPEC section 2).
//!
//! Field names are camelCase and exact: the TypeScript isol8 clients speak them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One request to run code in a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRequest {
    /// Runtime name (`python`, `node`, `bun`, `deno`, `bash`, or a registered one).
    pub runtime: String,
    /// Source code to run. Exactly one of `code` and `cmd` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A shell command run as `bash -c CMD` in the runtime's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Wall-clock limit for setup and code together, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Extra environment variables for the program.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Data fed to the program's standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Extension of the code file (`.py`, `.mts`, …); defaults to the runtime's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_extension: Option<String>,
    /// Files written before the run: path → content. A path lies below `/sandbox`,
    /// `/tmp` or `/dev/shm` (relative paths are taken from `/sandbox`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Files read back after the run into `result.files` (base64); each below
    /// `/sandbox`, `/tmp` or `/dev/shm`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_paths: Vec<String>,
    /// Packages installed before the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install_packages: Vec<String>,
    /// Bash script run before the code (its output has phase `setup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_script: Option<String>,
    /// Working directory; must resolve inside `/sandbox`; created if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Free-form metadata, recorded for audit only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Fetch the code from this URL (remote-code policy; off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_url: Option<String>,
    /// Expected SHA-256 (hex) of the code fetched from `codeUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_hash: Option<String>,
    /// Allow `http://` for `codeUrl` when the policy permits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure_code_url: Option<bool>,
    /// Extra command-line flags for the `agent` runtime's pi (e.g. `--model
    /// anthropic/claude-sonnet-4-5 --thinking low`), split like shell words but never run
    /// through a shell; only for the `agent` runtime with `code` (its prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_flags: Option<String>,
}

/// Resource figures measured for one execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourceUsage {
    /// Average CPU use over the run, in percent of one core.
    pub cpu_percent: f64,
    /// Memory in use at the end of the run, in MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: f64,
    /// Peak memory during the run, in MiB.
    #[serde(rename = "peakMemoryMB")]
    pub peak_memory_mb: f64,
    /// Bytes received over the network.
    pub network_bytes_in: u64,
    /// Bytes sent over the network.
    pub network_bytes_out: u64,
}

/// One request seen by the filtering proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NetworkLog {
    /// ISO-8601 time of the request.
    pub timestamp: String,
    /// HTTP method (`CONNECT` for HTTPS tunnels).
    pub method: String,
    /// Target host name.
    pub host: String,
    /// Request path (empty for tunnels).
    pub path: String,
    /// `ALLOW` or `BLOCK`.
    pub action: String,
    /// Time the request took, in milliseconds.
    pub duration_ms: u64,
}

/// The outcome of one execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExecutionResult {
    /// Everything the program wrote to standard output (secrets masked, capped).
    pub stdout: String,
    /// Everything the program wrote to standard error (secrets masked, capped).
    pub stderr: String,
    /// Exit code of the program; 137 when killed (timeout, memory limit).
    pub exit_code: i32,
    /// Wall time of the user code in milliseconds.
    pub duration_ms: u64,
    /// True when stdout or stderr hit `maxOutputSize`.
    pub truncated: bool,
    /// Unique id of this execution (UUID).
    pub execution_id: String,
    /// Runtime that ran the code.
    pub runtime: String,
    /// ISO-8601 time the execution started.
    pub timestamp: String,
    /// Docker id of the container that ran the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Files read back from `outputPaths`: path → base64 content, secrets masked (each
    /// occurrence in a text or binary file replaced by `***`; see `maskedFiles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, String>>,
    /// Paths of the `files` whose content was changed because it held a secret (a binary
    /// file listed here is no longer the file the program wrote); absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked_files: Option<Vec<String>>,
    /// Resource figures, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_usage: Option<ResourceUsage>,
    /// Requests seen by the filtering proxy (with `logNetwork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_logs: Option<Vec<NetworkLog>>,
    /// Why the program ended (an isol8 addition; absent where not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<ExitReason>,
}

/// Why an execution's program ended (`exitReason` on results and `exit` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum ExitReason {
    /// The program exited by itself (any exit code).
    Exited,
    /// The program ran past `timeoutMs` and was killed.
    Timeout,
    /// The program used more memory than `memoryLimit` and was killed.
    MemoryLimit,
    /// The program exited by itself, but its output was cut at `maxOutputSize`.
    OutputLimit,
    /// A signal ended the program (not one sent by isol8 for the reasons above).
    Signal,
    /// The sandbox went away under the program (container died, daemon unreachable).
    SandboxLost,
}

/// Kind of a [`StreamEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum StreamEventType {
    /// A chunk of standard output.
    Stdout,
    /// A chunk of standard error.
    Stderr,
    /// The end of the run; `data` is the exit code as a string.
    Exit,
    /// A problem reported during the run (e.g. `EXECUTION TIMED OUT`).
    Error,
}

/// Which part of an execution produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The request's `setupScript`.
    Setup,
    /// The user's code.
    Code,
}

/// One event of a streamed execution. A stream always ends with exactly one `exit` event.
///
/// Equality compares the resource figures' `f64`s bit for bit (they are finite, rounded
/// figures, never NaN), so the type is `Eq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct StreamEvent {
    /// Event kind.
    #[serde(rename = "type")]
    pub kind: StreamEventType,
    /// Output text, error message, or the exit code as a string.
    pub data: String,
    /// Phase that produced the event: on output, and on the `exit` and `error` events
    /// of an execution (the phase it ended in). Absent on errors that are not about a
    /// phase (a refused WebSocket message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// On the `exit` event: the execution's resource figures (an isol8 addition; absent
    /// where not measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_usage: Option<ResourceUsage>,
    /// On the `exit` event: why the program ended (an isol8 addition; absent where not
    /// known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<ExitReason>,
}

impl PartialEq for StreamEvent {
    fn eq(&self, other: &Self) -> bool {
        let usage_eq = match (&self.resource_usage, &other.resource_usage) {
            (Some(a), Some(b)) => a.same_bits(b),
            (None, None) => true,
            _ => false,
        };
        self.kind == other.kind
            && self.data == other.data
            && self.phase == other.phase
            && self.exit_reason == other.exit_reason
            && usage_eq
    }
}

impl Eq for StreamEvent {}

impl ResourceUsage {
    /// True when every figure of `self` and `other` is the same, the `f64`s compared bit
    /// for bit (so the comparison is an equivalence, even for NaN).
    pub fn same_bits(&self, other: &ResourceUsage) -> bool {
        self.cpu_percent.to_bits() == other.cpu_percent.to_bits()
            && self.memory_mb.to_bits() == other.memory_mb.to_bits()
            && self.peak_memory_mb.to_bits() == other.peak_memory_mb.to_bits()
            && self.network_bytes_in == other.network_bytes_in
            && self.network_bytes_out == other.network_bytes_out
    }
}

impl StreamEvent {
    /// A stdout chunk of the given phase.
    pub fn stdout(data: impl Into<String>, phase: Phase) -> Self {
        Self {
            kind: StreamEventType::Stdout,
            data: data.into(),
            phase: Some(phase),
            resource_usage: None,
            exit_reason: None,
        }
    }
    /// A stderr chunk of the given phase.
    pub fn stderr(data: impl Into<String>, phase: Phase) -> Self {
        Self {
            kind: StreamEventType::Stderr,
            data: data.into(),
            phase: Some(phase),
            resource_usage: None,
            exit_reason: None,
        }
    }
    /// An error message.
    pub fn error(data: impl Into<String>) -> Self {
        Self {
            kind: StreamEventType::Error,
            data: data.into(),
            phase: None,
            resource_usage: None,
            exit_reason: None,
        }
    }
    /// The closing event carrying the exit code.
    pub fn exit(code: i32) -> Self {
        Self {
            kind: StreamEventType::Exit,
            data: code.to_string(),
            phase: None,
            resource_usage: None,
            exit_reason: None,
        }
    }
    /// This `exit` event, carrying the execution's resource figures and exit reason.
    pub fn with_outcome(
        mut self,
        usage: Option<ResourceUsage>,
        reason: Option<ExitReason>,
    ) -> Self {
        self.resource_usage = usage;
        self.exit_reason = reason;
        self
    }
    /// This event, tagged with `phase` (how an execution's `exit` and `error` events say
    /// which phase they ended in).
    pub fn in_phase(mut self, phase: Phase) -> Self {
        self.phase = Some(phase);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uses_camel_case_names() {
        let req: ExecutionRequest = serde_json::from_str(
            r#"{"runtime":"python","code":"print(1)","timeoutMs":5,"outputPaths":["/sandbox/a"],
                "setupScript":"true","fileExtension":".py","installPackages":["six"],
                "codeUrl":"https://x","codeHash":"ab","allowInsecureCodeUrl":false}"#,
        )
        .expect("valid request");
        assert_eq!(req.timeout_ms, Some(5));
        assert_eq!(req.output_paths, vec!["/sandbox/a".to_string()]);
        assert_eq!(req.setup_script.as_deref(), Some("true"));
        assert_eq!(req.install_packages, vec!["six".to_string()]);
        assert_eq!(req.allow_insecure_code_url, Some(false));
        let agent: ExecutionRequest = serde_json::from_str(
            r#"{"runtime":"agent","code":"fix it","agentFlags":"--model x/y"}"#,
        )
        .expect("valid agent request");
        assert_eq!(agent.agent_flags.as_deref(), Some("--model x/y"));
        let json = serde_json::to_value(&agent).expect("json");
        assert_eq!(json["agentFlags"], "--model x/y");
        // Absent, it is left out (older clients and servers see the same JSON).
        assert!(serde_json::to_value(&req)
            .expect("json")
            .get("agentFlags")
            .is_none());
    }

    #[test]
    fn result_serialises_exact_field_names() {
        let res = ExecutionResult {
            exit_code: 3,
            resource_usage: Some(ResourceUsage {
                memory_mb: 1.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(&res).expect("serialises");
        for key in [
            "stdout",
            "stderr",
            "exitCode",
            "durationMs",
            "truncated",
            "executionId",
            "runtime",
            "timestamp",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let usage = &v["resourceUsage"];
        for key in [
            "cpuPercent",
            "memoryMB",
            "peakMemoryMB",
            "networkBytesIn",
            "networkBytesOut",
        ] {
            assert!(usage.get(key).is_some(), "missing resourceUsage.{key}");
        }
    }

    #[test]
    fn stream_event_shape() {
        let ev = StreamEvent::stdout("hi", Phase::Setup);
        assert_eq!(
            serde_json::to_string(&ev).expect("serialises"),
            r#"{"type":"stdout","data":"hi","phase":"setup"}"#
        );
        assert_eq!(
            serde_json::to_string(&StreamEvent::exit(137)).expect("serialises"),
            r#"{"type":"exit","data":"137"}"#
        );
        // An execution's closing events name their phase with the reference's words.
        assert_eq!(
            serde_json::to_string(&StreamEvent::exit(1).in_phase(Phase::Setup)).expect("json"),
            r#"{"type":"exit","data":"1","phase":"setup"}"#
        );
        assert_eq!(
            serde_json::to_string(&StreamEvent::error("x").in_phase(Phase::Code)).expect("json"),
            r#"{"type":"error","data":"x","phase":"code"}"#
        );
    }

    #[test]
    fn exit_event_carries_usage_and_reason_additively() {
        let usage = ResourceUsage {
            cpu_percent: 12.5,
            memory_mb: 3.25,
            peak_memory_mb: 4.0,
            network_bytes_in: 10,
            network_bytes_out: 2,
        };
        let ev = StreamEvent::exit(139)
            .in_phase(Phase::Code)
            .with_outcome(Some(usage.clone()), Some(ExitReason::Signal));
        let json = serde_json::to_string(&ev).expect("json");
        assert_eq!(
            json,
            r#"{"type":"exit","data":"139","phase":"code","resourceUsage":{"cpuPercent":12.5,"memoryMB":3.25,"peakMemoryMB":4.0,"networkBytesIn":10,"networkBytesOut":2},"exitReason":"signal"}"#
        );
        let back: StreamEvent = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, ev);
        // An older client's event (no new fields) still parses; equality sees the usage.
        let old: StreamEvent =
            serde_json::from_str(r#"{"type":"exit","data":"0"}"#).expect("parses");
        assert_eq!(old, StreamEvent::exit(0));
        assert_ne!(old, StreamEvent::exit(0).with_outcome(Some(usage), None));
        assert_eq!(
            serde_json::to_value(ExitReason::MemoryLimit).expect("json"),
            "memoryLimit"
        );
        assert_eq!(
            serde_json::to_value(ExitReason::SandboxLost).expect("json"),
            "sandboxLost"
        );
    }
}
