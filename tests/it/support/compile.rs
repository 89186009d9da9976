//! Building test programs at test time: C through a compiler on the machine, and any build tool
//! (javac, go, objcopy) run the one way, failing with what to install when it is missing.

use std::path::Path;
use std::process::Command;

/// Runs build tool `command`; panics saying `install` (how to get the tool) when it cannot start,
/// and with its stderr when it fails.
pub fn run_build_tool(command: &mut Command, install: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} ({install})"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Compiles C `source` (written next to `out`, as `out.c`) into `out` with `compiler` (`cc` or
/// `clang`) at `-O1 -g` with frame pointers, and `flags` after the source (libraries, `-shared`).
pub fn compile_c(compiler: &str, out: &Path, source: &str, flags: &[&str]) {
    let source_path = out.with_extension("c");
    std::fs::write(&source_path, source)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", source_path.display()));
    run_build_tool(
        Command::new(compiler)
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(out)
            .arg(&source_path)
            .args(flags),
        "apt-get install gcc clang binutils (.ci/run installs them)",
    );
}
