//! The audit log through the real engine and Docker: an engine opened with an `audit`
//! configuration writes one line per execution (buffered, streamed, refused) to the day's
//! file, with the image and container that ran it, the code masked, the output masked,
//! and the egress proxy's decisions summarised even without `logNetwork`.

mod common;

use std::collections::BTreeMap;

use futures_util::StreamExt;
use isol8::config::AuditConfig;
use isol8::docker::EngineConfig;
use isol8::{Engine, ExecutionRequest, StreamEventType};
use isol8_testkit::{assert_clean, code, engine_with, run};
use serde_json::Value;

#[isol8_testkit::test(docker, flavor = "multi_thread")]
async fn the_engine_writes_one_record_per_execution_to_the_days_file() {
    let dir = tempfile::tempdir().expect("tmp");
    // Filtered network: a blacklisted host is refused by the proxy before anything is
    // dialled; without logNetwork, only the audit record hears of it.
    let mut options = common::filtered(&[], &["blocked\\.example"]);
    options.log_network = Some(false);
    options.secrets = BTreeMap::from([("TOKEN".to_string(), "hunter2".to_string())]);
    let engine = engine_with(EngineConfig {
        options,
        audit: AuditConfig {
            enabled: Some(true),
            log_dir: Some(dir.path().to_string_lossy().into_owned()),
            include_code: Some(true),
            include_output: Some(true),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;

    let printed = run(&engine, code("python", "print('token hunter2')")).await;
    assert_eq!(printed.stdout, "token ***\n");
    let fetched = run(
        &engine,
        code("python", &common::fetch(&["http://blocked.example/x"])),
    )
    .await;
    assert!(fetched.stdout.contains("-> 403"), "{fetched:?}");
    assert!(
        fetched.network_logs.is_none(),
        "no logNetwork: no log in the result"
    );
    let mut stream = engine
        .execute_stream(code("bash", "echo streamed; exit 3"))
        .await
        .expect("stream");
    let mut exit = None;
    while let Some(ev) = stream.next().await {
        if ev.kind == StreamEventType::Exit {
            exit = Some(ev.data);
        }
    }
    assert_eq!(exit.as_deref(), Some("3"));
    let refused = engine
        .execute(ExecutionRequest {
            runtime: "cobol".into(),
            code: Some("DISPLAY 'hunter2'".into()),
            ..Default::default()
        })
        .await
        .expect_err("unknown runtime");
    // stop() writes every queued record before it returns.
    assert_clean(&engine).await;

    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().all(|f| isol8::audit::file_date(f).is_some()),
        "{files:?}"
    );
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(dir.path().join(f)).expect("read"))
        .collect();
    assert!(
        !text.contains("hunter2"),
        "a secret reached the audit log: {text}"
    );
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(recs.len(), 4, "{recs:#?}");

    let p = &recs[0];
    assert_eq!(p["executionId"], printed.execution_id.as_str());
    assert_eq!(p["outcome"], "completed");
    assert_eq!(p["runtime"], "python");
    assert_eq!(p["image"], "isol8:python");
    assert_eq!(
        p["containerId"],
        printed.container_id.as_deref().expect("container")
    );
    assert_eq!(p["exitCode"], 0);
    assert_eq!(p["code"], "print('token ***')");
    assert_eq!(
        p["codeHash"],
        isol8::audit::sha256_hex("print('token hunter2')").as_str()
    );
    assert_eq!(p["stdout"], "token ***\n");
    assert_eq!(p["network"]["mode"], "filtered");
    assert_eq!(p["network"]["requests"], 0);

    let f = &recs[1];
    assert_eq!(f["executionId"], fetched.execution_id.as_str());
    assert_eq!(
        f["network"],
        serde_json::json!({"mode": "filtered", "requests": 1, "allowed": 0, "blocked": 1, "hosts": ["blocked.example"]})
    );

    let s = &recs[2];
    assert_eq!(s["runtime"], "bash");
    assert_eq!(s["exitCode"], 3);
    assert_eq!(s["stdout"], "streamed\n");

    let r = &recs[3];
    assert_eq!(r["outcome"], "refused");
    assert_eq!(r["runtime"], "cobol");
    assert_eq!(r["error"], refused.to_string().as_str());
    assert_eq!(r["code"], "DISPLAY '***'");
}
