//! Stacks whose unwind rules read memory outside the default copy, on programs users run: OpenSSL's
//! SHA-512 and ECDSA assembly keeps its saved stack pointer in the red zone below `rsp` (CFA =
//! `*(rsp-8)+8`), so the BPF copy must start 128 bytes below sp.

use std::path::{Path, PathBuf};

use crate::support::*;

/// Share of `openssl speed sha512` samples whose stack must reach `_start` (perf: 2.5 %).
const MIN_SHA512_COMPLETE: f64 = 0.95;
/// ECDSA loses 0.7–1 % of its stacks without the red zone: nearly all must be complete.
const MIN_ECDSA_COMPLETE: f64 = 0.995;

/// Debian's openssl, resolved (so its stripped `_start` can be found from its entry point).
fn openssl() -> PathBuf {
    let path = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("openssl"))
                .find(|p| p.is_file())
        })
        .expect(
            "this test needs Debian's openssl: `apt-get install openssl` (.ci/run installs it)",
        );
    std::fs::canonicalize(&path).expect("resolve openssl")
}

/// The ELF entry point (`e_entry`) of an executable: where `_start` is in a stripped binary.
fn entry_point(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let field: [u8; 8] = bytes
        .get(24..32)
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| panic!("{} is not an ELF file", path.display()));
    u64::from_le_bytes(field)
}

/// Records `openssl speed -seconds 1 ALGORITHM` with emberprof's defaults and returns the share
/// of its samples whose stack reaches `_start`, with a description for failure messages.
fn complete_share(algorithm: &str) -> (f64, String) {
    let _kernel = kernel_test();
    let openssl = openssl();
    let entry = entry_point(&openssl);
    let dir = scratch();
    let folded = dir.path().join("out.folded");
    let output = emberprof()
        .args(["record", "-v", "-F", "499", "-o"])
        .arg(&folded)
        .arg("--")
        .arg(&openssl)
        .args(["speed", "-seconds", "1", algorithm])
        .output()
        .expect("run emberprof");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "emberprof failed: {stderr}");
    let text = std::fs::read_to_string(&folded).expect("read folded output");
    let stacks: Vec<_> = parse_folded(&text)
        .into_iter()
        .filter(|s| s.frames[0] == "openssl")
        .collect();
    let all = total(&stacks, |_| true);
    assert!(all >= 200, "only {all} openssl samples:\n{stderr}");
    // Stripped: `_start` may show as `openssl+0xOFF`, a return address just past the entry point.
    let is_start = |frame: &str| {
        frame == "_start"
            || frame
                .strip_prefix("openssl+0x")
                .and_then(|offset| u64::from_str_radix(offset, 16).ok())
                .is_some_and(|offset| (entry..entry + 0x40).contains(&offset))
    };
    let complete = total(&stacks, |s| s.frames.get(1).is_some_and(|f| is_start(f)));
    let detail = format!(
        "{complete}/{all} openssl {algorithm} stacks reach _start (entry {entry:#x}):\n{stderr}\n{}",
        describe(&stacks)
    );
    (complete as f64 / all as f64, detail)
}

/// SHA-512's AVX2 code reads its CFA from `rsp-8`: with the red zone copied, its stacks are whole.
#[test]
fn openssl_sha512_unwinds_through_the_red_zone() {
    let (share, detail) = complete_share("sha512");
    assert!(share >= MIN_SHA512_COMPLETE, "{detail}");
}

/// ECDSA P-256 calls the same kind of code; nearly every stack reaches `_start`.
#[test]
fn openssl_ecdsa_unwinds_through_the_red_zone() {
    let (share, detail) = complete_share("ecdsap256");
    assert!(share >= MIN_ECDSA_COMPLETE, "{detail}");
}
