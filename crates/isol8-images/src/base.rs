//! The shared base image `isol8-base:bookworm`, from one of two sources:
//!
//! * **registry** (default): `debian:bookworm-slim` pulled through the Engine API;
//! * **offline** (`isol8 setup --offline`): `debootstrap --variant=minbase bookworm` from
//!   the host's Debian mirror, slimmed like `debian:bookworm-slim` (no docs, manual pages,
//!   translations, package lists or cached packages; the same apt and dpkg settings), and
//!   imported through the Engine API as a streamed tarball (tagged [`ROOTFS_IMAGE`]).
//!
//! Either source is then finished by the same build (`images/base.Dockerfile`: packages
//! upgraded to the current security updates, isol8 labels), and every runtime image is
//! built from the same Dockerfile on top of the result.

use std::io::Write;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt as _;
use tokio::io::AsyncBufReadExt as _;

use super::{docker_message, ImageError, SetupEvent, BASE_IMAGE, REGISTRY_BASE};

/// The Debian release every image is built on.
pub const SUITE: &str = "bookworm";

/// Mirror used when the host names none for bookworm.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Security archive used with [`DEFAULT_MIRROR`].
pub const DEFAULT_SECURITY: &str = "http://deb.debian.org/debian-security";

const DPKG_CFG: &str = include_str!("../../../images/offline/dpkg.cfg");
const APT_CONF: &str = include_str!("../../../images/offline/apt.conf");
const BASE_DOCKERFILE: &str = include_str!("../../../images/base.Dockerfile");

/// Tag of the imported debootstrap rootfs while the base is built from it.
pub const ROOTFS_IMAGE: &str = "isol8-base:rootfs";

/// Where the offline base takes its packages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianSources {
    /// The main archive (`…/debian`), used by debootstrap and by apt in the images.
    pub mirror: String,
    /// Suites of the main archive: `bookworm`, and `bookworm-updates` when the host uses it.
    pub suites: Vec<String>,
    /// The security archive serving `bookworm-security`, when the host uses one.
    pub security: Option<String>,
}

impl Default for DebianSources {
    fn default() -> Self {
        DebianSources {
            mirror: DEFAULT_MIRROR.into(),
            suites: vec![SUITE.into(), format!("{SUITE}-updates")],
            security: Some(DEFAULT_SECURITY.into()),
        }
    }
}

impl DebianSources {
    /// The host's bookworm sources (`/etc/apt/sources.list.d/*.sources` in deb822 form,
    /// then `/etc/apt/sources.list` and `*.list`), or deb.debian.org when it has none.
    pub fn from_host() -> DebianSources {
        let mut deb822 = Vec::new();
        let mut classic = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            match f.extension().and_then(|e| e.to_str()) {
                Some("sources") => deb822.push(text),
                Some("list") => {
                    classic.push('\n');
                    classic.push_str(&text);
                }
                _ => {}
            }
        }
        parse_sources(&deb822, &classic).unwrap_or_default()
    }

    /// The deb822 `debian.sources` written into the offline base.
    pub fn render(&self) -> String {
        let stanza = |uri: &str, suites: &str| {
            format!(
                "Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            )
        };
        let mut out = stanza(&self.mirror, &self.suites.join(" "));
        if let Some(sec) = &self.security {
            out.push('\n');
            out.push_str(&stanza(sec, &format!("{SUITE}-security")));
        }
        out
    }
}

