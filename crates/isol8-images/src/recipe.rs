//! What goes into each runtime image, the Dockerfile rendered from the shared template
//! (`images/runtime.Dockerfile`), and the content hash that decides whether an image is
//! current.

use sha2::{Digest as _, Sha256};

use super::artifacts::{self, Artifact};
use super::{ImageError, BASE_IMAGE};

/// Bumped whenever the way images are assembled changes in a way the inputs below do not
/// capture (build context layout, build options): every image is then rebuilt once.
pub const SCHEMA_VERSION: &str = "isol8-image-v2";

/// The runtime image template; `{{NAME}}` placeholders are filled by [`Recipe::dockerfile`].
pub const TEMPLATE: &str = include_str!("../../../images/runtime.Dockerfile");

/// The ingredients of one runtime image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Runtime name (`python`, …).
    pub runtime: &'static str,
    /// Debian packages installed with `--no-install-recommends`.
    pub apt: &'static [&'static str],
    /// Pinned binaries copied to `/usr/local/bin`.
    pub binaries: Vec<Artifact>,
    /// Image environment beyond `LANG=C.UTF-8`.
    pub env: &'static [(&'static str, &'static str)],
    /// A command run at build time that proves the runtime starts on this base (its output,
    /// a version string, shows in the build log).
    pub check: &'static [&'static str],
    /// Files isol8 itself puts in the image (a pre-start loader), copied from the build
    /// context's `files/` directory to their paths; the Dockerfile names each with its
    /// SHA-256, so the content hash changes with them.
    pub files: &'static [isol8::runtime::ImageFile],
    /// The image carries the pi coding agent, installed after the binaries from the
    /// verified tarballs of its lockfile (see [`crate::pi`]); the build context then has a
    /// `pi/` directory.
    pub pi: bool,
}

impl Recipe {
    /// The recipe of a built-in runtime; Bun's binary is chosen for this host's CPU.
    pub fn for_runtime(runtime: &str) -> Result<Recipe, ImageError> {
        Self::with_bun(runtime, artifacts::bun_for_host())
    }

    /// The recipe of a built-in runtime with a given Bun build (tests).
    pub fn with_bun(runtime: &str, bun: Artifact) -> Result<Recipe, ImageError> {
        Ok(match runtime {
            "python" => Recipe {
                runtime: "python",
                apt: &["python3", "python3-pip"],
                binaries: vec![],
                env: &[("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONUNBUFFERED", "1")],
                check: &["bash", "-c", "python3 --version && pip --version"],
                files: &[isol8::runtime::TEARDOWN],
                pi: false,
            },
            "node" => Recipe {
                runtime: "node",
                apt: &["ca-certificates"],
                binaries: vec![artifacts::NODE, artifacts::NPM],
                env: &[],
                check: &["bash", "-c", "node --version && npm --version"],
                files: &[isol8::runtime::NODE_LOADER, isol8::runtime::TEARDOWN],
                pi: false,
            },
            // The node image's recipe, plus git (agents clone and commit) and pi.
            "agent" => Recipe {
                runtime: "agent",
                apt: &["ca-certificates", "git"],
                binaries: vec![artifacts::NODE, artifacts::NPM],
                env: &[("PI_OFFLINE", "1"), ("PI_TELEMETRY", "0")],
                check: &["bash", "-c", "node --version && pi --version"],
                files: &[],
                pi: true,
            },
            "bun" => Recipe {
                runtime: "bun",
                apt: &["ca-certificates"],
                binaries: vec![bun],
                env: &[],
                check: &["bun", "--version"],
                files: &[isol8::runtime::TEARDOWN],
                pi: false,
            },
            "deno" => Recipe {
                runtime: "deno",
                apt: &["ca-certificates"],
                binaries: vec![artifacts::DENO],
                env: &[("DENO_DIR", "/tmp/deno"), ("DENO_NO_UPDATE_CHECK", "1")],
                check: &["deno", "--version"],
                files: &[isol8::runtime::DENO_LOADER, isol8::runtime::TEARDOWN],
                pi: false,
            },
            "bash" => Recipe {
                runtime: "bash",
                apt: &[],
                binaries: vec![],
                env: &[],
                check: &["bash", "--version"],
                files: &[],
                pi: false,
            },
            other => return Err(ImageError::unknown_runtime(other)),
        })
    }

