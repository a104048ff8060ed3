//! isol8's seccomp modes as Docker `SecurityOpt` entries.
//!
//! `strict` is [`isol8_protocol::seccomp`]'s default-deny policy, compiled and installed
//! by the agent as the first thing it does in the container (the engine asks through the
//! environment and checks the agent's hello, `HostConfig::seccomp_filter` in the Docker layer).
//! Docker gets only a baseline: the policy's [`DENIED`] calls refused, everything else
//! left to the agent's filter, so the calls that matter most are refused from the
//! container's first instruction on. The same policy as a full Docker profile made runc
//! rebuild it with libseccomp and carry ~300 rules through dockerd, containerd and its own
//! state at every container start: ~10 ms of each cold start on a 2-core machine
//! (`docs/PERFORMANCE.md`). `unconfined` and `custom` are Docker's, unchanged.
//!
//! Sandboxes run with exactly the capabilities SETUID, SETGID, SETPCAP and KILL (used by
//! the agent to drop to the sandbox user and to end its processes), which need no extra
//! syscalls.

use serde_json::{json, Value};

pub use isol8_protocol::seccomp::DENIED;
use isol8_protocol::SeccompMode;

use crate::{Error, Result};

/// Docker's part of the strict mode: allow by default, refuse [`DENIED`] with EPERM
/// (the agent's filter then denies by default). Native ABI only: Docker's profile names no
/// architecture, so runc's filter kills a call through any other.
pub fn baseline_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": isol8_protocol::seccomp::DENIED_ERRNO}
        ]
    })
}

/// Whether the agent installs the strict filter in this mode.
pub fn agent_filters(mode: SeccompMode) -> bool {
    mode == SeccompMode::Strict
}

/// The `SecurityOpt` entry for a seccomp mode.
pub fn security_opt(mode: SeccompMode, custom_profile_path: Option<&str>) -> Result<String> {
    match mode {
        SeccompMode::Strict => Ok(format!("seccomp={}", baseline_profile())),
        SeccompMode::Unconfined => Ok("seccomp=unconfined".to_string()),
        SeccompMode::Custom => {
            let path = custom_profile_path.ok_or_else(|| {
                Error::option(
                    "security.customProfilePath",
                    "is required with seccomp `custom`",
                )
            })?;
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::option(
                    "security.customProfilePath",
                    format!("cannot read `{path}`: {e}"),
                )
            })?;
            let profile: Value = serde_json::from_str(&text).map_err(|e| {
                Error::option(
                    "security.customProfilePath",
                    format!("`{path}` is not JSON: {e}"),
                )
            })?;
            if profile
                .get("defaultAction")
                .and_then(Value::as_str)
                .is_none()
            {
                return Err(Error::option(
                    "security.customProfilePath",
                    format!("`{path}` is not a seccomp profile (no defaultAction)"),
                ));
            }
            Ok(format!("seccomp={profile}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_refuses_the_dangerous_calls_and_leaves_the_rest_to_the_agent() {
        let p = baseline_profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = p["syscalls"].as_array().expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["action"], "SCMP_ACT_ERRNO");
        let names: Vec<&str> = rules[0]["names"]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for name in [
            "unshare",
            "setns",
            "mount",
            "bpf",
            "keyctl",
            "ptrace",
            "io_uring_setup",
        ] {
            assert!(names.contains(&name), "{name}");
        }
        assert!(p.get("archMap").is_none() && p.get("architectures").is_none());
        assert!(agent_filters(SeccompMode::Strict));
        assert!(!agent_filters(SeccompMode::Unconfined) && !agent_filters(SeccompMode::Custom));
    }

    #[test]
    fn custom_profile_is_validated() {
        let err = security_opt(SeccompMode::Custom, Some("/nonexistent/profile.json"))
            .expect_err("missing file");
        assert!(err.to_string().contains("customProfilePath"));
        assert_eq!(
            security_opt(SeccompMode::Unconfined, None).expect("ok"),
            "seccomp=unconfined"
        );
    }
}
