//! The OpenAPI 3.0 document of `GET /openapi.json`.
//!
//! The routes are described by a small typed table ([`OPERATIONS`]: path, method,
//! summary, parameters, body and reply); every request and response body schema, and
//! the query parameters of `GET /file` and `DELETE /session/{id}`, are generated from the Rust types that parse
//! and produce them (`schemars`, with its OpenAPI 3.0 settings): the protocol crate's
//! `ExecutionRequest`, `EngineOptions`, `ExecutionResult` and `StreamEvent`, and the
//! server's own body and reply types. So the document cannot drift from the wire.

use std::sync::LazyLock;

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{json, Map, Value};

use crate::error::ErrorBody;
use crate::routes::cleanup::{CleanupBody, CleanupReply};
use crate::routes::execute::{ExecuteBody, WsIn};
use crate::routes::files::{FileContent, GetFileQuery, PutFileBody};
use crate::routes::health::{Health, VERSION};
use crate::routes::keys::{
    CreateKey, IssuedKey, KeyList, ListKeysQuery, Login, LoginReply, Revoked,
};
use crate::routes::sessions::{SessionList, SessionQuery};
use crate::routes::Done;
use isol8::{ExecutionResult, StreamEvent};

/// A schema generated from a Rust type (a `$ref` into `components.schemas`).
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<T>();
    transform(generator, &mut schema);
    schema
}

/// Applies the generator's OpenAPI 3.0 transforms to a schema it returned inline (its
/// definitions get them when they are taken).
fn transform(generator: &mut SchemaGenerator, schema: &mut Schema) {
    for t in generator.transforms_mut() {
        t.transform(schema);
    }
}

/// An HTTP method of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The key of an operation in a path item.
    pub fn key(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Delete => "delete",
        }
    }
}

/// A route's parameters.
#[derive(Debug, Clone, Copy)]
pub enum Params {
    /// None.
    None,
    /// One string path parameter (`{id}`), described.
    Path(&'static str, &'static str),
    /// Query parameters: the properties of a type's schema.
    Query(SchemaFn),
    /// One string path parameter, described, and query parameters.
    PathAndQuery(&'static str, &'static str, SchemaFn),
}

/// A route's request body.
#[derive(Debug, Clone, Copy)]
pub struct Body {
    /// Its schema.
    pub schema: SchemaFn,
    /// False when the body may be left out (an empty body is `{}`).
    pub required: bool,
}

