//! [`Target`]: what the tools drive — a local engine (the Docker daemon, under the
//! operator's configuration and `serverPolicy`) or a remote `isol8 serve` (whose own
//! policy applies there).
//!
//! Locally, every request a model makes is judged as `isol8 serve` judges a client's:
//! its options laid over the operator's and resolved, then
//! [`isol8_server::policy::check`] against the operator's settings (so a model can keep
//! or narrow what the operator set, never widen it: no host network, foreign image or
//! longer timeout unless `serverPolicy` allows it). The policy lives in the server crate;
//! this crate (a layer above it) calls it rather than keeping a copy.

use std::sync::Arc;

use isol8::config::ServerPolicy;
use isol8::docker::EngineConfig;
use isol8::settings::SandboxSettings;
use isol8::{DockerEngine, Engine, EngineOptions, ExecutionRequest, ExecutionResult, RemoteEngine};
use isol8_protocol::options::Mode;
use isol8_server::policy::{self, PolicyConfigError, PolicyError};

/// Why a tool call was refused or failed; its text is the one line `isol8 run` would
/// print after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The operator's `serverPolicy` does not allow what was asked.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The engine refused or failed (invalid request, Docker unreachable, server error…).
    #[error(transparent)]
    Engine(#[from] isol8::Error),
    /// A session problem (unknown id, too many sessions…), in words.
    #[error("{0}")]
    Session(String),
}

/// The local engine and the rules it runs under.
#[derive(Debug)]
pub struct Local {
    engine: DockerEngine,
    /// The operator's options (after the policy's caps lowered them): what a session's
    /// container is made from, with a model's options laid over them.
    options: EngineOptions,
    policy: ServerPolicy,
}

/// A remote `isol8 serve`.
#[derive(Debug, Clone)]
pub struct Remote {
    base: String,
    key: String,
}

/// What the tools drive.
#[derive(Debug)]
pub enum Target {
    /// The local Docker daemon.
    Local(Box<Local>),
    /// An `isol8 serve` at a URL.
    Remote(Remote),
}

/// One runtime, as `list_runtimes` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeInfo {
    /// Its name (`python`…).
    pub name: String,
    /// File extensions it runs (`.py`…).
    pub extensions: Vec<String>,
}

impl Target {
    /// A local engine from the operator's configuration, like `isol8 serve`'s: the
    /// policy is validated, defaults above a cap are lowered to it (each lowering one
    /// line in the returned list), then the daemon is connected.
    pub async fn local(
        mut config: EngineConfig,
        policy: ServerPolicy,
    ) -> Result<(Target, Vec<String>), LocalError> {
        policy::validate(&policy)?;
        let lowered = policy::bound_defaults(&policy, &mut config.options)?;
        let options = config.options.clone();
        let engine = DockerEngine::connect_with(config).await?;
        Ok((
            Target::Local(Box::new(Local {
                engine,
                options,
                policy,
            })),
            lowered,
        ))
    }

    /// A remote `isol8 serve` at `base` (`http://…`) with API `key`; checked for
    /// reachability with its `/health`.
    pub async fn remote(base: &str, key: &str) -> Result<Target, isol8::Error> {
        let probe = RemoteEngine::new(base, key, None, EngineOptions::default())?;
        probe.start().await?;
        Ok(Target::Remote(Remote {
            base: probe.base_url().to_string(),
            key: key.to_string(),
        }))
    }

    /// Checks a request against the operator's policy (local only: a remote server
    /// checks its own).
    pub fn check(&self, req: &ExecutionRequest, options: &EngineOptions) -> Result<(), Refusal> {
        let Target::Local(local) = self else {
            return Ok(());
        };
        let merged: Arc<SandboxSettings> = local.engine.settings_with(options)?;
        policy::check(
            &local.policy,
            req,
            options,
            local.engine.settings(),
            &merged,
        )?;
        Ok(())
    }

