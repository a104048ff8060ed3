//! [`ApiError`]: statuses, `Retry-After`, and 5xx answers that keep internals out.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use crate::error::{ApiError, AuthError, SessionError};
use crate::keys::StoreError;
use crate::sessions::check_session_id;
use crate::trace::Trace;

fn trace() -> Trace {
    Trace {
        id: "0e0e0e0e-1111-2222-3333-444444444444".into(),
        request_id: Some("req-7".into()),
    }
}

#[test]
fn every_busy_answer_carries_retry_after_and_nothing_else_does() {
    let busy = [
        isol8::Error::QueueTimeout {
            waited_ms: 10,
            max_concurrent: 1,
        },
        isol8::Error::Stopped,
        isol8::Error::DockerUnavailable {
            detail: "gone".into(),
        },
    ];
    let mut answers: Vec<ApiError> = busy
        .into_iter()
        .map(|e| ApiError::engine(e, &trace()))
        .collect();
    answers.push(ApiError::ShuttingDown);
    answers.push(ApiError::key_store(
        StoreError {
            op: "find",
            message: "database unreachable".into(),
        },
        &trace(),
    ));
    answers.push(SessionError::ServerFull(3).into());
    answers.push(SessionError::TenantFull(2).into());
    for a in answers {
        let status = a.status();
        let resp = a.into_response();
        assert!(
            matches!(
                resp.status(),
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            ),
            "{status}"
        );
        let secs: u32 = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After on {status}"));
        assert!(secs >= 1);
    }
    for e in [
        isol8::Error::SandboxLost("killed".into()),
        isol8::Error::SandboxUnresponsive("paused".into()),
    ] {
        let resp = ApiError::engine(e, &trace()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }
    for e in [
        ApiError::Auth(AuthError::InvalidKey),
        SessionError::InvalidId.into(),
        SessionError::NotFound("x".into()).into(),
    ] {
        let resp = e.into_response();
        assert!(resp.status().is_client_error());
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }
}

#[test]
fn server_failures_name_the_execution_and_keep_engine_text_out() {
    let internal = [
        isol8::Error::Sandbox(isol8::error::SandboxError::DiedAtStart {
            why: "agent frame 7 malformed at /var/lib/docker/overlay2/abc".into(),
        }),
        isol8::Error::ImageMissing {
            image: "isol8:python".into(),
            runtime: "python".into(),
        },
        isol8::Error::Io {
            op: "read /var/lib/docker/secret".into(),
            source: std::io::Error::other("disk gone"),
        },
        isol8::Error::SandboxLost(
            "container 4f2a9c killed: agent log: panic at /build/x.rs".into(),
        ),
        isol8::Error::SandboxUnresponsive("container 4f2a9c is paused".into()),
        isol8::Error::DockerUnavailable {
            detail: "unix:///var/run/docker.sock: connection refused".into(),
        },
    ];
    for e in internal {
        let detail = e.to_string();
        let a = ApiError::engine(e, &trace());
        assert!(a.status().is_server_error(), "{detail}");
        let message = a.client_message();
        assert!(message.contains(&trace().id), "{message}");
        for leak in [
            "docker",
            "4f2a9c",
            "/var/",
            "/build/",
            "agent log",
            "disk gone",
        ] {
            assert!(!message.contains(leak), "{leak} in {message}");
        }
        // The log keeps the details.
        assert_eq!(a.to_string(), detail);
    }
    let lost = ApiError::engine(isol8::Error::SandboxLost("x".into()), &trace());
    assert!(lost.client_message().starts_with("sandbox lost: "));
    let paused = ApiError::engine(isol8::Error::SandboxUnresponsive("x".into()), &trace());
    assert!(paused
        .client_message()
        .starts_with("sandbox unresponsive: "));
    let store = ApiError::key_store(
        StoreError {
            op: "find",
            message: "password authentication failed for user isol8".into(),
        },
        &trace(),
    );
    assert!(!store.client_message().contains("password"));
    // A 4xx says what was wrong, as the engine put it.
    let invalid = ApiError::engine(
        isol8::Error::InvalidRequest("unknown runtime `cobol`".into()),
        &trace(),
    );
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    assert_eq!(invalid.client_message(), "unknown runtime `cobol`");
}

#[test]
fn session_ids_are_validated() {
    assert!(check_session_id("job-42_python.1").is_ok());
    for bad in ["", "a/b", "../x", "a b", &"x".repeat(200)] {
        assert!(check_session_id(bad).is_err(), "{bad}");
    }
}
