//! The `server` path of `isol8 bench`: python `print(1)` through `POST /execute` of an
//! in-process `isol8 serve` on loopback (a JSON request, the warm pool, the JSON result),
//! measured sequentially and at concurrency 8. The program's own time and the engine's
//! phases come from the engine behind the server, as on the library's paths (its
//! observer); the time around the engine's run is the HTTP round trip plus what the server
//! does per request.

use std::time::Instant;

use isol8_protocol::{EngineOptions, PoolSize, PoolStrategy};

use crate::phases::{self, PhaseRecorder, PhaseSample, PhaseTimings};
use crate::{summarize_samples, BenchError, PathResult, Result, Sample, Throughput};

/// Concurrent requests of the throughput measurement (and the size of the warm pool).
pub const CONCURRENCY: usize = 8;

/// Runs `n` sequential requests (after one unmeasured warm-up) and then `execs` requests
/// spread over [`CONCURRENCY`] workers against a server started for the purpose and
/// stopped afterwards. Returns the latency row (`server`), its phases and the throughput.
pub async fn run(n: usize, execs: usize) -> Result<(PathResult, PhaseTimings, Throughput)> {
    let options = EngineOptions {
        pool_strategy: Some(PoolStrategy::Fast),
        pool_size: Some(PoolSize::Split {
            clean: CONCURRENCY as u32,
            dirty: CONCURRENCY as u32,
        }),
        ..Default::default()
    };
    let recorder = PhaseRecorder::new();
    let observer: isol8::stats::Observer = recorder.clone();
    let engine = isol8::DockerEngine::connect_with(isol8::docker::EngineConfig {
        options: options.clone(),
        max_concurrent: Some(CONCURRENCY),
        prewarm: vec!["python".into()],
        observer: Some(observer),
        ..Default::default()
    })
    .await?;
    isol8::Engine::start(&engine).await?;
    let pool = engine.clone();
    let key = "bench-key-0123456789abcdef".to_string();
    let state = isol8_server::AppState::new(engine, options, key.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| BenchError::ServerIo {
            op: "listen on 127.0.0.1",
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| BenchError::ServerIo {
            op: "read the listening address",
            source,
        })?;
    let url = format!("http://{addr}/execute");
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        isol8_server::app(state.clone()),
    )));
    let measured = measure(&pool, &recorder, &url, &key, n, execs).await;
    server.abort();
    state.shutdown().await;
    let (split, execs_per_s) = measured?;
    let samples: Vec<Sample> = split
        .iter()
        .map(|s| Sample {
            total_ms: s.total_ms,
            program_ms: Some(s.program_ms),
        })
        .collect();
    Ok((
        summarize_samples("python", "server", &samples),
        phases::phase_timings("python", "server", &split),
        Throughput {
            runtime: "python".into(),
            path: "server".into(),
            concurrency: CONCURRENCY,
            execs_per_s,
            max_concurrent: CONCURRENCY,
            peak_running: None,
        },
    ))
}

/// The latency samples with the phases `recorder` saw (the program's time from the
/// engine's observer, the result's whole-millisecond `durationMs` where it reported
/// none), each sent when the server's pool (`pool`, the engine behind it) is ready as the
/// library's `warm` path's are, and the throughput (executions per second) against `url`.
async fn measure(
    pool: &isol8::DockerEngine,
    recorder: &PhaseRecorder,
    url: &str,
    key: &str,
    n: usize,
    execs: usize,
) -> Result<(Vec<PhaseSample>, f64)> {
    let client = reqwest::Client::new();
    let body = serde_json::json!({"request": {"runtime": "python", "code": "print(1)"}});
    let once = |client: reqwest::Client, url: String, key: String, body: serde_json::Value| async move {
        let failed = |e: reqwest::Error| BenchError::ServerRequest(e.to_string());
        let v: serde_json::Value = client
            .post(&url)
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)?;
        match v["durationMs"].as_u64() {
            Some(program_ms) if v["stdout"] == "1\n" => Ok::<_, BenchError>(program_ms as f64),
            _ => Err(BenchError::ServerRequest(v.to_string())),
        }
    };
    let (url, key) = (url.to_string(), key.to_string());
    once(client.clone(), url.clone(), key.clone(), body.clone()).await?; // warm-up
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        pool.prewarm(&["python".into()]).await?;
        recorder.take();
        let t = Instant::now();
        let duration_ms = once(client.clone(), url.clone(), key.clone(), body.clone()).await?;
        let total_ms = t.elapsed().as_secs_f64() * 1000.0;
        let reported = recorder.take();
        samples.push(PhaseSample {
            total_ms,
            program_ms: reported.program_ms.unwrap_or(duration_ms),
            reported,
        });
    }
    let per_worker = execs.div_ceil(CONCURRENCY);
    let t = Instant::now();
    let workers = (0..CONCURRENCY).map(|_| {
        let (client, url, key, body) = (client.clone(), url.clone(), key.clone(), body.clone());
        tokio::spawn(async move {
            for _ in 0..per_worker {
                once(client.clone(), url.clone(), key.clone(), body.clone()).await?;
            }
            Ok::<_, BenchError>(())
        })
    });
    for w in futures_util::future::join_all(workers).await {
        w??;
    }
    let execs_per_s = (per_worker * CONCURRENCY) as f64 / t.elapsed().as_secs_f64();
    Ok((samples, execs_per_s))
}
