//! `isol8`: the command-line interface. Parsing and printing only; the work is done by
//! the `isol8` library.

mod account;
mod commands;
mod input;
mod mcp;
mod run;
mod serve;
mod source;

use clap::{Parser, Subcommand};

/// Run untrusted code in hardened Docker sandboxes.
#[derive(Parser, Debug)]
#[command(name = "isol8", about, long_about = None, disable_version_flag = true)]
struct Cli {
    /// Print the version number alone (e.g. `0.1.0`) and exit.
    #[arg(short = 'V', long)]
    version: bool,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Debug log output on stderr, `[DEBUG]` lines (the same as -vv).
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the runtime images (skipped when up to date).
    Setup(commands::SetupArgs),
    /// Build a custom image with baked-in packages.
    Build(commands::BuildArgs),
    /// List the custom images (`isol8 build`, `prebuiltImages`): tag, runtime, packages.
    ListCustom(commands::ListCustomArgs),
    /// Run code in a sandbox.
    Run(Box<run::RunArgs>),
    /// Remove isol8's containers (and, with --images, its images).
    Cleanup(commands::CleanupArgs),
    /// Show the effective configuration.
    Config(commands::ConfigArgs),
    /// Check Docker, images, seccomp and cgroup support.
    Doctor,
    /// Serve the isol8 HTTP API.
    Serve(serve::ServeArgs),
    /// Serve the Model Context Protocol (stdio, or streamable HTTP with --http) so AI
    /// assistants and agents can run code in sandboxes.
    Mcp(mcp::McpArgs),
    /// Get an expiring API key from a server (with its master key) and store it.
    Login(account::LoginArgs),
    /// Revoke the stored key on its server and forget it.
    Logout,
    /// List or stop your sessions on a server.
    Session(account::SessionArgs),
    /// Measure cold and warm latency against Docker's own paths, and throughput.
    Bench(commands::BenchArgs),
}

/// Log lines as `<time> [LEVEL] message fields`: the level in brackets, as scripts of
/// the reference CLI look for (`[DEBUG]`).
struct LogFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LogFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime;
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
        write!(writer, " [{}] ", event.metadata().level())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The log filter when `RUST_LOG` is not set. Without `-v`, a command's stderr belongs to
/// the user's program and the CLI's own one-line messages (`error: …`, the timeout line):
/// the library's warnings (`reset failed; destroying the sandbox` after a memory kill…)
/// are routine for an engine and only noise there, so only `ERROR` log lines show.
/// `isol8 serve` is a service whose log is its stderr: it keeps its warnings.
fn default_filter(verbose: u8, serve: bool) -> &'static str {
    match (verbose, serve) {
        (0, false) => "error",
        (0, true) => "warn",
        (1, _) => "info",
        _ => "debug",
    }
}

fn init_logging(verbose: u8, serve: bool) {
    let default = default_filter(verbose, serve);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LogFormat)
        .init();
}

/// True when `err` (or a cause) is a broken pipe on our own output.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The configuration file, for the commands that use it. `logout` and `cleanup` do not,
/// so a broken file only earns them a one-line warning; for every other command it is
/// the error (naming the file and the key).
fn load_config(command: &Command) -> anyhow::Result<isol8::config::LoadedConfig> {
    match isol8::config::Config::load() {
        Ok(config) => Ok(config),
        Err(e) if matches!(command, Command::Logout | Command::Cleanup(_)) => {
            eprintln!("warning: ignoring the configuration: {e}");
            Ok(isol8::config::LoadedConfig::default())
        }
        Err(e) => Err(e.into()),
    }
}

/// The log verbosity: `-v` counts, `--debug` is two (debug level), and the config's
/// `debug: true` is one `-v` (two, debug level, for `isol8 serve`).
fn verbosity(cli: &Cli, command: &Command, config: &isol8::config::Config) -> u8 {
    let from_config = match (config.debug, command) {
        (Some(true), Command::Serve(_)) => 2,
        (Some(true), _) => 1,
        _ => 0,
    };
    let from_flag = if cli.debug { 2 } else { 0 };
    cli.verbose.max(from_config).max(from_flag)
}

