//! `isol8 mcp`: its flags and start-up lines; the server itself is `isol8_mcp`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use isol8::config::LoadedConfig;

/// Flags of `isol8 mcp`.
#[derive(clap::Args, Debug)]
pub struct McpArgs {
    /// Serve streamable HTTP at http://ADDR/mcp instead of stdio. ADDR is a port (bound on
    /// 127.0.0.1) or IP:PORT; an address beyond loopback needs --http-token.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// With --http: require `Authorization: Bearer TOKEN` on every request (prefer the
    /// ISOL8_MCP_TOKEN environment variable).
    #[arg(
        long,
        env = "ISOL8_MCP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub http_token: Option<String>,
    /// Run on an isol8 server instead of the local Docker daemon (e.g.
    /// http://127.0.0.1:3000); its own serverPolicy applies.
    #[arg(long, value_name = "URL")]
    pub host: Option<String>,
    /// API key of the server given with --host (prefer the ISOL8_API_KEY environment
    /// variable; else the key stored by `isol8 login`).
    #[arg(long, env = "ISOL8_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Cap on each of stdout and stderr in a tool result, in bytes (the middle of longer
    /// output is left out, with a marker).
    #[arg(long, value_name = "BYTES", default_value_t = isol8_mcp::DEFAULT_TOOL_OUTPUT_BYTES)]
    pub max_tool_output: usize,
}

/// `--http ADDR`: a port alone is bound on loopback.
fn http_addr(raw: &str) -> Result<SocketAddr> {
    if let Ok(port) = raw.trim().parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    raw.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "--http `{raw}`: expected a port (e.g. 3001) or IP:PORT (e.g. 127.0.0.1:3001)"
        )
    })
}

/// Runs the MCP server until its client leaves (stdio) or SIGINT/SIGTERM, then ends
/// every session and removes the containers it made.
pub async fn mcp(args: McpArgs, loaded: &LoadedConfig) -> Result<i32> {
    let addr = args.http.as_deref().map(http_addr).transpose()?;
    let token = args.http_token.clone().filter(|t| !t.is_empty());
    if let Some(addr) = addr.filter(|a| !a.ip().is_loopback() && token.is_none()) {
        // Before anything starts: code execution open to the network needs a token.
        return Err(isol8_mcp::McpError::TokenRequired(addr).into());
    }
    if args.max_tool_output < 256 {
        bail!(
            "--max-tool-output {} is too small: use at least 256 bytes",
            args.max_tool_output
        );
    }
    // The same configuration as `isol8 serve`: engine, limits, serverPolicy, session age.
    let serve = isol8_server::ServeConfig::from_config(
        &loaded.config,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        String::new(),
    );
    let target = match &args.host {
        Some(host) => {
            let key = crate::account::key_for(host, args.key.clone())?.with_context(|| {
                format!("API key required: pass --key, set ISOL8_API_KEY, or run `isol8 login --host {host}`")
            })?;
            isol8_mcp::Target::remote(host, &key).await?
        }
        None => {
            let (target, lowered) = isol8_mcp::Target::local(serve.engine, serve.policy).await?;
            for line in lowered {
                eprintln!("note: {line}");
            }
            target
        }
    };
    let sessions = isol8_mcp::Sessions::new(target.max_sessions());
    let shared = Arc::new(isol8_mcp::Shared {
        target,
        sessions,
        max_output: args.max_tool_output,
    });
    let shutdown = isol8_mcp::shutdown_signal()?;
    match addr {
        None => isol8_mcp::serve_stdio(shared, serve.prune_after, shutdown).await?,
        Some(addr) => {
            isol8_mcp::serve_http(
                shared,
                addr,
                args.http_token.filter(|t| !t.is_empty()),
                serve.prune_after,
                shutdown,
                |bound| {
                    eprintln!(
                        "isol8 mcp v{} serving MCP (streamable HTTP) on http://{bound}/mcp",
                        env!("CARGO_PKG_VERSION")
                    )
                },
            )
            .await?
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_port_alone_binds_loopback() {
        assert_eq!(
            http_addr("3001").expect("port"),
            "127.0.0.1:3001".parse().expect("addr")
        );
        assert_eq!(
            http_addr("0.0.0.0:80").expect("addr"),
            "0.0.0.0:80".parse().expect("addr")
        );
        let e = http_addr("localhost:1").expect_err("a name").to_string();
        assert!(e.contains("IP:PORT"), "{e}");
    }
}
