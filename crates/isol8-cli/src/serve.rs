//! `isol8 serve`: its flags, the port and the start-up line in the reference CLI's
//! words; the server itself is `isol8_server::serve`.

use std::time::Duration;

use anyhow::{bail, Result};
use isol8::config::LoadedConfig;

/// Flags of `isol8 serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Port to listen on, 1-65535 (default: $ISOL8_PORT, else $PORT, else 3000).
    #[arg(short = 'p', long, value_name = "PORT")]
    pub port: Option<String>,
    /// Address to bind (default loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host_addr: std::net::IpAddr,
    /// Master API key (prefer the ISOL8_API_KEY environment variable: command lines are
    /// visible to other users).
    #[arg(short = 'k', long, env = "ISOL8_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Accepted for scripts of the reference CLI (which downloads its server with it);
    /// not needed here: the server is built in.
    #[arg(long)]
    pub update: bool,
    /// Accept database API keys kept in this SQLite file, or in PostgreSQL or MySQL given
    /// a postgres:// or mysql:// connection string (overrides auth.connectionString;
    /// enables keys).
    #[arg(long, value_name = "PATH_OR_URL")]
    pub auth_db: Option<String>,
    /// On SIGTERM/SIGINT, how long running executions may still finish before they are
    /// killed, in milliseconds (default: shutdownGraceMs in the config, else 10000). A
    /// second signal stops at once.
    #[arg(long, value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Log line format on stderr: `text` (default), or `json`: one JSON object per line
    /// with timestamp, level, target, message, fields and the fields of the request and
    /// execution spans, for log shippers.
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

/// Runs the HTTP API until SIGINT/SIGTERM, then removes this server's containers: maps
/// the flags and the configuration onto [`isol8_server::ServeConfig`] and prints what
/// the server reports.
pub async fn serve(args: ServeArgs, loaded: &LoadedConfig) -> Result<i32> {
    let Some(key) = args.key.clone().filter(|k| !k.is_empty()) else {
        bail!("API key required: pass --key (-k) or set ISOL8_API_KEY");
    };
    if args.update {
        crate::logging::notice(
            tracing::Level::INFO,
            "note: --update is not needed: this isol8 has the server built in, nothing to download",
        );
    }
    let port = serve_port(
        args.port.as_deref(),
        std::env::var("ISOL8_PORT").ok().as_deref(),
        std::env::var("PORT").ok().as_deref(),
    )?;
    let addr = std::net::SocketAddr::new(args.host_addr, port);
    // A port in use fails here, in one line, before Docker is even asked.
    if let Err(e) = std::net::TcpListener::bind(addr) {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            bail!("port {port} is already in use on {}: stop what listens there or pick another with --port (or ISOL8_PORT)", args.host_addr);
        }
        bail!("cannot listen on {addr}: {e}");
    }
    let mut config = isol8_server::ServeConfig::from_config(&loaded.config, addr, key);
    if let Some(ms) = args.shutdown_grace_ms {
        config.shutdown_grace = Duration::from_millis(ms);
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    config.key_store = isol8_server::serve::KeyStoreConfig::resolve(
        args.auth_db.as_deref(),
        &loaded.config.auth,
        home.as_deref(),
    )?;
    if !loaded.config.prebuilt_images.is_empty() {
        // Like `isol8 setup`: the config's images exist before any request needs them.
        let docker = isol8::docker::connect().await?;
        let progress = crate::commands::Progress::new(false);
        crate::commands::build_prebuilt(&docker, loaded, &[], false, &progress).await?;
    }
    isol8_server::serve(config, &|event| match event {
        isol8_server::serve::ServeEvent::Listening { addr } => {
            crate::logging::notice(tracing::Level::INFO, &listening_line(addr))
        }
        other => crate::logging::notice(tracing::Level::INFO, &other.to_string()),
    })
    .await?;
    Ok(0)
}