/// A route's successful reply.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// A JSON body of this schema with this status.
    Json(u16, &'static str, SchemaFn),
    /// `text/event-stream`, each event's `data:` a JSON value of this schema.
    EventStream(&'static str, SchemaFn),
    /// A WebSocket upgrade (101); client messages have this schema.
    WebSocket(&'static str, SchemaFn),
    /// A 200 text body of this content type, described.
    Text(&'static str, &'static str),
}

/// One operation (route and method) of the API.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// The path, with `{name}` parameters.
    pub path: &'static str,
    /// The method.
    pub method: Method,
    /// What it does.
    pub summary: &'static str,
    /// True when it needs a key (then every error answer may occur).
    pub authenticated: bool,
    /// Its parameters.
    pub params: Params,
    /// Its request body.
    pub body: Option<Body>,
    /// Its successful reply.
    pub reply: Reply,
}

const fn json_body(schema: SchemaFn) -> Option<Body> {
    Some(Body {
        schema,
        required: true,
    })
}

const fn optional_body(schema: SchemaFn) -> Option<Body> {
    Some(Body {
        schema,
        required: false,
    })
}

/// Every operation of the API, as the router routes them.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        path: "/health",
        method: Method::Get,
        summary: "liveness and version",
        authenticated: false,
        params: Params::None,
        body: None,
        reply: Reply::Json(200, "{status, version}", schema::<Health>),
    },
    Operation {
        path: "/openapi.json",
        method: Method::Get,
        summary: "this document",
        authenticated: false,
        params: Params::None,
        body: None,
        reply: Reply::Json(200, "OpenAPI 3", schema::<Value>),
    },
    Operation {
        path: "/execute",
        method: Method::Post,
        summary: "run and return the ExecutionResult",
        authenticated: true,
        params: Params::None,
        body: json_body(schema::<ExecuteBody>),
        reply: Reply::Json(200, "ExecutionResult", schema::<ExecutionResult>),
    },
    Operation {
        path: "/execute/stream",
        method: Method::Post,
        summary: "run and stream StreamEvents as server-sent events; ends with an exit event (with additive `resourceUsage` and `exitReason`; an error event before it announces a non-normal reason, e.g. `MEMORY LIMIT EXCEEDED`, `KILLED BY SIGNAL SIGSEGV`, `sandbox lost: …` for exitReason sandboxLost), or, when the sandbox was lost before the program could end (paused, engine stopping), with an error event `sandbox lost: …` and no exit event",
        authenticated: true,
        params: Params::None,
        body: json_body(schema::<ExecuteBody>),
        reply: Reply::EventStream(
            "text/event-stream of `data: <StreamEvent>`",
            schema::<StreamEvent>,
        ),
    },
    Operation {
        path: "/execute/ws",
        method: Method::Get,
        summary: "WebSocket (schema WsIn): send {type:execute,request,options?,sessionId?,interactive?}; the program reads request.stdin (if any), then end-of-file, unless interactive: true, which keeps its stdin open for {type:stdin,data,eof?} (eof: true closes it after data) and delivers {type:signal,signal}; stdin and signal messages before execute or in a run that is not interactive are ignored; a message of unknown type gets an error event and the socket stays open. Receive StreamEvents. Every close has a reason: 1000 `Execution complete` after the exit event, 1003 on invalid messages or a refused request, 1013 when busy or shutting down (retry), 1011 when the sandbox was lost before the program could end (a final `sandbox lost: …` error event, no exit event; a program whose sandbox died under it ends with an exit event whose exitReason is sandboxLost)",
        authenticated: true,
        params: Params::None,
        body: None,
        reply: Reply::WebSocket("switching protocols", schema::<WsIn>),
    },
    Operation {
        path: "/file",
        method: Method::Post,
        summary: "write a file into a session",
        authenticated: true,
        params: Params::None,
        body: json_body(schema::<PutFileBody>),
        reply: Reply::Json(200, "{ok: true}", schema::<Done>),
    },
    Operation {
        path: "/file",
        method: Method::Get,
        summary: "read a file from a session",
        authenticated: true,
        params: Params::Query(schema::<GetFileQuery>),
        body: None,
        reply: Reply::Json(200, "{content: base64}", schema::<FileContent>),
    },
    Operation {
        path: "/sessions",
        method: Method::Get,
        summary: "the sessions the caller sees: a database key its tenant's, the master key every tenant's",
        authenticated: true,
        params: Params::None,
        body: None,
        reply: Reply::Json(
            200,
            "{sessions: [{id, tenantId, isActive, lastAccessedAt}]}",
            schema::<SessionList>,
        ),
    },
    Operation {
        path: "/session/{id}",
        method: Method::Delete,
        summary: "stop a session (idempotent); the master key names another tenant's with ?tenantId=, or by its id alone when only one tenant has it",
        authenticated: true,
        params: Params::PathAndQuery("id", "the session's id", schema::<SessionQuery>),
        body: None,
        reply: Reply::Json(200, "{ok: true}", schema::<Done>),
    },
    Operation {
        path: "/metrics",
        method: Method::Get,
        summary: "the server's and engine's counters, histograms and gauges in the Prometheus text format (needs a key unless the configuration says metrics.public: true)",
        authenticated: true,
        params: Params::None,
        body: None,
        reply: Reply::Text(
            crate::metrics::CONTENT_TYPE,
            "Prometheus text exposition format 0.0.4; series prefixed isol8_",
        ),
    },
    Operation {
        path: "/cleanup",
        method: Method::Post,
        summary: "stop every session and remove this server's containers and, unless {images: false}, isol8's images (master key)",
        authenticated: true,
        params: Params::None,
        body: optional_body(schema::<CleanupBody>),
        reply: Reply::Json(
            200,
            "{ok, sessions, containers, images?}, each {removed, failed, errors}",
            schema::<CleanupReply>,
        ),
    },
    Operation {
        path: "/auth/keys",
        method: Method::Post,
        summary: "create a database key (master key); the plaintext key is returned only here; 400 `DB-backed auth is not enabled` without a key store",
        authenticated: true,
        params: Params::None,
        body: json_body(schema::<CreateKey>),
        reply: Reply::Json(201, "the key and its metadata", schema::<IssuedKey>),
    },
    Operation {
        path: "/auth/keys",
        method: Method::Get,
        summary: "list database keys' metadata, never the keys (master key); `?tenantId=` for one tenant's",
        authenticated: true,
        params: Params::Query(schema::<ListKeysQuery>),
        body: None,
        reply: Reply::Json(200, "{keys: [KeyInfo]}", schema::<KeyList>),
    },
    Operation {
        path: "/auth/keys/{id}",
        method: Method::Delete,
        summary: "revoke a key (idempotent until the key store's cleanup deletes it); the master key revokes any, a database key only itself; 404 `Key not found`",
        authenticated: true,
        params: Params::Path("id", "the key's id"),
        body: None,
        reply: Reply::Json(200, "{ok: true, id}", schema::<Revoked>),
    },
    Operation {
        path: "/auth/login",
        method: Method::Post,
        summary: "issue an expiring key (master key), e.g. for `isol8 login`",
        authenticated: true,
        params: Params::None,
        body: optional_body(schema::<Login>),
        reply: Reply::Json(200, "{token, expiresAt, keyId}", schema::<LoginReply>),
    },
];

