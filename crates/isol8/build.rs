//! Builds `preload/teardown.rs` into the shared object that `isol8 setup` puts in the
//! images of the pre-started runtimes (see that file and `runtime::TEARDOWN`).
//!
//! It is a `no_std` library with no dependency, compiled by the same `rustc` for the
//! target being built (the images run on this machine's architecture). The object lands
//! in `OUT_DIR` as `libisol8-teardown.so`, which the crate embeds with `include_bytes!`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "preload/teardown.rs";
    println!("cargo::rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let object = out.join("libisol8-teardown.so");
    let mut cmd = Command::new(rustc);
    cmd.args([
        "--edition=2024",
        "--crate-type=cdylib",
        "--crate-name=isol8_teardown",
        "-Cpanic=abort",
        "-Copt-level=2",
        "-Cstrip=symbols",
        "-Dwarnings",
        // Every symbol it uses from elsewhere is a weak reference it checks: a strong
        // one (a C library function the compiler called for a loop) fails the build.
        "-Clink-arg=-Wl,-z,defs",
        "--target",
        &target,
        "-o",
    ])
    .arg(&object)
    .arg(source);
    // A cross build names its linker in the environment; this object needs it too.
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    if let Some(linker) = std::env::var_os(&linker_var) {
        cmd.arg("-C")
            .arg(format!("linker={}", linker.to_string_lossy()));
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run rustc to build {source}: {e}"));
    assert!(
        status.success(),
        "rustc could not build {source} ({status})"
    );
}
