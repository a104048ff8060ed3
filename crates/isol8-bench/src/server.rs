//! The server paths of `isol8 bench`: python `print(1)` through `POST /execute` of an
//! in-process `isol8 serve` on loopback (a JSON request, the warm pool, the JSON result),
//! measured sequentially and at concurrency 8.
//!
//! Three rows come from one engine and one pool, their samples interleaved (a round of
//! three after each untimed `prewarm`, the order rotating from round to round), so the
//! machine's drift over a run, which moves the program's own time by ±20 % on this kind
//! of VM, falls on all three alike:
//! * `server`: HTTP/1.1 with hyper's client connection (`hyper::client::conn::http1`)
//!   driven by the measuring task itself, the leanest well-kept client there is: what
//!   the server adds;
//! * `server_remote`: the same request through isol8's own remote client
//!   ([`isol8::remote::RemoteEngine`], reqwest underneath, whose pooled connection runs
//!   as a task of its own): what a Rust caller of the product pays;
//! * `warm_paired`: the same engine called in process (the library's warm path), the
//!   baseline of the `server - warm` target.
//!
//! The program's own time and the engine's phases come from the engine behind the
//! server, as on the library's paths (its observer); the time around the engine's run is
//! the HTTP round trip plus what the server does per request.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use isol8_protocol::{EngineOptions, ExecutionRequest, PoolSize, PoolStrategy};

use crate::phases::{self, PhaseRecorder, PhaseSample, PhaseTimings, Reported};
use crate::{
    check, hello_request, summarize_samples, timed_run, BenchError, PathResult, Result, Sample,
    Throughput,
};

/// Concurrent requests of the throughput measurement (and the size of the warm pool).
pub const CONCURRENCY: usize = 8;

/// The rows, their phases and the throughput of the server paths.
#[derive(Debug)]
pub struct ServerReport {
    /// Latency rows: `server`, `server_remote`, `warm_paired`.
    pub rows: Vec<PathResult>,
    /// The engine-reported phases of the same rows.
    pub phases: Vec<PhaseTimings>,
    /// `server` throughput at [`CONCURRENCY`] (one hyper connection per worker).
    pub throughput: Throughput,
}

/// The paths measured in each round.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// `server`: hyper's connection, driven by the measuring task.
    Server,
    /// `server_remote`: isol8's `RemoteEngine`.
    Remote,
    /// `warm_paired`: the server's engine called in process.
    Paired,
}

impl Path {
    /// Every path, in the order of the first round.
    const ALL: [Path; 3] = [Path::Server, Path::Remote, Path::Paired];

    /// The row's name.
    fn name(self) -> &'static str {
        match self {
            Path::Server => "server",
            Path::Remote => "server_remote",
            Path::Paired => "warm_paired",
        }
    }
}

/// Runs `n` rounds of the three sequential paths (after one unmeasured warm-up of each)
/// and then `execs` `server` requests spread over [`CONCURRENCY`] workers, against a
/// server started for the purpose and stopped afterwards.
pub async fn run(n: usize, execs: usize) -> Result<ServerReport> {
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
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        isol8_server::app(state.clone()),
    )));
    let measured = measure(&pool, &recorder, addr, &key, n, execs).await;
    server.abort();
    state.shutdown().await;
    let (rounds, execs_per_s) = measured?;
    let mut rows = Vec::new();
    let mut timings = Vec::new();
    for (path, pairs) in Path::ALL.into_iter().zip(rounds) {
        let (samples, split): (Vec<Sample>, Vec<PhaseSample>) = pairs
            .into_iter()
            .map(|(s, reported)| (s, PhaseSample::of(&s, reported)))
            .unzip();
        rows.push(summarize_samples("python", path.name(), &samples));
        timings.push(phases::phase_timings("python", path.name(), &split));
    }
    Ok(ServerReport {
        rows,
        phases: timings,
        throughput: Throughput {
            runtime: "python".into(),
            path: "server".into(),
            concurrency: CONCURRENCY,
            execs_per_s,
            max_concurrent: CONCURRENCY,
            peak_running: None,
        },
    })
}

/// An HTTP/1.1 connection to the server whose requests are sent and whose connection is
/// driven by the task calling [`Connection::post`], so no other task sits between the
/// caller and the socket (as reqwest's pooled connection task does).
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>,
}

