//! Resource usage and the memory limit with an agent that measures (issue 13 items 1-2,
//! the agent's half): the peak memory of a program that allocates a known amount (also
//! in a pooled sandbox that served a bigger program before), a memory kill reported as
//! the memory limit, and the bytes of a download of a known size through the `filtered`
//! proxy, from a host this test serves itself on loopback (never the internet).

use std::io::{Read, Write};

use futures_util::StreamExt;
use isol8::docker::EngineConfig;
use isol8::{Engine, EngineOptions, ExitReason, StreamEventType};
use isol8_protocol::{NetworkFilter, NetworkMode, PoolSize, PoolStrategy};
use isol8_testkit::{assert_clean, code, engine, engine_with, run};

/// Python that allocates and touches `mib` MiB, then prints `held`.
fn allocate(mib: u32) -> String {
    format!("b = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('held')")
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn the_peak_memory_is_this_executions_even_in_a_reused_sandbox() {
    let options = EngineOptions {
        pool_strategy: Some(PoolStrategy::Fast),
        pool_size: Some(PoolSize::Total(1)),
        ..Default::default()
    };
    let engine = engine(options).await;
    let big = run(&engine, code("python", &allocate(200))).await;
    assert_eq!(big.stdout, "held\n", "{big:?}");
    let usage = big.resource_usage.clone().expect("resourceUsage");
    assert!(
        usage.peak_memory_mb >= 200.0 && usage.peak_memory_mb < 200.0 + 150.0,
        "peak of a 200 MiB program: {usage:?}"
    );
    assert!(
        usage.memory_mb >= 0.0 && usage.cpu_percent >= 0.0,
        "{usage:?}"
    );
    // The same pooled sandbox: the next program's peak is its own, not the 200 MiB.
    let small = run(&engine, code("python", &allocate(20))).await;
    assert_eq!(
        small.container_id, big.container_id,
        "the sandbox was reused"
    );
    let usage = small.resource_usage.clone().expect("resourceUsage");
    assert!(
        usage.peak_memory_mb >= 20.0 && usage.peak_memory_mb < 150.0,
        "peak of a 20 MiB program after a 200 MiB one: {usage:?}"
    );
    // `none` network: no bytes in or out.
    assert_eq!((usage.network_bytes_in, usage.network_bytes_out), (0, 0));
    assert_clean(&engine).await;
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_program_over_its_memory_limit_ends_for_the_memory_limit() {
    let options = EngineOptions {
        memory_limit: Some("128m".into()),
        ..Default::default()
    };
    let engine = engine(options).await;
    for (runtime, bomb) in [
        ("python", "b = b'x' * (400 << 20)\nprint('never')"),
        (
            "node",
            "const b = Buffer.alloc(400 << 20, 1); console.log('never', b.length)",
        ),
    ] {
        let r = run(&engine, code(runtime, bomb)).await;
        assert_eq!(
            (r.exit_code, r.exit_reason),
            (137, Some(ExitReason::MemoryLimit)),
            "{runtime}: {r:?}"
        );
        assert!(!r.stdout.contains("never"), "{runtime}: {r:?}");
    }
    let events: Vec<_> = engine
        .execute_stream(code("python", "b = b'x' * (400 << 20)"))
        .await
        .expect("stream")
        .collect()
        .await;
    let closing: Vec<(StreamEventType, &str, Option<ExitReason>)> = events
        .iter()
        .filter(|e| matches!(e.kind, StreamEventType::Exit | StreamEventType::Error))
        .map(|e| (e.kind, e.data.as_str(), e.exit_reason))
        .collect();
    assert_eq!(
        closing,
        [
            (StreamEventType::Error, "MEMORY LIMIT EXCEEDED", None),
            (StreamEventType::Exit, "137", Some(ExitReason::MemoryLimit)),
        ]
    );
    // The engine serves the next run normally.
    assert_eq!(run(&engine, code("python", "print(1)")).await.stdout, "1\n");
    assert_clean(&engine).await;
}

/// Serves `body` over HTTP/1.1 on `addr` port 80, to one client at a time, until the
/// test ends.
fn serve_blob(addr: std::net::Ipv4Addr, body: Vec<u8>) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind((addr, 80))
        .unwrap_or_else(|e| panic!("cannot bind {addr}:80 for the test's download host: {e}"));
    let accept = listener.try_clone().expect("clone listener");
    std::thread::spawn(move || {
        for stream in accept.incoming() {
            let Ok(mut s) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    listener
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn a_filtered_download_counts_its_bytes_in() {
    const SIZE: usize = 3_000_000;
    // A loopback address of this test's own (127/8 is all loopback on Linux), exempted
    // exactly, on the port the proxy dials for plain HTTP.
    let host = std::net::Ipv4Addr::new(127, 77, (std::process::id() % 200) as u8 + 1, 9);
    let _server = serve_blob(host, vec![b'd'; SIZE]);
    let engine = engine_with(EngineConfig {
        options: EngineOptions {
            network: Some(NetworkMode::Filtered),
            network_filter: Some(NetworkFilter::default()),
            ..Default::default()
        },
        exempt_ranges: vec![host.to_string()],
        ..Default::default()
    })
    .await;
    let program = format!(
        "import urllib.request\nr = urllib.request.urlopen('http://{host}/blob', timeout=30)\nprint(len(r.read()))"
    );
    let r = run(&engine, code("python", &program)).await;
    assert_eq!(r.stdout, format!("{SIZE}\n"), "{r:?}");
    let usage = r.resource_usage.expect("resourceUsage");
    let overhead = 64 * 1024;
    assert!(
        usage.network_bytes_in >= SIZE as u64 && usage.network_bytes_in < (SIZE + overhead) as u64,
        "{usage:?}"
    );
    assert!(
        usage.network_bytes_out > 0 && usage.network_bytes_out < overhead as u64,
        "{usage:?}"
    );
    // The next execution of the same engine starts from zero.
    let r = run(&engine, code("python", "print(1)")).await;
    let usage = r.resource_usage.expect("resourceUsage");
    assert_eq!((usage.network_bytes_in, usage.network_bytes_out), (0, 0));
    assert_clean(&engine).await;
}
