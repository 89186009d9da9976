//! Programs built the way their users get them, recorded with the default `--unwind auto` as a new
//! user would (issue 18): each stack must reach its process's or thread's entry as often as perf's
//! `--call-graph dwarf` does on the same workload.
//!
//! - Debian's openssl, AES-GCM: libcrypto's assembly keeps its CFA in rax across a call to a leaf
//!   that does not touch rax (a register without a CFI rule keeps its value between frames).
//! - A Go program built by Debian's golang-go with `go build`: Go links its `.debug_frame`
//!   zlib-compressed, and `crypto/sha256.block` uses RBP as a general register, so only its CFI
//!   unwinds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// Share of the samples whose user stack must reach the process's or thread's entry.
const MIN_COMPLETE: f64 = 0.95;

/// Records `command` (run in `dir`) with the default unwinding at 499 Hz, as issue 18 did: the
/// stacks of processes named `comm`, and emberprof's stderr (`-v`).
fn record_default(dir: &Path, comm: &str, command: &[&str]) -> (Vec<FoldedStack>, String) {
    let folded = dir.join("out.folded");
    let mut args = vec![
        "record",
        "-v",
        "-F",
        "499",
        "-o",
        folded.to_str().expect("UTF-8 temp path"),
        "--",
    ];
    args.extend_from_slice(command);
    let stderr = run_ok_in(dir, &args);
    let stacks = read_folded(&folded)
        .into_iter()
        .filter(|s| s.frames[0] == comm)
        .collect();
    (stacks, stderr)
}

/// The outermost user frame of a stack (after the process name; kernel frames are innermost).
/// `[truncated]` when emberprof marked the stack as not reaching an entry.
fn outermost_user_frame(stack: &FoldedStack) -> &str {
    stack
        .frames
        .get(1)
        .map(String::as_str)
        .filter(|f| !f.ends_with("_[k]"))
        .unwrap_or("")
}

/// Asserts that at least [`MIN_COMPLETE`] of `stacks` start in a frame `is_root` accepts, and that
/// there are enough of them to judge; prints every stack otherwise.
fn assert_complete(
    what: &str,
    stacks: &[FoldedStack],
    stderr: &str,
    is_root: impl Fn(&str) -> bool,
) {
    let all = total(stacks, |_| true);
    // A busy machine (builds beside the tests) gives the workload less CPU: 200 samples still judge.
    assert!(all >= 200, "only {all} {what} samples:\n{stderr}");
    let complete = total(stacks, |s| is_root(outermost_user_frame(s)));
    eprintln!(
        "{what}: {complete}/{all} stacks complete ({:.1} %)",
        100.0 * complete as f64 / all as f64
    );
    assert!(
        complete as f64 >= MIN_COMPLETE * all as f64,
        "only {complete}/{all} {what} stacks reach an entry:\n{stderr}\n{}",
        describe(stacks)
    );
}

/// Issue 18, item 1: `openssl speed -evp aes-256-gcm` was 12.7 % complete (perf: 100 %). 912 of
/// 1048 samples stopped at the return address of a call from code whose CFA is in rax (libcrypto's
/// FDE 0x2424c0..0x2428f5) into a leaf that does not touch rax: the unwinder rebuilt the caller's
/// registers from ip/sp/bp only and lost rax.
#[test]
fn openssl_aes_gcm_reaches_start() {
    let _kernel = kernel_test();
    let openssl = debian_openssl();
    let entry = entry_point(&openssl);
    let dir = scratch();
    let (stacks, stderr) = record_default(
        dir.path(),
        "openssl",
        &[
            openssl.to_str().expect("UTF-8 path"),
            "speed",
            "-seconds",
            "3",
            "-bytes",
            "16384",
            "-evp",
            "aes-256-gcm",
        ],
    );
    // Stripped: `_start` shows as `openssl+0xOFF`, a return address a few bytes past the entry.
    let is_root = |frame: &str| {
        matches!(
            frame,
            "_start" | "__libc_start_call_main" | "__libc_start_main" | "__libc_start_main_impl"
        ) || frame
            .strip_prefix("openssl+0x")
            .and_then(|offset| u64::from_str_radix(offset, 16).ok())
            .is_some_and(|offset| (entry..entry + 0x40).contains(&offset))
    };
    assert_complete("openssl aes-256-gcm", &stacks, &stderr, is_root);
}

