//! Custom images with baked-in packages (`isol8 build`, config `prebuiltImages`).
//!
//! A custom image is the runtime's image plus packages installed at build time outside
//! `/sandbox` (which is a tmpfs at run time): Python packages in [`PY_PACKAGES`] (on the
//! python runtime's `PYTHONPATH`), npm packages in [`NODE_MODULES`], linked as the
//! root's `/node_modules`, which Node's and Bun's resolvers reach from `/sandbox` by
//! walking up, for `require` and ESM `import` alike. Labels record the runtime, the package list and a content
//! hash (base image id, packages, setup commands, CA bundle), so an unchanged build is
//! skipped and the engine can find an image whose packages cover a request's
//! `installPackages` ([`isol8::maintenance::covering_image`]) and use it instead of
//! installing at run time.

use std::collections::{BTreeSet, HashMap};

use bollard::Docker;
use isol8::maintenance::package_key;
use sha2::{Digest as _, Sha256};

use crate::builder::build_image;
use crate::{ImageError, SetupEvent};

pub use isol8::{LABEL_BUILD_PACKAGES, LABEL_BUILD_RUNTIME};
/// Where baked Python packages live (on the python runtime's `PYTHONPATH`).
pub const PY_PACKAGES: &str = "/opt/isol8/pypackages";
/// Where baked npm packages live; `/node_modules` links here, so they are found from
/// `/sandbox` by walking up the directories (npm cannot install into `/` itself).
pub const NODE_MODULES: &str = "/opt/isol8/node_modules";

/// What to build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomImage {
    /// Runtime whose image is the base (`python`, `node`, `bun`).
    pub runtime: String,
    /// Tag of the result.
    pub tag: String,
    /// Packages to bake in.
    pub install: Vec<String>,
    /// Shell commands run (as root, with network) after the installs.
    pub setup: Vec<String>,
    /// A bash script kept in the image at [`isol8::IMAGE_SETUP_SCRIPT`], which the
    /// engine runs before every execution in the image (as the sandbox user).
    pub setup_script: Option<String>,
    /// A PEM CA bundle on the host trusted during the build (config `caBundle`).
    pub ca_bundle: Option<String>,
}

/// The outcome of [`build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The image was built.
    Built,
    /// An image with this tag and content hash already exists.
    UpToDate,
}

fn invalid(image: &str, why: impl Into<String>) -> ImageError {
    ImageError::Build {
        image: image.to_string(),
        message: why.into(),
        tail: String::new(),
    }
}

/// Environment that makes pip, npm and bun trust the bundle copied into the build.
const BUILD_CA: &str = "/isol8-build/ca.crt";
/// The image's setup script in the build context.
const SETUP_SCRIPT_FILE: &str = "setup.sh";