impl Connection {
    /// Connects to `addr` (`TCP_NODELAY`, as reqwest sets it).
    async fn open(addr: SocketAddr) -> Result<Connection> {
        let io = |op: &'static str| move |source| BenchError::ServerIo { op, source };
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(io("connect to the server"))?;
        stream.set_nodelay(true).map_err(io("set TCP_NODELAY"))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::ServerRequest(format!("HTTP handshake: {e}")))?;
        Ok(Connection { sender, conn })
    }

    /// `POST /execute` with `body` (JSON) and the bearer `key`; the answer's JSON.
    async fn execute(&mut self, key: &str, body: &Bytes) -> Result<serde_json::Value> {
        let failed = |e: hyper::Error| BenchError::ServerRequest(e.to_string());
        let req = hyper::Request::post("/execute")
            .header(hyper::header::HOST, "127.0.0.1")
            .header(hyper::header::AUTHORIZATION, format!("Bearer {key}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| BenchError::ServerRequest(e.to_string()))?;
        let Connection { sender, conn } = self;
        let exchange = async {
            let answer = sender.send_request(req).await.map_err(failed)?;
            let bytes = answer.into_body().collect().await.map_err(failed)?;
            serde_json::from_slice::<serde_json::Value>(&bytes.to_bytes())
                .map_err(|e| BenchError::ServerRequest(format!("answer: {e}")))
        };
        tokio::select! {
            answer = exchange => answer,
            // The connection only ends here when the server closed it mid-exchange.
            ended = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                Err(BenchError::ServerRequest(match ended {
                    Ok(()) => "the server closed the connection".into(),
                    Err(e) => e.to_string(),
                }))
            }
        }
    }
}

/// The program's `durationMs` from a `POST /execute` answer of `print(1)`.
fn printed_one(answer: serde_json::Value) -> Result<f64> {
    match answer["durationMs"].as_u64() {
        Some(program_ms) if answer["stdout"] == "1\n" => Ok(program_ms as f64),
        _ => Err(BenchError::ServerRequest(answer.to_string())),
    }
}

/// What the three paths send through.
struct Clients<'a> {
    pool: &'a isol8::DockerEngine,
    remote: &'a isol8::remote::RemoteEngine,
    conn: &'a mut Connection,
    key: &'a str,
    req: &'a ExecutionRequest,
    body: &'a Bytes,
}

impl Clients<'_> {
    /// One timed execution on `path`, with the phases `recorder` saw.
    async fn sample(&mut self, path: Path, recorder: &PhaseRecorder) -> Result<(Sample, Reported)> {
        timed_run(recorder, async {
            Ok(match path {
                Path::Server => printed_one(self.conn.execute(self.key, self.body).await?)?,
                Path::Remote => check(self.remote, self.req).await?.duration_ms as f64,
                Path::Paired => check(self.pool, self.req).await?.duration_ms as f64,
            })
        })
        .await
    }
}

/// `n` rounds of [`Path::ALL`] (samples per path, in that order), each sample sent when the
/// server's pool (`pool`, the engine behind it) is ready as the library's `warm` path's
/// are, and the `server` throughput (executions per second) at [`CONCURRENCY`].
async fn measure(
    pool: &isol8::DockerEngine,
    recorder: &PhaseRecorder,
    addr: SocketAddr,
    key: &str,
    n: usize,
    execs: usize,
) -> Result<([Vec<(Sample, Reported)>; 3], f64)> {
    let req = hello_request("python")?;
    let body = Bytes::from(serde_json::json!({ "request": req }).to_string());
    let remote = isol8::remote::RemoteEngine::new(
        &format!("http://{addr}"),
        key,
        None,
        EngineOptions::default(),
    )?;
    let mut conn = Connection::open(addr).await?;
    let mut clients = Clients {
        pool,
        remote: &remote,
        conn: &mut conn,
        key,
        req: &req,
        body: &body,
    };
    let python = ["python".to_string()];
    let mut rounds: [Vec<(Sample, Reported)>; 3] = Default::default();
    for path in Path::ALL {
        pool.prewarm(&python).await?;
        clients.sample(path, recorder).await?; // warm-up
    }
    for round in 0..n {
        for i in 0..Path::ALL.len() {
            let k = (round + i) % Path::ALL.len();
            pool.prewarm(&python).await?;
            rounds[k].push(clients.sample(Path::ALL[k], recorder).await?);
        }
    }
    let per_worker = execs.div_ceil(CONCURRENCY);
    let mut conns = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        conns.push(Connection::open(addr).await?);
    }
    let t = Instant::now();
    let workers = conns.into_iter().map(|mut conn| {
        let (key, body) = (key.to_string(), body.clone());
        tokio::spawn(async move {
            for _ in 0..per_worker {
                printed_one(conn.execute(&key, &body).await?)?;
            }
            Ok::<_, BenchError>(())
        })
    });
    for w in futures_util::future::join_all(workers).await {
        w??;
    }
    let execs_per_s = (per_worker * CONCURRENCY) as f64 / t.elapsed().as_secs_f64();
    Ok((rounds, execs_per_s))
}