/// The port of `isol8 serve`: `--port`, else `$ISOL8_PORT`, else `$PORT`, else 3000;
/// each must be a number from 1 to 65535 (the error names where it came from).
fn serve_port(flag: Option<&str>, isol8_port: Option<&str>, port: Option<&str>) -> Result<u16> {
    let (raw, source) = match (flag, isol8_port, port) {
        (Some(v), _, _) => (v, "--port"),
        (None, Some(v), _) if !v.is_empty() => (v, "ISOL8_PORT"),
        (None, _, Some(v)) if !v.is_empty() => (v, "PORT"),
        _ => return Ok(3000),
    };
    match raw.trim().parse::<u16>() {
        Ok(p) if p >= 1 => Ok(p),
        _ => bail!("invalid port `{raw}` from {source}: expected a number from 1 to 65535"),
    }
}

/// The start-up line of `isol8 serve`: the reference CLI's `isol8 server vX listening on
/// http://localhost:PORT`, and which addresses are bound (loopback only unless
/// --host-addr).
fn listening_line(addr: std::net::SocketAddr) -> String {
    let ip = addr.ip();
    let (url_host, bound) = if ip.is_loopback() {
        (
            "localhost".to_string(),
            format!("bound to {ip} only; --host-addr ADDR to accept other hosts"),
        )
    } else if ip.is_unspecified() {
        (
            "localhost".to_string(),
            format!("bound to {ip}: all interfaces"),
        )
    } else {
        (
            std::net::SocketAddr::new(ip, 0)
                .to_string()
                .trim_end_matches(":0")
                .to_string(),
            format!("bound to {ip} only"),
        )
    };
    format!(
        "isol8 server v{} listening on http://{url_host}:{} ({bound})",
        env!("CARGO_PKG_VERSION"),
        addr.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn the_serve_port_comes_from_the_flag_then_isol8_port_then_port() {
        assert_eq!(serve_port(None, None, None).expect("default"), 3000);
        assert_eq!(
            serve_port(Some("4000"), Some("5000"), Some("6000")).expect("flag"),
            4000
        );
        assert_eq!(
            serve_port(None, Some("5000"), Some("6000")).expect("env"),
            5000
        );
        assert_eq!(serve_port(None, None, Some("6000")).expect("PORT"), 6000);
        assert_eq!(
            serve_port(None, Some(""), Some("6000")).expect("empty"),
            6000
        );
        for (flag, isol8_port, port, source) in [
            (Some("0"), None, None, "--port"),
            (Some("70000"), None, None, "--port"),
            (None, Some("abc"), Some("6000"), "ISOL8_PORT"),
            (None, None, Some("-1"), "PORT"),
        ] {
            let e = serve_port(flag, isol8_port, port)
                .expect_err(source)
                .to_string();
            assert!(e.contains(source) && e.contains("1 to 65535"), "{e}");
        }
    }

    #[test]
    fn the_startup_line_has_the_reference_words_and_the_bound_address() {
        let line = listening_line(SocketAddr::from(([127, 0, 0, 1], 3000)));
        assert!(
            line.starts_with(&format!(
                "isol8 server v{} listening on http://localhost:3000 (bound to 127.0.0.1 only",
                env!("CARGO_PKG_VERSION")
            )),
            "{line}"
        );
        assert!(line.contains("--host-addr"), "{line}");
        let line = listening_line(SocketAddr::from(([0, 0, 0, 0], 8080)));
        assert!(
            line.contains("listening on http://localhost:8080 (bound to 0.0.0.0: all interfaces)"),
            "{line}"
        );
        let line = listening_line(SocketAddr::from(([192, 0, 2, 2], 8080)));
        assert!(
            line.contains("listening on http://192.0.2.2:8080 (bound to 192.0.2.2 only)"),
            "{line}"
        );
        let line = listening_line("[2001:db8::1]:8080".parse().expect("v6"));
        assert!(line.contains("http://[2001:db8::1]:8080"), "{line}");
    }
}
