//! [`ContainerApi`] on the fake daemon's state.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};

use super::pipes::{Stdin, Stdio};
use super::{agent, AgentEnds, Container, CreateFailure, FakeDocker, State, Status};
use crate::docker::backend::{
    ApiStream, Attached, ContainerApi, ContainerEvent, ContainerFilter, ContainerSpec,
    ContainerState, ContainerSummary, DaemonInfo, EventFilter, ImageSummary,
};
use crate::error::ApiError;

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Exited { .. } => "exited",
    }
}

/// True when `labels` carry every `key=value` of `wanted`.
fn has_labels(labels: &BTreeMap<String, String>, wanted: &[String]) -> bool {
    wanted.iter().all(|w| {
        let (k, v) = w.split_once('=').unwrap_or((w, ""));
        labels.get(k).is_some_and(|have| have == v)
    })
}

/// The container `id` of `state`, or the daemon's 404.
fn container_mut<'a>(state: &'a mut State, id: &str) -> Result<&'a mut Container, ApiError> {
    state
        .containers
        .get_mut(id)
        .ok_or_else(|| no_such_container(id))
}

fn no_such_container(id: &str) -> ApiError {
    ApiError::not_found(format!("No such container: {id}"))
}

#[async_trait::async_trait]
impl ContainerApi for FakeDocker {
    async fn ping(&self) -> Result<(), ApiError> {
        self.check_reachable()
    }

    async fn create_container(&self, spec: ContainerSpec) -> Result<String, ApiError> {
        self.check_reachable()?;
        let mut state = self.lock();
        if !state.create_failures.is_empty() {
            return Err(match state.create_failures.remove(0) {
                CreateFailure::MissingImage => {
                    ApiError::not_found(format!("No such image: {}", spec.image))
                }
                CreateFailure::Unreachable => {
                    ApiError::Unreachable("connection refused (fake daemon)".into())
                }
                CreateFailure::Failed => ApiError::failed("fake daemon: create failed"),
            });
        }
        if state.missing_images.contains(&spec.image) {
            return Err(ApiError::not_found(format!(
                "No such image: {}",
                spec.image
            )));
        }
        state.created += 1;
        // 64 hex digits, like Docker's ids.
        let id = format!("{:032x}{}", state.created, uuid::Uuid::new_v4().simple());
        let container = Container {
            spec: ContainerSpec {
                // Sortable by creation.
                name: format!("{:08}-{}", state.created, spec.name),
                ..spec
            },
            status: Status::Created,
            pipes: Arc::default(),
            ends: None,
            tasks: Vec::new(),
            files: agent::Files::default(),
            paused: watch::Sender::new(false),
            execs: 0,
            resets: 0,
        };
        state.containers.insert(id.clone(), container);
        Ok(id)
    }

    async fn attach_container(&self, id: &str) -> Result<Attached, ApiError> {
        self.check_reachable()?;
        let mut state = self.lock();
        let c = container_mut(&mut state, id)?;
        let (engine_stdin, agent_stdin) = tokio::io::duplex(256 << 10);
        let (out, rx) = mpsc::channel(16);
        c.ends = Some(AgentEnds {
            stdin: agent_stdin,
            out,
        });
        Ok(Attached {
            input: Box::pin(Stdin {
                pipe: engine_stdin,
                pipes: c.pipes.clone(),
            }),
            output: Box::pin(Stdio {
                rx,
                pipes: c.pipes.clone(),
            }),
        })
    }

