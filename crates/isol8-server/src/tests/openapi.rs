//! `GET /openapi.json`: a valid OpenAPI 3.0 document (parsed by `openapiv3`) with every
//! route, method and status, whose body schemas come from the Rust types and resolve.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;

use super::{call, server};
use crate::openapi::{Reply, ERRORS, OPERATIONS};

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// The `$ref` of a property's schema (alone, or the first of an `allOf` / `anyOf`).
fn ref_of(v: &Value) -> &str {
    v.get("$ref")
        .or_else(|| v["allOf"][0].get("$ref"))
        .or_else(|| v["anyOf"][0].get("$ref"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no $ref in {v}"))
}

/// The schema a `$ref` names.
fn target<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let name = r
        .strip_prefix("#/components/schemas/")
        .unwrap_or_else(|| panic!("not a component: {r}"));
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "{r} does not resolve");
    schema
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_and_describes_every_route() {
    let s = server();
    let (status, doc) = call(
        &s.state,
        Request::get("/openapi.json")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let parsed: openapiv3::OpenAPI =
        serde_json::from_value(doc.clone()).expect("a valid OpenAPI 3.0 document");
    assert!(parsed.openapi.starts_with("3.0"), "{}", parsed.openapi);

    // Every route the router serves, with its method (the list is the router's).
    let routes = [
        ("/health", "get"),
        ("/openapi.json", "get"),
        ("/execute", "post"),
        ("/execute/stream", "post"),
        ("/execute/ws", "get"),
        ("/file", "post"),
        ("/file", "get"),
        ("/sessions", "get"),
        ("/session/{id}", "delete"),
        ("/cleanup", "post"),
        ("/metrics", "get"),
        ("/auth/keys", "post"),
        ("/auth/keys", "get"),
        ("/auth/keys/{id}", "delete"),
        ("/auth/login", "post"),
    ];
    assert_eq!(OPERATIONS.len(), routes.len());
    for (path, method) in routes {
        let item = parsed
            .paths
            .paths
            .get(path)
            .and_then(|i| i.as_item())
            .unwrap_or_else(|| panic!("{path} missing"));
        let op = match method {
            "get" => item.get.as_ref(),
            "post" => item.post.as_ref(),
            _ => item.delete.as_ref(),
        }
        .unwrap_or_else(|| panic!("{method} {path} missing"));
        let described = OPERATIONS
            .iter()
            .find(|o| o.path == path && o.method.key() == method)
            .expect("in the table");
        let success = match described.reply {
            Reply::Json(status, ..) => status,
            Reply::EventStream(..) | Reply::Text(..) => 200,
            Reply::WebSocket(..) => 101,
        };
        let statuses: Vec<u16> = op
            .responses
            .responses
            .keys()
            .map(|s| match s {
                openapiv3::StatusCode::Code(c) => *c,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(statuses.contains(&success), "{method} {path}: {statuses:?}");
        if described.authenticated {
            for (status, _) in ERRORS {
                assert!(statuses.contains(status), "{method} {path}: no {status}");
            }
            for busy in ["429", "503"] {
                assert!(
                    doc["paths"][path][method]["responses"][busy]["headers"]["Retry-After"]
                        .is_object(),
                    "{method} {path} {busy}"
                );
            }
        } else {
            assert_eq!(op.security.as_deref(), Some(&[][..]), "{path} needs no key");
        }
        if path.contains("{id}") {
            let path_params = op
                .parameters
                .iter()
                .filter_map(|p| p.as_item())
                .filter(|p| matches!(p, openapiv3::Parameter::Path { .. }))
                .count();
            assert_eq!(path_params, 1, "{path}");
        }
    }
    assert_eq!(parsed.paths.paths.len(), 13);

    // Every reference resolves, bodies included.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20, "{}", all.len());
    for r in all {
        target(&doc, r);
    }

    // The body schemas are the Rust types': field names exactly as on the wire.
    let execute = &doc["paths"]["/execute"]["post"];
    let body = target(
        &doc,
        execute["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .expect("ExecuteBody ref"),
    );
    let props = body["properties"].as_object().expect("properties");
    let names: Vec<&str> = props.keys().map(String::as_str).collect();
    assert_eq!(names, ["options", "request", "sessionId", "tenantId"]);
    assert_eq!(body["required"], serde_json::json!(["request"]));
    let request = target(&doc, ref_of(&props["request"]));
    let options = target(&doc, ref_of(&props["options"]));
    assert!(
        options["properties"]["memoryLimit"].is_object(),
        "{options}"
    );
    for field in [
        "runtime",
        "code",
        "cmd",
        "timeoutMs",
        "files",
        "outputPaths",
        "installPackages",
    ] {
        assert!(request["properties"][field].is_object(), "request.{field}");
    }
    let result = target(
        &doc,
        execute["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .expect("ExecutionResult ref"),
    );
    for field in [
        "stdout",
        "stderr",
        "exitCode",
        "executionId",
        "durationMs",
        "truncated",
    ] {
        assert!(result["properties"][field].is_object(), "result.{field}");
    }
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Login"]["properties"]["ttlMs"].is_object());
    assert!(schemas["EngineOptions"]["properties"]["memoryLimit"].is_object());
    assert!(schemas["StreamEvent"]["properties"]["type"].is_object());
    let key_info = schemas["KeyInfo"]["properties"]
        .as_object()
        .expect("KeyInfo");
    let mut fields: Vec<&str> = key_info.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "createdAt",
            "expiresAt",
            "id",
            "keyPrefix",
            "lastUsedAt",
            "name",
            "revoked",
            "tenantId"
        ]
    );
    // The /auth/* shapes of isol8 v0.20.
    let props = |name: &str| {
        let mut p: Vec<String> = schemas[name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}"))
            .keys()
            .cloned()
            .collect();
        p.sort_unstable();
        p
    };
    assert_eq!(props("CreateKey"), ["name", "tenantId", "ttlMs"]);
    assert_eq!(
        schemas["CreateKey"]["required"],
        serde_json::json!(["name"]),
        "{}",
        schemas["CreateKey"]
    );
    assert_eq!(
        props("IssuedKey"),
        ["expiresAt", "id", "key", "keyPrefix", "name", "tenantId"]
    );
    assert_eq!(props("LoginReply"), ["expiresAt", "keyId", "token"]);
    assert_eq!(props("Revoked"), ["id", "ok"]);
    let list = &doc["paths"]["/auth/keys"]["get"];
    assert!(list["responses"]["200"].is_object(), "{list}");
    assert_eq!(
        doc["paths"]["/auth/keys"]["get"]["parameters"][0]["name"],
        "tenantId"
    );
    assert!(doc["paths"]["/auth/login"]["post"]["responses"]["200"].is_object());
    let query: Vec<&str> = doc["paths"]["/file"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(query, ["path", "sessionId", "tenantId"]);
    let delete: Vec<(&str, &str)> = doc["paths"]["/session/{id}"]["delete"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?, p["in"].as_str()?)))
        .collect();
    assert_eq!(delete, [("id", "path"), ("tenantId", "query")]);
    // The additive fields of this server's replies are described.
    assert!(schemas["SessionInfo"]["properties"]["tenantId"].is_object());
    let cleanup = schemas["CleanupReply"]["properties"]
        .as_object()
        .expect("CleanupReply");
    let mut fields: Vec<&str> = cleanup.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["containers", "images", "ok", "sessions"]);
    let tally = target(&doc, ref_of(&cleanup["sessions"]));
    let mut fields: Vec<&str> = tally["properties"]
        .as_object()
        .expect("Tally")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["errors", "failed", "removed"]);
    assert!(schemas["StreamEvent"]["properties"]["phase"].is_object());
    let phases: Vec<&Value> = schemas["Phase"]["oneOf"]
        .as_array()
        .expect("Phase")
        .iter()
        .map(|v| &v["enum"][0])
        .collect();
    assert_eq!(
        phases,
        [&serde_json::json!("setup"), &serde_json::json!("code")]
    );
}
