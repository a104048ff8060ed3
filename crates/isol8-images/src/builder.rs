//! Docker builds from a tar context assembled in memory (classic builder), with the
//! daemon's build output forwarded as [`SetupEvent::Output`] lines.

use std::collections::HashMap;
use std::path::Path;

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt as _;

use crate::{docker_message, ImageError, SetupEvent};

/// A tar build context holding a Dockerfile and extra files (path, bytes, mode).
pub(crate) fn build_context(
    dockerfile: &str,
    files: &[(&str, &[u8], u32)],
) -> Result<Vec<u8>, ImageError> {
    let io = |e| ImageError::io("assemble the build context", Path::new("Dockerfile"), e);
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, "Dockerfile", dockerfile.as_bytes(), 0o644).map_err(io)?;
    for (path, data, mode) in files {
        append_file(&mut tar, path, data, *mode).map_err(io)?;
    }
    tar.into_inner().map_err(io)
}

pub(crate) fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, path, data)
}

/// Builds `context` as `tag` with the classic builder, forwarding the build output.
pub(crate) async fn build_image(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
    labels: Option<HashMap<String, String>>,
    nocache: bool,
    progress: &(dyn Fn(SetupEvent) + Send + Sync),
) -> Result<(), ImageError> {
    let mut opts = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .nocache(nocache);
    if let Some(labels) = &labels {
        opts = opts.labels(labels);
    }
    let mut stream =
        docker.build_image(opts.build(), None, Some(bollard::body_full(context.into())));
    let mut tail: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(e) => {
                let last = tail.len().saturating_sub(3);
                return Err(ImageError::Build {
                    image: tag.to_string(),
                    message: docker_message(&e).trim().to_string(),
                    tail: tail[last..].join(" | "),
                });
            }
        };
        let text = info.stream.or(info.status).map(|t| strip_ansi(&t));
        for line in text.iter().flat_map(|t| t.lines()) {
            let line = line.trim_end();
            if line.trim().is_empty() {
                continue;
            }
            progress(SetupEvent::Output {
                line: line.to_string(),
            });
            tail.push(line.to_string());
            if tail.len() > 8 {
                tail.remove(0);
            }
        }
    }
    Ok(())
}

/// Removes terminal escape sequences (the daemon colours a build's stderr lines).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in '@'..='~'.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_loses_its_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[91mdebconf: delaying\u{1b}[0m\n"),
            "debconf: delaying\n"
        );
        assert_eq!(strip_ansi("plain ünïcode"), "plain ünïcode");
    }
}