/// Finds the bookworm archives in deb822 stanzas (`*.sources` files) and one-line
/// `deb URI SUITE COMPONENTS` entries; None when neither names bookworm.
pub fn parse_sources(deb822: &[String], classic: &str) -> Option<DebianSources> {
    // (uri, suite) pairs of enabled `deb` entries, in file order.
    let mut entries: Vec<(String, String)> = Vec::new();
    for text in deb822 {
        for stanza in split_stanzas(text) {
            let field = |name: &str| {
                stanza
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
            };
            let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
            let enabled = field("Enabled").is_none_or(|v| !v.trim().eq_ignore_ascii_case("no"));
            if !is_deb || !enabled {
                continue;
            }
            let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
                continue;
            };
            for suite in suites.split_whitespace() {
                for uri in uris.split_whitespace() {
                    entries.push((uri.to_string(), suite.to_string()));
                }
            }
        }
    }
    for line in classic.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut uri = words.next();
        if uri.is_some_and(|u| u.starts_with('[')) {
            // Options: `[arch=amd64 signed-by=…]`, possibly spread over several words.
            let mut w = uri;
            while let Some(opt) = w {
                if opt.ends_with(']') {
                    break;
                }
                w = words.next();
            }
            uri = words.next();
        }
        if let (Some(uri), Some(suite)) = (uri, words.next()) {
            entries.push((uri.to_string(), suite.to_string()));
        }
    }
    let norm = |u: &str| u.trim_end_matches('/').to_string();
    let mirror = entries
        .iter()
        .find(|(_, s)| s == SUITE)
        .map(|(u, _)| norm(u))?;
    let mut suites = vec![SUITE.to_string()];
    let updates = format!("{SUITE}-updates");
    if entries
        .iter()
        .any(|(u, s)| *s == updates && norm(u) == mirror)
    {
        suites.push(updates);
    }
    let security_suite = format!("{SUITE}-security");
    let security = entries
        .iter()
        .find(|(_, s)| *s == security_suite || s.starts_with(&format!("{SUITE}/updates")))
        .map(|(u, _)| norm(u));
    Some(DebianSources {
        mirror,
        suites,
        security,
    })
}

/// Splits deb822 text into stanzas of (field, value) pairs; comments are dropped and
/// continuation lines are joined to their field.
fn split_stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stanzas = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                stanzas.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        stanzas.push(cur);
    }
    stanzas
}

/// Pulls [`REGISTRY_BASE`] and builds [`BASE_IMAGE`] from it.
pub async fn pull(
    docker: &Docker,
    force: bool,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    progress(SetupEvent::Step {
        runtime: None,
        message: format!("pulling {REGISTRY_BASE}"),
    });
    let (repo, tag) = REGISTRY_BASE
        .split_once(':')
        .unwrap_or((REGISTRY_BASE, "latest"));
    let opts = CreateImageOptionsBuilder::default()
        .from_image(repo)
        .tag(tag)
        .build();
    let mut stream = docker.create_image(Some(opts), None, None);
    let mut last = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                let line = match (info.id, info.status) {
                    (Some(id), Some(status)) => format!("{id}: {status}"),
                    (None, Some(status)) => status,
                    _ => continue,
                };
                if line != last {
                    progress(SetupEvent::Output { line: line.clone() });
                    last = line;
                }
            }
            Err(e) => {
                let detail = docker_message(&e);
                return Err(if registry_unreachable(&detail) {
                    ImageError::NoRegistry {
                        image: REGISTRY_BASE.to_string(),
                        detail: one_line(&detail),
                    }
                } else {
                    ImageError::Pull {
                        image: REGISTRY_BASE.to_string(),
                        detail: one_line(&detail),
                    }
                });
            }
        }
    }
    let digest = docker
        .inspect_image(REGISTRY_BASE)
        .await
        .ok()
        .and_then(|i| i.repo_digests)
        .and_then(|d| d.into_iter().next())
        .unwrap_or_else(|| REGISTRY_BASE.to_string());
    finish(
        docker,
        REGISTRY_BASE,
        &format!("registry {digest}"),
        force,
        progress,
    )
    .await
}

