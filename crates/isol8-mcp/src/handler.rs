//! [`Isol8Mcp`]: the MCP server handler — the tools, their descriptions, and what each
//! does with the [`Target`] and the [`Sessions`].
//!
//! An unknown tool is refused by the SDK with a JSON-RPC "invalid params" error (-32602,
//! `tool not found`). Arguments that do not fit the tool's schema (a missing or misspelt
//! field, a wrong type) are a tool result with `isError: true` naming the field and the
//! accepted ones (the SDK's answer); so is a valid call that fails (the policy refuses
//! it, the engine cannot run it, the session is unknown), with the one line `isol8 run`
//! would print. Nothing a model sends can stop the server.

use std::sync::Arc;

use base64::Engine as _;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Extensions, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde_json::json;

use crate::args::{
    CreateSessionArgs, Encoding, EndSessionArgs, NoArgs, ReadFileArgs, RunCodeArgs,
    RunInSessionArgs, WriteFileArgs,
};
use crate::output::{failure, result, success};
use crate::sessions::{end, Connection, Sessions};
use crate::target::{Refusal, Target};

/// What every connection of one `isol8 mcp` process shares.
#[derive(Debug)]
pub struct Shared {
    /// The engine or server the tools drive.
    pub target: Target,
    /// Every open session.
    pub sessions: Arc<Sessions>,
    /// Cap on each of stdout and stderr (and a text file read) in a tool result, bytes.
    pub max_output: usize,
}

/// The MCP server of one connection (the stdio client, or one HTTP session; a stateless
/// HTTP request gets one of its own).
#[derive(Clone)]
pub struct Isol8Mcp {
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    tool_router: ToolRouter<Isol8Mcp>,
}

impl std::fmt::Debug for Isol8Mcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isol8Mcp")
            .field("connection", &self.connection)
            .finish()
    }
}

/// Instructions sent with `initialize`: how the tools fit together.
const INSTRUCTIONS: &str = "isol8 runs untrusted code in locked-down, disposable sandboxes (Docker containers without network unless allowed). \
Use run_code for one-off programs: each call gets a fresh sandbox that is removed afterwards. \
For work across several steps (files, installed packages, state on disk), call create_session, then run_in_session, write_file and read_file with its sessionId, and end_session when done. \
Files live below /sandbox (the working directory). list_runtimes tells the runtimes and what network access the operator allows. \
A result gives the exit code, why the program ended (exitReason: exited, timeout, memoryLimit, outputLimit, signal, sandboxLost), stdout and stderr.";

/// A tool result for a failed call.
fn refused(e: Refusal) -> CallToolResult {
    failure(e)
}

/// Whether a call arrived in a stateless HTTP request (an HTTP request without an MCP
/// session id): a session it creates cannot follow a connection.
fn stateless(ext: &Extensions) -> bool {
    ext.get::<axum::http::request::Parts>()
        .is_some_and(|parts| !parts.headers.contains_key("mcp-session-id"))
}

#[tool_router]
impl Isol8Mcp {
    /// A handler for a new connection.
    pub fn new(shared: Arc<Shared>) -> Isol8Mcp {
        let connection = shared.sessions.connect();
        Isol8Mcp {
            shared,
            connection,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Run a program in a fresh, isolated sandbox and return its exit code, exit reason, stdout and stderr. \
Give `runtime` and either `code` (source of that language) or `cmd` (a bash command line). \
Optional: `stdin`, `files` to create first, `env`, `timeoutMs`, `packages` to install, and `network` (`none` by default; `filtered` with `allowedHosts`) within what the operator allows. \
Nothing persists after the call; use create_session for multi-step work."
    )]
    async fn run_code(
        &self,
        Parameters(args): Parameters<RunCodeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let (req, options) = args.into_request();
        Ok(match self.shared.target.run(req, &options).await {
            Ok(res) => result(&res, self.shared.max_output, None),
            Err(e) => refused(e),
        })
    }

