//! `isol8 setup`, `build`, `list-custom`, `cleanup`, `config`, `doctor` and `bench`
//! (`serve` has a file of its own, `serve.rs`).

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use isol8::config::{Config, LoadedConfig};
use isol8::maintenance::{self, CleanupOptions};
use isol8_images::custom::{Built, CustomImage};
use isol8_images::{SetupEvent, SetupOptions};

/// Flags of `isol8 setup`.
#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// Rebuild images even when they are up to date.
    #[arg(long)]
    pub force: bool,
    /// Bootstrap the base image from the host's Debian mirror (no container registry).
    #[arg(long)]
    pub offline: bool,
    /// Only this runtime (repeatable). Without it: python, node, bun, deno and bash; the
    /// agent runtime's image (pi) is built only with `--runtime agent`.
    #[arg(long = "runtime", short = 'r', value_name = "RUNTIME")]
    pub runtimes: Vec<String>,
}

/// Progress of image builds: a spinner on a terminal, plain lines otherwise.
pub(crate) struct Progress {
    spinner: Option<ProgressBar>,
    verbose: bool,
}

impl Progress {
    pub(crate) fn new(verbose: bool) -> Progress {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>3} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Progress { spinner, verbose }
    }

    fn report(&self, ev: SetupEvent) {
        let line = match ev {
            SetupEvent::Step { runtime, message } => Some(format!(
                "{}{message}",
                runtime.map(|r| format!("[{r}] ")).unwrap_or_default()
            )),
            SetupEvent::Output { line } => {
                if let Some(pb) = &self.spinner {
                    pb.set_message(line.chars().take(100).collect::<String>());
                }
                self.verbose.then_some(format!("    {line}"))
            }
            SetupEvent::Built { image, seconds } => {
                Some(format!("built {image} in {seconds:.1} s"))
            }
            SetupEvent::UpToDate { image } => Some(format!("{image}: Up to date")),
        };
        if let Some(line) = line {
            match &self.spinner {
                Some(pb) => pb.println(line),
                None => eprintln!("{line}"),
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(pb) = &self.spinner {
            pb.finish_and_clear();
        }
    }
}

/// Builds the runtime images, then the config's `prebuiltImages`, showing progress.
pub async fn setup(args: SetupArgs, verbose: bool, config: &LoadedConfig) -> Result<i32> {
    let docker = isol8::docker::connect().await?;
    let opts = SetupOptions {
        runtimes: args.runtimes.clone(),
        force: args.force,
        offline: args.offline,
        agent_path: None,
    };
    let started = std::time::Instant::now();
    let progress = Progress::new(verbose);
    let reports = isol8_images::setup(&docker, &opts, &|ev| progress.report(ev)).await?;
    let (prebuilt, more) =
        build_prebuilt(&docker, config, &args.runtimes, args.force, &progress).await?;
    let built = reports.iter().filter(|r| r.built).count() + prebuilt;
    let total = reports.len() + more;
    drop(progress);
    println!(
        "{}",
        setup_done_line(built, total - built, started.elapsed().as_secs_f64())
    );
    Ok(0)
}

/// The last line of `isol8 setup`, on stdout: the reference CLI's `[DONE] Setup
/// complete!` marker, with what was done.
fn setup_done_line(built: usize, up_to_date: usize, seconds: f64) -> String {
    format!("[DONE] Setup complete! ({built} built, {up_to_date} up to date, {seconds:.1} s)")
}

/// Flags of `isol8 build`.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Runtime whose image is the base (python, node, bun).
    #[arg(long, value_name = "RUNTIME")]
    pub base: String,
    /// Tag of the new image (default isol8-custom:<runtime>-<packages hash>).
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
    /// Package to bake in (repeatable).
    #[arg(long = "install", value_name = "PACKAGE")]
    pub install: Vec<String>,
    /// Shell command run as root while building (repeatable).
    #[arg(long = "setup", value_name = "CMD")]
    pub setup: Vec<String>,
    /// Rebuild even when up to date.
    #[arg(long)]
    pub force: bool,
}

