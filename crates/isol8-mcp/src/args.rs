//! The arguments of each tool, as a model writes them: serde types whose JSON Schemas
//! (schemars) are the tools' `inputSchema`, with descriptions a model can act on. Unknown
//! fields are refused (`deny_unknown_fields`), so a misspelt argument is an error rather
//! than silently ignored. Each turns into the protocol's [`ExecutionRequest`] and
//! [`EngineOptions`], which the operator's limits and `serverPolicy` then judge.

use std::collections::BTreeMap;

use isol8_protocol::options::NetworkFilter;
use isol8_protocol::{EngineOptions, ExecutionRequest, NetworkMode};
use schemars::JsonSchema;
use serde::Deserialize;

/// Arguments of `run_code`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunCodeArgs {
    /// Language runtime: `python`, `node`, `bun`, `deno` or `bash` (see `list_runtimes`).
    pub runtime: String,
    /// Source code to run as a program of `runtime`. Give exactly one of `code` and `cmd`.
    #[serde(default)]
    pub code: Option<String>,
    /// A shell command, run as `bash -c CMD` in the runtime's image (e.g. `ls -la && python3 --version`).
    /// Give exactly one of `code` and `cmd`.
    #[serde(default)]
    pub cmd: Option<String>,
    /// Text fed to the program's standard input, followed by end-of-file.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Text files written before the program starts: path → content. Relative paths are
    /// taken from `/sandbox`, the working directory; absolute ones must lie below
    /// `/sandbox`, `/tmp` or `/dev/shm`.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Extra environment variables for the program.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit for the whole run in milliseconds (the operator's default when
    /// absent; values above the operator's cap are refused).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Packages installed before the run with the runtime's package manager (pip, npm…):
    /// e.g. `["requests", "numpy==2.1.0"]`. Needs network access to the registry, which
    /// the operator's policy may refuse.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Network access: `none` (the default: no network), `filtered` (HTTP/HTTPS through
    /// a proxy that admits only `allowedHosts`) or `host`. Modes the operator does not
    /// allow are refused with the reason.
    #[serde(default)]
    pub network: Option<NetworkMode>,
    /// With `network: filtered`: the hosts the program may reach, as regular
    /// expressions on the host name (e.g. `^api\.example\.com$`).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// A Docker image to run in instead of the runtime's; refused unless the operator
    /// allows custom images.
    #[serde(default)]
    pub image: Option<String>,
}

/// Arguments of `create_session`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSessionArgs {
    /// The runtime the session is bound to: `python`, `node`, `bun`, `deno` or `bash`.
    /// Every `run_in_session` call of this session uses it.
    pub runtime: String,
    /// Packages installed once, when the session starts (they stay for later runs).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Network access of the session's container: `none` (default), `filtered` (only
    /// `allowedHosts`) or `host`, as the operator's policy allows.
    #[serde(default)]
    pub network: Option<NetworkMode>,
    /// With `network: filtered`: the hosts the session may reach (regular expressions
    /// on the host name).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// A Docker image for the session instead of the runtime's; refused unless the
    /// operator allows custom images.
    #[serde(default)]
    pub image: Option<String>,
}

/// Arguments of `run_in_session`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunInSessionArgs {
    /// The id `create_session` returned.
    pub session_id: String,
    /// Source code to run with the session's runtime. Give exactly one of `code` and `cmd`.
    #[serde(default)]
    pub code: Option<String>,
    /// A shell command, run as `bash -c CMD` in the session's container.
    #[serde(default)]
    pub cmd: Option<String>,
    /// Text fed to the program's standard input, followed by end-of-file.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Text files written before the program starts: path → content (relative to `/sandbox`).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Extra environment variables for the program.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit for this run in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Arguments of `end_session`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndSessionArgs {
    /// The id `create_session` returned.
    pub session_id: String,
}

/// How a file's content is written in `write_file` and returned by `read_file`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text.
    #[default]
    Text,
    /// Base64 (standard alphabet, with padding), for binary files.
    Base64,
}

/// Arguments of `write_file`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteFileArgs {
    /// The id `create_session` returned.
    pub session_id: String,
    /// Where to write: relative to `/sandbox`, or absolute below `/sandbox`, `/tmp` or
    /// `/dev/shm`. Missing directories are created; an existing file is replaced.
    pub path: String,
    /// The file's content, as `encoding` says.
    pub content: String,
    /// `text` (default) or `base64` (for binary content).
    #[serde(default)]
    pub encoding: Encoding,
}