/// Builds [`BASE_IMAGE`] from `source` with `images/base.Dockerfile`.
async fn finish(
    docker: &Docker,
    source: &str,
    source_label: &str,
    nocache: bool,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    progress(SetupEvent::Step {
        runtime: None,
        message: format!("building {BASE_IMAGE} from {source} (security updates, labels)"),
    });
    let dockerfile = BASE_DOCKERFILE
        .replace("{{SOURCE_LABEL}}", &source_label.replace('"', ""))
        .replace("{{SOURCE}}", source);
    let context = crate::builder::build_context(&dockerfile, &[])?;
    crate::builder::build_image(docker, BASE_IMAGE, context, None, nocache, progress).await
}

/// Whether a pull error means no registry could be reached at all (as opposed to, say, a
/// missing tag or a rate limit).
pub fn registry_unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no such host",
        "dial tcp",
        "i/o timeout",
        "timeout exceeded",
        "tls handshake timeout",
        "connection refused",
        "connection reset",
        "network is unreachable",
        "no route to host",
        "temporary failure in name resolution",
        "server misbehaving",
        "proxyconnect",
        "certificate signed by unknown authority",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// The first line of `s`, at most 200 characters.
fn one_line(s: &str) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out: String = line.chars().take(200).collect();
    if line.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "could not remove the bootstrap directory");
            }
        }
    }
}

/// Bootstraps bookworm with debootstrap and imports it as [`BASE_IMAGE`].
pub async fn bootstrap(
    docker: &Docker,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if euid.is_some_and(|u| u != 0) {
        return Err(ImageError::Bootstrap(
            "debootstrap needs root (it creates device nodes and runs chroot); run `sudo isol8 setup --offline`".into(),
        ));
    }
    let sources = DebianSources::from_host();
    let started = Instant::now();
    let dir = TempDir(std::env::temp_dir().join(format!(
        "isol8-rootfs-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )));
    progress(SetupEvent::Step {
        runtime: None,
        message: format!(
            "bootstrapping Debian {SUITE} from {} with debootstrap (about a minute)",
            sources.mirror
        ),
    });
    let debs = super::artifacts::cache_dir()
        .parent()
        .map(|p| p.join("debootstrap"))
        .unwrap_or_else(|| std::env::temp_dir().join("isol8-debootstrap"));
    std::fs::create_dir_all(&debs)
        .map_err(|e| ImageError::io("create the debootstrap package cache", &debs, e))?;
    let mut cache_arg = std::ffi::OsString::from("--cache-dir=");
    cache_arg.push(&debs);
    let mut cmd = tokio::process::Command::new("debootstrap");
    cmd.arg("--variant=minbase")
        .arg(cache_arg)
        .arg(SUITE)
        .arg(&dir.0)
        .arg(&sources.mirror)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        ImageError::Bootstrap(if e.kind() == std::io::ErrorKind::NotFound {
            "debootstrap is not installed; install it with `apt-get install debootstrap`".into()
        } else {
            format!("cannot run debootstrap: {e}")
        })
    })?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut tail: Vec<String> = Vec::new();
    while let Some(line) = rx.recv().await {
        progress(SetupEvent::Output { line: line.clone() });
        tail.push(line);
        if tail.len() > 30 {
            tail.remove(0);
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| ImageError::Bootstrap(format!("waiting for debootstrap: {e}")))?;
    if !status.success() {
        let why = tail
            .iter()
            .rev()
            .find(|l| l.starts_with("E:"))
            .or_else(|| tail.last())
            .cloned()
            .unwrap_or_default();
        let log = dir.0.join("debootstrap/debootstrap.log");
        let log_tail = std::fs::read_to_string(&log)
            .ok()
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_string)
            })
            .map(|l| format!(" (log: {})", one_line(&l)))
            .unwrap_or_default();
        return Err(ImageError::Bootstrap(format!(
            "debootstrap {SUITE} from {} exited with {status}: {}{log_tail}; check that the mirror is reachable",
            sources.mirror,
            one_line(&why)
        )));
    }
    progress(SetupEvent::Step {
        runtime: None,
        message: format!(
            "debootstrap done in {:.0} s; slimming the rootfs and importing it as {ROOTFS_IMAGE}",
            started.elapsed().as_secs_f64()
        ),
    });
    {
        let root = dir.0.clone();
        let sources = sources.clone();
        tokio::task::spawn_blocking(move || slim_rootfs(&root, &sources))
            .await
            .map_err(|e| ImageError::Internal(format!("slimming the rootfs: {e}")))??;
    }
    import(docker, &dir.0, progress).await?;
    drop(dir);
    let source_label = format!("debootstrap --variant=minbase {SUITE} {}", sources.mirror);
    finish(docker, ROOTFS_IMAGE, &source_label, true, progress).await?;
    // The rootfs stays as the base's parent layer; only its tag goes.
    let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .noprune(true)
        .build();
    if let Err(e) = docker.remove_image(ROOTFS_IMAGE, Some(opts), None).await {
        tracing::debug!(error = %e, "could not untag {ROOTFS_IMAGE}");
    }
    Ok(())
}

