//! Shared by the server's integration tests.

#![allow(dead_code)]

use isol8::{DockerEngine, EngineOptions};

/// An engine on the local daemon; `None` (saying so) without Docker, except in CI where
/// Docker is always provisioned and its absence is a failure.
pub async fn engine_or_skip() -> Option<DockerEngine> {
    match DockerEngine::connect(EngineOptions::default()).await {
        Ok(e) => Some(e),
        Err(e) => {
            let ci =
                std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(!ci, "Docker is required in CI: {e}");
            eprintln!("SKIPPED: no Docker daemon: {e}");
            None
        }
    }
}

/// Peak resident memory of this test process (the server's), MiB: `VmHWM` of
/// `/proc/self/status`, in kB there.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb / 1024.0
}
