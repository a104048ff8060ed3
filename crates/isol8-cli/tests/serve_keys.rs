//! `isol8 serve` with a SQLite key store as a real process: database keys, tenants,
//! login over HTTP, and the deletion of expired keys every `auth.cleanupIntervalMs`.

mod common;

use std::process::{Command, Stdio};

use common::serve::{call, session_ids, Server, KEY};
use serde_json::{json, Value};

#[isol8_testkit::test(docker)]
fn database_keys_tenants_and_login_against_a_real_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keys.db");
    let s = Server::start_with(&["--auth-db", db.to_str().expect("utf-8")]);

    // The master key creates keys for two tenants.
    let (status, a) = call(
        &s,
        "POST",
        "/auth/keys",
        KEY,
        Some(json!({"name": "a", "tenantId": "alpha"})),
    );
    assert_eq!(status, 201, "{a}");
    let (status, b) = call(
        &s,
        "POST",
        "/auth/keys",
        KEY,
        Some(json!({"name": "b", "tenantId": "beta"})),
    );
    assert_eq!(status, 201, "{b}");
    let (key_a, id_a) = (
        a["key"].as_str().expect("key"),
        a["id"].as_str().expect("id"),
    );
    let key_b = b["key"].as_str().expect("key");
    assert!(key_a.starts_with("isol8_") && key_a.len() == 70, "{key_a}");
    assert!(db.exists(), "the SQLite file was not created");

    // Key A runs code, ephemerally and in a session.
    let (status, r) = call(
        &s,
        "POST",
        "/execute",
        key_a,
        Some(json!({"request": {"runtime": "python", "code": "print(6*7)"}})),
    );
    assert_eq!((status, r["stdout"].as_str()), (200, Some("42\n")), "{r}");
    let (status, r) = call(
        &s,
        "POST",
        "/execute",
        key_a,
        Some(
            json!({"request": {"runtime": "bash", "code": "echo a > /sandbox/who"}, "sessionId": "sa"}),
        ),
    );
    assert_eq!(status, 200, "{r}");

    // Session ids are per tenant: B sees none of A's, and its own "sa" is another
    // session in another container, which A does not see either.
    let (_, v) = call(&s, "GET", "/sessions", key_a, None);
    assert_eq!(session_ids(&v), vec!["sa"]);
    let (_, v) = call(&s, "GET", "/sessions", key_b, None);
    assert!(session_ids(&v).is_empty(), "{v}");
    let (status, _) = call(
        &s,
        "GET",
        "/file?sessionId=sa&path=/sandbox/who",
        key_b,
        None,
    );
    assert_eq!(status, 404, "B has no session `sa` yet, whatever A has");
    let (status, v) = call(
        &s,
        "POST",
        "/execute",
        key_b,
        Some(
            json!({"request": {"runtime": "bash", "code": "cat /sandbox/who || echo b > /sandbox/who"}, "sessionId": "sa"}),
        ),
    );
    assert_eq!((status, v["stdout"].as_str()), (200, Some("")), "{v}");
    assert!(
        v["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("No such file")),
        "B must not see A's file: {v}"
    );
    let (_, v) = call(&s, "GET", "/sessions", key_b, None);
    assert_eq!(session_ids(&v), vec!["sa"]);
    for (key, content) in [(key_a, "YQo="), (key_b, "Ygo=")] {
        let (status, v) = call(&s, "GET", "/file?sessionId=sa&path=/sandbox/who", key, None);
        assert_eq!((status, v), (200, json!({"content": content})));
    }
    let (status, _) = call(&s, "DELETE", "/session/sa", key_b, None);
    assert_eq!(status, 200);

    // Database keys may not manage keys or clean up.
    for (method, path) in [
        ("GET", "/auth/keys"),
        ("POST", "/cleanup"),
        ("POST", "/auth/login"),
    ] {
        let (status, _) = call(&s, method, path, key_b, Some(json!({})));
        assert_eq!(status, 403, "{method} {path}");
    }
    let (status, list) = call(&s, "GET", "/auth/keys", KEY, None);
    assert_eq!(status, 200);
    assert!(
        !list.to_string().contains(key_a),
        "the key list leaks a key"
    );

    // Revoked: 403 from then on.
    let (status, _) = call(&s, "DELETE", &format!("/auth/keys/{id_a}"), KEY, None);
    assert_eq!(status, 200);
    let (status, v) = call(&s, "GET", "/sessions", key_a, None);
    assert_eq!((status, v), (403, json!({"error": "Invalid API key"})));
    let (status, _) = call(&s, "DELETE", "/session/sa", KEY, None);
    assert_eq!(status, 200);

    // The CLI: login stores an issued key (0600), run/session use it, logout revokes it.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let cli = |args: &[&str], master: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_isol8"));
        c.args(args)
            .env("HOME", &home)
            .env_remove("ISOL8_API_KEY")
            .stdin(Stdio::null());
        if master {
            c.env("ISOL8_API_KEY", KEY);
        }
        let o = c.output().expect("run isol8");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = cli(
        &["run", "--host", &s.base, "-r", "bash", "-e", "true"],
        false,
    );
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("error: ") && err.contains("isol8 login"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let (code, out, err) = cli(
        &["login", "--host", &format!("{}/", s.base), "--name", "e2e"],
        true,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("logged in"), "{out}");
    let creds_path = home.join(".isol8").join("credentials.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&creds_path)
        .expect("credentials")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let creds: Value =
        serde_json::from_slice(&std::fs::read(&creds_path).expect("read")).expect("json");
    let login_key = creds["token"].as_str().expect("token").to_string();
    assert!(login_key.starts_with("isol8_"), "{creds}");
    assert_ne!(login_key, KEY);
    assert_eq!(creds["host"], s.base.as_str());

    // No key on the command line and none in the environment: the stored login is used.
    let (code, out, err) = cli(
        &[
            "run",
            "--host",
            &s.base,
            "--session-id",
            "cli-s",
            "-r",
            "bash",
            "-e",
            "echo via-login",
        ],
        false,
    );
    assert_eq!((code, out.as_str()), (Some(0), "via-login\n"), "{err}");
    let (code, out, err) = cli(&["session", "list"], false);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("cli-s"), "{out}");
    let (code, out, _) = cli(&["session", "list", "--json"], false);
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["id"], "cli-s");
    // The login key acts as tenant "default" (as isol8 v0.20 issues it).
    let (_, v) = call(&s, "GET", "/auth/keys?tenantId=default", KEY, None);
    assert!(
        v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["name"] == "e2e" && k["id"] == creds["keyId"]),
        "{v}"
    );
    let (code, _, err) = cli(&["session", "stop", "cli-s"], false);
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = cli(&["session", "list", "--json"], false);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        json!([])
    );

    let (code, out, err) = cli(&["logout"], false);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked"), "{out}");
    assert!(!creds_path.exists(), "credentials left after logout");
    let (status, _) = call(&s, "GET", "/sessions", &login_key, None);
    assert_eq!(status, 403, "the login key still works after logout");
    let (code, _, err) = cli(&["logout"], false);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: not logged in"), "{err}");
    let (code, _, err) = cli(&["session", "list"], false);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: "), "{err}");
    s.stop();
}

