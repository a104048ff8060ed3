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
    #[error("image `{image}` for runtime `{runtime}` is missing; run `isol8 setup --runtime {runtime}` to build it")]
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
        /// What the container backend reported.
        #[source]
        source: ApiError,
    },
    /// The in-sandbox agent misbehaved, or the sandbox could not be started.
    #[error("sandbox failure: {0}")]
    Sandbox(SandboxError),
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
    /// Wraps an error of a container API call made for `op`, recognising an unreachable
    /// daemon ([`ApiError::Unreachable`] becomes [`Error::DockerUnavailable`]).
    pub fn docker(op: &'static str, source: impl Into<ApiError>) -> Self {
        match source.into() {
            e @ ApiError::Unreachable(_) => Error::DockerUnavailable {
                detail: e.to_string(),
            },
            source => Error::Docker { op, source },
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

impl From<SandboxError> for Error {
    fn from(e: SandboxError) -> Self {
        Error::Sandbox(e)
    }
}

/// A boxed error of a backend's own type (the Docker client's, or a test backend's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a call to the container API (`docker::ContainerApi`) failed, by what the
/// engine does about it. Defined here, not in `docker`, so that [`Error`] can carry it
/// without an import cycle. The text is the backend's own.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The daemon cannot be reached (not running, restarting, socket missing, timed out).
    #[error(transparent)]
    Unreachable(BoxError),
    /// The container or image does not exist (HTTP 404).
    #[error(transparent)]
    NotFound(BoxError),
    /// The object is busy: e.g. a removal of the container is already in progress (409).
    #[error(transparent)]
    Conflict(BoxError),
    /// Any other failure the daemon reported.
    #[error(transparent)]
    Failed(BoxError),
}

impl ApiError {
    /// A `NotFound` error with this message (for test backends).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(message.into().into())
    }

    /// A `Failed` error with this message (for test backends).
    pub fn failed(message: impl Into<String>) -> ApiError {
        ApiError::Failed(message.into().into())
    }
}

/// What failed in a sandbox: starting it, talking to its agent, resetting it, moving
/// files in and out of it. Each variant names the failed operation and carries what
/// caused it. Defined here, not in `docker`, because secret masking (`output`) builds
/// one too.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The per-sandbox egress proxy of a `filtered` network could not be bound.
    #[error("cannot start the egress proxy of the filtered network: {source}")]
    StartEgress {
        /// The socket error.
        source: std::io::Error,
    },
    /// The agent did not say hello in time after its container started.
    #[error("the sandbox agent did not start within {secs} s")]
    HelloTimeout {
        /// The limit, in seconds.
        secs: u64,
    },
    /// The agent's first frame was not its hello.
    #[error("agent sent {kind:?} before hello")]
    FrameBeforeHello {
        /// What it sent instead.
        kind: isol8_protocol::agent::Kind,
    },
    /// The container stopped before its agent said hello.
    #[error("{why}")]
    DiedAtStart {
        /// How it ended (exit code, the agent's last words).
        why: String,
    },
    /// The image's agent speaks another protocol version.
    #[error("the image's agent speaks protocol {agent} but this engine speaks {engine}; rebuild the images with `isol8 setup --force`")]
    ProtocolMismatch {
        /// The agent's version.
        agent: u16,
        /// The engine's version.
        engine: u16,
    },
    /// The engine asked the agent to install the strict seccomp filter and its hello did
    /// not say it had: the sandbox is not started unfiltered.
    #[error("the sandbox's agent did not install the strict seccomp filter; rebuild the images with `isol8 setup --force`")]
    SeccompFilter,
    /// The agent said it connected to the sandbox's data socket, but the engine could not
    /// take the connection.
    #[error("cannot take the agent's data socket connection: {source}")]
    DataSocket {
        /// What went wrong.
        source: std::io::Error,
    },
    /// The sandbox's data socket failed while frames were read.
    #[error("cannot read from the sandbox agent: {source}")]
    Receive {
        /// The read error.
        source: std::io::Error,
    },
    /// A frame could not be written to the agent (its container is gone).
    #[error("cannot send to the sandbox agent: {source}")]
    Send {
        /// The write error.
        source: std::io::Error,
    },
    /// The agent's byte stream is not a valid frame sequence.
    #[error("agent protocol error: {source}")]
    Decode {
        /// The decoder's error.
        source: isol8_protocol::agent::FrameError,
    },
    /// A frame's payload is not what its kind requires.
    #[error("{source}")]
    BadFrame {
        /// The payload error.
        source: isol8_protocol::agent::FrameError,
    },
    /// The agent sent a frame the engine did not expect at this point.
    #[error("unexpected {kind:?} frame {during}")]
    UnexpectedFrame {
        /// What it sent.
        kind: isol8_protocol::agent::Kind,
        /// When (`from the agent`, `during reset`).
        during: &'static str,
    },
    /// The agent did not answer a reset in time.
    #[error("reset timed out")]
    ResetTimeout,
    /// The container's output ended during a reset.
    #[error("sandbox ended during reset")]
    EndedDuringReset,
    /// The agent did not answer a `Prestart` in time.
    #[error("pre-starting an interpreter timed out after {secs} s")]
    PrestartTimeout {
        /// The limit, seconds.
        secs: u64,
    },
    /// The container's output ended while an interpreter was pre-started.
    #[error("sandbox ended while an interpreter was pre-started")]
    EndedDuringPrestart,
    /// The agent could not return the sandbox to a fresh state.
    #[error("reset failed: {problem}")]
    ResetFailed {
        /// What was left behind, as the agent reported it.
        problem: String,
    },
    /// No sandbox of a prewarmed pool could be started.
    #[error("could not warm {image}: see the log")]
    Warm {
        /// The image.
        image: String,
    },
    /// A file transfer with a session's agent did not finish in time.
    #[error("the session's sandbox did not finish a file transfer within {secs} s; its container was discarded with its files, and the next execution starts a new one")]
    TransferTimeout {
        /// The limit, in seconds.
        secs: u64,
    },
    /// The session's container ended during a file transfer.
    #[error("the session's container stopped unexpectedly")]
    SessionEnded,
    /// A file the agent read back is not valid base64.
    #[error("invalid base64 in result file: {source}")]
    DecodeFile {
        /// The decoder's error.
        source: base64::DecodeError,
    },
    /// A container removal another caller started did not finish.
    #[error("container {id} is still being removed after 10 s")]
    StillRemoving {
        /// The container.
        id: String,
    },
    /// Compiling large secret values on a blocking thread failed (the thread panicked or
    /// was cancelled).
    #[error("compiling the secrets failed: {source}")]
    CompileSecrets {
        /// The task's error.
        source: tokio::task::JoinError,
    },
    /// Masking a large file on a blocking thread failed.
    #[error("masking secrets failed: {source}")]
    MaskSecrets {
        /// The task's error.
        source: tokio::task::JoinError,
    },
    /// The text of a failure that quoted a secret, with the secret masked (the original
    /// error, which holds the secret, is dropped).
    #[error("{0}")]
    Masked(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_daemons_are_docker_unavailable_and_other_failures_keep_their_op() {
        let e = Error::docker("inspect container", ApiError::Unreachable("refused".into()));
        assert!(
            matches!(&e, Error::DockerUnavailable { detail } if detail == "refused"),
            "{e:?}"
        );
        let e = Error::docker("remove container", ApiError::failed("boom"));
        assert_eq!(e.to_string(), "docker remove container failed: boom");
        let e: Error = SandboxError::ResetFailed {
            problem: "processes survived".into(),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "sandbox failure: reset failed: processes survived"
        );
    }
}