/// Makes a debootstrapped tree look like `debian:bookworm-slim`: the same dpkg excludes
/// and apt settings, the excluded files removed, no package lists or cached packages, no
/// device nodes (Docker provides `/dev`), no host name or resolver of the build host, and
/// apt sources in deb822 form.
pub fn slim_rootfs(root: &Path, sources: &DebianSources) -> Result<(), ImageError> {
    let io = |what: &str, path: &Path, e: std::io::Error| ImageError::io(what, path, e);
    let write = |rel: &str, text: &str| -> Result<(), ImageError> {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| io("write", &path, e))
    };
    write("etc/dpkg/dpkg.cfg.d/docker-isol8-slim", DPKG_CFG)?;
    write("etc/apt/apt.conf.d/docker-isol8-slim", APT_CONF)?;
    write("etc/apt/sources.list.d/debian.sources", &sources.render())?;
    remove(&root.join("etc/apt/sources.list"))?;
    write("etc/hostname", "")?;
    write("etc/resolv.conf", "")?;
    // What the dpkg excludes would have left out, had they been there from the start.
    let doc = root.join("usr/share/doc");
    if let Ok(entries) = std::fs::read_dir(&doc) {
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => clear_dir(&path, &|name| name == "copyright")?,
                _ => remove(&path)?,
            }
        }
    }
    for rel in [
        "usr/share/groff",
        "usr/share/info",
        "usr/share/linda",
        "usr/share/lintian",
        "usr/share/locale",
        "usr/share/man",
        "var/lib/apt/lists",
        "var/cache/apt/archives",
        "var/log/apt",
        "dev",
        "run",
        "tmp",
        "var/tmp",
    ] {
        clear_dir(&root.join(rel), &|name| name == "partial" || name == "lock")?;
    }
    for rel in [
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/log/bootstrap.log",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
    ] {
        remove(&root.join(rel))?;
    }
    // The partial directories kept above may hold half-downloaded packages.
    clear_dir(&root.join("var/cache/apt/archives/partial"), &|_| false)?;
    clear_dir(&root.join("var/lib/apt/lists/partial"), &|_| false)?;
    Ok(())
}

/// Removes a file, symlink or directory tree (never following symlinks); missing is fine.
fn remove(path: &Path) -> Result<(), ImageError> {
    let res = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ImageError::io("remove", path, e))
        }
        _ => Ok(()),
    }
}

/// Empties a directory except for entries whose name `keep` accepts; missing is fine.
fn clear_dir(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Result<(), ImageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io("read", dir, e)),
    };
    for entry in entries.flatten() {
        if !keep(&entry.file_name().to_string_lossy()) {
            remove(&entry.path())?;
        }
    }
    Ok(())
}

/// A `Write` that hands 1 MiB chunks to an async body stream.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    buf: Vec<u8>,
    sent: Arc<AtomicU64>,
}

