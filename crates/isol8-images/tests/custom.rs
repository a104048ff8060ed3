//! A custom image's `setupScript` (config `prebuiltImages[].setupScript`, the reference's
//! per-image script) against the real daemon: baked in by the build, run before every
//! execution in the image as the sandbox user in the working directory, before the
//! request's own `setupScript`; a failing one stops the run before the code.
//!
//! Builds on the existing `isol8:python` runtime image with no packages, so it needs
//! Docker but no registry.

use futures_util::StreamExt;
use isol8::{Engine, EngineOptions, StreamEventType};
use isol8_images::custom::{build, Built, CustomImage};
use isol8_testkit::{assert_clean, code, engine, run};

/// Removes the test's image however the test ends.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn an_images_setup_script_runs_before_every_execution_in_it() {
    let docker = isol8::docker::connect().await.expect("docker");
    let tag = format!("isol8-test-setup-script:{}", std::process::id());
    let _remove = RemoveImage(tag.clone());
    let image = CustomImage {
        runtime: "python".into(),
        tag: tag.clone(),
        setup_script: Some(
            "echo \"$(id -un) in $PWD\" > ready.txt\necho image-setup >&2\n[ -z \"$FAIL\" ] || exit 7"
                .into(),
        ),
        ..Default::default()
    };
    let built = build(&docker, &image, false, &|_| {}).await.expect("build");
    assert_eq!(built, Built::Built);
    // The script is part of what decides whether the image is up to date.
    assert_eq!(
        build(&docker, &image, false, &|_| {}).await.expect("again"),
        Built::UpToDate
    );

    let engine = engine(EngineOptions {
        image: Some(tag.clone()),
        ..Default::default()
    })
    .await;
    let mut req = code("python", "print(open('ready.txt').read().strip())");
    req.setup_script = Some("echo request-setup >&2; echo request >> ready.txt".into());
    // Twice: it runs before every execution (the pool hands back a reset sandbox).
    for _ in 0..2 {
        let events: Vec<_> = engine
            .execute_stream(req.clone())
            .await
            .expect("stream")
            .collect()
            .await;
        let text = |kind| -> String {
            events
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.data.as_str())
                .collect()
        };
        // The image's script first, then the request's, then the code.
        assert_eq!(
            text(StreamEventType::Stderr),
            "image-setup\nrequest-setup\n"
        );
        assert_eq!(
            text(StreamEventType::Stdout),
            "sandbox in /sandbox\nrequest\n"
        );
    }

    // A failing image script ends the run with its status; neither the request's script
    // nor the code runs.
    let mut failing = req.clone();
    failing.env.insert("FAIL".into(), "1".into());
    let r = run(&engine, failing).await;
    assert_eq!(r.exit_code, 7, "{r:?}");
    assert!(!r.stderr.contains("request-setup"), "{r:?}");
    assert_eq!(r.stdout, "", "{r:?}");
    assert_clean(&engine).await;

    // An image without a script (the runtime image, named explicitly) runs as before.
    let plain = engine_for("isol8:python").await;
    let r = run(&plain, req).await;
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "request\n"), "{r:?}");
    assert_eq!(r.stderr, "request-setup\n", "{r:?}");
    assert_clean(&plain).await;
}

async fn engine_for(image: &str) -> isol8::DockerEngine {
    engine(EngineOptions {
        image: Some(image.into()),
        ..Default::default()
    })
    .await
}
