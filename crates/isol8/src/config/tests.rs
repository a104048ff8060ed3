//! Parsing the configuration file: unknown keys, types, whole numbers, the reference's
//! format with every key, and the resolved view.

use isol8_testkit::fixtures::{key_paths, REFERENCE_CONFIG, REFERENCE_CONFIG_KEYS};

use super::*;

#[test]
fn unknown_keys_are_named_with_their_path() {
    let err =
        Config::from_json_str(r#"{"defaults": {"timeoutMs": 5, "foo": 1}}"#).expect_err("unknown");
    assert_eq!(err.to_string(), "unknown key `defaults.foo`");
    assert!(matches!(err, ParseError::UnknownKey { .. }), "{err:?}");
    let err = Config::from_json_str(r#"{"maxConcurent": 3}"#).expect_err("typo");
    assert_eq!(err.to_string(), "unknown key `maxConcurent`");
    let err =
        Config::from_json_str(r#"{"remoteCode": {"enabled": true, "x": 1}}"#).expect_err("nested");
    assert_eq!(err.to_string(), "unknown key `remoteCode.x`");
}

#[test]
fn wrong_types_name_the_key() {
    let err =
        Config::from_json_str(r#"{"defaults": {"network": "bridge"}}"#).expect_err("bad enum");
    let text = err.to_string();
    assert!(
        text.contains("defaults.network") && text.contains("filtered"),
        "{text}"
    );
}

#[test]
fn values_reach_engine_options() {
    let c = Config::from_json_str(
        r#"{"maxConcurrent": 4, "defaults": {"memoryLimit": "256m", "network": "none"},
            "network": {"whitelist": ["^pypi\\.org$"]}, "poolStrategy": "secure",
            "security": {"seccomp": "strict"}}"#,
    )
    .expect("valid");
    assert_eq!(c.max_concurrent, Some(4));
    let o = c.engine_options();
    assert_eq!(o.memory_limit.as_deref(), Some("256m"));
    assert_eq!(o.pool_strategy, Some(PoolStrategy::Secure));
    assert_eq!(
        o.network_filter.expect("filter").whitelist,
        vec!["^pypi\\.org$".to_string()]
    );
    assert!(Config::default().inactive_keys().is_empty());
}

#[test]
fn session_caps_and_the_shutdown_grace_are_read() {
    let c = Config::from_json_str(
        r#"{"shutdownGraceMs": 2500, "serverPolicy": {"maxSessions": 4, "maxSessionsPerTenant": 2}}"#,
    )
    .expect("valid");
    assert_eq!(c.shutdown_grace_ms, Some(2500));
    assert_eq!(c.server_policy.max_sessions, Some(4));
    assert_eq!(c.server_policy.max_sessions_per_tenant, Some(2));
    assert!(Config::from_json_str(r#"{"serverPolicy": {"maxSession": 4}}"#).is_err());
}

#[test]
fn exempt_ranges_are_read_and_stay_out_of_engine_options() {
    let c = Config::from_json_str(
        r#"{"network": {"blacklist": ["x"], "exemptRanges": ["203.0.113.80", "198.18.0.0/15"]}}"#,
    )
    .expect("valid");
    assert_eq!(c.network.exempt_ranges, ["203.0.113.80", "198.18.0.0/15"]);
    let filter = c.engine_options().network_filter.expect("filter");
    assert_eq!(filter.blacklist, ["x"]);
    assert!(Config::from_json_str(r#"{"network": {"exempt": []}}"#).is_err());
}

#[test]
fn schema_lists_every_top_level_key() {
    let schema = Config::json_schema();
    let props = schema["properties"].as_object().expect("properties");
    for key in [
        "maxConcurrent",
        "shutdownGraceMs",
        "defaults",
        "network",
        "cleanup",
        "poolStrategy",
        "poolSize",
        "security",
        "remoteCode",
        "audit",
        "auth",
        "prebuiltImages",
        "serverPolicy",
        "metrics",
        "caBundle",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
}

#[test]
fn a_reference_format_file_with_every_key_is_accepted_and_read() {
    // The fixture really uses every key of the reference's schema (checked against the
    // list), so nothing of it is left unparsed here.
    let doc: serde_json::Value = serde_json::from_str(REFERENCE_CONFIG).expect("JSON");
    assert_eq!(key_paths(&doc).len(), REFERENCE_CONFIG_KEYS.len());
    let c = Config::from_json_str(REFERENCE_CONFIG).expect("the reference's format");
    assert_eq!(c.debug, Some(true));
    assert_eq!(c.max_concurrent, Some(4));
    assert_eq!(c.defaults.timeout_ms, Some(15_000));
    assert_eq!(c.defaults.network, Some(NetworkMode::Filtered));
    assert_eq!(c.cleanup.max_container_age_ms, Some(600_000));
    assert_eq!(c.pool_size, Some(PoolSize::Split { clean: 2, dirty: 1 }));
    assert_eq!(c.security.seccomp, Some(SeccompMode::Custom));
    let r = &c.remote_code;
    assert_eq!(
        (r.enable_cache, r.cache_ttl, r.fetch_timeout_ms),
        (Some(true), Some(120), Some(5000))
    );
    let a = &c.audit;
    assert_eq!(a.destination, Some(AuditDestination::Filesystem));
    assert_eq!(
        a.post_log_script.as_deref(),
        Some("/usr/local/bin/ship-audit.sh")
    );
    assert_eq!(
        (a.track_resources, a.retention_days),
        (Some(false), Some(30))
    );
    let p = &c.prebuilt_images[0];
    assert_eq!(p.tag.as_deref(), Some("my-python:data"));
    assert_eq!(p.install_packages, ["six"]);
    assert_eq!(
        p.setup_script.as_deref(),
        Some("echo ready > /sandbox/ready.txt")
    );
    assert!(p.setup.is_empty());
    // What the engine is given.
    let o = c.engine_options();
    assert_eq!(o.timeout_ms, Some(15_000));
    assert_eq!(o.pool_size, Some(PoolSize::Split { clean: 2, dirty: 1 }));
    // `audit` is acted on now (the engine writes the log): nothing is inactive.
    assert!(c.inactive_keys().is_empty(), "{:?}", c.inactive_keys());
}

#[test]
fn our_spellings_stay_accepted_as_aliases() {
    let c = Config::from_json_str(
        r#"{"audit": {"destination": "file"},
            "prebuiltImages": [{"runtime": "node", "install": ["left-pad"], "setup": ["true"]}]}"#,
    )
    .expect("our names");
    assert_eq!(c.audit.destination, Some(AuditDestination::Filesystem));
    assert_eq!(c.prebuilt_images[0].install_packages, ["left-pad"]);
    assert_eq!(c.prebuilt_images[0].setup, ["true"]);
    let c = Config::from_json_str(r#"{"audit": {"destination": "stdout"}}"#).expect("stdout");
    assert_eq!(c.audit.destination, Some(AuditDestination::Stdout));
    let e = Config::from_json_str(r#"{"audit": {"destination": "syslog"}}"#).expect_err("bad");
    let text = e.to_string();
    assert!(
        text.starts_with("`audit.destination`") && text.contains("filesystem"),
        "{text}"
    );
    // Both spellings at once is a mistake, not a merge.
    assert!(Config::from_json_str(
        r#"{"prebuiltImages": [{"runtime": "node", "install": ["a"], "installPackages": ["b"]}]}"#
    )
    .is_err());
}

/// Every integer key of the schema (nested ones too), as dotted paths, with its schema.
fn integer_keys(schema: &serde_json::Value) -> Vec<String> {
    fn walk(
        root: &serde_json::Value,
        node: &serde_json::Value,
        prefix: &str,
        out: &mut Vec<String>,
    ) {
        let node = match node.get("$ref").and_then(|r| r.as_str()) {
            Some(r) => {
                let name = r.trim_start_matches("#/$defs/");
                &root["$defs"][name]
            }
            None => node,
        };
        let Some(props) = node.get("properties").and_then(|p| p.as_object()) else {
            return;
        };
        for (k, v) in props {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let types = match &v["type"] {
                serde_json::Value::String(t) => vec![t.clone()],
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            if types.iter().any(|t| t == "integer") {
                out.push(path);
            } else {
                walk(root, v, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(schema, schema, "", &mut out);
    out
}

/// A configuration setting the dotted `path` to `value`.
fn with_key(path: &str, value: serde_json::Value) -> serde_json::Value {
    let mut doc = serde_json::json!({});
    let mut node = &mut doc;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        node = &mut node[*p];
    }
    node[parts[parts.len() - 1]] = value;
    doc
}

#[test]
fn every_integer_key_takes_a_whole_float_and_refuses_a_fraction() {
    let keys = integer_keys(&Config::json_schema());
    for expected in [
        "maxConcurrent",
        "shutdownGraceMs",
        "defaults.timeoutMs",
        "defaults.pidsLimit",
        "cleanup.maxContainerAgeMs",
        "remoteCode.cacheTtl",
        "audit.retentionDays",
        "auth.defaultTtlMs",
        "auth.cleanupIntervalMs",
        "serverPolicy.maxSessions",
        "serverPolicy.maxSecretBytes",
    ] {
        assert!(
            keys.iter().any(|k| k == expected),
            "{expected} not in {keys:?}"
        );
    }
    for key in &keys {
        let doc = with_key(key, serde_json::json!(7.0));
        let c = Config::from_json_str(&doc.to_string())
            .unwrap_or_else(|e| panic!("{key}: 7.0 refused: {e}"));
        // 7.0 is 7: the parsed file writes back the integer.
        let back = serde_json::to_value(&c).expect("serialize");
        let mut node = &back;
        for p in key.split('.') {
            node = &node[p];
        }
        assert_eq!(node, &serde_json::json!(7), "{key}");

        let doc = with_key(key, serde_json::json!(7.5));
        let e = Config::from_json_str(&doc.to_string()).expect_err(key);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("`{key}`")) && text.contains("whole number, got 7.5"),
            "{key}: {text}"
        );
    }
    let e = Config::from_json_str(r#"{"maxConcurrent": -1}"#).expect_err("negative");
    assert!(e.to_string().contains("out of range"), "{e}");
}

#[test]
fn pool_size_is_a_whole_number_or_clean_and_dirty() {
    let size = |json: &str| {
        Config::from_json_str(&format!(r#"{{"poolSize": {json}}}"#))
            .map(|c| c.pool_size)
            .map_err(|e| e.to_string())
    };
    assert_eq!(size("3"), Ok(Some(PoolSize::Total(3))));
    assert_eq!(size("3.0"), Ok(Some(PoolSize::Total(3))));
    assert_eq!(
        size(r#"{"clean": 1.0, "dirty": 2}"#),
        Ok(Some(PoolSize::Split { clean: 1, dirty: 2 }))
    );
    assert_eq!(size("null"), Ok(None));
    for (bad, want) in [
        ("2.5", "whole number, got 2.5"),
        (r#"{"clean": 1}"#, "`dirty` is missing"),
        (
            r#"{"clean": 1, "dirty": 1, "warm": 1}"#,
            "unknown key `warm`",
        ),
        (r#"{"clean": -1, "dirty": 1}"#, "out of range"),
        (r#""big""#, "expected a whole number or"),
    ] {
        let e = size(bad).expect_err(bad);
        assert!(
            e.starts_with("`poolSize`") && e.contains(want),
            "{bad}: {e}"
        );
    }
}

#[test]
fn the_resolved_configuration_fills_every_default_and_keeps_what_is_set() {
    let r = Config::default().resolved_json();
    assert!(!r.to_string().contains("null"), "{r}");
    assert_eq!(r["debug"], false);
    assert_eq!(r["maxConcurrent"], 10);
    assert_eq!(r["shutdownGraceMs"], 10_000);
    assert_eq!(r["defaults"]["timeoutMs"], 30_000);
    assert_eq!(r["defaults"]["memoryLimit"], "512m");
    // Shown as the mode a run gets, as v0.20 prints it (the text form adds that
    // installPackages switch an unset network to filtered).
    assert_eq!(r["defaults"]["network"], "none");
    assert_eq!(r["defaults"]["readonlyRootFs"], true);
    assert_eq!(r["defaults"]["pidsLimit"], 64);
    assert_eq!(r["cleanup"]["autoPrune"], true);
    assert_eq!(r["cleanup"]["maxContainerAgeMs"], 3_600_000);
    assert_eq!(r["poolStrategy"], "fast");
    assert_eq!(r["poolSize"], serde_json::json!({"clean": 1, "dirty": 1}));
    assert_eq!(r["security"]["seccomp"], "strict");
    assert_eq!(r["remoteCode"]["enabled"], false);
    assert_eq!(
        r["remoteCode"]["allowedSchemes"],
        serde_json::json!(["https"])
    );
    assert_eq!(r["remoteCode"]["enableCache"], true);
    assert_eq!(r["remoteCode"]["cacheTtl"], 3600);
    assert_eq!(r["audit"]["destination"], "filesystem");
    assert_eq!(r["audit"]["trackResources"], true);
    assert_eq!(r["audit"]["retentionDays"], 90);
    assert_eq!(r["auth"]["enabled"], false);
    assert_eq!(r["network"]["exemptRanges"], serde_json::json!([]));
    assert_eq!(r["serverPolicy"]["maxTimeoutMs"], 30_000);
    assert_eq!(r["serverPolicy"]["maxSessions"], 32);
    assert_eq!(
        r["serverPolicy"]["allowedNetworks"],
        serde_json::json!(["none", "filtered"])
    );
    assert_eq!(r["prebuiltImages"], serde_json::json!([]));
    // Keys without a default are left out, not null.
    for absent in ["$schema", "caBundle"] {
        assert!(r.get(absent).is_none(), "{absent}");
    }
    assert!(r["security"].get("customProfilePath").is_none());

    // What the file sets wins, and caps follow the server's own defaults.
    let c = Config::from_json_str(
        r#"{"defaults": {"timeoutMs": 5000, "memoryLimit": "1g"},
            "serverPolicy": {"maxMemoryLimit": "2g", "allowHostNetwork": true}}"#,
    )
    .expect("valid");
    let r = c.resolved_json();
    assert_eq!(r["defaults"]["timeoutMs"], 5000);
    assert_eq!(r["defaults"]["memoryLimit"], "1g");
    assert_eq!(r["serverPolicy"]["maxTimeoutMs"], 5000);
    assert_eq!(r["serverPolicy"]["maxMemoryLimit"], "2g");
    assert_eq!(
        r["serverPolicy"]["allowedNetworks"],
        serde_json::json!(["none", "filtered", "host"])
    );
    // Resolving is idempotent (that it fills in what the engine would use is checked in
    // `settings`).
    assert_eq!(c.resolved().resolved(), c.resolved());
    let back = Config::from_json_str(&r.to_string()).expect("the resolved file parses");
    // Read back, the printed `defaults.network: none` is an explicit mode.
    let mut printed = c.resolved();
    printed
        .defaults
        .network
        .get_or_insert(isol8_protocol::NetworkMode::None);
    // So are the printed general `pidsLimit` and `sandboxSize` (unset, a runtime's own
    // defaults apply: the agent's).
    printed.defaults.pids_limit.get_or_insert(64);
    printed
        .defaults
        .sandbox_size
        .get_or_insert_with(|| "512m".into());
    assert_eq!(back, printed);
}

#[test]
fn resolved_lines_are_dotted_keys_with_sizes_as_written() {
    let c = Config::from_json_str(
        r#"{"defaults": {"memoryLimit": "256m"}, "network": {"exemptRanges": ["203.0.113.80"]},
            "prebuiltImages": [{"runtime": "python", "tag": "t:1", "installPackages": ["six"]}]}"#,
    )
    .expect("valid");
    let lines = c.resolved_lines();
    let get = |k: &str| {
        lines
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{k} missing from {lines:?}"))
    };
    assert_eq!(get("defaults.memoryLimit"), "256m");
    assert_eq!(get("defaults.tmpSize"), "256m");
    assert_eq!(get("network.exemptRanges"), r#"["203.0.113.80"]"#);
    assert_eq!(get("serverPolicy.maxSessions"), "32");
    assert_eq!(get("remoteCode.cacheTtl"), "3600");
    assert_eq!(get("prebuiltImages[0].tag"), "t:1");
    assert_eq!(get("prebuiltImages[0].installPackages"), r#"["six"]"#);
    assert_eq!(get("debug"), "false");
    assert!(get("defaults.network").starts_with("none (unset"));
    assert_eq!(
        get("defaults.pidsLimit"),
        "64 (unset: the agent runtime gets 200)"
    );
    assert_eq!(
        get("defaults.sandboxSize"),
        "512m (unset: the agent runtime gets 2g)"
    );
}

#[test]
fn metrics_public_is_read_defaults_to_false_and_rejects_unknown_keys() {
    let c = Config::from_json_str(r#"{"metrics": {"public": true}}"#).expect("metrics.public");
    assert_eq!(c.metrics.public, Some(true));
    assert_eq!(Config::default().resolved().metrics.public, Some(false));
    let lines = Config::default().resolved_lines();
    assert!(
        lines.contains(&("metrics.public".to_string(), "false".to_string())),
        "{lines:?}"
    );
    assert!(Config::from_json_str(r#"{"metrics": {"pubic": true}}"#).is_err());
}