/// Builds the config's `prebuiltImages` (those of `runtimes`, or all) that are missing
/// or out of date; returns how many were built and how many there are.
pub(crate) async fn build_prebuilt(
    docker: &isol8::docker::Docker,
    config: &LoadedConfig,
    runtimes: &[String],
    force: bool,
    progress: &Progress,
) -> Result<(usize, usize)> {
    let (mut built, mut total) = (0, 0);
    for p in &config.config.prebuilt_images {
        if !runtimes.is_empty() && !runtimes.contains(&p.runtime) {
            continue;
        }
        let image = custom_image(
            &p.runtime,
            p.tag.clone(),
            (
                p.install_packages.clone(),
                p.setup.clone(),
                p.setup_script.clone(),
            ),
            config,
        );
        total += 1;
        if build_custom(docker, &image, force, progress).await? {
            built += 1;
        }
    }
    Ok((built, total))
}

fn custom_image(
    runtime: &str,
    tag: Option<String>,
    (install, setup, setup_script): (Vec<String>, Vec<String>, Option<String>),
    config: &LoadedConfig,
) -> CustomImage {
    let mut image = CustomImage {
        runtime: runtime.to_string(),
        tag: tag.unwrap_or_default(),
        install,
        setup,
        setup_script,
        ca_bundle: config.config.ca_bundle.clone(),
    };
    if image.tag.is_empty() {
        image.tag = image.default_tag();
    }
    image
}

/// Builds one custom image; `true` when it was built (not up to date).
async fn build_custom(
    docker: &isol8::docker::Docker,
    image: &CustomImage,
    force: bool,
    progress: &Progress,
) -> Result<bool> {
    match isol8_images::custom::build(docker, image, force, &|ev| progress.report(ev)).await? {
        Built::Built => Ok(true),
        Built::UpToDate => {
            progress.report(SetupEvent::UpToDate {
                image: image.tag.clone(),
            });
            Ok(false)
        }
    }
}

/// `isol8 build`: a custom image with baked-in packages.
pub async fn build(args: BuildArgs, verbose: bool, config: &LoadedConfig) -> Result<i32> {
    if args.install.is_empty() && args.setup.is_empty() {
        bail!("nothing to bake in: pass --install PACKAGE and/or --setup CMD");
    }
    let docker = isol8::docker::connect().await?;
    let contents = (args.install, args.setup, None);
    let image = custom_image(&args.base, args.tag, contents, config);
    let progress = Progress::new(verbose);
    build_custom(&docker, &image, args.force, &progress).await?;
    drop(progress);
    println!("{}", image.tag);
    Ok(0)
}

