//! Attacks from issue 19 on state the symbolizer keeps for the session: the attacker is uid 65534
//! (through `setpriv`), emberprof records as root, and each test asserts what came out. Each prints
//! emberprof's peak RSS, the machine's `Shmem` before and after, and the wall time, the figures the
//! issue asks for.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// A program that burns CPU in one function, `NAME` (set with `-D`), so two builds differ only in
/// that name and have their code at the same offsets.
const ONE_FUNCTION_C: &str = r#"
static volatile unsigned long sink;
__attribute__((noinline)) void NAME(void) {
    for (unsigned long i = 0; i < 400000000UL; i++) sink += i;
}
int main(void) { NAME(); return 0; }
"#;

/// Defect 5: a binary is run, deleted, and another one written in the same directory gets its
/// inode number (ext4 and tmpfs hand a freed inode out again at once); both run in one recording.
/// Modules keyed by (device, inode) named the new binary's code with the old one's functions.
#[test]
fn recycled_inode_does_not_inherit_names() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    compile(
        &dir.path().join("old.bin"),
        ONE_FUNCTION_C,
        &["-DNAME=alpha_from_the_old_binary"],
    );
    compile(
        &dir.path().join("new.bin"),
        ONE_FUNCTION_C,
        &["-DNAME=beta_in_the_new_binary"],
    );
    // The attacker's copies are files it owns: emberprof keeps a private copy, not the file, so
    // the inode is free once `old1` is deleted.
    let script = "cp old.bin old1 && ./old1 && stat -c %i old1 > inode1 && rm old1 && \
                  cp new.bin new1 && stat -c %i new1 > inode2 && ./new1";
    let (out, args) = attack_args(dir.path(), 499, &[], script);
    let recording = record_attack("recycled inode", &args);
    let inode = |name: &str| {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_else(|e| panic!("the workload wrote no {name}: {e}; {}", recording.stderr))
    };
    let (old_inode, new_inode) = (inode("inode1"), inode("inode2"));
    assert_eq!(
        old_inode,
        new_inode,
        "the file system under {} did not give the deleted binary's inode to the next file, so \
         this test cannot reproduce the attack there: run it with TMPDIR on ext4 or tmpfs",
        dir.path().display()
    );
    let stacks = parse_folded(&std::fs::read_to_string(&out).expect("read folded output"));
    let of = |comm: &str| -> Vec<FoldedStack> {
        stacks
            .iter()
            .filter(|s| s.frames.first().is_some_and(|f| f == comm))
            .cloned()
            .collect()
    };
    let (old, new) = (of("old1"), of("new1"));
    let has = |stacks: &[FoldedStack], name: &str| {
        total(stacks, |s| s.frames.iter().any(|f| f.contains(name)))
    };
    assert!(
        has(&old, "alpha_from_the_old_binary") > 0,
        "the old binary's function is not named:\n{}",
        describe(&stacks)
    );
    assert_eq!(
        has(&new, "alpha_from_the_old_binary"),
        0,
        "the new binary (same inode {}) got the old binary's names:\n{}",
        new_inode.trim(),
        describe(&new)
    );
    assert!(
        has(&new, "beta_in_the_new_binary") * 2 > total(&new, |_| true),
        "the new binary's function is not named in most of its samples:\n{}",
        describe(&new)
    );
}

/// A "JIT" that spins in anonymous code at `SPIN` (argv[2], hex) and names it through a perf map
/// that is a hard link of the attacker's file argv[1], touched after the process started (so it
/// counts as its own).
const PERF_MAP_VICTIM_C: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <utime.h>
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    unsigned long spin = strtoul(argv[2], 0, 16), page = spin & ~4095UL;
    unsigned char *code = mmap((void *)page, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (code == MAP_FAILED) { perror("mmap"); return 1; }
    code[spin - page] = 0xeb; code[spin - page + 1] = 0xfe; /* jmp . */
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    if (link(argv[1], path) || utime(path, NULL)) { perror(path); return 1; }
    ((void (*)(void))spin)();
    return 0;
}
"#;

/// Processes that each have a perf map in the per-map limit.
const PERF_MAP_PROCESSES: usize = 32;
/// Lines of the shared perf map (3 MiB). The issue's maps were 60 MiB under the default budget; the
/// test scales both down by 20 (`--max-perf-maps-size 12 MiB`) so that the tests' debug build
/// parses what the attack makes it parse (32 maps; about 2 MB/s unoptimized) within the hang limit.
const PERF_MAP_LINES: u64 = 49_000;
const PERF_MAPS_BUDGET: &str = "12582912";
/// Peak RSS allowed to emberprof with 32 such maps: the budget keeps four maps (~2.5 bytes of
/// memory per byte of map), plus a normal recording (~60 MiB). Without a budget: ~300 MiB (the
/// issue's 60 MiB maps: 4,976 MiB).
const PERF_MAPS_MAX_RSS: u64 = 180 << 20;

