//! The offline base (`isol8 setup --offline`): debootstrap bookworm from the host's
//! mirror into a temporary directory, slim it, stream it into the Engine API as a tarball
//! tagged [`ROOTFS_IMAGE`], and finish the base from it.

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

use super::{finish, one_line, slim_rootfs, DebianSources, ROOTFS_IMAGE, SUITE};
use crate::{docker_message, ImageError, SetupEvent};

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

/// Bootstraps bookworm with debootstrap and imports it as [`crate::BASE_IMAGE`].
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
    let debs = crate::artifacts::cache_dir()
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
