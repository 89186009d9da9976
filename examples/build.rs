//! Builds the workloads in `c/`, `cpp/` and `rust/` into `$OUT_DIR/bin/`; `lib.rs` exposes their
//! paths.
//!
//! clang rather than gcc for the frame-pointer examples: gcc 12 leaves leaf functions frameless even
//! with `-mno-omit-leaf-frame-pointer`, which hides their caller from a frame-pointer walk. That is
//! exactly why `burn-gcc` is built with gcc: most `-O2 -fno-omit-frame-pointer` C out there is, and
//! `--unwind auto` must get it right. The `rust-release` project is built with cargo, as its users
//! build it (see [`build_rust_release`]).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// (output name, source under this crate, extra flags). The source's extension picks the compiler:
/// `.c` clang and `.cpp` clang++, both with `-g -Wall -Werror`; `.rs` rustc with [`RUSTC_FLAGS`];
/// a `gcc:` prefix on the source builds C with gcc instead. `{bin}` in a flag is replaced by the
/// output directory.
const WORKLOADS: &[(&str, &str, &[&str])] = &[
    ("burn", "c/burn.c", FRAME_POINTERS),
    ("syscalls", "c/syscalls.c", FRAME_POINTERS),
    (
        "threads",
        "c/threads.c",
        &[
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-O1",
            "-pthread",
        ],
    ),
    // The same burn without frame pointers, as most -O2 C is built: frame-pointer walking fails on it.
    ("burn-nofp", "c/burn.c", FRAMELESS),
    // Threads that wait (sleep, pipe, mutex), for --off-cpu, with and without frame pointers.
    (
        "waits",
        "c/waits.c",
        &[
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-O1",
            "-pthread",
        ],
    ),
    (
        "waits-nofp",
        "c/waits.c",
        &["-fomit-frame-pointer", "-O2", "-pthread"],
    ),
    // Context switches as fast as they come (benches/off-cpu.sh), built as most C is.
    ("pingpong", "c/pingpong.c", &["-O2", "-pthread"]),
    ("deep-nofp", "c/deep.c", FRAMELESS),
    ("short-lived", "c/short_lived.c", FRAMELESS),
    // Lives 3 ms of CPU, frame pointers: named only if its mappings outlive it (issue 18).
    ("tiny-spin", "c/tiny_spin.c", FRAME_POINTERS),
    ("spawner", "c/spawner.c", FRAME_POINTERS),
    ("exec-before", "c/exec_before.c", FRAME_POINTERS),
    ("exec-after", "c/exec_after.c", FRAME_POINTERS),
    // Stripped after the build, see SPLIT_DEBUG.
    ("burn-debuglink", "c/burn.c", FRAME_POINTERS),
    ("cpp-work", "cpp/cpp_work.cpp", FRAME_POINTERS),
    ("rust-inline", "rust/inline.rs", &[]),
    // `-C symbol-mangling-version=v0` is a stable option: no nightly needed.
    (
        "rust-inline-v0",
        "rust/inline.rs",
        &["-C", "symbol-mangling-version=v0"],
    ),
    // --unwind auto on mixed code (issue 7). gcc keeps frame pointers but leaves leaf functions
    // (spin) frameless, so a frame-pointer walk skips their callers (burn_a, burn_b).
    (
        "burn-gcc",
        "gcc:c/burn.c",
        &["-fno-omit-frame-pointer", "-O2"],
    ),
    // Frame-pointer code whose hot callback is called by libc's frameless qsort.
    ("qsort-fp", "c/qsort_cb.c", FRAME_POINTERS),
    // Built as their users build them (issue 7). C++ the way a Debian package builds it: `-O2 -g`
    // alone, so no frame pointers in the program, as in libstdc++ and libc.
    ("cpp-o2", "cpp/cpp_o2.cpp", &["-O2"]),
    // Frame pointers on one side of a shared-library call only: each library is built before the
    // program that links it by path (`{bin}` is the output directory) and finds it at run time
    // through `$ORIGIN`.
    (
        "libmix-fplib.so",
        "c/mixlib.c",
        &[
            "-DLIB=fplib",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-O2",
            "-fPIC",
            "-shared",
            "-Wl,-soname,libmix-fplib.so",
        ],
    ),
    (
        "nofp-calls-fplib",
        "c/mixmain.c",
        &[
            "-DLIB=fplib",
            "-fomit-frame-pointer",
            "-O2",
            "-Wl,--no-as-needed",
            "{bin}/libmix-fplib.so",
            "-Wl,-rpath,$ORIGIN",
        ],
    ),
    (
        "libmix-nofplib.so",
        "c/mixlib.c",
        &[
            "-DLIB=nofplib",
            "-fomit-frame-pointer",
            "-O2",
            "-fPIC",
            "-shared",
            "-Wl,-soname,libmix-nofplib.so",
        ],
    ),
    (
        "fp-calls-nofplib",
        "c/mixmain.c",
        &[
            "-DLIB=nofplib",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-O2",
            "-Wl,--no-as-needed",
            "{bin}/libmix-nofplib.so",
            "-Wl,-rpath,$ORIGIN",
        ],
    ),
];

/// The cargo project under `rust-release/`: (example name, cargo profile, binary).
const RUST_RELEASE: &[(&str, &str, &str)] = &[
    ("rust-release", "release", "rust-release"),
    ("rust-release-threads", "release", "rust-release-threads"),
    ("rust-release-lto", "release-lto", "rust-release"),
];