    #[tool(
        description = "Start a persistent sandbox session bound to one runtime and return its `sessionId`. \
Files written and packages installed in it stay between calls of run_in_session, write_file and read_file. \
Optional: `packages` to install at start, `network` and `allowedHosts`. \
End it with end_session when done (it also ends when this MCP connection closes)."
    )]
    async fn create_session(
        &self,
        Parameters(args): Parameters<CreateSessionArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let (req, options) = args.into_request();
        let runtime = req.runtime.clone();
        let id = format!("mcp-{}", uuid::Uuid::new_v4());
        let engine = match self.shared.target.new_session(&id, &req, &options) {
            Ok(engine) => engine,
            Err(e) => return Ok(refused(e)),
        };
        let owner = (!stateless(&ext)).then_some(&*self.connection);
        tracing::info!(session = %id, runtime = %runtime, follows_connection = owner.is_some(), "creating a session");
        if let Err(e) = self
            .shared
            .sessions
            .insert(&id, engine.clone(), &runtime, owner)
        {
            return Ok(failure(e));
        }
        // The no-op first run starts the container (and installs the packages).
        let started = engine.execute(req).await;
        let why = match started {
            Ok(res) if res.exit_code == 0 => {
                return Ok(success(
                    format!("session {id} started (runtime {runtime}); pass this sessionId to run_in_session, write_file, read_file and end_session"),
                    json!({"sessionId": id, "runtime": runtime}),
                ));
            }
            Ok(res) => format!(
                "the session could not be set up (exit code {}): {}",
                res.exit_code,
                res.stderr.trim().lines().last().unwrap_or("no output")
            ),
            Err(e) => e.to_string(),
        };
        if let Ok(engine) = self.shared.sessions.remove(&id) {
            end(&id, engine).await;
        }
        Ok(failure(why))
    }

    #[tool(
        description = "Run code or a bash command in an open session (from create_session), with the session's runtime; files and installed packages of earlier calls are there. \
Give `sessionId` and either `code` or `cmd`; optional `stdin`, `files`, `env`, `timeoutMs`. Returns exit code, exit reason, stdout and stderr."
    )]
    async fn run_in_session(
        &self,
        Parameters(args): Parameters<RunInSessionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = args.session_id.clone();
        let (engine, runtime) = match self.shared.sessions.get(&id) {
            Ok(found) => found,
            Err(e) => return Ok(failure(e)),
        };
        let (req, options) = args.into_request(&runtime);
        if let Err(e) = self.shared.target.check(&req, &options) {
            return Ok(refused(e));
        }
        Ok(match engine.execute_with(req, &options).await {
            Ok(res) => result(&res, self.shared.max_output, Some(&id)),
            Err(e) => failure(e),
        })
    }

    #[tool(
        description = "Write a file into an open session. `path` is relative to /sandbox (or absolute below /sandbox, /tmp or /dev/shm); `content` is text, or base64 with `encoding: base64` for binary files."
    )]
    async fn write_file(
        &self,
        Parameters(args): Parameters<WriteFileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let (engine, _) = match self.shared.sessions.get(&args.session_id) {
            Ok(found) => found,
            Err(e) => return Ok(failure(e)),
        };
        let bytes = match args.encoding {
            Encoding::Text => args.content.into_bytes(),
            Encoding::Base64 => {
                match base64::engine::general_purpose::STANDARD.decode(args.content.trim()) {
                    Ok(b) => b,
                    Err(e) => return Ok(failure(format!("content is not valid base64: {e}"))),
                }
            }
        };
        Ok(match engine.put_file(&args.path, &bytes).await {
            Ok(()) => success(
                format!("wrote {} bytes to {}", bytes.len(), args.path),
                json!({"path": args.path, "bytes": bytes.len()}),
            ),
            Err(e) => failure(e),
        })
    }

    #[tool(
        description = "Read a file from an open session. `path` is relative to /sandbox (or absolute below /sandbox, /tmp or /dev/shm). Returns the text (long files are cut in the middle with a marker), or base64 with `encoding: base64`."
    )]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadFileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let (engine, _) = match self.shared.sessions.get(&args.session_id) {
            Ok(found) => found,
            Err(e) => return Ok(failure(e)),
        };
        let bytes = match engine.get_file(&args.path).await {
            Ok(b) => b,
            Err(e) => return Ok(failure(e)),
        };
        let (content, capped) = match args.encoding {
            Encoding::Base64 => (
                base64::engine::general_purpose::STANDARD.encode(&bytes),
                false,
            ),
            Encoding::Text => crate::output::cap(
                &String::from_utf8_lossy(&bytes),
                self.shared.max_output,
                "the file",
            ),
        };
        Ok(success(
            content.clone(),
            json!({"path": args.path, "bytes": bytes.len(), "content": content, "outputCapped": capped}),
        ))
    }

    #[tool(
        description = "End an open session: its sandbox and every file in it are removed. Give the `sessionId` from create_session."
    )]
    async fn end_session(
        &self,
        Parameters(args): Parameters<EndSessionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let engine = match self.shared.sessions.remove(&args.session_id) {
            Ok(engine) => engine,
            Err(e) => return Ok(failure(e)),
        };
        Ok(match engine.stop().await {
            Ok(()) => success(
                format!("session {} ended", args.session_id),
                json!({"sessionId": args.session_id, "ended": true}),
            ),
            Err(e) => failure(e),
        })
    }

    #[tool(
        description = "List the runtimes code can run in (name and file extensions) and what the operator allows: default and allowed network modes, custom images, the longest timeout."
    )]
    async fn list_runtimes(
        &self,
        Parameters(_): Parameters<NoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let runtimes = self.shared.target.runtimes();
        let limits = self.shared.target.limits();
        let mut text = String::from("runtimes:\n");
        for r in &runtimes {
            text.push_str(&format!("- {} ({})\n", r.name, r.extensions.join(", ")));
        }
        text.push_str(&format!("limits: {limits}"));
        Ok(success(
            text,
            json!({"runtimes": runtimes, "limits": limits}),
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Isol8Mcp {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions(INSTRUCTIONS);
        info.server_info = Implementation::new("isol8", env!("CARGO_PKG_VERSION"));
        info
    }
}
