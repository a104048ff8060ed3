//! How an execution ended, in the result's words: the agent's usage figures turned into
//! `resourceUsage` (SPEC section 2), the `exitReason` chosen by a fixed precedence, and
//! the texts that announce a non-normal ending (the stream's `error` event, the CLI's
//! stderr line).
//!
//! # Exit reason precedence
//!
//! Several reasons can hold at once (a program killed at its timeout was also ended by
//! signal 9; one killed by the OOM killer may also have been cut at the output cap).
//! The first that holds wins: timeout > memoryLimit > sandboxLost > signal > outputLimit >
//! exited. A signal is only what the agent reports ([`Exited::signal`]: the program's
//! process was ended by one), never a guess from the status: a program may `exit 200`,
//! or a shell pass on its child's 139, by itself.

use isol8_protocol::agent::{AgentUsage, Exited};
use isol8_protocol::{ExitReason, ResourceUsage};

pub use isol8_protocol::layout::{MEMORY_LIMIT_EVENT, OUTPUT_LIMIT_EVENT, SIGNAL_EVENT_PREFIX};

/// Bytes the egress proxy relayed for one execution (`filtered` network mode), counted on
/// the sandbox's side of the proxy: `into_sandbox` written to the program, `out_of_sandbox`
/// read from it (request heads and bodies included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyTraffic {
    /// Bytes the proxy sent to the sandbox.
    pub into_sandbox: u64,
    /// Bytes the proxy received from the sandbox.
    pub out_of_sandbox: u64,
}

/// Rounds to two decimals (as the figures are shown).
fn two_decimals(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Bytes in MiB, rounded to two decimals.
fn mib(bytes: u64) -> f64 {
    two_decimals(bytes as f64 / (1024.0 * 1024.0))
}

/// The `resourceUsage` of an execution: `cpuPercent` is CPU time over wall time × 100
/// (of one core; above 100 for a program using several), `memoryMB` and `peakMemoryMB`
/// in MiB, all three rounded to two decimals; the network figures are the agent's
/// interface counters plus what the egress proxy relayed (`proxy`, zero outside
/// `filtered` mode). A zero wall time gives 0 % (nothing was measured over it).
pub fn resource_usage(agent: &AgentUsage, proxy: ProxyTraffic) -> ResourceUsage {
    let cpu_percent = if agent.wall_time_us == 0 {
        0.0
    } else {
        two_decimals(agent.cpu_time_us as f64 / agent.wall_time_us as f64 * 100.0)
    };
    ResourceUsage {
        cpu_percent,
        memory_mb: mib(agent.memory_bytes),
        peak_memory_mb: mib(agent.peak_memory_bytes),
        network_bytes_in: agent.network_rx_bytes.saturating_add(proxy.into_sandbox),
        network_bytes_out: agent.network_tx_bytes.saturating_add(proxy.out_of_sandbox),
    }
}

/// Why the program of `exited` ended, by the module's precedence; `lost` when the sandbox
/// went away under it.
pub fn exit_reason(exited: &Exited, lost: bool) -> ExitReason {
    if exited.timed_out {
        ExitReason::Timeout
    } else if exited.oom_killed {
        ExitReason::MemoryLimit
    } else if lost {
        ExitReason::SandboxLost
    } else if ended_by_signal(exited).is_some() {
        ExitReason::Signal
    } else if exited.stdout.truncated || exited.stderr.truncated {
        ExitReason::OutputLimit
    } else {
        ExitReason::Exited
    }
}

/// The signal that ended the program, as the agent reported it.
pub fn ended_by_signal(exited: &Exited) -> Option<i32> {
    exited.signal
}

/// The conventional name of signal `n` on Linux (`SIGSEGV`), or `signal N` for one
/// without a name (real-time signals).
pub fn signal_name(n: i32) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(n)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("signal {n}"), |s| (*s).to_string())
}

/// The data of the stream `error` event announcing `reason`, for the reasons whose
/// event this module defines: memoryLimit, signal (named from `exit_code` or `signal`)
/// and outputLimit. `None` for the others (a timeout has its own event, a lost sandbox
/// its error, a normal exit none).
pub fn reason_event(reason: ExitReason, signal: Option<i32>) -> Option<String> {
    match reason {
        ExitReason::MemoryLimit => Some(MEMORY_LIMIT_EVENT.to_string()),
        ExitReason::Signal => signal.map(|n| format!("{SIGNAL_EVENT_PREFIX}{}", signal_name(n))),
        ExitReason::OutputLimit => Some(OUTPUT_LIMIT_EVENT.to_string()),
        ExitReason::Exited | ExitReason::Timeout | ExitReason::SandboxLost => None,
    }
}

/// True when `data` is the data of an `error` event [`reason_event`] makes (or the
/// timeout's): it reports how the run ended, not a failure of the run.
pub fn is_reason_event(data: &str) -> bool {
    data == MEMORY_LIMIT_EVENT
        || data == OUTPUT_LIMIT_EVENT
        || data == isol8_protocol::layout::TIMEOUT_EVENT
        || data.starts_with(SIGNAL_EVENT_PREFIX)
}

/// The one stderr line the CLI prints for a non-normal ending, in the style of the
/// timeout's `--- EXECUTION TIMED OUT ---`: `--- MEMORY LIMIT EXCEEDED (128m) ---` (the
/// limit when known), `--- KILLED BY SIGNAL SIGSEGV ---`, `--- SANDBOX LOST ---`. `None`
/// for a normal exit, a timeout (its line is printed from its own event or stderr
/// trailer) and the output cap (the CLI has its own truncation warning).
pub fn reason_line(
    reason: ExitReason,
    exit_code: i32,
    memory_limit: Option<&str>,
) -> Option<String> {
    match reason {
        ExitReason::MemoryLimit => Some(match memory_limit {
            Some(limit) => format!("--- {MEMORY_LIMIT_EVENT} ({limit}) ---"),
            None => format!("--- {MEMORY_LIMIT_EVENT} ---"),
        }),
        ExitReason::Signal if exit_code > 128 => Some(format!(
            "--- {SIGNAL_EVENT_PREFIX}{} ---",
            signal_name(exit_code - 128)
        )),
        ExitReason::Signal => Some(format!("--- {}---", SIGNAL_EVENT_PREFIX)),
        ExitReason::SandboxLost => Some("--- SANDBOX LOST ---".to_string()),
        ExitReason::Exited | ExitReason::Timeout | ExitReason::OutputLimit => None,
    }
}

#[cfg(test)]
mod tests;
