//! Unit tests of the base image: reading Debian sources, recognising an unreachable
//! registry, and slimming a rootfs.

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