/// Go's roots (see `stack_root`): goroutine stacks, the main thread's and other threads' g0 stacks.
fn is_go_root(frame: &str) -> bool {
    matches!(
        frame.trim_end_matches(".abi0"),
        "runtime.goexit" | "runtime.mstart" | "runtime.rt0_go"
    )
}

/// A program that hashes 64 KiB with crypto/sha256 in a loop for `argv[1]` seconds.
const SHA256_GO: &str = r#"package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"strconv"
	"time"
)

// On the heap: a local slice this size would sit in main's frame, beyond the stack copy.
var data = make([]byte, 64<<10)

func main() {
	seconds, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	var sum [32]byte
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	for time.Now().Before(end) {
		sum = sha256.Sum256(data)
		data[0] ^= sum[0]
	}
	fmt.Println(sum[0])
}
"#;

/// Builds [`SHA256_GO`] in `dir` as Go users do: `go build`, default flags (so `.debug_frame` is
/// zlib-compressed), with the build cache and module path under `dir`.
fn build_go_program(dir: &Path) -> PathBuf {
    let go = find_in_path("go").expect(
        "this test needs Go: `apt-get install golang-go` (Debian's Go 1.19; .ci/run installs it)",
    );
    std::fs::write(dir.join("main.go"), SHA256_GO).expect("write main.go");
    std::fs::write(dir.join("go.mod"), "module sha\n\ngo 1.19\n").expect("write go.mod");
    run_build_tool(
        Command::new(go)
            .args(["build", "-o", "sha"])
            .current_dir(dir)
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env_remove("GOFLAGS"),
        "apt-get install golang-go",
    );
    dir.join("sha")
}

/// Issue 18, item 3: Go's `.debug_frame` is compressed; it was handed to the unwinder raw, nothing
/// was indexed, every frame took the frame-pointer rule, and the frames under
/// `crypto/sha256.block` (which uses RBP as a general register) were lost: 99 % of this workload's
/// stacks were cut. Decompressed, the CFI unwinds it, and `auto` sees the code is frameless.
#[test]
fn go_sha256_reaches_the_goroutine_entry() {
    let _kernel = kernel_test();
    let dir = scratch();
    let program = build_go_program(dir.path());
    let (stacks, stderr) = record_default(
        dir.path(),
        "sha",
        &[program.to_str().expect("UTF-8 path"), "3"],
    );
    let block = total(&stacks, |s| {
        s.frames.iter().any(|f| f == "crypto/sha256.block")
    });
    let all = total(&stacks, |_| true);
    assert!(
        block * 2 >= all,
        "crypto/sha256.block in only {block}/{all} stacks: the workload did not exercise the case:\n{}",
        describe(&stacks)
    );
    assert_complete("Go sha256", &stacks, &stderr, is_go_root);
    // The whole Go chain, from the goroutine's entry to the assembly.
    let chain = total(&stacks, |s| {
        let frames: Vec<String> = s
            .frames
            .iter()
            .map(|f| f.trim_end_matches(".abi0").to_owned())
            .collect();
        has_in_order(
            &frames,
            &[
                "runtime.goexit",
                "runtime.main",
                "main.main",
                "crypto/sha256.block",
            ],
        )
    });
    assert!(
        chain as f64 >= MIN_COMPLETE * block as f64,
        "only {chain}/{block} samples in crypto/sha256.block carry runtime.goexit … main.main:\n{}",
        describe(&stacks)
    );
}