/// Flags of `isol8 cleanup`.
#[derive(clap::Args, Debug)]
pub struct CleanupArgs {
    /// Also remove isol8's images.
    #[arg(long)]
    pub images: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// Removes isol8-labelled containers (and images), asking first unless --force.
pub async fn cleanup(args: CleanupArgs) -> Result<i32> {
    let interactive = std::io::stdin().is_terminal();
    if !args.force && !interactive {
        bail!("refusing to remove containers without confirmation: no terminal to ask on; pass --force");
    }
    let docker = isol8::docker::connect().await?;
    let containers = maintenance::list_containers(&docker, None).await?;
    let images = if args.images {
        maintenance::list_images(&docker).await?
    } else {
        Vec::new()
    };
    if containers.is_empty() && images.is_empty() {
        println!(
            "{}",
            if args.images {
                "No isol8 containers or images found"
            } else {
                "No isol8 containers found"
            }
        );
        return Ok(0);
    }
    // The count line is the reference CLI's wording, which scripts may look for.
    match args.images {
        true => println!(
            "Found {} isol8 container(s) and {} image(s)",
            containers.len(),
            images.len()
        ),
        false => println!("Found {} isol8 container(s)", containers.len()),
    }
    for c in &containers {
        println!(
            "container {} {} ({}, {})",
            &c.id[..12.min(c.id.len())],
            c.name,
            c.image,
            c.state
        );
    }
    for i in &images {
        println!("image {i}");
    }
    if !args.force {
        eprint!(
            "remove {} container(s) and {} image(s)? [y/N] ",
            containers.len(),
            images.len()
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Cleanup cancelled");
            return Ok(0);
        }
    }
    let report = maintenance::cleanup(
        &docker,
        &CleanupOptions {
            images: args.images,
            owner: None,
        },
    )
    .await?;
    for line in cleanup_summary(&report, args.images) {
        println!("{line}");
    }
    Ok(0)
}

/// The closing lines of `isol8 cleanup`, in the reference CLI's words: `Removed N
/// container(s)`, then `Removed N image(s)` with `--images`.
fn cleanup_summary(report: &maintenance::CleanupReport, images: bool) -> Vec<String> {
    let mut lines = vec![format!("Removed {} container(s)", report.containers)];
    if images {
        lines.push(format!("Removed {} image(s)", report.images));
    }
    lines
}

/// Flags of `isol8 list-custom`.
#[derive(clap::Args, Debug)]
pub struct ListCustomArgs {
    /// Print JSON: `[{tag, runtime, packages, created}]`.
    #[arg(long)]
    pub json: bool,
}

/// Lists the custom images on the daemon (those labelled by `isol8 build`): tag, base
/// runtime and baked-in packages, as a table (or JSON).
pub async fn list_custom(args: ListCustomArgs) -> Result<i32> {
    let docker = isol8::docker::connect().await?;
    let images = maintenance::custom_images(&docker).await?;
    if args.json {
        let list: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "tag": i.tag,
                    "runtime": i.runtime,
                    "packages": i.packages,
                    "created": i.created,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    for line in custom_images_table(&images) {
        println!("{line}");
    }
    Ok(0)
}

/// The table of `isol8 list-custom`: `TAG RUNTIME PACKAGES`, packages comma-separated
/// (`(none)` for an image of setup commands only); one line saying so when empty.
fn custom_images_table(images: &[maintenance::CustomImageInfo]) -> Vec<String> {
    if images.is_empty() {
        return vec!["No custom isol8 images found (build one with `isol8 build`)".into()];
    }
    let width = images.iter().map(|i| i.tag.len()).max().unwrap_or(0).max(3);
    let mut lines = vec![format!("{:<width$}  {:<8} PACKAGES", "TAG", "RUNTIME")];
    for i in images {
        let packages = if i.packages.is_empty() {
            "(none)".to_string()
        } else {
            i.packages.join(",")
        };
        lines.push(format!("{:<width$}  {:<8} {packages}", i.tag, i.runtime));
    }
    lines
}

/// Flags of `isol8 config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// Print the effective configuration (every default filled in) as JSON.
    #[arg(long, conflicts_with = "schema")]
    pub json: bool,
    /// Print the JSON Schema of the configuration file.
    #[arg(long)]
    pub schema: bool,
}

/// Prints the effective configuration (the file's values, every default filled in) or
/// the file's schema. Values are checked first, so a bad one is the error it would be
/// for `isol8 run`.
pub fn config(args: ConfigArgs, loaded: &LoadedConfig) -> Result<i32> {
    if args.schema {
        println!("{}", serde_json::to_string_pretty(&Config::json_schema())?);
        return Ok(0);
    }
    let c = &loaded.config;
    isol8::settings::SandboxSettings::resolve(&c.engine_options())?;
    let mut out = String::new();
    if args.json {
        out = serde_json::to_string_pretty(&c.resolved_json())? + "\n";
    } else {
        // The title is the reference CLI's, which scripts may look for.
        out.push_str("Isol8 Configuration\n");
        match &loaded.path {
            Some(p) => out.push_str(&format!("# from {}\n", p.display())),
            None => out.push_str(
                "# no config file found (./isol8.config.json, ~/.isol8/config.json): built-in defaults\n",
            ),
        }
        let lines = c.resolved_lines();
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in &lines {
            out.push_str(&format!("{key:<width$}  {value}\n"));
        }
        let inactive = c.inactive_keys();
        if !inactive.is_empty() {
            out.push_str(&format!(
                "# parsed, not used by this version yet: {}\n",
                inactive.join(", ")
            ));
        }
    }
    // One write: a reader that closes early (`| head`) is a broken pipe, exit 0.
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())?;
    Ok(0)
}

