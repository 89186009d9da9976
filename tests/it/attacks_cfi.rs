//! Issue 19, defect 1: one hostile CFI section must not stall recording. The attacker (uid 65534
//! through `setpriv`) runs a program whose `.eh_frame` has one CIE with 1 MiB of instructions and
//! 1,000 FDEs pointing at it; emberprof, as root, records it with `-p PID -d 3`. Indexing that CFI
//! used to re-run the CIE's instructions for every FDE on the recording loop (13.2 s for the
//! issue's nops, 36.5 s for this file, where `-d 3` was asked).
//!
//! The program is built at test time with clang from C and an assembly file that writes the
//! `.eh_frame` entries byte by byte. The CIE's padding is `DW_CFA_same_value rbx` (2 bytes, a no-op
//! for unwinding) rather than `DW_CFA_nop`: GNU ld strips trailing nops from CIEs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The bound on the attack: `-d 3` plus start-up and output, with room for a busy machine. Not a
/// speed target: before the fix this recording took 36 s.
const MAX_WALL: Duration = Duration::from_secs(10);
/// FDEs sharing the hostile CIE.
const FDES: usize = 1_000;
/// `DW_CFA_same_value rbx` instructions in the CIE: 1 MiB of them.
const CIE_INSTRUCTIONS: usize = 1 << 19;

const VICTIM_C: &str = r#"
static volatile unsigned long sink;
__attribute__((noinline)) static void spin(void) {
    for (;;) for (unsigned long i = 0; i < 1000000; i++) sink += i;
}
int main(void) { spin(); }
"#;

/// `hostile_code`: `FDES` × 16 bytes of code, each 16 bytes covered by its own FDE, all FDEs on one
/// CIE (`zR`, pc-relative FDE addresses) whose initial instructions are the usual two rules and then
/// [`CIE_INSTRUCTIONS`] no-ops.
fn hostile_assembly() -> String {
    format!(
        "\t.text\n\t.globl hostile_code\nhostile_code:\n\t.fill {code},1,0x90\n\tret\n\
         \t.section .eh_frame,\"a\",@progbits\n\t.balign 8\n\
         hostile_cie:\n\t.long hostile_cie_end - hostile_cie_id\nhostile_cie_id:\n\
         \t.long 0\n\t.byte 1\n\t.asciz \"zR\"\n\t.uleb128 1\n\t.sleb128 -8\n\t.uleb128 16\n\
         \t.uleb128 1\n\t.byte 0x1b\n\
         \t.byte 0x0c, 7, 8\n\t.byte 0x90, 1\n\
         \t.rept {CIE_INSTRUCTIONS}\n\t.byte 0x08, 3\n\t.endr\n\
         \t.balign 8,0\nhostile_cie_end:\n\
         \t.set i, 0\n\t.rept {FDES}\n\t.long 20\n1:\n\t.long 1b - hostile_cie\n\
         \t.long hostile_code + i*16 - .\n\t.long 16\n\t.uleb128 0\n\t.byte 0,0,0,0,0,0,0\n\
         \t.set i, i+1\n\t.endr\n",
        code = FDES * 16
    )
}

/// Builds the victim in `dir` (reachable by the attacker), owned by the attacker.
fn build_victim(dir: &Path) -> PathBuf {
    let source = dir.join("victim.c");
    let assembly = dir.join("hostile.s");
    std::fs::write(&source, VICTIM_C).expect("write victim.c");
    std::fs::write(&assembly, hostile_assembly()).expect("write hostile.s");
    let out = dir.join("victim");
    run_build_tool(
        Command::new("clang")
            .args([
                "-O1",
                "-g",
                "-fno-omit-frame-pointer",
                "-Wa,--noexecstack",
                "-o",
            ])
            .arg(&out)
            .arg(&source)
            .arg(&assembly),
        "apt-get install clang",
    );
    // The hostile CIE must have survived the link (GNU ld rewrites .eh_frame).
    let size = std::fs::metadata(&out).expect("victim").len();
    assert!(
        size > (CIE_INSTRUCTIONS * 2) as u64,
        "the linker dropped the hostile CIE ({size} bytes)"
    );
    give_to_nobody(&out);
    out
}

/// The recording ends within [`MAX_WALL`], names the process, and says in `-v` that the module's
/// CFI was refused as too large.
#[test]
fn hostile_cie_does_not_stall_recording() {
    let _kernel = kernel_test();
    let dir = tempfile::Builder::new()
        .prefix("emberprof-cfi-attack-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let victim = build_victim(dir.path());
    let child = as_nobody(&victim)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux): {e}"));
    let victim = KillOnDrop(child);
    // setpriv execs the program: same PID. Let it get past the loader.
    std::thread::sleep(Duration::from_millis(300));
    let out = dir.path().join("out.folded");
    let started = Instant::now();
    let mut profiler = KillOnDrop(
        emberprof()
            .args([
                "record",
                "-v",
                "-p",
                &victim.0.id().to_string(),
                "-d",
                "3",
                "-o",
            ])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run emberprof"),
    );
    let stderr = profiler.0.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    // Waits past the bound (to report how long it took), but not forever.
    let status = loop {
        if let Some(status) = profiler.0.try_wait().expect("wait for emberprof") {
            break Some(status);
        }
        if started.elapsed() > MAX_WALL * 6 {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed();
    drop(profiler);
    let stderr = reader.join().unwrap_or_default();
    eprintln!("record -p PID -d 3 of the hostile CFI took {wall:.1?}");
    let status =
        status.unwrap_or_else(|| panic!("emberprof still running after {wall:.1?}:\n{stderr}"));
    assert!(
        status.success(),
        "emberprof failed with {status}:\n{stderr}"
    );
    assert!(
        wall < MAX_WALL,
        "record -d 3 took {wall:.1?} (bound {MAX_WALL:?}): the CFI scan stalled the recording:\n{stderr}"
    );
    let stacks = read_folded(&out);
    assert!(
        stacks.iter().any(|s| s.frames[0] == "victim"),
        "no stacks of the victim:\n{}",
        describe(&stacks)
    );
    assert!(
        stderr.contains("victim: CFI not used for unwinding") && stderr.contains("too large"),
        "-v does not report the refused CFI:\n{stderr}"
    );
}
