//! Engines on the local Docker daemon, and what they leave on it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use isol8::docker::EngineConfig;
use isol8::{DockerEngine, Engine, EngineOptions};

/// The image whose presence says "the isol8 images are built".
const PROBE_IMAGE: &str = "isol8:bash";

/// Why no Docker daemon with the isol8 images is usable here, or `None`. Looked up
/// once per process.
pub(crate) fn unavailable() -> Option<String> {
    static RESULT: OnceLock<Option<String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            block_on(async {
                let docker = match Docker::connect_with_defaults() {
                    Ok(d) => d,
                    Err(e) => return Some(format!("no Docker daemon: {e}")),
                };
                match tokio::time::timeout(Duration::from_secs(20), docker.ping()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Some(format!("no Docker daemon: {e}")),
                    Err(_) => return Some("no Docker daemon: no answer within 20 s".into()),
                }
                match docker.inspect_image(PROBE_IMAGE).await {
                    Ok(_) => None,
                    Err(e) => Some(format!(
                        "isol8 images are not built ({e}); run `isol8 setup`"
                    )),
                }
            })
        })
        .clone()
}

/// Runs `fut` to completion on a fresh current-thread runtime on a thread of its own, so
/// it works from synchronous tests and from inside another runtime alike.
fn block_on<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the test kit")
            .block_on(fut)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// An engine on the local daemon with `config`, in a test marked `docker`.
///
/// # Panics
/// When the engine cannot connect (the `docker` need was checked, so that is a failure).
pub async fn engine_with(config: EngineConfig) -> DockerEngine {
    match DockerEngine::connect_with(config).await {
        Ok(e) => e,
        Err(e) => panic!("cannot start an engine on the Docker daemon: {e}"),
    }
}

/// An engine on the local daemon with these options (and the default engine
/// configuration otherwise), in a test marked `docker`.
///
/// # Panics
/// As [`engine_with`].
pub async fn engine(options: EngineOptions) -> DockerEngine {
    engine_with(EngineConfig {
        options,
        ..Default::default()
    })
    .await
}

/// Ids of the isol8 containers (`isol8.managed=true`, any state) that carry the label
/// `label=value`, e.g. `isol8::LABEL_OWNER` and an engine's owner id.
///
/// # Panics
/// When the daemon cannot be asked.
pub async fn containers_labelled(label: &str, value: &str) -> Vec<String> {
    let docker = Docker::connect_with_defaults().expect("connect to the Docker daemon");
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}=true", isol8::LABEL_MANAGED),
            format!("{label}={value}"),
        ],
    )]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// How many containers the daemon reports created (its `create` events) with the label
/// `label=value` between the Unix times `since` and `until` (seconds, fractions allowed).
///
/// # Panics
/// When the daemon cannot be asked.
pub async fn containers_created(label: &str, value: &str, since: f64, until: f64) -> usize {
    use futures_util::StreamExt;
    let docker = Docker::connect_with_defaults().expect("connect to the Docker daemon");
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("event".to_string(), vec!["create".to_string()]),
        ("label".to_string(), vec![format!("{label}={value}")]),
    ]);
    let opts = bollard::query_parameters::EventsOptionsBuilder::default()
        .since(&format!("{since:.3}"))
        .until(&format!("{until:.3}"))
        .filters(&filters)
        .build();
    let events: Vec<_> = docker.events(Some(opts)).collect().await;
    for e in &events {
        assert!(e.is_ok(), "read the daemon's events: {e:?}");
    }
    events.len()
}

/// Containers on the daemon still labelled as owned by this engine.
///
/// # Panics
/// As [`containers_labelled`].
pub async fn leftovers(engine: &DockerEngine) -> Vec<String> {
    containers_labelled(isol8::LABEL_OWNER, engine.owner()).await
}

/// isol8 containers created by the process `pid` (a CLI or server child of the test),
/// from synchronous code.
///
/// # Panics
/// As [`containers_labelled`].
pub fn containers_of_pid(pid: u32) -> Vec<String> {
    block_on(async move { containers_labelled(isol8::LABEL_PID, &pid.to_string()).await })
}

/// Stops the engine and asserts it left no container behind.
///
/// # Panics
/// When stopping fails or a container of the engine is left.
pub async fn assert_clean(engine: &DockerEngine) {
    engine.stop().await.expect("stop");
    let left = leftovers(engine).await;
    assert!(left.is_empty(), "containers left behind: {left:?}");
}