    async fn start_container(&self, id: &str) -> Result<(), ApiError> {
        self.check_reachable()?;
        let mut state = self.lock();
        let c = container_mut(&mut state, id)?;
        let ends = c
            .ends
            .take()
            .ok_or_else(|| ApiError::failed("fake daemon: start of a container never attached"))?;
        let (inbox_tx, inbox) = mpsc::channel(64);
        let reader = tokio::spawn(agent::read_stdin(ends.stdin, inbox_tx));
        let agent = agent::Agent {
            id: id.to_string(),
            daemon: self.daemon(),
            out: ends.out,
            inbox,
            files: c.files.clone(),
            paused: c.paused.subscribe(),
            seccomp_filter: c.spec.env.iter().any(|e| {
                e.split_once('=')
                    == Some((
                        isol8_protocol::seccomp::FILTER_ENV,
                        isol8_protocol::seccomp::FILTER_STRICT,
                    ))
            }),
        };
        let serve = tokio::spawn(agent.serve());
        c.tasks = vec![reader.abort_handle(), serve.abort_handle()];
        c.status = Status::Running;
        Ok(())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerState, ApiError> {
        self.check_reachable()?;
        let state = self.lock();
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| no_such_container(id))?;
        Ok(match c.status {
            Status::Created => ContainerState::default(),
            Status::Running => ContainerState {
                running: true,
                ..Default::default()
            },
            Status::Paused => ContainerState {
                running: true,
                paused: true,
                ..Default::default()
            },
            Status::Exited { code, oom } => ContainerState {
                running: false,
                paused: false,
                oom_killed: oom,
                exit_code: Some(code),
            },
        })
    }

    async fn remove_container(&self, id: &str) -> Result<(), ApiError> {
        self.check_reachable()?;
        let daemon = self.daemon();
        daemon.die(id, 137, false);
        let mut state = self.lock();
        let c = state
            .containers
            .remove(id)
            .ok_or_else(|| no_such_container(id))?;
        state.removed.push(id.to_string());
        drop(state);
        daemon.emit(id, &c.spec.labels, &["destroy"]);
        Ok(())
    }

    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerSummary>, ApiError> {
        self.check_reachable()?;
        let state = self.lock();
        Ok(state
            .containers
            .iter()
            .filter(|(_, c)| has_labels(&c.spec.labels, &filter.labels))
            .filter(|(_, c)| {
                filter.states.is_empty() || filter.states.iter().any(|s| s == status_name(c.status))
            })
            .map(|(id, c)| ContainerSummary {
                id: id.clone(),
                names: vec![format!("/{}", c.spec.name)],
                image: c.spec.image.clone(),
                state: status_name(c.status).to_string(),
                labels: c.spec.labels.clone(),
            })
            .collect())
    }

    fn container_events(&self, filter: &EventFilter) -> ApiStream<ContainerEvent> {
        let rx = self.shared.events.subscribe();
        let filter = filter.clone();
        let events = futures_util::stream::unfold((rx, filter), |(mut rx, filter)| async move {
            loop {
                match rx.recv().await {
                    Ok((event, labels)) => {
                        let wanted =
                            filter.actions.is_empty() || filter.actions.contains(&event.action);
                        if wanted && has_labels(&labels, &filter.labels) {
                            return Some((Ok(event), (rx, filter)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Box::pin(events)
    }

    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageSummary>, ApiError> {
        self.check_reachable()?;
        let state = self.lock();
        Ok(state
            .images
            .iter()
            .filter(|i| has_labels(&i.labels, labels))
            .cloned()
            .collect())
    }

    async fn image_exists(&self, reference: &str) -> bool {
        let state = self.lock();
        state
            .images
            .iter()
            .any(|i| i.tags.iter().any(|t| t == reference))
    }

    async fn remove_image(&self, reference: &str) -> Result<(), ApiError> {
        self.check_reachable()?;
        let mut state = self.lock();
        let before = state.images.len();
        state
            .images
            .retain(|i| i.id != reference && !i.tags.iter().any(|t| t == reference));
        match state.images.len() < before {
            true => Ok(()),
            false => Err(ApiError::not_found(format!("No such image: {reference}"))),
        }
    }

    async fn daemon_info(&self) -> Result<DaemonInfo, ApiError> {
        self.check_reachable()?;
        Ok(DaemonInfo {
            version: "fake".into(),
            api_version: "1.47".into(),
            client_api_version: "1.47".into(),
            os: "linux".into(),
            kernel_version: "fake".into(),
            security_options: vec!["name=seccomp,profile=builtin".into()],
            cgroup_version: Some("2".into()),
            cgroup_driver: Some("systemd".into()),
            memory_limit: Some(true),
            swap_limit: Some(true),
            pids_limit: Some(true),
            cpu_cfs_quota: Some(true),
        })
    }

    fn detached(&self) -> Result<Arc<dyn ContainerApi>, ApiError> {
        Ok(Arc::new(self.clone()))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
