//! Slimming a debootstrapped tree like `debian:bookworm-slim`: the same dpkg excludes and
//! apt settings, and what they would have left out removed.

use std::path::Path;

use super::DebianSources;
use crate::ImageError;

const DPKG_CFG: &str = include_str!("../../../../images/offline/dpkg.cfg");
const APT_CONF: &str = include_str!("../../../../images/offline/apt.conf");

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
