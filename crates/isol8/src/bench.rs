//! `isol8 bench`: end-to-end latency of isol8's paths against Docker's own, measured in
//! the same run on the same images.
//!
//! Paths, per runtime, for a hello-world program:
//! * `cold` — an ephemeral execution with no pool (create, attach, start, agent, remove);
//! * `warm` — an ephemeral execution from a warm pool (one request frame, frames back);
//! * `docker_exec` — baseline: create exec + start attached + inspect into a running
//!   container of the same image (what most sandboxes do per execution);
//! * `docker_run` — baseline: create + start + wait + remove of the same image and command.
//!
//! All containers get the same hardened `HostConfig`. Throughput is measured on the warm
//! path with a pool and `maxConcurrent` sized to the concurrency.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use isol8_protocol::{EngineOptions, ExecutionRequest, PoolSize, PoolStrategy};
use serde::Serialize;

use crate::docker::{connect, host_config, EngineConfig};
use crate::engine::Engine;
use crate::limits::SandboxSettings;
use crate::{DockerEngine, Error, Result, LABEL_MANAGED, LABEL_PID, LABEL_RUNTIME};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Runtimes to measure.
    pub runtimes: Vec<String>,
    /// Samples per path and runtime.
    pub n: usize,
    /// Concurrency levels of the throughput test.
    pub concurrency: Vec<usize>,
    /// Executions per throughput measurement.
    pub throughput_execs: usize,
    /// Runtimes whose throughput is measured.
    pub throughput_runtimes: Vec<String>,
}

/// Latency of one path for one runtime.
#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    /// Runtime.
    pub runtime: String,
    /// `cold`, `warm`, `docker_exec` or `docker_run`.
    pub path: String,
    /// Samples.
    pub n: usize,
    /// Fastest sample, ms.
    pub min_ms: f64,
    /// Median, ms.
    pub median_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
}

/// Warm-path throughput at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Runtime.
    pub runtime: String,
    /// `warm` (the library) or `server` (through `POST /execute`).
    pub path: String,
    /// Concurrent executions.
    pub concurrency: usize,
    /// Completed executions per second.
    pub execs_per_s: f64,
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory, GiB.
    pub memory_gb: f64,
    /// Kernel release.
    pub kernel: String,
    /// Docker server version.
    pub docker: String,
    /// Docker API version in use.
    pub docker_api: String,
    /// CPU model.
    pub cpu_model: String,
}

/// Everything `isol8 bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The machine.
    pub machine: Machine,
    /// Latency per runtime and path.
    pub results: Vec<PathResult>,
    /// Warm throughput.
    pub throughput: Vec<Throughput>,
    /// Peak resident memory of this (engine) process, MiB.
    pub peak_rss_mb: f64,
}

/// Hello-world code and its plain command line (for the Docker baselines).
fn hello(runtime: &str) -> Result<(&'static str, Vec<&'static str>)> {
    Ok(match runtime {
        "python" => ("print(1)", vec!["python3", "-c", "print(1)"]),
        "node" => ("console.log(1)", vec!["node", "-e", "console.log(1)"]),
        "bun" => ("console.log(1)", vec!["bun", "-e", "console.log(1)"]),
        "deno" => ("console.log(1)", vec!["deno", "eval", "console.log(1)"]),
        "bash" => ("echo 1", vec!["bash", "-c", "echo 1"]),
        other => {
            return Err(Error::InvalidRequest(format!(
                "no benchmark program for runtime `{other}`"
            )))
        }
    })
}

