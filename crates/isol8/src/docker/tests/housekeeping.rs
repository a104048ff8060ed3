//! Housekeeping through the container API: orphans of dead processes are reaped (and
//! nothing else), cleanup removes only isol8's objects, the doctor reads the daemon.

use std::collections::BTreeMap;

use super::*;
use crate::docker::backend::{ContainerApi, ContainerSpec, ImageSummary};
use crate::docker::host_config::HostConfig;
use crate::docker::housekeeping::{
    cleanup, custom_images, daemon_checks, hostname, list_containers, list_images, reap_orphans,
    CleanupOptions, CustomImageInfo,
};
use crate::{
    BASE_IMAGE, LABEL_BUILD_PACKAGES, LABEL_BUILD_RUNTIME, LABEL_HOST, LABEL_MANAGED, LABEL_OWNER,
    LABEL_PERSIST, LABEL_PID,
};

/// Creates a container with these labels directly on the daemon.
async fn container(fake: &FakeDocker, labels: &[(&str, &str)]) -> String {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fake.create_container(ContainerSpec {
        name: "c".into(),
        image: "isol8:bash".into(),
        labels,
        env: Vec::new(),
        working_dir: "/sandbox".into(),
        network_disabled: true,
        host: HostConfig::default(),
    })
    .await
    .expect("create")
}

#[tokio::test]
async fn only_orphans_of_dead_isol8_processes_of_this_host_are_reaped() {
    let fake = FakeDocker::new();
    let host = hostname();
    let me = std::process::id().to_string();
    // A pid no process has: beyond the kernel's pid_max.
    let dead = "2000000000";
    let managed = (LABEL_MANAGED, "true");
    let orphan = container(&fake, &[managed, (LABEL_HOST, &host), (LABEL_PID, dead)]).await;
    let alive = container(&fake, &[managed, (LABEL_HOST, &host), (LABEL_PID, &me)]).await;
    let kept = container(
        &fake,
        &[
            managed,
            (LABEL_HOST, &host),
            (LABEL_PID, dead),
            (LABEL_PERSIST, "true"),
        ],
    )
    .await;
    let other_host = container(
        &fake,
        &[managed, (LABEL_HOST, "elsewhere"), (LABEL_PID, dead)],
    )
    .await;
    let foreign = container(&fake, &[(LABEL_HOST, &host), (LABEL_PID, dead)]).await;

    assert_eq!(reap_orphans(&fake).await.expect("reap"), 1);
    assert_eq!(fake.removed(), [orphan]);
    for id in [alive, kept, other_host, foreign] {
        assert!(fake.exists(&id));
    }
}

#[tokio::test]
async fn cleanup_removes_isol8s_containers_and_images_and_nothing_else() {
    let fake = FakeDocker::new();
    let mine = container(&fake, &[(LABEL_MANAGED, "true"), (LABEL_OWNER, "engine-a")]).await;
    let theirs = container(&fake, &[(LABEL_MANAGED, "true"), (LABEL_OWNER, "engine-b")]).await;
    let foreign = container(&fake, &[("app", "db")]).await;
    let listed = list_containers(&fake, Some("engine-a"))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].owner.as_deref(), Some("engine-a"));

    let managed = BTreeMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]);
    fake.add_image(ImageSummary {
        id: "sha256:a".into(),
        tags: vec!["isol8:bash".into()],
        labels: managed,
        created: 1,
    });
    fake.add_image(ImageSummary {
        id: "sha256:b".into(),
        tags: vec![BASE_IMAGE.into()],
        labels: BTreeMap::new(),
        created: 1,
    });
    fake.add_image(ImageSummary {
        id: "sha256:c".into(),
        tags: vec!["postgres:16".into()],
        labels: BTreeMap::new(),
        created: 1,
    });
    let images = list_images(&fake).await.expect("images");
    assert_eq!(images, ["isol8:bash", BASE_IMAGE]);

    let report = cleanup(
        &fake,
        &CleanupOptions {
            images: true,
            owner: None,
        },
    )
    .await
    .expect("cleanup");
    assert_eq!((report.containers, report.images), (2, 2));
    assert!(!fake.exists(&mine) && !fake.exists(&theirs));
    assert!(fake.exists(&foreign));
    assert!(fake.image_exists("postgres:16").await);
    assert!(!fake.image_exists(BASE_IMAGE).await);
}

#[tokio::test]
async fn custom_images_are_the_built_ones_with_their_runtime_and_packages() {
    let fake = FakeDocker::new();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let managed = (LABEL_MANAGED, "true");
    // A runtime image (no build labels), a foreign image with build-like labels but not
    // isol8's, and two custom images, one tagged twice.
    fake.add_image(ImageSummary {
        id: "sha256:a".into(),
        tags: vec!["isol8:python".into()],
        labels: labels(&[managed]),
        created: 1,
    });
    fake.add_image(ImageSummary {
        id: "sha256:b".into(),
        tags: vec!["other:1".into()],
        labels: labels(&[(LABEL_BUILD_RUNTIME, "python")]),
        created: 1,
    });
    fake.add_image(ImageSummary {
        id: "sha256:c".into(),
        tags: vec!["team/py:1".into(), "team/py:latest".into()],
        labels: labels(&[
            managed,
            (LABEL_BUILD_RUNTIME, "python"),
            (LABEL_BUILD_PACKAGES, r#"["numpy","pandas"]"#),
        ]),
        created: 5,
    });
    fake.add_image(ImageSummary {
        id: "sha256:d".into(),
        tags: vec![],
        labels: labels(&[managed, (LABEL_BUILD_RUNTIME, "node")]),
        created: 7,
    });
    let images = custom_images(&fake).await.expect("list");
    let info = |tag: &str, runtime: &str, packages: &[&str], created| CustomImageInfo {
        tag: tag.into(),
        runtime: runtime.into(),
        packages: packages.iter().map(|p| p.to_string()).collect(),
        created,
    };
    assert_eq!(
        images,
        [
            info("sha256:d", "node", &[], 7),
            info("team/py:1", "python", &["numpy", "pandas"], 5),
            info("team/py:latest", "python", &["numpy", "pandas"], 5),
        ]
    );
}

#[tokio::test]
async fn the_doctor_reports_the_daemon_and_its_limits() {
    let fake = FakeDocker::new();
    let checks = daemon_checks(&fake).await;
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Docker daemon", "seccomp", "cgroup limits"]);
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(checks[2].detail.starts_with("cgroup v2 (systemd driver)"));
}

#[tokio::test]
async fn an_engine_on_an_unreachable_daemon_says_so_at_start() {
    let fake = FakeDocker::new();
    let engine = engine_on(&fake, Default::default()).await;
    fake.set_unreachable(true);
    let err = crate::Engine::start(&engine).await.expect_err("down");
    assert!(
        matches!(err, crate::Error::DockerUnavailable { .. }),
        "{err:?}"
    );
}