/// The error answers of an authenticated route: status and when it happens. Each has an
/// [`ErrorBody`]; 429 and 503 carry `Retry-After`.
pub const ERRORS: &[(u16, &str)] = &[
    (400, "bad input: {\"error\": message}; on /auth/* without a key store, {\"error\":\"DB-backed auth is not enabled\"}"),
    (401, "{\"error\":\"Missing Authorization header\"}"),
    (403, "{\"error\":\"Invalid API key\"} (unknown, revoked or expired), or a database key on a master-only route"),
    (404, "unknown session or route"),
    (408, "the request body was not received in time"),
    (409, "the master key named, without tenantId, a session id several tenants hold"),
    (413, "body too large"),
    (429, "the session caps (serverPolicy.maxSessions, maxSessionsPerTenant) are reached; carries Retry-After"),
    (500, "the sandbox failed, e.g. `sandbox lost: …` (its container was killed from outside) or `sandbox unresponsive: …` (paused); the message names the execution id under which the server log has the details"),
    (503, "no execution slot within the request's timeout, the server is shutting down, or Docker or the key store is unreachable; carries Retry-After"),
];

/// The schema generators: requests are described as they are parsed, replies as they
/// are written.
struct Generators {
    requests: SchemaGenerator,
    replies: SchemaGenerator,
}

fn json_content(schema: Schema) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": {"type": "string"},
    })
}

fn parameters(params: Params, g: &mut Generators) -> Vec<Value> {
    match params {
        Params::None => Vec::new(),
        Params::Path(name, description) => vec![path_param(name, description)],
        Params::Query(of) => query_params(of, g),
        Params::PathAndQuery(name, description, of) => {
            let mut all = vec![path_param(name, description)];
            all.extend(query_params(of, g));
            all
        }
    }
}