/// Defect 3: 32 processes, each with a perf map in the per-map limit (hard links of one file) that
/// names the code it runs at the map's last line. Every map was read whole and kept (60 MiB maps:
/// 4,976 MiB of RSS). Now all maps share one budget; the least recently used are dropped, with a
/// warning.
#[test]
fn perf_maps_share_one_budget() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    let exe = dir.path().join("jit");
    compile(&exe, PERF_MAP_VICTIM_C, &[]);
    const BASE: u64 = 0x4000_0000;
    let map = dir.path().join("perf.map");
    let mut text = String::with_capacity(64 * PERF_MAP_LINES as usize);
    for i in 0..PERF_MAP_LINES {
        text.push_str(&format!(
            "{:x} 10 jit_function_{i:09}_padded_to_sixty_three_bytes_\n",
            BASE + i * 16
        ));
    }
    std::fs::write(&map, &text).expect("write perf map");
    drop(text);
    std::os::unix::fs::chown(&map, Some(ATTACKER), Some(ATTACKER)).expect("chown");
    let spin = format!("{:x}", BASE + (PERF_MAP_LINES - 1) * 16);
    let mut attackers = Attackers(Vec::new());
    for _ in 0..PERF_MAP_PROCESSES {
        let child = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&exe)
            .arg(&map)
            .arg(&spin)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux): {e}"));
        attackers.0.push(child);
    }
    // Setup, not an assertion: each workload makes its link once it runs.
    for child in &attackers.0 {
        let link = format!("/tmp/perf-{}.map", child.id());
        let waited = Instant::now();
        while std::fs::metadata(&link).is_err() {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "workload {} made no {link}",
                child.id()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let pids: Vec<String> = attackers.0.iter().map(|c| c.id().to_string()).collect();
    let out = dir.path().join("out.folded");
    let args = strings(&[
        "record",
        "-v",
        "-p",
        &pids.join(","),
        "-d",
        "8",
        "-F",
        "99",
        "--max-perf-maps-size",
        PERF_MAPS_BUDGET,
        "-o",
        out.to_str().expect("utf-8 path"),
    ]);
    let recording = record_attack("32 perf maps", &args);
    assert!(
        recording.peak_rss_bytes <= PERF_MAPS_MAX_RSS,
        "emberprof peaked at {} MiB of RSS with {PERF_MAP_PROCESSES} perf maps of 3 MiB, bound {} MiB",
        recording.peak_rss_bytes >> 20,
        PERF_MAPS_MAX_RSS >> 20
    );
    assert!(
        recording
            .stderr
            .contains("dropped to keep all perf maps within their budget"),
        "no word of dropped perf maps in -v:\n{}",
        recording.stderr
    );
    let stacks = parse_folded(&std::fs::read_to_string(&out).expect("read folded output"));
    let last = format!("jit_function_{:09}", PERF_MAP_LINES - 1);
    assert!(
        total(&stacks, |s| s.frames.iter().any(|f| f.contains(&last))) > 0,
        "no process's JIT code was named within the budget:\n{}",
        describe(&stacks)
    );
}

/// Maps `COUNT` sparse files of 1,000 MiB (argv[1]) executable, then spins in its own code.
const SPARSE_VICTIM_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
static volatile unsigned long sink;
int main(int argc, char **argv) {
    int count = argc == 2 ? atoi(argv[1]) : 0;
    for (int i = 0; i < count; i++) {
        char name[32];
        snprintf(name, sizeof name, "sparse%d", i);
        int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || ftruncate(fd, 1000L << 20)) { perror(name); return 1; }
        if (mmap(0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED) {
            perror("mmap"); return 1;
        }
        close(fd);
    }
    if (creat("ready", 0644) < 0) { perror("ready"); return 1; }
    for (;;) sink++;
}
"#;

/// Sparse files the attack maps: 8,000 MiB of copies before the budget, 4 KB of the attacker's disk.
const SPARSE_FILES: &str = "8";

/// Defect 2: each executable mapping of a file the attacker can modify was copied (up to 1 GiB)
/// into a sealed memfd kept for the session: 8 sparse 1,000 MiB files pinned 8,000 MiB of shared
/// memory, invisible in emberprof's RSS. Copies now share a 512 MiB budget; past it a file gets no
/// copy and no names, and `-v` says so.
#[test]
fn memfd_copies_share_one_budget() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    let exe = dir.path().join("sparse");
    compile(&exe, SPARSE_VICTIM_C, &[]);
    let child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .arg(SPARSE_FILES)
        .current_dir(dir.path())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux): {e}"));
    let attackers = Attackers(vec![child]);
    let pid = attackers.0[0].id().to_string();
    // Setup, not an assertion: the workload says when its files are mapped.
    let waited = Instant::now();
    while std::fs::metadata(dir.path().join("ready")).is_err() {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the workload never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = dir.path().join("out.folded");
    let args = strings(&[
        "record",
        "-v",
        "-p",
        &pid,
        "-d",
        "3",
        "-F",
        "99",
        "-o",
        out.to_str().expect("utf-8 path"),
    ]);
    let shmem_before = shmem_kib();
    let recording = record_attack("8 sparse files", &args);
    let grown_mib = shmem_peak_since(shmem_before) >> 10;
    // The budget (512 MiB), and some room for the rest of the machine's users.
    assert!(
        grown_mib < 600,
        "shared memory grew by {grown_mib} MiB while emberprof recorded the sparse files; stderr:\n{}",
        recording.stderr
    );
    assert!(
        recording.stderr.contains("got no private copy"),
        "-v does not say that files got no copy:\n{}",
        recording.stderr
    );
    let stacks = parse_folded(&std::fs::read_to_string(&out).expect("read folded output"));
    assert!(
        total(&stacks, |s| s.frames.iter().any(|f| f == "main")) > 0,
        "the workload's own code is not named:\n{}",
        describe(&stacks)
    );
}
