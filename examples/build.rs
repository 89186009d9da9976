//! Builds the C workloads in `c/` with clang into `$OUT_DIR/bin/`; `lib.rs` exposes their paths.
//!
//! clang rather than gcc: gcc 12 leaves leaf functions frameless even with
//! `-mno-omit-leaf-frame-pointer`, which hides their caller from a frame-pointer walk.

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// (output name, source, extra flags)
const WORKLOADS: &[(&str, &str, &[&str])] = &[
    ("burn", "burn.c", FRAME_POINTERS),
    ("syscalls", "syscalls.c", FRAME_POINTERS),
    (
        "threads",
        "threads.c",
        &[
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-O1",
            "-pthread",
        ],
    ),
    // The same burn without frame pointers, as most -O2 C is built: frame-pointer walking fails on it.
    ("burn-nofp", "burn.c", FRAMELESS),
    ("deep-nofp", "deep.c", FRAMELESS),
];

const FRAME_POINTERS: &[&str] = &[
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-O1",
];
const FRAMELESS: &[&str] = &["-fomit-frame-pointer", "-O2"];

fn main() -> ExitCode {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap_or_default());
    let src_dir = manifest_dir.join("c");
    let bin_dir = out_dir.join("bin");
    if let Err(e) = std::fs::create_dir_all(&bin_dir) {
        eprintln!("error: cannot create {}: {e}", bin_dir.display());
        return ExitCode::FAILURE;
    }
    println!("cargo:rerun-if-changed={}", src_dir.display());
    let clang = env::var("EXAMPLES_CC").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=EXAMPLES_CC");
    for (name, source, flags) in WORKLOADS {
        let status = Command::new(&clang)
            .args(["-g", "-Wall", "-Werror"])
            .args(*flags)
            .arg(src_dir.join(source))
            .arg("-o")
            .arg(bin_dir.join(name))
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("error: {clang} failed to build example {name} ({status})");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("error: cannot run `{clang}` ({e}): the example workloads need clang (`apt-get install clang`)");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("cargo:rustc-env=EXAMPLES_BIN_DIR={}", bin_dir.display());
    ExitCode::SUCCESS
}
