//! `GET /metrics` of a real `isol8 serve` process against the real daemon: a scrape
//! before and after known requests, and every counter moved by exactly what they did.
//! (The same over the fake backend, with every series, is in the server crate's tests.)

mod common;

use common::serve::{Server, KEY};
use isol8_testkit::prometheus::Scrape;
use serde_json::json;

fn scrape(s: &Server) -> Scrape {
    let resp = reqwest::blocking::Client::new()
        .get(format!("{}/metrics", s.base))
        .bearer_auth(KEY)
        .send()
        .expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    let kind = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    Scrape::parse(&resp.text().expect("body"))
}

#[isol8_testkit::test(docker)]
fn a_scrape_of_the_running_server_moves_by_exactly_the_requests_made() {
    let s = Server::start();
    let before = scrape(&s);

    for (runtime, code, exit) in [
        ("python", "print(1)", 0),
        ("python", "print(2)", 0),
        ("bash", "exit 3", 3),
    ] {
        let (status, v) = s.post(
            "/execute",
            json!({"request": {"runtime": runtime, "code": code}}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["exitCode"], exit, "{v}");
    }
    let anonymous = reqwest::blocking::Client::new()
        .post(format!("{}/execute", s.base))
        .json(&json!({"request": {"runtime": "python", "code": "print(3)"}}))
        .send()
        .expect("request");
    assert_eq!(anonymous.status().as_u16(), 401);

    let after = scrape(&s);
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let exec = |runtime, outcome| [("runtime", runtime), ("outcome", outcome)];
    let http = |route, status| [("route", route), ("method", "POST"), ("status", status)];

    assert_eq!(moved("isol8_executions_total", &exec("python", "ok")), 2.0);
    assert_eq!(
        moved("isol8_executions_total", &exec("bash", "nonzero_exit")),
        1.0
    );
    assert_eq!(
        moved("isol8_executions_total", &exec("python", "refused")),
        0.0,
        "a 401 is not an execution"
    );
    assert_eq!(
        moved("isol8_http_requests_total", &http("/execute", "200")),
        3.0
    );
    assert_eq!(
        moved("isol8_http_requests_total", &http("/execute", "401")),
        1.0
    );
    // The first scrape is counted once it has answered, so the second one sees it.
    assert_eq!(
        moved(
            "isol8_http_requests_total",
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        moved("isol8_run_seconds_count", &[("runtime", "python")]),
        2.0
    );
    assert_eq!(
        moved("isol8_run_seconds_count", &[("runtime", "bash")]),
        1.0
    );
    assert_eq!(moved("isol8_queue_wait_seconds_count", &[]), 3.0);
    let acquired = moved("isol8_pool_acquires_total", &[("result", "hit")])
        + moved("isol8_pool_acquires_total", &[("result", "miss")]);
    assert_eq!(acquired, 3.0, "one sandbox acquisition per execution");
    assert!(
        moved("isol8_containers_created_total", &[]) >= 2.0,
        "at least one container per runtime was started"
    );
    s.stop();
}
