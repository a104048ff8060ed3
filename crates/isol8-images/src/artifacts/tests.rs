//! Unit tests of the artifacts: digest checks, the pins, the cache, the Bun build choice,
//! and extraction from tarballs and wheels.

use std::io::Write as _;

use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha512};

use super::fetch::{remove_stale, store};
use super::pins::bun_for_cpuinfo;
use super::*;
use crate::ImageError;

fn sri(data: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(data))
    )
}

#[test]
fn npm_integrity_is_verified() {
    let data = b"#!/bin/sh\necho node\n";
    let good = sri(data);
    assert!(verify_integrity(data, &good));
    assert!(!verify_integrity(b"tampered", &good));
    // Several hashes: the strongest algorithm decides, any of its values may match.
    let sha1 = "sha1-AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert!(verify_integrity(data, &format!("{sha1} {good}")));
    assert!(verify_integrity(data, &format!("sha512-AAAA {good}?opt")));
    // SHA-1 alone, empty or malformed strings are never accepted.
    assert!(!verify_integrity(data, sha1));
    assert!(!verify_integrity(data, ""));
    assert!(!verify_integrity(data, "garbage"));
    let sha256 = format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
    );
    assert!(verify_integrity(data, &sha256));
}

#[test]
fn pinned_npm_digest_is_checked_against_real_bytes() {
    // The pin format is the registry's: `sha512-` + base64 of 64 bytes.
    let tarball = b"not really node";
    assert!(!Digest::Integrity(NODE.digest.as_str()).matches(tarball));
}

#[test]
fn pypi_sha256_is_verified() {
    let data = b"wheel";
    let want = hex::encode(Sha256::digest(data));
    let leaked: &'static str = Box::leak(want.into_boxed_str());
    assert!(Digest::Sha256(leaked).matches(data));
    assert!(!Digest::Sha256(leaked).matches(b"other"));
}

#[test]
fn pins_are_well_formed() {
    for a in [NODE, BUN, BUN_BASELINE, DENO] {
        assert!(a.url.starts_with("https://"), "{}", a.package);
        assert!(
            a.url.contains(a.version),
            "{}: url names the version",
            a.package
        );
        assert!(
            a.member.ends_with(&format!("/{}", a.binary)),
            "{}",
            a.package
        );
        match a.digest {
            Digest::Integrity(s) => {
                let b64 = s.strip_prefix("sha512-").expect("sha512 integrity");
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64");
                assert_eq!(raw.len(), 64);
            }
            Digest::Sha256(s) => {
                assert_eq!(s.len(), 64);
                assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }
    }
    assert!(NODE.version.starts_with("22."));
    assert_eq!(
        DENO.member,
        format!("deno-{}.data/scripts/deno", DENO.version)
    );
    assert_ne!(BUN.file_name(), BUN_BASELINE.file_name());
}

#[test]
fn older_cached_builds_are_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for name in ["node-22.1.0-aaaa", "node-22.23.3-bbbb", "deno-2.9.8-cccc"] {
        std::fs::write(dir.join(name), b"x").expect("write");
    }
    remove_stale(dir, "node", &dir.join("node-22.23.3-bbbb"));
    assert!(!dir.join("node-22.1.0-aaaa").exists());
    assert!(dir.join("node-22.23.3-bbbb").exists());
    assert!(dir.join("deno-2.9.8-cccc").exists(), "other binaries stay");
}

#[test]
fn bun_baseline_is_chosen_without_avx2() {
    let avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 bmi2\n";
    let old = "processor\t: 0\nflags\t\t: fpu sse2 sse4_2 avx\n";
    assert_eq!(bun_for_cpuinfo(avx2), BUN);
    assert_eq!(bun_for_cpuinfo(old), BUN_BASELINE);
    assert_eq!(bun_for_cpuinfo(""), BUN, "unknown CPU: the default build");
}

fn tgz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}

#[test]
fn binaries_are_extracted_from_tarballs_and_wheels() {
    let pkg = tgz(&[
        ("package/README.md", b"readme"),
        ("package/bin/node", b"\x7fELF node"),
    ]);
    assert_eq!(extract(&NODE, &pkg).expect("node"), b"\x7fELF node");
    let no_bin = tgz(&[("package/README.md", b"readme")]);
    let err = extract(&NODE, &no_bin).expect_err("missing member");
    assert!(err.to_string().contains("package/bin/node"), "{err}");

    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(DENO.member, opts).expect("start");
    zip.write_all(b"\x7fELF deno").expect("write");
    let wheel = zip.finish().expect("finish").into_inner();
    assert_eq!(extract(&DENO, &wheel).expect("deno"), b"\x7fELF deno");

    // A download that does not match the pin is never stored.
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = tmp.path().join("node");
    let err = store(&NODE, &pkg, &target).expect_err("digest mismatch");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(!target.exists() && !target.with_extension("partial").exists());
}