async fn dispatch(
    command: Command,
    verbose: bool,
    config: isol8::config::LoadedConfig,
) -> anyhow::Result<i32> {
    match command {
        Command::Setup(args) => commands::setup(args, verbose, &config).await,
        Command::Build(args) => commands::build(args, verbose, &config).await,
        Command::ListCustom(args) => commands::list_custom(args).await,
        Command::Run(args) => run::run(*args, &config).await,
        Command::Cleanup(args) => commands::cleanup(args).await,
        Command::Config(args) => commands::config(args, &config),
        Command::Doctor => commands::doctor().await,
        Command::Bench(args) => commands::bench(args).await,
        Command::Serve(args) => serve::serve(args, &config).await,
        Command::Mcp(args) => mcp::mcp(args, &config).await,
        Command::Login(args) => account::login(args).await,
        Command::Logout => account::logout().await,
        Command::Session(args) => account::session(args).await,
    }
}

/// Parses the command line; usage errors become one `error:` line and exit status 1.
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            // "…were not provided:" is followed by the indented list of what is missing.
            let listed: Vec<&str> = rendered
                .lines()
                .skip_while(|l| !l.contains(first))
                .skip(1)
                .take_while(|l| l.starts_with(' '))
                .map(str::trim)
                .collect();
            let first = if first.ends_with(':') && !listed.is_empty() {
                format!("{first} {}", listed.join(", "))
            } else {
                first.to_string()
            };
            // A value outside a fixed set (`--net bridge`): the accepted ones, on the same
            // line (clap puts them on the next).
            let accepted = match e.get(clap::error::ContextKind::ValidValue) {
                Some(clap::error::ContextValue::Strings(values)) if !values.is_empty() => {
                    format!("; use one of: {}", values.join(", "))
                }
                _ => String::new(),
            };
            eprintln!("error: {first}{accepted} (see `isol8 --help`)");
            std::process::exit(1);
        }
    }
}

fn main() {
    let cli = parse();
    if cli.version {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let Some(command) = cli.command.as_ref() else {
        // No subcommand: the help on stdout, exit 0 (as the reference CLI does).
        let mut help = <Cli as clap::CommandFactory>::command();
        if help.print_help().is_err() {
            std::process::exit(1);
        }
        return;
    };
    let config = match load_config(command) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    let verbosity = verbosity(&cli, command, &config.config);
    init_logging(
        verbosity,
        matches!(command, Command::Serve(_) | Command::Mcp(_)),
    );
    match &config.path {
        Some(path) => tracing::info!("configuration from {}", path.display()),
        None => tracing::info!("no configuration file: built-in defaults"),
    }
    let Some(command) = cli.command else {
        return;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(dispatch(command, verbosity > 0, config)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    // Tasks still pending (a stream whose client went quiet…) are dropped; blocking work
    // (a name lookup…) gets a bounded moment, so exiting never hangs on it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_in_the_config_is_one_dash_v_and_debug_level_for_serve() {
        let level = |args: &[&str], debug: Option<bool>| {
            let cli = Cli::try_parse_from(args).expect("args");
            let config = isol8::config::Config {
                debug,
                ..Default::default()
            };
            let command = cli.command.as_ref().expect("a command");
            verbosity(&cli, command, &config)
        };
        assert_eq!(level(&["isol8", "config"], None), 0);
        assert_eq!(level(&["isol8", "config"], Some(false)), 0);
        assert_eq!(level(&["isol8", "config"], Some(true)), 1);
        assert_eq!(level(&["isol8", "-v", "config"], None), 1);
        assert_eq!(level(&["isol8", "-vv", "config"], Some(true)), 2);
        assert_eq!(level(&["isol8", "serve"], Some(true)), 2);
        assert_eq!(level(&["isol8", "serve"], None), 0);
        assert_eq!(level(&["isol8", "--debug", "config"], None), 2);
    }

    #[test]
    fn library_warnings_show_only_with_dash_v_except_in_serve() {
        use tracing::level_filters::LevelFilter;
        let max = |verbose, serve| {
            tracing_subscriber::EnvFilter::new(default_filter(verbose, serve))
                .max_level_hint()
                .expect("a level")
        };
        assert_eq!(max(0, false), LevelFilter::ERROR);
        assert_eq!(max(1, false), LevelFilter::INFO);
        assert_eq!(max(2, false), LevelFilter::DEBUG);
        assert_eq!(max(0, true), LevelFilter::WARN);
        assert_eq!(max(1, true), LevelFilter::INFO);
        assert_eq!(max(2, true), LevelFilter::DEBUG);
    }
}
