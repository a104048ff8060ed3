//! The library's error type. Every variant says what failed and, where there is one,
//! what the user can do about it.

/// Result alias for the isol8 library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (unknown runtime, both `code` and `cmd`, bad path…).
    #[error("{0}")]
    InvalidRequest(String),
    /// An option has a value outside its accepted form.
    #[error("invalid value for `{field}`: {message}")]
    InvalidOption {
        /// Option name as written in JSON (`memoryLimit`, …).
        field: String,
        /// What is accepted.
        message: String,
    },
    /// The request asks for something this version does not do yet.
    #[error("{0} is not supported yet")]
    NotSupported(String),
    /// The Docker daemon cannot be reached.
    #[error("cannot reach the Docker daemon ({detail}); start it (e.g. `sudo systemctl start docker`, or `sudo dockerd &`) and try again")]
    DockerUnavailable {
        /// What the connection attempt reported.
        detail: String,
    },
    /// The runtime's image has not been built.
    #[error("image `{image}` for runtime `{runtime}` is missing; run `isol8 setup` to build it")]
    ImageMissing {
        /// Image reference.
        image: String,
        /// Runtime that needs it.
        runtime: String,
    },
    /// A Docker Engine API call failed.
    #[error("docker {op} failed: {source}")]
    Docker {
        /// The operation (`create container`, `attach`, …).
        op: &'static str,
        /// The API error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The in-sandbox agent misbehaved, or the sandbox could not be started.
    #[error("sandbox failure: {0}")]
    Sandbox(String),
    /// The sandbox went away while it ran the execution (its container was killed or
    /// removed from outside): how the program ended is unknown. Retrying runs on a new
    /// sandbox.
    #[error("sandbox lost: {0}")]
    SandboxLost(String),
    /// The sandbox stopped answering (its container is paused/frozen): the program may
    /// never have run. The sandbox is discarded; retrying runs on a new one.
    #[error("sandbox unresponsive: {0}")]
    SandboxUnresponsive(String),
    /// Every execution slot stayed busy for the request's whole timeout.
    #[error("no execution slot became free within {waited_ms} ms (maxConcurrent = {max_concurrent}); retry later or raise maxConcurrent")]
    QueueTimeout {
        /// How long the request waited.
        waited_ms: u64,
        /// The engine's bound on concurrent executions.
        max_concurrent: usize,
    },
    /// `installPackages` failed; `output` is the end of the installer's own messages.
    #[error("installing packages with `{installer}` failed (exit code {exit_code}): {output}")]
    PackageInstall {
        /// The installer (`pip`, `npm`, `bun`, `deno`).
        installer: String,
        /// Its exit code.
        exit_code: i32,
        /// The last lines it printed.
        output: String,
    },
    /// The engine was stopped while the request was pending or running.
    #[error("the engine is stopped")]
    Stopped,
    /// An isol8 server refused or failed a request.
    #[error("isol8 server error{}: {message}", if *status > 0 { format!(" ({status})") } else { String::new() })]
    Remote {
        /// HTTP status (0 when the server could not be reached).
        status: u16,
        /// The server's `error` message.
        message: String,
    },
    /// Loading or validating the configuration failed.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A local I/O operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps a Docker API error, recognising an unreachable daemon.
    pub fn docker(op: &'static str, source: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match &source {
            B::HyperResponseError { .. }
            | B::IOError { .. }
            | B::SocketNotFoundError(_)
            | B::RequestTimeoutError => Error::DockerUnavailable {
                detail: source.to_string(),
            },
            // Connection refused on an existing socket: the daemon is stopping or restarting.
            B::HyperLegacyError { err } if err.is_connect() => Error::DockerUnavailable {
                detail: source.to_string(),
            },
            _ => Error::Docker { op, source },
        }
    }

    /// An invalid-option error.
    pub fn option(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidOption {
            field: field.into(),
            message: message.into(),
        }
    }

    /// True when a started execution was cut off with no way to know how its program
    /// ended: the sandbox was lost or stopped answering, the Docker daemon went away, or
    /// the engine was stopped. A stream ends such a run with an `error` event and no
    /// `exit` event (there is no exit code to report).
    pub fn is_sandbox_lost(&self) -> bool {
        matches!(
            self,
            Error::SandboxLost(_)
                | Error::SandboxUnresponsive(_)
                | Error::DockerUnavailable { .. }
                | Error::Stopped
        )
    }

    /// True for mistakes in the caller's input (as opposed to engine or Docker failures).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidRequest(_)
                | Error::InvalidOption { .. }
                | Error::NotSupported(_)
                | Error::PackageInstall { .. }
                | Error::Config(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_daemon_connection_is_docker_unavailable() {
        // A socket file nobody listens on: what a stopping or restarting daemon leaves.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let docker = bollard::Docker::connect_with_unix(
            path.to_str().expect("utf-8 path"),
            5,
            bollard::API_DEFAULT_VERSION,
        )
        .expect("client");
        let err = docker
            .inspect_container("isol8-none", None)
            .await
            .expect_err("nobody listens");
        let err = Error::docker("inspect container", err);
        assert!(matches!(err, Error::DockerUnavailable { .. }), "{err:?}");
    }
}
