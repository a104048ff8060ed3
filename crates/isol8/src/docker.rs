//! [`DockerEngine`]: the [`crate::Engine`] on a local Docker daemon.

use bollard::Docker;

use crate::{Error, Result};

/// Connects to the local Docker daemon (`DOCKER_HOST` or the default socket) and
/// negotiates the API version, so daemons from 20.10 (API 1.41) up to current work.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| Error::DockerUnavailable { detail: e.to_string() })?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| Error::DockerUnavailable { detail: e.to_string() })?;
    docker.ping().await.map_err(|e| Error::DockerUnavailable { detail: e.to_string() })?;
    Ok(docker)
}

/// Placeholder until the engine lands.
#[derive(Debug)]
pub struct DockerEngine;