    /// Runs one request in a fresh sandbox, after the policy check.
    pub async fn run(
        &self,
        req: ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<ExecutionResult, Refusal> {
        self.check(&req, options)?;
        match self {
            Target::Local(local) => Ok(local.engine.execute_with(req, options).await?),
            Target::Remote(remote) => {
                let engine =
                    RemoteEngine::new(&remote.base, &remote.key, None, EngineOptions::default())?;
                Ok(engine.execute_with(req, options).await?)
            }
        }
    }

    /// The engine of a new persistent session `id` made with `options` (checked by the
    /// policy with `first`, the request that will start it). Its container starts with
    /// its first execution; stopping the engine removes it.
    pub fn new_session(
        &self,
        id: &str,
        first: &ExecutionRequest,
        options: &EngineOptions,
    ) -> Result<Arc<dyn Engine>, Refusal> {
        self.check(first, options)?;
        match self {
            Target::Local(local) => Ok(Arc::new(local.engine.sibling(EngineOptions {
                mode: Some(Mode::Persistent),
                ..local.options.overlay(options)
            })?)),
            Target::Remote(remote) => Ok(Arc::new(RemoteEngine::new(
                &remote.base,
                &remote.key,
                Some(id.to_string()),
                options.clone(),
            )?)),
        }
    }

    /// The runtimes code can run in.
    pub fn runtimes(&self) -> Vec<RuntimeInfo> {
        let builtin;
        let registry = match self {
            Target::Local(local) => local.engine.registry(),
            // The server runs the built-in set.
            Target::Remote(_) => {
                builtin = isol8::RuntimeRegistry::builtin();
                &builtin
            }
        };
        registry
            .iter()
            .map(|r| RuntimeInfo {
                name: r.name.clone(),
                extensions: r.extensions.clone(),
            })
            .collect()
    }

    /// What the operator allows, for `list_runtimes` (local only): the default network
    /// mode, the modes a model may ask for, custom images, the timeout cap.
    pub fn limits(&self) -> serde_json::Value {
        let Target::Local(local) = self else {
            return serde_json::json!({"enforcedBy": "the remote isol8 server"});
        };
        let own = local.engine.settings();
        let p = &local.policy;
        let mut networks = vec![own.network.as_str()];
        for n in p.allowed_networks.iter().flatten() {
            if !networks.contains(&n.as_str())
                && (n.as_str() != "host" || p.allow_host_network.unwrap_or(false))
            {
                networks.push(n.as_str());
            }
        }
        if p.allowed_networks.is_none() {
            for n in ["none", "filtered"] {
                if !networks.contains(&n) {
                    networks.push(n);
                }
            }
            if p.allow_host_network.unwrap_or(false) && !networks.contains(&"host") {
                networks.push("host");
            }
        }
        serde_json::json!({
            "defaultNetwork": own.network.as_str(),
            "networks": networks,
            "customImages": p.allow_custom_image.unwrap_or(false),
            "maxTimeoutMs": p.max_timeout_ms.unwrap_or(own.timeout_ms),
        })
    }

    /// How many sessions may be open at once (`serverPolicy.maxSessions`).
    pub fn max_sessions(&self) -> usize {
        match self {
            Target::Local(local) => local
                .policy
                .max_sessions
                .unwrap_or(ServerPolicy::DEFAULT_MAX_SESSIONS)
                as usize,
            Target::Remote(_) => ServerPolicy::DEFAULT_MAX_SESSIONS as usize,
        }
    }

    /// Stops the local engine: its running executions are killed and its containers
    /// removed (sessions are ended separately).
    pub async fn stop(&self) {
        if let Target::Local(local) = self {
            if let Err(e) = local.engine.stop().await {
                tracing::warn!(error = %e, "stopping the engine");
            }
        }
    }
}

/// Why the local engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// `serverPolicy` (or the defaults under it) is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyConfigError),
    /// The engine could not start (Docker unreachable, invalid options…).
    #[error(transparent)]
    Engine(#[from] isol8::Error),
}