impl ChannelWriter {
    const CHUNK: usize = 1 << 20;

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK));
        let n = chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "import aborted"))?;
        self.sent.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Streams `root` as a tarball into `POST /images/create?fromSrc=-`, tagged
/// [`ROOTFS_IMAGE`], with the environment a registry image has.
async fn import(
    docker: &Docker,
    root: &Path,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(8);
    let sent = Arc::new(AtomicU64::new(0));
    let producer = {
        let root = root.to_path_buf();
        let sent = sent.clone();
        tokio::task::spawn_blocking(move || {
            let err_tx = tx.clone();
            let writer = ChannelWriter {
                tx,
                buf: Vec::with_capacity(ChannelWriter::CHUNK),
                sent,
            };
            let result = (|| {
                let mut tar = tar::Builder::new(writer);
                tar.follow_symlinks(false);
                tar.append_dir_all(".", &root)?;
                tar.into_inner()?.flush()
            })();
            if let Err(e) = &result {
                let _ = err_tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
            }
            result
        })
    };
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|r| r.map(Into::into));
    let (repo, tag) = ROOTFS_IMAGE
        .split_once(':')
        .unwrap_or((ROOTFS_IMAGE, "latest"));
    let changes = vec![
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "CMD [\"bash\"]".to_string(),
    ];
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .message("isol8 setup --offline: debootstrap --variant=minbase bookworm")
        .changes(changes)
        .build();
    let mut stream = docker.create_image(Some(opts), Some(bollard::body_try_stream(body)), None);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    let outcome: Result<(), ImageError> = loop {
        tokio::select! {
            item = stream.next() => match item {
                None => break Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(ImageError::Import(one_line(&docker_message(&e)))),
            },
            _ = tick.tick() => progress(SetupEvent::Output {
                line: format!("imported {:.0} MB", sent.load(Ordering::Relaxed) as f64 / 1_048_576.0),
            }),
        }
    };
    drop(stream);
    let produced = producer
        .await
        .map_err(|e| ImageError::Internal(format!("archiving the rootfs: {e}")))?;
    outcome?;
    produced.map_err(|e| ImageError::io("archive the rootfs", root, e))?;
    progress(SetupEvent::Output {
        line: format!(
            "imported {ROOTFS_IMAGE} ({:.0} MB)",
            sent.load(Ordering::Relaxed) as f64 / 1_048_576.0
        ),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_DEB822: &str = "Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

    #[test]
    fn deb822_sources_of_this_kind_of_host_are_parsed() {
        let s = parse_sources(&[HOST_DEB822.to_string()], "").expect("bookworm");
        assert_eq!(s.mirror, "http://deb.debian.org/debian");
        assert_eq!(s.suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            s.security.as_deref(),
            Some("http://deb.debian.org/debian-security")
        );
    }

    #[test]
    fn deb822_details_are_respected() {
        let text = "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
                    Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n\
                    types: deb\nuris:\n  http://mirror.example/debian/\nsuites: bookworm\n";
        let s = parse_sources(&[text.to_string()], "").expect("bookworm");
        assert_eq!(s.mirror, "http://mirror.example/debian");
        assert_eq!(s.suites, ["bookworm"], "no updates suite on the host");
        assert_eq!(s.security, None);
        // Other releases are not taken for bookworm.
        let trixie = "Types: deb\nURIs: http://x.example/debian\nSuites: trixie\n";
        assert_eq!(parse_sources(&[trixie.to_string()], ""), None);
    }

    #[test]
    fn one_line_sources_are_parsed() {
        let classic = "# deb http://commented.example/debian bookworm main\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://m.example/debian bookworm main\n\
             deb http://m.example/debian/ bookworm-updates main\n\
             deb-src http://m.example/debian bookworm main\n\
             deb http://security.example/debian-security bookworm-security main # trailing\n";
        let s = parse_sources(&[], classic).expect("bookworm");
        assert_eq!(s.mirror, "http://m.example/debian");
        assert_eq!(s.suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            s.security.as_deref(),
            Some("http://security.example/debian-security")
        );
        assert_eq!(parse_sources(&[], ""), None);
        assert_eq!(
            parse_sources(&[], "deb http://archive.ubuntu.com/ubuntu noble main\n"),
            None
        );
    }

    #[test]
    fn deb822_wins_over_sources_list() {
        let s = parse_sources(
            &[HOST_DEB822.to_string()],
            "deb http://other.example/debian bookworm main\n",
        )
        .expect("bookworm");
        assert_eq!(s.mirror, "http://deb.debian.org/debian");
    }

    #[test]
    fn rendered_sources_round_trip() {
        let s = DebianSources::default();
        let text = s.render();
        assert!(text.contains("Suites: bookworm bookworm-updates\n"));
        assert_eq!(parse_sources(&[text], ""), Some(s));
        let no_sec = DebianSources {
            security: None,
            ..DebianSources::default()
        };
        assert!(!no_sec.render().contains("security"));
    }

    #[test]
    fn unreachable_registries_are_recognised() {
        assert!(registry_unreachable(
            "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host"
        ));
        assert!(registry_unreachable("net/http: TLS handshake timeout"));
        assert!(!registry_unreachable(
            "manifest for debian:bookworm-slim not found: manifest unknown"
        ));
        assert!(!registry_unreachable(
            "toomanyrequests: You have reached your pull rate limit"
        ));
    }

    #[test]
    fn rootfs_is_slimmed_like_the_slim_image() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let mk = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        mk("usr/share/doc/bash/copyright", "GPL");
        mk("usr/share/doc/bash/README.gz", "doc");
        mk("usr/share/man/man1/bash.1.gz", "man");
        mk("usr/share/locale/de/LC_MESSAGES/bash.mo", "mo");
        mk(
            "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease",
            "x",
        );
        mk("var/cache/apt/archives/bash_5.2_amd64.deb", "deb");
        mk("var/cache/apt/archives/partial/x.deb", "deb");
        mk("dev/null", "");
        mk(
            "etc/apt/sources.list",
            "deb http://m/debian bookworm main\n",
        );
        mk("etc/hostname", "build-host-42\n");
        mk("usr/bin/bash", "ELF");
        mk("etc/target", "kept");
        std::os::unix::fs::symlink(root.join("etc/target"), root.join("usr/share/doc/link"))
            .expect("symlink");
        slim_rootfs(root, &DebianSources::default()).expect("slim");
        let exists = |rel: &str| root.join(rel).symlink_metadata().is_ok();
        assert!(exists("usr/share/doc/bash/copyright"));
        assert!(!exists("usr/share/doc/bash/README.gz"));
        assert!(!exists("usr/share/doc/link"));
        assert!(exists("etc/target"), "symlink targets are left alone");
        assert!(!exists("usr/share/man/man1"));
        assert!(!exists("usr/share/locale/de"));
        assert!(!exists(
            "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease"
        ));
        assert!(!exists("var/cache/apt/archives/bash_5.2_amd64.deb"));
        assert!(exists("var/cache/apt/archives/partial"));
        assert!(!exists("var/cache/apt/archives/partial/x.deb"));
        assert!(!exists("dev/null"));
        assert!(exists("usr/bin/bash"));
        assert!(!exists("etc/apt/sources.list"));
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).expect("hostname"),
            ""
        );
        let sources = std::fs::read_to_string(root.join("etc/apt/sources.list.d/debian.sources"))
            .expect("sources");
        assert!(sources.contains("URIs: http://deb.debian.org/debian\n"));
        assert!(
            std::fs::read_to_string(root.join("etc/dpkg/dpkg.cfg.d/docker-isol8-slim"))
                .expect("dpkg cfg")
                .contains("path-exclude /usr/share/doc/*")
        );
    }
}