/// Min, median and p95 of `samples` (milliseconds) as a result row.
pub fn summarize(runtime: &str, path: &str, mut samples: Vec<f64>) -> PathResult {
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let idx = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[idx.min(samples.len() - 1)]
    };
    PathResult {
        runtime: runtime.to_string(),
        path: path.to_string(),
        n: samples.len(),
        min_ms: samples.first().copied().unwrap_or(0.0),
        median_ms: pick(0.5),
        p95_ms: pick(0.95),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn engine(pool: u32, max_concurrent: usize) -> Result<DockerEngine> {
    let options = EngineOptions {
        pool_strategy: Some(PoolStrategy::Fast),
        pool_size: Some(PoolSize::Split {
            clean: pool,
            dirty: pool,
        }),
        ..Default::default()
    };
    DockerEngine::connect_with(EngineConfig {
        options,
        max_concurrent: Some(max_concurrent),
        ..Default::default()
    })
    .await
}

async fn check(engine: &DockerEngine, req: &ExecutionRequest) -> Result<()> {
    let r = engine.execute(req.clone()).await?;
    if r.exit_code != 0 || r.stdout.trim() != "1" {
        return Err(Error::Sandbox(format!(
            "benchmark program failed in {}: exit {} stdout {:?} stderr {:?}",
            req.runtime, r.exit_code, r.stdout, r.stderr
        )));
    }
    Ok(())
}

/// Runs the benchmark; `progress` receives a line per step.
pub async fn run(
    opts: &BenchOptions,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<BenchReport> {
    let docker = connect().await?;
    let machine = machine(&docker).await;
    let settings = SandboxSettings::resolve(&EngineOptions::default())?;
    let host = host_config(&settings)?;
    let mut results = Vec::new();
    let cold_engine = engine(0, 1).await?;
    let warm_engine = engine(1, 1).await?;

    for runtime in &opts.runtimes {
        let (src, argv) = hello(runtime)?;
        let image = crate::images::image_for(runtime);
        let req = ExecutionRequest {
            runtime: runtime.clone(),
            code: Some(src.to_string()),
            ..Default::default()
        };

        progress(format!("{runtime}: warm"));
        warm_engine.prewarm(std::slice::from_ref(runtime)).await?;
        check(&warm_engine, &req).await?; // warm-up, not counted
        let mut warm = Vec::new();
        for _ in 0..opts.n {
            let t = Instant::now();
            check(&warm_engine, &req).await?;
            warm.push(ms(t.elapsed()));
        }
        results.push(summarize(runtime, "warm", warm));

        progress(format!("{runtime}: docker exec"));
        results.push(summarize(
            runtime,
            "docker_exec",
            docker_exec(&docker, &image, runtime, &argv, &host, opts.n).await?,
        ));

        progress(format!("{runtime}: cold"));
        let mut cold = Vec::new();
        for _ in 0..opts.n {
            let t = Instant::now();
            check(&cold_engine, &req).await?;
            cold.push(ms(t.elapsed()));
        }
        results.push(summarize(runtime, "cold", cold));

        progress(format!("{runtime}: docker run"));
        let mut run = Vec::new();
        for _ in 0..opts.n {
            run.push(docker_run(&docker, &image, runtime, &argv, &host).await?);
        }
        results.push(summarize(runtime, "docker_run", run));
    }
    warm_engine.stop().await?;
    cold_engine.stop().await?;

    let mut throughput = Vec::new();
    for runtime in &opts.throughput_runtimes {
        let (src, _) = hello(runtime)?;
        let req = ExecutionRequest {
            runtime: runtime.clone(),
            code: Some(src.to_string()),
            ..Default::default()
        };
        for &c in &opts.concurrency {
            progress(format!("{runtime}: throughput at concurrency {c}"));
            let e = engine(c as u32, c).await?;
            e.prewarm(std::slice::from_ref(runtime)).await?;
            check(&e, &req).await?;
            let t = Instant::now();
            let per_worker = opts.throughput_execs.div_ceil(c);
            let workers = (0..c).map(|_| {
                let e = e.clone();
                let req = req.clone();
                tokio::spawn(async move {
                    for _ in 0..per_worker {
                        check(&e, &req).await?;
                    }
                    Ok::<_, Error>(())
                })
            });
            for w in futures_util::future::join_all(workers).await {
                w.map_err(|e| Error::Sandbox(e.to_string()))??;
            }
            let elapsed = t.elapsed().as_secs_f64();
            throughput.push(Throughput {
                runtime: runtime.clone(),
                path: "warm".into(),
                concurrency: c,
                execs_per_s: (per_worker * c) as f64 / elapsed,
            });
            e.stop().await?;
        }
    }
    Ok(BenchReport {
        machine,
        results,
        throughput,
        peak_rss_mb: peak_rss_mb(),
    })
}

fn labels(runtime: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_RUNTIME.to_string(), runtime.to_string()),
        (LABEL_PID.to_string(), std::process::id().to_string()),
        ("isol8.bench".to_string(), "true".to_string()),
    ])
}

async fn remove(docker: &bollard::Docker, id: &str) {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let _ = docker.remove_container(id, Some(opts)).await;
}

