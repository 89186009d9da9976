//! Compiles every `src/*.bpf.c` with clang into `$OUT_DIR`, where `lib.rs` embeds the objects.
//!
//! Flags: `-g` because CO-RE relocations and the BTF-defined `.maps` need BTF (and it lets
//! `bpftool prog dump xlated ... linum` show source lines); `-mcpu=v3` for 32-bit jumps and ALU,
//! which every kernel since 5.1 accepts and which lets clang emit shorter, verifier-friendlier code.
//! The DWARF part of `-g` is stripped afterwards when llvm-strip is present (~650 KB -> ~40 KB);
//! `.BTF` and `.BTF.ext` stay.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line that says what to do; cargo shows it under "error: failed to run custom build command".
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let include_dir = manifest_dir.join("include");
    let clang = env::var("BPF_CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=BPF_CLANG");
    println!("cargo:rerun-if-changed={}", include_dir.display());
    // The whole directory: headers there (offcpu.bpf.h, python.bpf.h) are part of the programs too.
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("src").display()
    );

    let sources = bpf_sources(&manifest_dir.join("src"))?;
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
        let stem = source
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .ok_or_else(|| format!("unexpected BPF source name {}", source.display()))?;
        let object = out_dir.join(format!("{stem}.bpf.o"));
        let status = Command::new(&clang)
            .args([
                "-g", "-O2", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
            ])
            .arg("-D__TARGET_ARCH_x86")
            .arg(format!("-I{}", include_dir.display()))
            // UAPI headers (asm/types.h, asm/ptrace.h) of the build host's architecture.
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(source)
            .arg("-o")
            .arg(&object)
            .status()
            .map_err(|e| {
                format!(
                    "cannot run `{clang}` ({e}): the BPF programs need clang and libbpf's headers; \
                     install them with `apt-get install clang libbpf-dev` (or set BPF_CLANG)"
                )
            })?;
        if !status.success() {
            return Err(format!(
                "clang failed to compile {} ({status}); if it cannot find <bpf/bpf_helpers.h>, \
                 install libbpf-dev",
                source.display()
            ));
        }
        strip_dwarf(&object);
    }
    Ok(())
}

fn bpf_sources(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut sources: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    Ok(sources)
}

/// Drops the DWARF sections, keeping BTF. Optional: an unstripped object loads just the same.
fn strip_dwarf(object: &Path) {
    let stripped = Command::new("llvm-strip").arg("-g").arg(object).status();
    if !matches!(stripped, Ok(status) if status.success()) {
        println!(
            "cargo:warning=llvm-strip not found or failed; the embedded BPF object keeps its DWARF"
        );
    }
}