/// Runs the doctor checks (the daemon's, then the runtime images' when it answers); exit 1
/// when something essential is wrong.
pub async fn doctor() -> Result<i32> {
    let (mut checks, docker) = maintenance::doctor().await;
    if let Some(docker) = &docker {
        checks.extend(isol8_images::checks(docker).await);
    }
    let mut failed = false;
    for c in &checks {
        println!(
            "{} {:<16} {}",
            if c.ok { "✓" } else { "✗" },
            c.name,
            c.detail
        );
        failed |= !c.ok && c.essential;
    }
    Ok(if failed { 1 } else { 0 })
}

/// Flags of `isol8 bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Only this runtime (repeatable; default all five).
    #[arg(long = "runtime", short = 'r', value_name = "RUNTIME")]
    pub runtimes: Vec<String>,
    /// Samples per path and runtime (default 30, 10 with --quick).
    #[arg(short = 'n', value_name = "N")]
    pub n: Option<usize>,
    /// A short run: fewer samples, throughput for python only.
    #[arg(long)]
    pub quick: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints a table (or JSON).
pub async fn bench(args: BenchArgs) -> Result<i32> {
    if args.n == Some(0) {
        bail!("-n must be at least 1");
    }
    let opts = isol8_bench::BenchOptions::new(args.runtimes, args.n, args.quick);
    let report = isol8_bench::run(&opts, &|line| eprintln!("bench: {line}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let m = &report.machine;
    println!(
        "machine: {} CPUs ({}), {} GiB, kernel {}, Docker {} (API {})",
        m.cpus, m.cpu_model, m.memory_gb, m.kernel, m.docker, m.docker_api
    );
    println!();
    print!("{}", results_table(&report.results));
    if !report.throughput.is_empty() {
        println!();
        print!("{}", throughput_table(&report.throughput));
    }
    if let Some(m) = &report.measuring {
        println!();
        print!("{}", measuring_table(m));
    }
    if let Some(s) = &report.seccomp {
        println!();
        print!("{}", seccomp_table(s));
    }
    println!();
    println!("engine peak RSS: {:.1} MiB", report.peak_rss_mb);
    if let Some(p) = &report.pools_rss {
        println!(
            "engine peak RSS with {} warm pools ({}): {:.1} MiB ({})",
            p.pools,
            p.runtimes.join(", "),
            p.peak_rss_mb,
            if p.since_reset {
                "peak reset before the engine was built"
            } else {
                "peak since the process started"
            }
        );
    }
    if !report.phases.is_empty() {
        println!();
        print!("{}", phases_table(&report.phases));
    }
    if !report.targets.is_empty() {
        println!();
        print!("{}", targets_table(&report.targets));
    }
    let notes = closing_note(&report);
    if !notes.is_empty() {
        println!();
        print!("{notes}");
    }
    Ok(0)
}

/// A median or "n/a" when the path has none.
fn or_na(v: Option<f64>, width: usize, precision: usize) -> String {
    match v {
        Some(v) => format!("{v:>width$.precision$}"),
        None => format!("{:>width$}", "n/a"),
    }
}

/// The latency table: every path's min, median and p95, its ratio to the same runtime's
/// `docker_exec` median, the median program time and the median engine overhead.
fn results_table(results: &[isol8_bench::PathResult]) -> String {
    let mut out = format!(
        "{:<8} {:<12} {:>4} {:>9} {:>11} {:>9} {:>14} {:>10} {:>11}\n",
        "runtime",
        "path",
        "n",
        "min ms",
        "median ms",
        "p95 ms",
        "vs docker_exec",
        "program ms",
        "overhead ms"
    );
    for r in results {
        let base = results
            .iter()
            .find(|b| b.runtime == r.runtime && b.path == "docker_exec")
            .map(|b| b.median_ms)
            .unwrap_or(0.0);
        let ratio = if r.path == "docker_exec" {
            "baseline".to_string()
        } else if r.median_ms > 0.0 && base > 0.0 {
            if r.median_ms <= base {
                format!("{:.1}x faster", base / r.median_ms)
            } else {
                format!("{:.1}x slower", r.median_ms / base)
            }
        } else {
            "-".into()
        };
        out += &format!(
            "{:<8} {:<12} {:>4} {:>9.1} {:>11.1} {:>9.1} {:>14} {} {}\n",
            r.runtime,
            r.path,
            r.n,
            r.min_ms,
            r.median_ms,
            r.p95_ms,
            ratio,
            or_na(r.program_ms, 10, 1),
            or_na(r.overhead_ms, 11, 2)
        );
    }
    out += "program ms: median of the program's own time as the agent timed it \
            (microseconds, reported to the engine's observer; on the server path too);\n";
    out += "overhead ms: median of (end to end - program) per sample; n/a for the docker \
            baselines, where nothing inside the container times the bare command\n";
    out
}

/// The throughput table, with the most executions the engine ran at once.
fn throughput_table(throughput: &[isol8_bench::Throughput]) -> String {
    let mut out = format!(
        "{:<8} {:<8} {:>11} {:>10} {:>14}\n",
        "runtime", "path", "concurrency", "execs/s", "peak running"
    );
    for t in throughput {
        let peak = match t.peak_running {
            Some(p) => format!("{p} of {}", t.max_concurrent),
            None => "n/a".to_string(),
        };
        out += &format!(
            "{:<8} {:<8} {:>11} {:>10.1} {:>14}\n",
            t.runtime, t.path, t.concurrency, t.execs_per_s, peak
        );
    }
    out
}

/// The phases per runtime and path (`warm`, `server`): median and mean of each, ms.
fn phases_table(phases: &[isol8_bench::phases::PhaseTimings]) -> String {
    let mut out = String::from("where the time goes (engine-reported phases; median / mean ms)\n");
    let names = [
        "end_to_end",
        "queue_wait",
        "sandbox_acquire",
        "run",
        "program",
        "in_run_overhead",
        "around_run",
    ];
    out += &format!("{:<8} {:<7} {:>4}", "runtime", "path", "n");
    for name in names {
        out += &format!(" {name:>15}");
    }
    out += "\n";
    for t in phases {
        out += &format!("{:<8} {:<7} {:>4}", t.runtime, t.path, t.n);
        for name in names {
            let cell = match t.get(name) {
                Some(p) => format!("{:.2}/{:.2}", p.median_ms, p.mean_ms),
                None => "-".to_string(),
            };
            out += &format!(" {cell:>15}");
        }
        out += "\n";
    }
    out += "run: exec frame sent until the execution ended; in_run_overhead = run - program; \
            around_run = end_to_end - queue_wait - sandbox_acquire - run (on the server \
            path: the HTTP round trip and the server's own work too)\n";
    out
}

/// A target's measured figure in its unit.
fn measured(t: &isol8_bench::targets::TargetCheck) -> String {
    match t.measured {
        None => "-".to_string(),
        Some(v) => match t.unit.as_str() {
            "ms" => format!("{v:.2} ms"),
            "x" => format!("{v:.2}x"),
            "/s" => format!("{v:.0}/s"),
            "MiB" => format!("{v:.1} MiB"),
            _ => format!("{v:.0}"),
        },
    }
}

/// Issue 14's targets against this run, with met / missed per row.
fn targets_table(targets: &[isol8_bench::targets::TargetCheck]) -> String {
    let mut out = String::from("targets (issue 14)\n");
    out += &format!(
        "{:<34} {:<8} {:>20} {:>12}  {}\n",
        "target", "runtime", "goal", "measured", "status"
    );
    for t in targets {
        out += &format!(
            "{:<34} {:<8} {:>20} {:>12}  {}\n",
            t.target,
            t.runtime.as_deref().unwrap_or("-"),
            t.goal,
            measured(t),
            t.status.label()
        );
    }
    out
}

/// The closing note: where each runtime's warm time goes, and what `docker_exec` costs
/// around the same program (its median minus the warm path's median program time).
fn closing_note(report: &isol8_bench::BenchReport) -> String {
    let mut out = String::new();
    for t in &report.phases {
        if let Some(line) = isol8_bench::phases::note(t) {
            out += &format!("- {line}\n");
        }
        let find = |path: &str| {
            report
                .results
                .iter()
                .find(|r| r.runtime == t.runtime && r.path == path)
        };
        if let (Some(exec), Some(program)) =
            (find("docker_exec"), find("warm").and_then(|w| w.program_ms))
        {
            out += &format!(
                "  {} docker_exec: {:.1} ms, about {:.1} ms of it around the program \
                 (docker_exec median - warm program median)\n",
                t.runtime,
                exec.median_ms,
                exec.median_ms - program
            );
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("closing note: where the time goes\n{out}")
    }
}

/// The table of what measuring resource usage costs on the warm path.
fn measuring_table(m: &isol8_bench::MeasuringCost) -> String {
    paired_table(
        "resource usage: warm python, measured and not (interleaved)",
        "measureUsage",
        [("on", &m.measured), ("off", &m.unmeasured)],
        m.difference_ms,
        m.target_ms,
    )
}

/// The tables of what the strict seccomp profile costs, cold and warm.
fn seccomp_table(s: &isol8_bench::SeccompCost) -> String {
    [("cold bash", &s.cold), ("warm python", &s.warm)]
        .into_iter()
        .map(|(what, c)| {
            paired_table(
                &format!("seccomp: {what}, strict and unconfined (interleaved)"),
                "seccomp",
                [("strict", &c.strict), ("unconfined", &c.unconfined)],
                c.difference_ms,
                c.target_ms,
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Two interleaved measurements of one path, the difference of their medians (first −
/// second) and whether it is within `target_ms`.
fn paired_table(
    title: &str,
    knob: &str,
    rows: [(&str, &isol8_bench::PathResult); 2],
    difference_ms: f64,
    target_ms: f64,
) -> String {
    let mut out = format!("{title}\n");
    out += &format!(
        "{:<14} {:>4} {:>9} {:>11} {:>9}\n",
        knob, "n", "min ms", "median ms", "p95 ms"
    );
    for (name, r) in rows {
        out += &format!(
            "{:<14} {:>4} {:>9.2} {:>11.2} {:>9.2}\n",
            name, r.n, r.min_ms, r.median_ms, r.p95_ms
        );
    }
    let verdict = if difference_ms <= target_ms {
        "within"
    } else {
        "OVER"
    };
    out += &format!(
        "difference of medians: {difference_ms:+.2} ms ({verdict} the {target_ms:.1} ms target)\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measuring_table_shows_both_medians_and_the_difference() {
        let r = |median_ms| isol8_bench::PathResult {
            runtime: "python".into(),
            path: "warm".into(),
            n: 30,
            min_ms: 1.0,
            median_ms,
            p95_ms: 9.0,
            ..Default::default()
        };
        let table = measuring_table(&isol8_bench::MeasuringCost {
            measured: r(12.25),
            unmeasured: r(12.0),
            difference_ms: 0.25,
            target_ms: 0.5,
        });
        assert!(
            table.contains("12.25") && table.contains("12.00"),
            "{table}"
        );
        assert!(
            table.contains("+0.25 ms (within the 0.5 ms target)"),
            "{table}"
        );
        let over = measuring_table(&isol8_bench::MeasuringCost {
            measured: r(13.0),
            unmeasured: r(12.0),
            difference_ms: 1.0,
            target_ms: 0.5,
        });
        assert!(over.contains("+1.00 ms (OVER the 0.5 ms target)"), "{over}");
    }

    #[test]
    fn the_seccomp_table_shows_cold_and_warm_with_their_targets() {
        let r = |median_ms| isol8_bench::PathResult {
            runtime: "bash".into(),
            path: "cold".into(),
            n: 30,
            min_ms: 1.0,
            median_ms,
            p95_ms: 200.0,
            ..Default::default()
        };
        let cost = |strict, unconfined, target_ms| isol8_bench::ProfileCost {
            strict: r(strict),
            unconfined: r(unconfined),
            difference_ms: strict - unconfined,
            target_ms,
        };
        let table = seccomp_table(&isol8_bench::SeccompCost {
            cold: cost(151.5, 148.0, 5.0),
            warm: cost(4.9, 4.5, 0.3),
        });
        assert!(table.contains("seccomp: cold bash"), "{table}");
        assert!(
            table.contains("151.50") && table.contains("148.00"),
            "{table}"
        );
        assert!(
            table.contains("+3.50 ms (within the 5.0 ms target)"),
            "{table}"
        );
        assert!(
            table.contains("+0.40 ms (OVER the 0.3 ms target)"),
            "{table}"
        );
    }

    fn path_row(
        path: &str,
        median_ms: f64,
        program_ms: Option<f64>,
        overhead_ms: Option<f64>,
    ) -> isol8_bench::PathResult {
        isol8_bench::PathResult {
            runtime: "python".into(),
            path: path.into(),
            n: 10,
            min_ms: median_ms,
            median_ms,
            p95_ms: median_ms,
            program_ms,
            overhead_ms,
        }
    }

    #[test]
    fn the_latency_table_shows_program_time_and_overhead_and_n_a_for_the_baselines() {
        let table = results_table(&[
            path_row("warm", 20.0, Some(18.0), Some(1.75)),
            path_row("docker_exec", 80.0, None, None),
            path_row("cold", 160.0, Some(18.0), Some(141.5)),
        ]);
        let line = |path: &str| {
            table
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(path))
                .unwrap_or_else(|| panic!("no {path} row in\n{table}"))
                .to_string()
        };
        assert!(table
            .lines()
            .next()
            .is_some_and(|h| h.contains("vs docker_exec")
                && h.contains("program ms")
                && h.contains("overhead ms")));
        let warm = line("warm");
        assert!(
            warm.contains("4.0x faster") && warm.trim_end().ends_with("18.0        1.75"),
            "{warm}"
        );
        let base = line("docker_exec");
        assert!(base.contains("baseline"), "{base}");
        assert_eq!(base.matches("n/a").count(), 2, "{base}");
        let cold = line("cold");
        assert!(
            cold.contains("2.0x slower") && cold.contains("141.50"),
            "{cold}"
        );
        assert!(table.contains("nothing inside the container times the bare command"));
    }

    #[test]
    fn the_throughput_table_shows_the_peak_against_max_concurrent() {
        let t = |path: &str, peak_running| isol8_bench::Throughput {
            runtime: "python".into(),
            path: path.into(),
            concurrency: 4,
            execs_per_s: 123.45,
            max_concurrent: 4,
            peak_running,
        };
        let table = throughput_table(&[t("warm", Some(3)), t("server", None)]);
        assert!(
            table.contains("123.5") && table.contains("3 of 4"),
            "{table}"
        );
        assert!(
            table.lines().nth(2).is_some_and(|l| l.ends_with("n/a")),
            "{table}"
        );
    }

    #[test]
    fn the_targets_table_prints_goal_measured_figure_and_status() {
        use isol8_bench::targets::{TargetCheck, TargetStatus};
        let row = |target: &str, unit: &str, measured, status| TargetCheck {
            target: target.into(),
            runtime: Some("python".into()),
            goal: "<= 3.0 ms".into(),
            measured,
            unit: unit.into(),
            status,
        };
        let table = targets_table(&[
            row("warm end to end", "ms", Some(2.5), TargetStatus::Met),
            row("warm vs docker_exec", "x", Some(4.0), TargetStatus::Missed),
            row(
                "engine overhead (warm)",
                "ms",
                Some(1.2),
                TargetStatus::Unresolved,
            ),
            row("warm throughput c=4", "/s", None, TargetStatus::NotMeasured),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[2].contains("2.50 ms") && lines[2].ends_with("met"),
            "{table}"
        );
        assert!(
            lines[3].contains("4.00x") && lines[3].ends_with("MISSED"),
            "{table}"
        );
        assert!(lines[4].ends_with("unresolved"), "{table}");
        assert!(
            lines[5].contains(" - ") && lines[5].ends_with("not measured"),
            "{table}"
        );
    }

    #[test]
    fn the_phase_table_and_the_closing_note_show_where_the_time_goes() {
        use isol8_bench::phases::{phase_timings, PhaseSample, Reported};
        let sample = PhaseSample {
            total_ms: 20.0,
            program_ms: 17.0,
            reported: Reported {
                queue_wait_ms: Some(0.0),
                acquire_ms: Some(0.5),
                run_ms: Some(19.0),
                program_ms: None,
            },
        };
        let phases = vec![phase_timings("python", "warm", &[sample])];
        let table = phases_table(&phases);
        let row = table
            .lines()
            .find(|l| l.starts_with("python"))
            .unwrap_or_else(|| panic!("{table}"));
        for cell in [
            "20.00/20.00",
            "0.50/0.50",
            "19.00/19.00",
            "17.00/17.00",
            "2.00/2.00",
        ] {
            assert!(row.contains(cell), "{cell} missing: {row}");
        }
        let report = isol8_bench::BenchReport {
            machine: isol8_bench::Machine {
                cpus: 2,
                memory_gb: 1.0,
                kernel: String::new(),
                docker: String::new(),
                docker_api: String::new(),
                cpu_model: String::new(),
            },
            results: vec![
                path_row("warm", 20.0, Some(17.0), Some(3.0)),
                path_row("docker_exec", 80.0, None, None),
            ],
            throughput: Vec::new(),
            peak_rss_mb: 10.0,
            measuring: None,
            seccomp: None,
            phases,
            pools_rss: None,
            targets: Vec::new(),
        };
        let note = closing_note(&report);
        assert!(
            note.starts_with("closing note: where the time goes"),
            "{note}"
        );
        assert!(note.contains("largest: program (85%)"), "{note}");
        assert!(
            note.contains("about 63.0 ms of it around the program"),
            "{note}"
        );
    }

    #[test]
    fn setup_and_cleanup_end_with_the_reference_lines() {
        let line = setup_done_line(1, 4, 2.04);
        assert!(line.starts_with("[DONE] Setup complete!"), "{line}");
        assert!(line.contains("1 built") && line.contains("2.0 s"), "{line}");
        // The reference's tests look for "Up to date" only when nothing was built.
        assert!(!line.contains("Up to date"), "{line}");
        let report = maintenance::CleanupReport {
            containers: 3,
            images: 2,
        };
        assert_eq!(cleanup_summary(&report, false), ["Removed 3 container(s)"]);
        assert_eq!(
            cleanup_summary(&report, true),
            ["Removed 3 container(s)", "Removed 2 image(s)"]
        );
    }

    #[test]
    fn list_custom_prints_tag_runtime_and_packages() {
        let none = custom_images_table(&[]);
        assert_eq!(none.len(), 1);
        assert!(none[0].starts_with("No custom isol8 images found"));
        let lines = custom_images_table(&[
            maintenance::CustomImageInfo {
                tag: "my/py-data:latest".into(),
                runtime: "python".into(),
                packages: vec!["numpy".into(), "pandas".into()],
                created: 1,
            },
            maintenance::CustomImageInfo {
                tag: "isol8-custom:bun-0123".into(),
                runtime: "bun".into(),
                packages: vec![],
                created: 2,
            },
        ]);
        assert_eq!(
            lines,
            [
                "TAG                    RUNTIME  PACKAGES",
                "my/py-data:latest      python   numpy,pandas",
                "isol8-custom:bun-0123  bun      (none)",
            ]
        );
    }
}
