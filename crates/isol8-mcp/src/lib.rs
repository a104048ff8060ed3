//! `isol8 mcp`: a Model Context Protocol server on the official Rust SDK (`rmcp`), so an
//! MCP host (an AI assistant or agent) can run code in isol8 sandboxes.
//!
//! Tools ([`handler`]): `run_code` (a fresh sandbox per call), `create_session`,
//! `run_in_session`, `write_file`, `read_file`, `end_session` (a persistent sandbox),
//! and `list_runtimes`. Their input schemas are generated from the types in [`args`];
//! results ([`output`]) carry stdout, stderr, the exit code and the exit reason, long
//! output cut in the middle under a marker; failures are tool errors (`isError: true`)
//! with the one line `isol8 run` would print.
//!
//! The tools drive a [`target::Target`]: the local engine under the operator's
//! configuration, limits and `serverPolicy` (judged by the server crate's policy, as
//! `isol8 serve` judges its clients), or a remote `isol8 serve`.
//!
//! Transports ([`serve`](mod@serve)): stdio (one client) or streamable HTTP. Sessions
//! ([`sessions`]) end with the MCP connection that made them, when idle too long, and
//! at shutdown: nothing is left running.
//!
//! Modules, lowest first: [`args`], [`output`], [`target`], [`sessions`], [`handler`],
//! [`serve`](mod@serve).

pub mod args;
pub mod handler;
pub mod output;
pub mod serve;
pub mod sessions;
pub mod target;

pub use handler::{Isol8Mcp, Shared};
pub use output::DEFAULT_TOOL_OUTPUT_BYTES;
pub use serve::{serve_http, serve_stdio, shutdown_signal, McpError};
pub use sessions::Sessions;
pub use target::Target;