impl CustomImage {
    fn installer(&self) -> Result<Vec<String>, ImageError> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        Ok(match self.runtime.as_str() {
            "python" => v(&[
                "pip",
                "install",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--no-input",
                "--target",
                PY_PACKAGES,
            ]),
            "node" => v(&[
                "npm",
                "install",
                "--prefix",
                "/opt/isol8",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
            ]),
            "bun" => v(&["bun", "add", "--cwd", "/opt/isol8"]),
            other => {
                return Err(invalid(
                    &self.tag,
                    format!("custom images are built for python, node and bun, not `{other}`"),
                ))
            }
        })
    }

    /// The Dockerfile, given the base image reference.
    pub fn dockerfile(&self, base: &str) -> Result<String, ImageError> {
        let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
        let mut df = format!("# isol8 custom image (isol8 build)\nFROM {base}\n");
        let mut env = Vec::new();
        if self.ca_bundle.is_some() {
            df.push_str(&format!("COPY ca.crt {BUILD_CA}\n"));
            for k in [
                "SSL_CERT_FILE",
                "PIP_CERT",
                "NODE_EXTRA_CA_CERTS",
                "npm_config_cafile",
            ] {
                env.push(format!("{k}={BUILD_CA}"));
            }
        }
        df.push_str(&format!("RUN [\"mkdir\", \"-p\", \"{NODE_MODULES}\"]\n"));
        if self.runtime != "python" {
            df.push_str(&format!(
                "RUN [\"ln\", \"-s\", \"{NODE_MODULES}\", \"/node_modules\"]\n"
            ));
        }
        if !self.install.is_empty() {
            for p in &self.install {
                isol8::prepare::check_package(p).map_err(|e| invalid(&self.tag, e.to_string()))?;
            }
            let mut argv = vec!["env".to_string()];
            argv.extend(env.iter().cloned());
            argv.extend(self.installer()?);
            argv.extend(self.install.iter().cloned());
            df.push_str(&format!("RUN {}\n", json(&argv)));
        } else {
            self.installer()?;
        }
        for cmd in &self.setup {
            let mut argv = vec!["env".to_string()];
            argv.extend(env.iter().cloned());
            argv.extend(["bash".to_string(), "-c".to_string(), cmd.clone()]);
            df.push_str(&format!("RUN {}\n", json(&argv)));
        }
        if self.setup_script.is_some() {
            df.push_str(&format!(
                "COPY {SETUP_SCRIPT_FILE} {}\n",
                isol8::IMAGE_SETUP_SCRIPT
            ));
        }
        // Readable by the sandbox user; nothing baked is writable by it.
        df.push_str("RUN [\"chmod\", \"-R\", \"a+rX,go-w\", \"/opt/isol8\"]\n");
        if self.ca_bundle.is_some() {
            df.push_str("RUN [\"rm\", \"-rf\", \"/isol8-build\"]\n");
        }
        Ok(df)
    }

    /// The tag used when none is given: `isol8-custom:<runtime>-<hash of the contents>`.
    pub fn default_tag(&self) -> String {
        let mut names: Vec<String> = self.package_set().into_iter().collect();
        names.extend(self.setup.iter().cloned());
        names.extend(self.setup_script.iter().map(|s| format!("script:{s}")));
        let digest = hex::encode(Sha256::digest(names.join("\n").as_bytes()));
        format!("isol8-custom:{}-{}", self.runtime, &digest[..12])
    }

    /// The packages, normalised ([`package_key`]) and sorted (what the label records).
    pub fn package_set(&self) -> BTreeSet<String> {
        self.install.iter().map(|p| package_key(p)).collect()
    }
}