/// Baseline: `docker exec` of the command into a running container of the same image.
async fn docker_exec(
    docker: &bollard::Docker,
    image: &str,
    runtime: &str,
    argv: &[&str],
    host: &bollard::models::HostConfig,
    n: usize,
) -> Result<Vec<f64>> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["sleep".into(), "infinity".into()]),
        user: Some("1000:1000".into()),
        working_dir: Some("/sandbox".into()),
        network_disabled: Some(true),
        labels: Some(labels(runtime)),
        host_config: Some(host.clone()),
        ..Default::default()
    };
    let name = format!(
        "isol8-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let id = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .map_err(|e| Error::docker("create container", e))?
        .id;
    let result = async {
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| Error::docker("start container", e))?;
        let mut samples = Vec::new();
        for i in 0..=n {
            let t = Instant::now();
            let exec = docker
                .create_exec(
                    &id,
                    CreateExecOptions::<String> {
                        cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        env: Some(vec!["DENO_DIR=/tmp/deno".into(), "HOME=/sandbox".into()]),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| Error::docker("create exec", e))?;
            let mut out = Vec::new();
            if let StartExecResults::Attached { mut output, .. } = docker
                .start_exec(
                    &exec.id,
                    Some(StartExecOptions {
                        detach: false,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| Error::docker("start exec", e))?
            {
                while let Some(chunk) = output.next().await {
                    out.extend_from_slice(
                        &chunk
                            .map_err(|e| Error::docker("read exec output", e))?
                            .into_bytes(),
                    );
                }
            }
            let info = docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| Error::docker("inspect exec", e))?;
            if info.exit_code != Some(0) {
                return Err(Error::Sandbox(format!(
                    "docker exec baseline failed for {runtime}: {:?} {}",
                    info.exit_code,
                    String::from_utf8_lossy(&out)
                )));
            }
            if i > 0 {
                samples.push(ms(t.elapsed()));
            }
        }
        Ok(samples)
    }
    .await;
    remove(docker, &id).await;
    result
}

/// Baseline: create + start + wait + remove of the same image and command.
async fn docker_run(
    docker: &bollard::Docker,
    image: &str,
    runtime: &str,
    argv: &[&str],
    host: &bollard::models::HostConfig,
) -> Result<f64> {
    let t = Instant::now();
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(argv.iter().map(|s| s.to_string()).collect()),
        user: Some("1000:1000".into()),
        working_dir: Some("/sandbox".into()),
        env: Some(vec!["DENO_DIR=/tmp/deno".into(), "HOME=/sandbox".into()]),
        network_disabled: Some(true),
        labels: Some(labels(runtime)),
        host_config: Some(host.clone()),
        ..Default::default()
    };
    let id = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(|e| Error::docker("create container", e))?
        .id;
    let outcome = async {
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| Error::docker("start container", e))?;
        let mut wait =
            docker.wait_container(&id, Some(WaitContainerOptionsBuilder::default().build()));
        let mut code = None;
        while let Some(item) = wait.next().await {
            match item {
                Ok(r) => code = Some(r.status_code),
                Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => {
                    code = Some(c)
                }
                Err(e) => return Err(Error::docker("wait container", e)),
            }
        }
        if code != Some(0) {
            return Err(Error::Sandbox(format!(
                "docker run baseline failed for {runtime}: exit {code:?}"
            )));
        }
        Ok(())
    }
    .await;
    remove(docker, &id).await;
    outcome?;
    Ok(ms(t.elapsed()))
}

async fn machine(docker: &bollard::Docker) -> Machine {
    let version = docker.version().await.ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_gb: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        docker: version
            .as_ref()
            .and_then(|v| v.version.clone())
            .unwrap_or_default(),
        docker_api: docker.client_version().to_string(),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
    }
}

/// Peak resident memory of this process (VmHWM), MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| (kb / 1024.0 * 10.0).round() / 10.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_sorted_samples() {
        let r = summarize("python", "warm", vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((r.min_ms, r.median_ms, r.p95_ms, r.n), (1.0, 3.0, 5.0, 5));
        let empty = summarize("python", "warm", vec![]);
        assert_eq!(empty.n, 0);
    }

    #[test]
    fn every_builtin_runtime_has_a_benchmark_program() {
        for rt in crate::images::RUNTIMES {
            assert!(hello(rt).is_ok(), "{rt}");
        }
        assert!(hello("cobol").is_err());
    }
}