    /// The Dockerfile of this image, exactly as sent to the daemon.
    pub fn dockerfile(&self) -> String {
        let apt = if self.apt.is_empty() {
            "# (no Debian packages beyond the base)".to_string()
        } else {
            format!(
                "RUN apt-get update \\\n \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {} \\\n \
                 && apt-get clean \\\n \
                 && rm -rf /var/lib/apt/lists/*",
                self.apt.join(" ")
            )
        };
        let mut binaries: Vec<String> = self
            .binaries
            .iter()
            .map(|a| {
                if a.member == artifacts::WHOLE {
                    // A package tree (npm): unpacked by ADD, linked into PATH.
                    let name = a.binary.trim_end_matches(".tgz");
                    return format!(
                        "# {pkg} {ver} ({reg}), the whole package\n\
                         ADD bin/{bin} /usr/local/lib/{name}-unpack/\n\
                         RUN mkdir -p /usr/local/lib/node_modules \\\n \
                         && mv /usr/local/lib/{name}-unpack/package /usr/local/lib/node_modules/{name} \\\n \
                         && rmdir /usr/local/lib/{name}-unpack \\\n \
                         && ln -s ../lib/node_modules/{name}/bin/{name}-cli.js /usr/local/bin/{name}",
                        pkg = a.package,
                        ver = a.version,
                        reg = a.registry,
                        bin = a.binary,
                    );
                }
                format!(
                    "# {} {} ({})\nCOPY bin/{} /usr/local/bin/{}",
                    a.package, a.version, a.registry, a.binary, a.binary
                )
            })
            .collect();
        if binaries.is_empty() {
            binaries.push("# (no binaries beyond the Debian packages)".into());
        }
        if self.pi {
            binaries.push(crate::pi::dockerfile_steps());
        }
        let check = format!(
            "RUN [{}]",
            self.check
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let env: String = self
            .env
            .iter()
            .map(|(k, v)| format!(" \\\n    {k}={v}"))
            .collect();
        let files = if self.files.is_empty() {
            "# (no files of isol8's own beyond the agent)".to_string()
        } else {
            self.files
                .iter()
                .map(|f| {
                    format!(
                        "# sha256 {}\nCOPY {} {}",
                        hex::encode(Sha256::digest(f.contents)),
                        context_path(f),
                        f.path
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        TEMPLATE
            .replace("{{BASE}}", BASE_IMAGE)
            .replace("{{FILES}}", &files)
            .replace("{{APT}}", &apt)
            .replace("{{BINARIES}}", &binaries.join("\n"))
            .replace("{{CHECK}}", &check)
            .replace("{{ENV}}", &env)
            .replace("{{RUNTIME}}", self.runtime)
    }

    /// The content hash of the image built from this recipe with the agent whose SHA-256
    /// is `agent_sha256` on the base image `base_id`.
    pub fn content_hash(&self, agent_sha256: &[u8], base_id: &str) -> String {
        content_hash(&self.dockerfile(), &self.binaries, agent_sha256, base_id)
    }
}

/// Where an [`isol8::runtime::ImageFile`] sits in the build context: under `files/`, at
/// its path in the image.
pub fn context_path(file: &isol8::runtime::ImageFile) -> String {
    format!("files{}", file.path)
}

/// SHA-256 over the schema version, the Dockerfile text, the pinned artifacts' identities
/// (registry, name, version, digest), the agent binary (by its SHA-256) and the id of the
/// base image it builds on. Each field is length-prefixed, so no two different inputs hash alike.
pub fn content_hash(
    dockerfile: &str,
    binaries: &[Artifact],
    agent_sha256: &[u8],
    base_id: &str,
) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("schema", SCHEMA_VERSION.as_bytes());
    field("dockerfile", dockerfile.as_bytes());
    for a in binaries {
        field("artifact", a.identity().as_bytes());
    }
    field("agent-sha256", agent_sha256);
    field("base", base_id.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> Vec<u8> {
        Sha256::digest(data).to_vec()
    }

    fn recipe(rt: &str) -> Recipe {
        Recipe::with_bun(rt, artifacts::BUN).expect("built-in runtime")
    }

    #[test]
    fn every_runtime_renders_a_complete_dockerfile() {
        for rt in isol8::RuntimeRegistry::builtin().names() {
            let df = recipe(rt).dockerfile();
            assert!(!df.contains("{{"), "{rt}: unfilled placeholder in\n{df}");
            assert!(df.contains(&format!("\nFROM {BASE_IMAGE}\n")), "{rt}");
            assert!(df.contains("ENTRYPOINT [\"/usr/local/bin/isol8-agent\"]"));
            assert!(df.contains("COPY isol8-agent /usr/local/bin/isol8-agent"));
            assert!(df.contains("WORKDIR /sandbox"));
            assert!(df.contains("--uid 1000 --gid 1000 --home-dir /sandbox"));
            assert!(df.contains(&format!("isol8.runtime=\"{rt}\"")), "{rt}");
            assert!(df.contains("isol8.managed=\"true\""));
            // Layer order: packages, then binaries, then the agent (cache-friendly).
            let pos = |s: &str| df.find(s).unwrap_or_else(|| panic!("{rt}: no `{s}`"));
            assert!(pos("FROM ") < pos("useradd"));
            assert!(pos("useradd") < pos("COPY isol8-agent"));
            assert!(pos("ENV LANG") < pos("COPY isol8-agent"));
            assert!(pos("COPY isol8-agent") < pos("ENTRYPOINT"));
            if let Some(apt) = df.find("apt-get install") {
                assert!(apt < pos("useradd"));
                assert!(df.contains("--no-install-recommends"));
                assert!(df.contains("rm -rf /var/lib/apt/lists/*"));
            }
        }
    }

    #[test]
    fn isol8_files_are_copied_under_their_digest() {
        for (rt, loader) in [
            ("node", isol8::runtime::NODE_LOADER),
            ("deno", isol8::runtime::DENO_LOADER),
            ("python", isol8::runtime::TEARDOWN),
            ("node", isol8::runtime::TEARDOWN),
            ("bun", isol8::runtime::TEARDOWN),
            ("deno", isol8::runtime::TEARDOWN),
        ] {
            let df = recipe(rt).dockerfile();
            let digest = hex::encode(Sha256::digest(loader.contents));
            assert!(
                df.contains(&format!(
                    "# sha256 {digest}\nCOPY files{path} {path}",
                    path = loader.path
                )),
                "{df}"
            );
            // After the environment, before the agent: a loader change rebuilds two layers.
            let pos = |s: &str| df.find(s).unwrap_or_else(|| panic!("no `{s}`"));
            assert!(
                pos("ENV LANG") < pos("COPY files/")
                    && pos("COPY files/") < pos("COPY isol8-agent")
            );
        }
        for rt in ["bash", "agent"] {
            assert!(!recipe(rt).dockerfile().contains("COPY files/"), "{rt}");
        }
    }

    #[test]
    fn runtime_specifics_are_rendered() {
        let py = recipe("python").dockerfile();
        assert!(py.contains("apt-get install -y --no-install-recommends python3 python3-pip "));
        assert!(py.contains("PYTHONDONTWRITEBYTECODE=1"));
        assert!(py.contains("PYTHONUNBUFFERED=1"));
        assert!(py.contains("python3 --version && pip --version"));
        let node = recipe("node").dockerfile();
        assert!(node.contains("--no-install-recommends ca-certificates "));
        assert!(node.contains("COPY bin/node /usr/local/bin/node"));
        // npm is unpacked whole and linked into PATH.
        assert!(
            node.contains("ADD bin/npm.tgz /usr/local/lib/npm-unpack/"),
            "{node}"
        );
        assert!(
            node.contains("/usr/local/lib/node_modules/npm/bin/npm-cli.js")
                || node.contains("../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm")
        );
        assert!(recipe("bun")
            .dockerfile()
            .contains("COPY bin/bun /usr/local/bin/bun"));
        let deno = recipe("deno").dockerfile();
        assert!(deno.contains("COPY bin/deno /usr/local/bin/deno"));
        assert!(deno.contains("DENO_DIR=/tmp/deno"));
        let agent = recipe("agent").dockerfile();
        assert!(
            agent.contains("COPY bin/node /usr/local/bin/node"),
            "{agent}"
        );
        assert!(agent.contains("npm ci --offline"), "{agent}");
        assert!(agent.contains("--no-install-recommends ca-certificates git "));
        assert!(agent.contains("node --version && pi --version"));
        let pos = |s: &str| agent.find(s).unwrap_or_else(|| panic!("no `{s}`"));
        assert!(
            pos("npm.tgz") < pos("npm ci"),
            "npm is there before it is used"
        );
        assert!(pos("npm ci") < pos("pi --version"));
        assert!(!recipe("node").dockerfile().contains("npm ci"));
        let bash = recipe("bash").dockerfile();
        assert!(!bash.contains("apt-get"), "bash is in the base");
        assert!(!bash.contains("COPY bin/"));
        let err = Recipe::for_runtime("cobol").expect_err("unknown");
        assert!(
            err.to_string()
                .contains("python, node, bun, bash, deno, agent"),
            "{err}"
        );
    }

    #[test]
    fn content_hash_is_stable() {
        let r = recipe("deno");
        let h = r.content_hash(&sha(b"agent"), "sha256:base");
        assert_eq!(h.len(), 64);
        assert_eq!(h, r.content_hash(&sha(b"agent"), "sha256:base"));
        assert_eq!(
            h,
            recipe("deno").content_hash(&sha(b"agent"), "sha256:base")
        );
        assert_eq!(
            h,
            content_hash(
                &r.dockerfile(),
                &[artifacts::DENO],
                &sha(b"agent"),
                "sha256:base"
            )
        );
    }

    #[test]
    fn content_hash_changes_with_every_input() {
        let r = recipe("node");
        let df = r.dockerfile();
        let base = content_hash(&df, &r.binaries, &sha(b"agent"), "sha256:b");
        let mut seen = std::collections::HashSet::new();
        for h in [
            base.clone(),
            content_hash(&df, &r.binaries, &sha(b"agent2"), "sha256:b"),
            content_hash(&df, &r.binaries, &sha(b"agent"), "sha256:c"),
            content_hash(&format!("{df}\n"), &r.binaries, &sha(b"agent"), "sha256:b"),
            content_hash(&df, &[], &sha(b"agent"), "sha256:b"),
            content_hash(
                &df,
                &[artifacts::NODE, artifacts::NODE],
                &sha(b"agent"),
                "sha256:b",
            ),
            content_hash(
                &df,
                &[Artifact {
                    version: "22.0.0",
                    ..artifacts::NODE
                }],
                &sha(b"agent"),
                "sha256:b",
            ),
            content_hash(
                &df,
                &[Artifact {
                    digest: artifacts::Digest::Integrity("sha512-other"),
                    ..artifacts::NODE
                }],
                &sha(b"agent"),
                "sha256:b",
            ),
            recipe("bun").content_hash(&sha(b"agent"), "sha256:b"),
            Recipe::with_bun("bun", artifacts::BUN_BASELINE)
                .expect("bun")
                .content_hash(&sha(b"agent"), "sha256:b"),
        ] {
            assert!(seen.insert(h), "two different inputs gave one hash");
        }
        // Field boundaries count: moving bytes between fields changes the hash.
        assert_ne!(
            content_hash("ab", &[], &sha(b""), "c"),
            content_hash("a", &[], &sha(b""), "bc")
        );
    }
}