const FRAME_POINTERS: &[&str] = &[
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-O1",
];
const FRAMELESS: &[&str] = &["-fomit-frame-pointer", "-O2"];
/// `-D warnings` plays the part of the C builds' `-Werror`: cargo hides a build script's output, so
/// a warning would go unseen.
const RUSTC_FLAGS: &[&str] = &[
    "--edition",
    "2021",
    "-C",
    "opt-level=2",
    "-C",
    "debuginfo=line-tables-only",
    "-C",
    "force-frame-pointers=yes",
    "-D",
    "warnings",
    "--crate-name",
    "rust_inline",
];

/// Workloads whose symbols and DWARF move to `NAME.debug` next to them, found only through the
/// binary's `.gnu_debuglink` section.
const SPLIT_DEBUG: &[&str] = &["burn-debuglink"];

fn main() -> ExitCode {
    match build() {
        Ok(bin_dir) => {
            println!("cargo:rustc-env=EXAMPLES_BIN_DIR={}", bin_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<PathBuf, String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let bin_dir = PathBuf::from(env::var("OUT_DIR").unwrap_or_default()).join("bin");
    std::fs::create_dir_all(&bin_dir)
        .map_err(|e| format!("cannot create {}: {e}", bin_dir.display()))?;
    for dir in [
        "c",
        "cpp",
        "rust",
        "rust-release/src",
        "rust-release/Cargo.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join(dir).display()
        );
    }
    // RUSTC is the compiler cargo builds this crate with.
    let tool = |var: &str, fallback: &str| {
        println!("cargo:rerun-if-env-changed={var}");
        env::var(var).unwrap_or_else(|_| fallback.to_owned())
    };
    let clang = tool("EXAMPLES_CC", "clang");
    let clangxx = tool("EXAMPLES_CXX", "clang++");
    let rustc = tool("RUSTC", "rustc");
    let gcc = tool("EXAMPLES_GCC", "gcc");
    for (name, source, flags) in WORKLOADS {
        let (mut command, needs) = if source.ends_with(".rs") {
            let mut command = Command::new(&rustc);
            command.args(RUSTC_FLAGS);
            (command, "rustc")
        } else if let Some(source) = source.strip_prefix("gcc:") {
            let mut command = Command::new(&gcc);
            command.args(["-g", "-Wall", "-Werror"]);
            command.arg(manifest_dir.join(source));
            (command, "gcc (`apt-get install gcc`)")
        } else {
            let compiler = if source.ends_with(".cpp") {
                &clangxx
            } else {
                &clang
            };
            let mut command = Command::new(compiler);
            command.args(["-g", "-Wall", "-Werror"]);
            (command, "clang (`apt-get install clang`)")
        };
        if !source.starts_with("gcc:") {
            command.arg(manifest_dir.join(source));
        }
        let bin = bin_dir.to_string_lossy();
        command
            .args(flags.iter().map(|flag| flag.replace("{bin}", &bin)))
            .arg("-o")
            .arg(bin_dir.join(name));
        run(command, name, needs)?;
    }
    for name in SPLIT_DEBUG {
        split_debug(&bin_dir, name)?;
    }
    build_rust_release(&manifest_dir, &bin_dir)?;
    Ok(bin_dir)
}

/// Builds the `rust-release` cargo project as its users would (`cargo build --release`, the default
/// release profile plus `debug = 1`) and copies its binaries into `bin_dir`. The child cargo gets
/// its own target directory under OUT_DIR, none of the outer build's compiler flags (a build script
/// runs with cargo's variables set), and `--offline --locked`: the project has no dependencies.
fn build_rust_release(manifest_dir: &Path, bin_dir: &Path) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let project = manifest_dir.join("rust-release");
    let target_dir = PathBuf::from(env::var("OUT_DIR").unwrap_or_default()).join("rust-release");
    for profile in ["release", "release-lto"] {
        let mut command = Command::new(&cargo);
        command
            .args([
                "build",
                "--offline",
                "--locked",
                "--profile",
                profile,
                "--bins",
            ])
            .arg("--manifest-path")
            .arg(project.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("CARGO_BUILD_JOBS", "2");
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_BUILD_TARGET",
            "CARGO_TARGET_DIR",
            "CARGO_MAKEFLAGS",
            "MAKEFLAGS",
            "MFLAGS",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "CARGO_PROFILE_RELEASE_LTO",
            "CARGO_PROFILE_RELEASE_OPT_LEVEL",
        ] {
            command.env_remove(var);
        }
        command.env("CARGO_TARGET_DIR", &target_dir);
        run(command, "rust-release", "cargo")?;
    }
    for (name, profile, binary) in RUST_RELEASE {
        let built = target_dir.join(profile).join(binary);
        std::fs::copy(&built, bin_dir.join(name))
            .map_err(|e| format!("cannot copy {}: {e}", built.display()))?;
    }
    Ok(())
}

/// Moves the symbols and DWARF of `bin_dir/name` to `bin_dir/name.debug` and links to that by file
/// name, as distributions ship their debug files.
fn split_debug(bin_dir: &Path, name: &str) -> Result<(), String> {
    let debug = format!("{name}.debug");
    let link = format!("--add-gnu-debuglink={debug}");
    let needs = "objcopy (`apt-get install binutils`)";
    for args in [
        &["--only-keep-debug", name, &debug][..],
        &["--strip-all", name],
        // objcopy reads the .debug file to checksum it: in bin_dir the bare file name finds it.
        &[&link, name],
    ] {
        let mut command = Command::new("objcopy");
        command.args(args).current_dir(bin_dir);
        run(command, name, needs)?;
    }
    Ok(())
}

/// Runs `command`, a step of building example `name`; `needs` says what to install if it is missing.
fn run(mut command: Command, name: &str, needs: &str) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "{program} failed to build example {name} ({status})"
        )),
        Err(e) => Err(format!(
            "cannot run `{program}` ({e}): the example workloads need {needs}"
        )),
    }
}