/// The query parameters of a type: one per property of its schema.
fn query_params(of: SchemaFn, g: &mut Generators) -> Vec<Value> {
    let schema = of(&mut g.requests);
    let mut resolved =
        Schema::try_from(resolve(&schema, g.requests.definitions())).unwrap_or_default();
    transform(&mut g.requests, &mut resolved);
    let resolved = resolved.to_value();
    let required: Vec<&str> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let properties = resolved
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    properties
        .into_iter()
        .map(|(name, mut schema)| {
            let description = schema
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or(Value::Null);
            let mut p = json!({
                "name": name, "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": schema,
            });
            if !description.is_null() {
                p["description"] = description;
            }
            p
        })
        .collect()
}

/// `schema` itself, or the definition its `$ref` names.
fn resolve(schema: &Schema, definitions: &Map<String, Value>) -> Value {
    let value = schema.as_value();
    value
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .and_then(|name| definitions.get(name))
        .cloned()
        .unwrap_or_else(|| value.clone())
}

fn responses(op: &Operation, g: &mut Generators) -> Map<String, Value> {
    let mut out = Map::new();
    match op.reply {
        Reply::Json(status, description, of) => {
            out.insert(
                status.to_string(),
                json!({"description": description, "content": json_content(of(&mut g.replies))}),
            );
        }
        Reply::EventStream(description, of) => {
            out.insert(
                "200".into(),
                json!({"description": description, "content": {"text/event-stream": {"schema": {
                    "type": "string",
                    "description": "one `data: <JSON>` line per event, the JSON described by x-event",
                }, "x-event": of(&mut g.replies)}}}),
            );
        }
        Reply::Text(content_type, description) => {
            out.insert(
                "200".into(),
                json!({"description": description, "content": {content_type: {"schema": {"type": "string"}}}}),
            );
        }
        Reply::WebSocket(description, of) => {
            out.insert(
                "101".into(),
                json!({"description": description, "x-client-messages": of(&mut g.requests), "x-server-messages": schema::<StreamEvent>(&mut g.replies)}),
            );
        }
    }
    if op.authenticated {
        let error = schema::<ErrorBody>(&mut g.replies);
        for (status, description) in ERRORS {
            let mut answer =
                json!({"description": description, "content": json_content(error.clone())});
            if matches!(status, 429 | 503) {
                answer["headers"] = json!({"Retry-After": {
                    "description": "seconds to wait before retrying",
                    "schema": {"type": "integer", "minimum": 1},
                }});
            }
            out.insert(status.to_string(), answer);
        }
    }
    out
}

fn operation(op: &Operation, g: &mut Generators) -> Value {
    let mut v = json!({"summary": op.summary, "responses": responses(op, g)});
    if !op.authenticated {
        v["security"] = json!([]);
    }
    let params = parameters(op.params, g);
    if !params.is_empty() {
        v["parameters"] = Value::Array(params);
    }
    if let Some(body) = op.body {
        v["requestBody"] = json!({
            "required": body.required,
            "content": json_content((body.schema)(&mut g.requests)),
        });
    }
    v
}

/// Builds the document (see [`document`]).
fn build() -> Value {
    let settings = SchemaSettings::openapi3();
    let mut g = Generators {
        requests: settings.clone().for_deserialize().into_generator(),
        replies: settings.for_serialize().into_generator(),
    };
    let mut paths = Map::new();
    for op in OPERATIONS {
        let item = paths
            .entry(op.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[op.method.key()] = operation(op, &mut g);
    }
    // Both generators name their schemas by type; a type used both ways is described
    // as parsed (the two descriptions differ only in which fields may be left out).
    let mut schemas = g.replies.take_definitions(true);
    for (name, schema) in g.requests.take_definitions(true) {
        schemas.insert(name, schema);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "isol8", "version": VERSION, "description": "Run untrusted code in hardened sandboxes."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

/// The OpenAPI 3.0 description of every route, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(build);
    &DOCUMENT
}

/// The OpenAPI description of every route, as a value of its own.
pub fn openapi_document() -> Value {
    document().clone()
}

/// `GET /openapi.json`: the OpenAPI document ([`document`]), without a key.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(document().clone())
}
