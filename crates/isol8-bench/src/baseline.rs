//! The Docker baselines isol8's paths are compared with, on the same image, command and
//! hardened `HostConfig`: `docker_exec` (an exec into a running container, what most
//! sandboxes do per execution) and `docker_run` (create, start, wait, remove).

use std::collections::HashMap;
use std::time::Instant;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use isol8::{LABEL_MANAGED, LABEL_PID, LABEL_RUNTIME};

use crate::{ms, BenchError, Result};

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

/// Baseline: `docker exec` of the command into a running container of the same image,
/// `n` times after one unmeasured warm-up; the samples in milliseconds.
pub async fn docker_exec(
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
        .map_err(|e| isol8::Error::docker("create container", e))?
        .id;
    let result = async {
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| isol8::Error::docker("start container", e))?;
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
                .map_err(|e| isol8::Error::docker("create exec", e))?;
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
                .map_err(|e| isol8::Error::docker("start exec", e))?
            {
                while let Some(chunk) = output.next().await {
                    out.extend_from_slice(
                        &chunk
                            .map_err(|e| isol8::Error::docker("read exec output", e))?
                            .into_bytes(),
                    );
                }
            }
            let info = docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| isol8::Error::docker("inspect exec", e))?;
            if info.exit_code != Some(0) {
                return Err(BenchError::BaselineFailed {
                    path: "exec",
                    runtime: runtime.to_string(),
                    detail: format!("{:?} {}", info.exit_code, String::from_utf8_lossy(&out)),
                });
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

/// Baseline: create + start + wait + remove of the same image and command; the time it
/// took in milliseconds.
pub async fn docker_run(
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
        .map_err(|e| isol8::Error::docker("create container", e))?
        .id;
    let outcome = async {
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| isol8::Error::docker("start container", e))?;
        let mut wait =
            docker.wait_container(&id, Some(WaitContainerOptionsBuilder::default().build()));
        let mut code = None;
        while let Some(item) = wait.next().await {
            match item {
                Ok(r) => code = Some(r.status_code),
                Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => {
                    code = Some(c)
                }
                Err(e) => return Err(isol8::Error::docker("wait container", e).into()),
            }
        }
        if code != Some(0) {
            return Err(BenchError::BaselineFailed {
                path: "run",
                runtime: runtime.to_string(),
                detail: format!("exit {code:?}"),
            });
        }
        Ok(())
    }
    .await;
    remove(docker, &id).await;
    outcome?;
    Ok(ms(t.elapsed()))
}