/// Builds `image` unless an image with its tag and content hash exists (or `force`).
pub async fn build(
    docker: &Docker,
    image: &CustomImage,
    force: bool,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<Built, ImageError> {
    if image.tag.is_empty() || image.tag.starts_with("isol8:") {
        return Err(invalid(
            &image.tag,
            "give the custom image a tag of its own (the isol8:<runtime> tags belong to isol8 setup)",
        ));
    }
    let base = super::image_for(&image.runtime)?;
    let base_id = docker
        .inspect_image(&base)
        .await
        .map_err(|_| {
            invalid(
                &image.tag,
                format!("the base image {base} is missing; run `isol8 setup` first"),
            )
        })?
        .id
        .unwrap_or_default();
    let dockerfile = image.dockerfile(&base)?;
    let ca = match &image.ca_bundle {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| ImageError::io("read the CA bundle", path.as_ref(), e))?,
        ),
        None => None,
    };
    let mut h = Sha256::new();
    let script = image.setup_script.as_deref().unwrap_or_default();
    for part in [
        dockerfile.as_bytes(),
        base_id.as_bytes(),
        ca.as_deref().unwrap_or_default(),
        script.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let hash = hex::encode(h.finalize());
    if !force {
        if let Ok(existing) = docker.inspect_image(&image.tag).await {
            let labels = existing.config.and_then(|c| c.labels).unwrap_or_default();
            if labels.get(isol8::LABEL_CONTENT_HASH) == Some(&hash) {
                return Ok(Built::UpToDate);
            }
        }
    }
    progress(SetupEvent::Step {
        runtime: Some(image.runtime.clone()),
        message: format!(
            "building {} from {base} with {}",
            image.tag,
            image.install.join(" ")
        ),
    });
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
    };
    let io = |e| {
        ImageError::io(
            "assemble the build context",
            std::path::Path::new("Dockerfile"),
            e,
        )
    };
    add("Dockerfile", dockerfile.as_bytes()).map_err(io)?;
    if let Some(ca) = &ca {
        add("ca.crt", ca).map_err(io)?;
    }
    if let Some(script) = &image.setup_script {
        add(SETUP_SCRIPT_FILE, script.as_bytes()).map_err(io)?;
    }
    let context = tar.into_inner().map_err(io)?;
    let packages: Vec<String> = image.package_set().into_iter().collect();
    let labels = HashMap::from([
        (isol8::LABEL_CONTENT_HASH.to_string(), hash),
        (LABEL_BUILD_RUNTIME.to_string(), image.runtime.clone()),
        (
            LABEL_BUILD_PACKAGES.to_string(),
            serde_json::to_string(&packages).unwrap_or_default(),
        ),
    ]);
    let started = std::time::Instant::now();
    build_image(docker, &image.tag, context, Some(labels), force, progress).await?;
    progress(SetupEvent::Built {
        image: image.tag.clone(),
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(Built::Built)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(runtime: &str) -> CustomImage {
        CustomImage {
            runtime: runtime.into(),
            tag: "my/python-six:1".into(),
            install: vec!["six".into(), "Requests==2.32.3".into()],
            setup: vec!["echo baked > /opt/isol8/marker".into()],
            ca_bundle: Some("/etc/ssl/certs/ca-certificates.crt".into()),
            setup_script: None,
        }
    }

    #[test]
    fn dockerfile_installs_outside_the_sandbox_tmpfs_with_argv_only() {
        let df = image("python").dockerfile("isol8:python").expect("python");
        assert!(df.starts_with("# isol8 custom image"), "{df}");
        assert!(df.contains("FROM isol8:python\n"));
        assert!(
            df.contains(&format!(
                "\"--target\",\"{PY_PACKAGES}\",\"six\",\"Requests==2.32.3\"]"
            )),
            "{df}"
        );
        assert!(df.contains("\"PIP_CERT=/isol8-build/ca.crt\""), "{df}");
        assert!(
            df.contains("[\"env\",\"SSL_CERT_FILE=/isol8-build/ca.crt\""),
            "{df}"
        );
        assert!(
            df.contains("\"bash\",\"-c\",\"echo baked > /opt/isol8/marker\"]"),
            "{df}"
        );
        assert!(df.contains("RUN [\"rm\", \"-rf\", \"/isol8-build\"]"));
        let node = image("node").dockerfile("isol8:node").expect("node");
        assert!(
            node.contains("\"npm\",\"install\",\"--prefix\",\"/opt/isol8\""),
            "{node}"
        );
        assert!(image("deno").dockerfile("isol8:deno").is_err());
        assert!(image("bash").dockerfile("isol8:bash").is_err());
        // The image's setup script is copied in (from the build context, never through
        // a shell) before everything under /opt/isol8 is made read-only.
        let mut scripted = image("python");
        assert!(!df.contains("setup.sh"), "{df}");
        scripted.setup_script = Some("echo 'it''s' > /sandbox/x".into());
        let sdf = scripted.dockerfile("isol8:python").expect("scripted");
        let copy = sdf.find("COPY setup.sh /opt/isol8/setup.sh\n").expect(&sdf);
        assert!(copy < sdf.find("chmod").expect("chmod"), "{sdf}");
        assert_ne!(scripted.default_tag(), image("python").default_tag());
        let mut bad = image("python");
        bad.install = vec!["six; rm -rf /".into()];
        assert!(bad.dockerfile("isol8:python").is_err());
    }

    #[test]
    fn package_sets_are_case_insensitive_and_sorted() {
        let set: Vec<String> = image("python").package_set().into_iter().collect();
        assert_eq!(set, vec!["requests==2.32.3", "six"]);
    }
}