/// Arguments of `read_file`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadFileArgs {
    /// The id `create_session` returned.
    pub session_id: String,
    /// The file to read: relative to `/sandbox`, or absolute below `/sandbox`, `/tmp`
    /// or `/dev/shm`.
    pub path: String,
    /// `text` (default: UTF-8, invalid bytes replaced) or `base64` (exact bytes).
    #[serde(default)]
    pub encoding: Encoding,
}

/// Arguments of `list_runtimes` (none).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// A network filter of `allowedHosts`, if any.
fn filter(allowed_hosts: &[String]) -> Option<NetworkFilter> {
    (!allowed_hosts.is_empty()).then(|| NetworkFilter {
        whitelist: allowed_hosts.to_vec(),
        ..NetworkFilter::default()
    })
}

impl RunCodeArgs {
    /// The request and the per-request options this run asks for.
    pub fn into_request(self) -> (ExecutionRequest, EngineOptions) {
        let options = EngineOptions {
            network: self.network,
            network_filter: filter(&self.allowed_hosts),
            image: self.image,
            ..EngineOptions::default()
        };
        let req = ExecutionRequest {
            runtime: self.runtime,
            code: self.code,
            cmd: self.cmd,
            stdin: self.stdin,
            files: self.files,
            env: self.env,
            timeout_ms: self.timeout_ms,
            install_packages: self.packages,
            ..ExecutionRequest::default()
        };
        (req, options)
    }
}

impl CreateSessionArgs {
    /// The first request of the session (a no-op command that starts its container and
    /// installs its packages) and the options its container is made with.
    pub fn into_request(self) -> (ExecutionRequest, EngineOptions) {
        let options = EngineOptions {
            network: self.network,
            network_filter: filter(&self.allowed_hosts),
            image: self.image,
            ..EngineOptions::default()
        };
        let req = ExecutionRequest {
            runtime: self.runtime,
            cmd: Some("true".into()),
            install_packages: self.packages,
            ..ExecutionRequest::default()
        };
        (req, options)
    }
}

impl RunInSessionArgs {
    /// The request in the session bound to `runtime`, and its per-execution options.
    pub fn into_request(self, runtime: &str) -> (ExecutionRequest, EngineOptions) {
        let req = ExecutionRequest {
            runtime: runtime.to_string(),
            code: self.code,
            cmd: self.cmd,
            stdin: self.stdin,
            files: self.files,
            env: self.env,
            timeout_ms: self.timeout_ms,
            ..ExecutionRequest::default()
        };
        (req, EngineOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_arguments_are_refused_and_known_ones_map_to_the_protocol() {
        let err = serde_json::from_value::<RunCodeArgs>(serde_json::json!({
            "runtime": "python", "code": "print(1)", "memoryLimit": "8g"
        }))
        .expect_err("unknown field");
        assert!(err.to_string().contains("memoryLimit"), "{err}");
        let args: RunCodeArgs = serde_json::from_value(serde_json::json!({
            "runtime": "python", "code": "print(1)", "network": "filtered",
            "allowedHosts": ["^pypi\\.org$"], "packages": ["six"], "timeoutMs": 5000
        }))
        .expect("valid");
        let (req, opts) = args.into_request();
        assert_eq!(req.install_packages, ["six"]);
        assert_eq!(req.timeout_ms, Some(5000));
        assert_eq!(opts.network, Some(NetworkMode::Filtered));
        assert_eq!(
            opts.network_filter.expect("filter").whitelist,
            ["^pypi\\.org$"]
        );
        let bad = serde_json::from_value::<RunCodeArgs>(serde_json::json!({
            "runtime": "python", "network": "bridge"
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn schemas_describe_every_argument_and_forbid_others() {
        let schema = serde_json::to_value(schemars::schema_for!(RunCodeArgs)).expect("schema");
        assert_eq!(schema["additionalProperties"], false, "{schema}");
        assert_eq!(schema["required"], serde_json::json!(["runtime"]));
        for (name, prop) in schema["properties"].as_object().expect("properties") {
            assert!(
                prop["description"].as_str().is_some_and(|d| d.len() > 20),
                "{name} has no useful description: {prop}"
            );
        }
    }
}
