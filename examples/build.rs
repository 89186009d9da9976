//! Builds the workloads in `c/`, `cpp/` and `rust/` into `$OUT_DIR/bin/`; `lib.rs` exposes their
//! paths.
//!
//! clang rather than gcc: gcc 12 leaves leaf functions frameless even with
//! `-mno-omit-leaf-frame-pointer`, which hides their caller from a frame-pointer walk.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// (output name, source under this crate, extra flags). The source's extension picks the compiler:
/// `.c` clang and `.cpp` clang++, both with `-g -Wall -Werror`; `.rs` rustc with [`RUSTC_FLAGS`].
/// `{bin}` in a flag is replaced by the output directory.
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
    ("deep-nofp", "c/deep.c", FRAMELESS),
    ("short-lived", "c/short_lived.c", FRAMELESS),
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
    for dir in ["c", "cpp", "rust"] {
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
    for (name, source, flags) in WORKLOADS {
        let (mut command, needs) = if source.ends_with(".rs") {
            let mut command = Command::new(&rustc);
            command.args(RUSTC_FLAGS);
            (command, "rustc")
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
        let bin = bin_dir.to_string_lossy();
        command
            .args(flags.iter().map(|flag| flag.replace("{bin}", &bin)))
            .arg(manifest_dir.join(source))
            .arg("-o")
            .arg(bin_dir.join(name));
        run(command, name, needs)?;
    }
    for name in SPLIT_DEBUG {
        split_debug(&bin_dir, name)?;
    }
    Ok(bin_dir)
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