#[isol8_testkit::test(docker)]
fn expired_and_revoked_keys_are_deleted_every_auth_cleanup_interval_ms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("auth.db");
    std::fs::write(
        dir.path().join("isol8.config.json"),
        json!({"auth": {
            "enabled": true,
            "connectionString": db.to_str().expect("utf-8"),
            "cleanupIntervalMs": 200,
        }})
        .to_string(),
    )
    .expect("config");
    let s = common::serve::Server::start_in(Some(dir.path()), &[]);
    let mut ids = std::collections::BTreeMap::new();
    for (name, ttl) in [("stays", None), ("expires", Some(1)), ("revoked", None)] {
        let mut body = json!({"name": name});
        if let Some(ms) = ttl {
            body["ttlMs"] = json!(ms);
        }
        let (status, v) = call(&s, "POST", "/auth/keys", KEY, Some(body));
        assert_eq!(status, 201, "{v}");
        ids.insert(name, v["id"].as_str().expect("id").to_string());
    }
    let (status, _) = call(
        &s,
        "DELETE",
        &format!("/auth/keys/{}", ids["revoked"]),
        KEY,
        None,
    );
    assert_eq!(status, 200);
    let names = || -> Vec<String> {
        let (status, v) = call(&s, "GET", "/auth/keys", KEY, None);
        assert_eq!(status, 200, "{v}");
        v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["name"].as_str().expect("name").to_string())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = names();
        if left == ["stays"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expired and revoked keys not deleted within 30 s: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.stop();
}
