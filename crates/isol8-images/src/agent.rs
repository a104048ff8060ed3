//! Finding and reading the in-sandbox agent that every image carries as PID 1.
//!
//! The agent must be a static executable (the images' glibc is not the build host's). The
//! automatic search prefers a static build over a dynamically linked one (`cargo build`
//! leaves a dynamic debug agent in `target/debug` next to the CLI), and reports when only a
//! dynamic one exists.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use super::{ImageError, AGENT_BUILD_OUTPUT};

/// Environment variable naming the agent binary.
pub const AGENT_ENV: &str = "ISOL8_AGENT_BIN";

/// Finds the agent binary: `explicit` (which must exist), else `$ISOL8_AGENT_BIN` (which
/// must exist when set), else `isol8-agent` next to the current executable, else
/// [`AGENT_BUILD_OUTPUT`] under the current directory or one of its parents. Among the
/// last two, a static build wins over a dynamically linked one.
pub fn locate_agent(explicit: Option<&Path>) -> Result<PathBuf, ImageError> {
    if let Some(p) = explicit {
        return existing(p, &p.display().to_string());
    }
    if let Some(p) = std::env::var_os(AGENT_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return existing(&p, &format!("{} (from {AGENT_ENV})", p.display()));
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("isol8-agent"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|d| d.join(AGENT_BUILD_OUTPUT)));
    }
    let found: Vec<&PathBuf> = candidates.iter().filter(|p| p.is_file()).collect();
    if let Some(p) = found.iter().find(|p| file_is_static(p) == Some(true)) {
        return Ok((*p).clone());
    }
    if let Some(p) = found.first() {
        return Ok((*p).clone());
    }
    let mut searched = candidates
        .iter()
        .take(2)
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if candidates.len() > 2 {
        searched.push_str(" and the parent directories'");
    }
    Err(ImageError::AgentMissing {
        searched: format!("{AGENT_ENV} (unset), {searched}"),
    })
}

fn existing(p: &Path, shown: &str) -> Result<PathBuf, ImageError> {
    if p.is_file() {
        Ok(p.to_path_buf())
    } else {
        Err(ImageError::AgentMissing {
            searched: shown.to_string(),
        })
    }
}

/// The agent as read for a build.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes.
    pub sha256: Vec<u8>,
}

impl Agent {
    /// Reads the agent at `path`, checking that it is an ELF executable.
    pub fn load(path: &Path) -> Result<Agent, ImageError> {
        let bytes = std::fs::read(path).map_err(|e| ImageError::io("read the agent", path, e))?;
        if !bytes.starts_with(b"\x7fELF") {
            return Err(ImageError::AgentInvalid {
                path: path.to_path_buf(),
            });
        }
        let sha256 = Sha256::digest(&bytes).to_vec();
        remember(path, &sha256);
        Ok(Agent {
            path: path.to_path_buf(),
            bytes,
            sha256,
        })
    }

    /// Whether it is statically linked (has no program interpreter).
    pub fn is_static(&self) -> bool {
        elf_is_static(&self.bytes) == Some(true)
    }
}

/// Digests of agents already read, by path, size and modification time, so repeated status
/// checks (`isol8 doctor` asks once per runtime) hash the file once.
static DIGESTS: Mutex<Vec<KnownDigest>> = Mutex::new(Vec::new());

/// Path, size, modification time and SHA-256 of an agent file.
type KnownDigest = (PathBuf, u64, SystemTime, Vec<u8>);

fn file_key(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn remember(path: &Path, sha256: &[u8]) {
    let Some((len, mtime)) = file_key(path) else {
        return;
    };
    if let Ok(mut cache) = DIGESTS.lock() {
        cache.retain(|(p, ..)| p != path);
        cache.push((path.to_path_buf(), len, mtime, sha256.to_vec()));
    }
}

/// SHA-256 of the agent at `path` (from the digest cache when the file is unchanged).
pub fn agent_sha256(path: &Path) -> Result<Vec<u8>, ImageError> {
    if let (Some((len, mtime)), Ok(cache)) = (file_key(path), DIGESTS.lock()) {
        if let Some((.., d)) = cache
            .iter()
            .find(|(p, l, m, _)| p == path && *l == len && *m == mtime)
        {
            return Ok(d.clone());
        }
    }
    Ok(Agent::load(path)?.sha256)
}

/// Whether the ELF file at `path` is static (None when it is not a readable 64-bit ELF).
pub fn file_is_static(path: &Path) -> Option<bool> {
    let mut head = Vec::with_capacity(64 * 1024);
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    elf_is_static(&head)
}

/// Whether a 64-bit little-endian ELF image has no `PT_INTERP` program header (static or
/// static-pie); None when `bytes` are not such an ELF or its headers are cut off.
pub fn elf_is_static(bytes: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || !bytes.starts_with(b"\x7fELF") || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(bytes.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(bytes.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(bytes.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        if u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with the given program header types.
    fn elf(types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56 * types.len()];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for (i, t) in types.iter().enumerate() {
            b[64 + 56 * i..68 + 56 * i].copy_from_slice(&t.to_le_bytes());
        }
        b
    }

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        assert_eq!(elf_is_static(&elf(&[6, 1, 1, 2])), Some(true), "static-pie");
        assert_eq!(elf_is_static(&elf(&[6, 3, 1, 2])), Some(false), "PT_INTERP");
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        let mut cut = elf(&[1, 3]);
        cut.truncate(100);
        assert_eq!(elf_is_static(&cut), None, "headers cut off");
        // This test binary itself is whatever cargo built; the check must not panic on it.
        if let Ok(exe) = std::env::current_exe() {
            assert!(file_is_static(&exe).is_some());
        }
    }

    #[test]
    fn an_explicit_agent_path_must_exist_and_be_an_executable() {
        let missing = Path::new("/nonexistent/isol8-agent");
        let msg = locate_agent(Some(missing))
            .expect_err("missing")
            .to_string();
        assert!(msg.contains("/nonexistent/isol8-agent"), "{msg}");
        assert!(
            msg.contains("cargo build --profile agent -p isol8-agent"),
            "{msg}"
        );
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        assert_eq!(locate_agent(Some(tmp.path())).expect("found"), tmp.path());
        std::fs::write(tmp.path(), b"#!/bin/sh\n").expect("write");
        assert!(matches!(
            Agent::load(tmp.path()),
            Err(ImageError::AgentInvalid { .. })
        ));
        std::fs::write(tmp.path(), elf(&[1])).expect("write");
        let agent = Agent::load(tmp.path()).expect("elf");
        assert!(agent.is_static());
        assert_eq!(agent_sha256(tmp.path()).expect("digest"), agent.sha256);
    }
}
