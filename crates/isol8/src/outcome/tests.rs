//! The mapping of the agent's figures to `resourceUsage` (units, rounding, the proxy's
//! bytes), the exit reason's precedence, and the texts of non-normal endings.

use isol8_protocol::agent::{AgentUsage, Exited, StreamStats};
use isol8_protocol::ExitReason;

use super::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn usage_is_mapped_to_percent_and_mib_and_adds_the_proxy_bytes() {
    let agent = AgentUsage {
        cpu_time_us: 150_000,
        wall_time_us: 100_000,
        memory_bytes: 10 * MIB,
        peak_memory_bytes: 64 * MIB + MIB / 2,
        network_rx_bytes: 1_000,
        network_tx_bytes: 20,
    };
    let proxy = ProxyTraffic {
        into_sandbox: 5_000,
        out_of_sandbox: 300,
    };
    assert_eq!(
        resource_usage(&agent, proxy),
        ResourceUsage {
            cpu_percent: 150.0,
            memory_mb: 10.0,
            peak_memory_mb: 64.5,
            network_bytes_in: 6_000,
            network_bytes_out: 320,
        }
    );
    // Outside `filtered` mode the proxy moved nothing: only the agent's counters.
    let none = resource_usage(&agent, ProxyTraffic::default());
    assert_eq!((none.network_bytes_in, none.network_bytes_out), (1_000, 20));
}

#[test]
fn figures_are_rounded_to_two_decimals() {
    let agent = AgentUsage {
        cpu_time_us: 1,
        wall_time_us: 3,
        // 1.17737… MiB and 0.00095… MiB
        memory_bytes: 1_234_567,
        peak_memory_bytes: 1_000,
        ..Default::default()
    };
    let u = resource_usage(&agent, ProxyTraffic::default());
    assert_eq!(u.cpu_percent, 33.33);
    assert_eq!(u.memory_mb, 1.18);
    assert_eq!(u.peak_memory_mb, 0.0);
    // Two thirds round up; a zero wall time is 0 %, not a division by zero.
    let u = resource_usage(
        &AgentUsage {
            cpu_time_us: 2,
            wall_time_us: 3,
            ..Default::default()
        },
        ProxyTraffic::default(),
    );
    assert_eq!(u.cpu_percent, 66.67);
    let u = resource_usage(
        &AgentUsage {
            cpu_time_us: 5,
            ..Default::default()
        },
        ProxyTraffic::default(),
    );
    assert_eq!(u.cpu_percent, 0.0);
}

fn truncated() -> StreamStats {
    StreamStats {
        total_bytes: 10,
        truncated: true,
    }
}

#[test]
fn exit_reasons_follow_their_precedence() {
    let normal = Exited::default();
    assert_eq!(exit_reason(&normal, false), ExitReason::Exited);
    // Any exit code of a program that exited by itself is `exited`.
    let failed = Exited {
        exit_code: 1,
        ..Default::default()
    };
    assert_eq!(exit_reason(&failed, false), ExitReason::Exited);

    // Everything at once: timeout wins.
    let all = Exited {
        exit_code: 137,
        timed_out: true,
        oom_killed: true,
        signal: Some(9),
        stdout: truncated(),
        ..Default::default()
    };
    assert_eq!(exit_reason(&all, true), ExitReason::Timeout);
    // Then the memory limit, over a lost sandbox, a signal and the output cap.
    let oom = Exited {
        timed_out: false,
        ..all.clone()
    };
    assert_eq!(exit_reason(&oom, true), ExitReason::MemoryLimit);
    // Then the lost sandbox, over a signal and the output cap.
    let lost = Exited {
        oom_killed: false,
        ..oom.clone()
    };
    assert_eq!(exit_reason(&lost, true), ExitReason::SandboxLost);
    // Then the signal, over the output cap.
    assert_eq!(exit_reason(&lost, false), ExitReason::Signal);
    // The output cap, when the program otherwise exited normally (stdout or stderr).
    let capped = Exited {
        stderr: truncated(),
        ..Default::default()
    };
    assert_eq!(exit_reason(&capped, false), ExitReason::OutputLimit);
}

#[test]
fn a_signal_is_only_what_the_agent_reports_never_a_guess_from_the_status() {
    let reported = Exited {
        exit_code: 139,
        signal: Some(11),
        ..Default::default()
    };
    assert_eq!(ended_by_signal(&reported), Some(11));
    assert_eq!(exit_reason(&reported, false), ExitReason::Signal);
    // A program may exit with any status by itself (`exit 200`, a shell passing on its
    // child's 134): without the agent's report that is a normal exit.
    for code in [128, 134, 137, 200, 255] {
        let by_itself = Exited {
            exit_code: code,
            ..Default::default()
        };
        assert_eq!(ended_by_signal(&by_itself), None, "{code}");
        assert_eq!(exit_reason(&by_itself, false), ExitReason::Exited, "{code}");
    }
}

#[test]
fn signals_have_their_linux_names() {
    assert_eq!(signal_name(9), "SIGKILL");
    assert_eq!(signal_name(11), "SIGSEGV");
    assert_eq!(signal_name(13), "SIGPIPE");
    assert_eq!(signal_name(31), "SIGSYS");
    assert_eq!(signal_name(40), "signal 40");
    assert_eq!(signal_name(0), "signal 0");
    assert_eq!(signal_name(-3), "signal -3");
}

#[test]
fn non_normal_endings_have_an_event_and_a_line() {
    assert_eq!(
        reason_event(ExitReason::MemoryLimit, Some(9)).as_deref(),
        Some("MEMORY LIMIT EXCEEDED")
    );
    assert_eq!(
        reason_event(ExitReason::Signal, Some(11)).as_deref(),
        Some("KILLED BY SIGNAL SIGSEGV")
    );
    assert_eq!(
        reason_event(ExitReason::OutputLimit, None).as_deref(),
        Some("OUTPUT LIMIT EXCEEDED")
    );
    // A timeout has its own event, a normal exit none, a lost sandbox its error.
    for reason in [
        ExitReason::Timeout,
        ExitReason::Exited,
        ExitReason::SandboxLost,
    ] {
        assert_eq!(reason_event(reason, Some(9)), None, "{reason:?}");
    }
    for data in [
        "MEMORY LIMIT EXCEEDED",
        "KILLED BY SIGNAL SIGSEGV",
        "OUTPUT LIMIT EXCEEDED",
        "EXECUTION TIMED OUT",
    ] {
        assert!(is_reason_event(data), "{data}");
    }
    assert!(!is_reason_event("sandbox lost: the container died"));
    assert!(!is_reason_event("package install failed"));

    assert_eq!(
        reason_line(ExitReason::MemoryLimit, 137, Some("128m")).as_deref(),
        Some("--- MEMORY LIMIT EXCEEDED (128m) ---")
    );
    assert_eq!(
        reason_line(ExitReason::MemoryLimit, 137, None).as_deref(),
        Some("--- MEMORY LIMIT EXCEEDED ---")
    );
    assert_eq!(
        reason_line(ExitReason::Signal, 139, None).as_deref(),
        Some("--- KILLED BY SIGNAL SIGSEGV ---")
    );
    assert_eq!(
        reason_line(ExitReason::SandboxLost, 137, None).as_deref(),
        Some("--- SANDBOX LOST ---")
    );
    for reason in [
        ExitReason::Timeout,
        ExitReason::Exited,
        ExitReason::OutputLimit,
    ] {
        assert_eq!(reason_line(reason, 137, Some("1g")), None, "{reason:?}");
    }
}
