//! Symbolization throughput: 100,000 distinct user addresses spread over a dozen shared libraries
//! with DWARF (line tables and inlined functions), symbolized cold — the cost a large recording pays
//! once. Target: under 2 s on the 2-core development machine.
//!
//! The libraries are generated and compiled with clang into a temporary directory first (not
//! timed), then loaded into this process with dlopen, which is then symbolized like any profiled
//! process.
//!
//!     cargo bench -p emberprof-symbolizer --bench symbolize

use std::ffi::CString;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use emberprof_symbolizer::{
    parse_maps, FrameAddress, ProcessKey, Symbol, Symbolizer, SymbolizerOptions,
};

const MODULES: usize = 12;
const FUNCTIONS_PER_MODULE: usize = 1500;
const ADDRESSES: usize = 100_000;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let libraries: Vec<_> = (0..MODULES).map(|m| build_library(dir.path(), m)).collect();
    for library in &libraries {
        let path = CString::new(library.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: loading a library we just built; it has no constructors.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        assert!(!handle.is_null(), "dlopen {} failed", library.display());
    }

    // Addresses spread evenly over each library's executable mapping.
    let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").expect("own maps"));
    let ranges: Vec<(u64, u64)> = maps
        .iter()
        .filter(|e| e.executable && e.path.contains("libsymbench"))
        .map(|e| (e.start, e.end))
        .collect();
    assert_eq!(ranges.len(), MODULES, "one executable mapping per library");
    let process = ProcessKey {
        pid: std::process::id(),
        instance: 1,
    };
    let per_module = ADDRESSES / MODULES + 1;
    let addresses: Vec<(ProcessKey, FrameAddress)> = ranges
        .iter()
        .flat_map(|&(start, end)| {
            let step = ((end - start) / per_module as u64).max(1);
            (0..per_module as u64)
                .map(move |i| start + i * step)
                .filter(move |&a| a < end)
                .map(move |a| (process, FrameAddress::InstructionPointer(a)))
        })
        .take(ADDRESSES)
        .collect();

    let options = SymbolizerOptions {
        inlined_functions: true,
        source_lines: true,
        ..SymbolizerOptions::default()
    };
    let started = Instant::now();
    let mut symbolizer = Symbolizer::new(options).expect("symbolizer");
    symbolizer
        .process_seen(process)
        .expect("snapshot of this process");
    let symbols = symbolizer.symbolize_user(&addresses);
    let elapsed = started.elapsed();

    let named = symbols
        .iter()
        .filter(|s| matches!(s, Symbol::Named(_)))
        .count();
    let inlined = symbols
        .iter()
        .filter(|s| matches!(s, Symbol::Named(frames) if frames.len() > 1))
        .count();
    let with_lines = symbols
        .iter()
        .filter(|s| matches!(s, Symbol::Named(frames) if frames.iter().any(|f| f.line.is_some())))
        .count();
    println!(
        "symbolize (cold, DWARF lines + inlined): {} addresses in {MODULES} modules in {:.3} s \
         ({:.0} addresses/s); {named} named, {inlined} with inlined frames, {with_lines} with lines",
        addresses.len(),
        elapsed.as_secs_f64(),
        addresses.len() as f64 / elapsed.as_secs_f64()
    );
    let started = Instant::now();
    symbolizer.symbolize_user(&addresses);
    println!(
        "symbolize (cached): {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        named * 10 >= addresses.len() * 9,
        "only {named} of {} addresses named",
        addresses.len()
    );
}

/// Writes and compiles `libsymbenchM.so`: functions that each call the next through a few inlined
/// helpers, so DWARF has line tables and inline scopes everywhere.
fn build_library(dir: &Path, module: usize) -> std::path::PathBuf {
    let mut source = String::from("static volatile unsigned long sink;\n");
    for helper in 0..4 {
        let _ = writeln!(
            source,
            "static inline __attribute__((always_inline)) unsigned long mix{helper}(unsigned long x) \
             {{ x ^= x >> {s}; x *= 0x9E3779B97F4A7C15UL; sink += x; return x + {helper}; }}",
            s = 7 + helper
        );
    }
    for function in (0..FUNCTIONS_PER_MODULE).rev() {
        let next = if function + 1 < FUNCTIONS_PER_MODULE {
            format!("m{module}_f{}(mix{}(x))", function + 1, function % 4)
        } else {
            "x".to_owned()
        };
        let _ = writeln!(
            source,
            "__attribute__((noinline)) unsigned long m{module}_f{function}(unsigned long x) {{\n\
             \x20   x = mix{a}(x) + mix{b}(x >> 1);\n\
             \x20   if (x & 1) x = mix{c}(x);\n\
             \x20   return {next} + 1;\n}}",
            a = function % 4,
            b = (function + 1) % 4,
            c = (function + 2) % 4,
        );
    }
    let c_file = dir.join(format!("symbench{module}.c"));
    let library = dir.join(format!("libsymbench{module}.so"));
    std::fs::write(&c_file, source).expect("write source");
    let status = Command::new(std::env::var("EXAMPLES_CC").unwrap_or_else(|_| "clang".into()))
        .args(["-g", "-O2", "-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&c_file)
        .status()
        .expect("run clang (apt-get install clang)");
    assert!(status.success(), "clang failed on {}", c_file.display());
    library
}
