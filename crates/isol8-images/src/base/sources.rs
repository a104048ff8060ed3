//! The Debian archives the offline base takes its packages from: the host's bookworm
//! sources (deb822 `*.sources` files or one-line `sources.list` entries), or
//! deb.debian.org when it has none.

use std::path::PathBuf;

use super::{DEFAULT_MIRROR, DEFAULT_SECURITY, SUITE};

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
