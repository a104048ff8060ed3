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
    println!(
        "{:<8} {:<12} {:>4} {:>9} {:>11} {:>9} {:>14}",
        "runtime", "path", "n", "min ms", "median ms", "p95 ms", "vs docker_exec"
    );
    for r in &report.results {
        let base = report
            .results
            .iter()
            .find(|b| b.runtime == r.runtime && b.path == "docker_exec")
            .map(|b| b.median_ms)
            .unwrap_or(0.0);
        let ratio = if r.median_ms > 0.0 && base > 0.0 {
            if r.median_ms <= base {
                format!("{:.1}x faster", base / r.median_ms)
            } else {
                format!("{:.1}x slower", r.median_ms / base)
            }
        } else {
            "-".into()
        };
        let ratio = if r.path == "docker_exec" {
            "baseline".to_string()
        } else {
            ratio
        };
        println!(
            "{:<8} {:<12} {:>4} {:>9.1} {:>11.1} {:>9.1} {:>14}",
            r.runtime, r.path, r.n, r.min_ms, r.median_ms, r.p95_ms, ratio
        );
    }
    if !report.throughput.is_empty() {
        println!();
        println!(
            "{:<8} {:<8} {:>11} {:>10}",
            "runtime", "path", "concurrency", "execs/s"
        );
        for t in &report.throughput {
            println!(
                "{:<8} {:<8} {:>11} {:>10.1}",
                t.runtime, t.path, t.concurrency, t.execs_per_s
            );
        }
    }
    if let Some(m) = &report.measuring {
        println!();
        print!("{}", measuring_table(m));
    }
    println!();
    println!("engine peak RSS: {:.1} MiB", report.peak_rss_mb);
    Ok(0)
}

/// The table of what measuring resource usage costs on the warm path.
fn measuring_table(m: &isol8_bench::MeasuringCost) -> String {
    let mut out = String::from("resource usage: warm python, measured and not (interleaved)\n");
    out += &format!(
        "{:<14} {:>4} {:>9} {:>11} {:>9}\n",
        "measureUsage", "n", "min ms", "median ms", "p95 ms"
    );
    for (name, r) in [("on", &m.measured), ("off", &m.unmeasured)] {
        out += &format!(
            "{:<14} {:>4} {:>9.2} {:>11.2} {:>9.2}\n",
            name, r.n, r.min_ms, r.median_ms, r.p95_ms
        );
    }
    let verdict = if m.difference_ms <= m.target_ms {
        "within"
    } else {
        "OVER"
    };
    out += &format!(
        "difference of medians: {:+.2} ms ({verdict} the {:.1} ms target)\n",
        m.difference_ms, m.target_ms
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
