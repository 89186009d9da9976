//! Attacks through the files a profiled process controls (issue 8, defects 2–5): each test builds a
//! hostile workload at test time, runs it as an unprivileged user (uid 65534 through `setpriv`, as a
//! local attacker would), records it with the real `emberprof` binary as root, and asserts that the
//! recording ends (no hang), exits 0 without a panic or a signal, writes a valid profile of the
//! workload, and stays under a memory bound (peak RSS of the emberprof process, from `wait4`).
//!
//! emberprof runs with an address-space limit here ([`ADDRESS_SPACE_LIMIT`]) so a regression that
//! reads without bound fails this test instead of taking the test machine's memory.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A recording that has not ended this long after its `-d` is hung.
const HANG: Duration = Duration::from_secs(60);
/// Peak resident memory allowed to emberprof in these tests. A normal short recording of one
/// process peaks near 60 MiB; a perf map at its caps (64 MiB of text, 2^20 entries) adds ~120 MiB
/// (measured 177 MiB in all). Before the fixes, a 256 MiB perf map cost 380 MiB to 1.2 GB (as far
/// as the recording got to read it) and /dev/zero grew without bound.
const MAX_RSS_BYTES: u64 = 320 << 20;
/// Address space granted to emberprof (RLIMIT_AS): far above what it maps normally (BPF maps,
/// module copies), far below what an unbounded read would reach before the hang deadline.
const ADDRESS_SPACE_LIMIT: u64 = 2 << 30;

/// The workloads, one C program with one mode per attack.
const VICTIM_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile unsigned long sink;
static volatile sig_atomic_t go;
static void on_usr1(int sig) { (void)sig; go = 1; }

__attribute__((noinline)) static void spin(void) {
    for (;;) for (unsigned long i = 0; i < 1000000; i++) sink += i;
}

/* Moves the library's mappings into anonymous memory at the same addresses, so truncating the file
 * does not crash this process (truncation zaps even private copies of file pages): the attack is on
 * the profiler, which snapshotted the file-backed mappings before. */
static void anonymize(const char *path) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    unsigned long starts[64], ends[64]; int prots[64], n = 0;
    while (maps && n < 64 && fgets(line, sizeof line, maps)) {
        char perms[5];
        if (!strstr(line, path) || sscanf(line, "%lx-%lx %4s", &starts[n], &ends[n], perms) != 3) continue;
        if (perms[0] != 'r') continue;
        prots[n++] = PROT_READ | (perms[1] == 'w' ? PROT_WRITE : 0) | (perms[2] == 'x' ? PROT_EXEC : 0);
    }
    if (maps) fclose(maps);
    for (int i = 0; i < n; i++) {
        size_t size = ends[i] - starts[i];
        void *copy = malloc(size);
        memcpy(copy, (void *)starts[i], size);
        mmap((void *)starts[i], size, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memcpy((void *)starts[i], copy, size);
        mprotect((void *)starts[i], size, prots[i]);
        free(copy);
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "spin";
    char perf_map[64];
    snprintf(perf_map, sizeof perf_map, "/tmp/perf-%d.map", getpid());
    if (!strcmp(mode, "fifo-perf-map")) {
        if (mkfifo(perf_map, 0644)) { perror("mkfifo"); return 1; }
        spin();
    }
    if (!strcmp(mode, "big-perf-map")) {
        /* argv[2] MiB of valid lines that never cover the JIT code below. */
        FILE *f = fopen(perf_map, "w");
        if (!f) { perror(perf_map); return 1; }
        unsigned long bytes = strtoul(argv[2], 0, 10) << 20, written = 0;
        for (unsigned long i = 0; written < bytes; i++)
            written += fprintf(f, "%lx 10 LazyCompile:*function_%lu /app/file.js:1\n", 0x100000000UL + i * 16, i);
        fclose(f);
        unsigned char *jit = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (jit == MAP_FAILED) { perror("mmap"); return 1; }
        jit[0] = 0xeb; jit[1] = 0xfe; /* jmp . */
        ((void (*)(void))jit)();
    }
    if (!strcmp(mode, "lib")) {
        /* argv[2]: a library of functions f0..f31. Runs f0..f3 until SIGUSR1, then truncates the
         * library and runs the others, whose stacks are new to the profiler. */
        signal(SIGUSR1, on_usr1);
        void *lib = dlopen(argv[2], RTLD_NOW);
        if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        void (*f[32])(void);
        for (int i = 0; i < 32; i++) {
            char name[8]; snprintf(name, sizeof name, "f%d", i);
            f[i] = (void (*)(void))dlsym(lib, name);
            if (!f[i]) { fprintf(stderr, "no %s\n", name); return 1; }
        }
        for (unsigned long n = 0; !go; n++) f[n % 4]();
        anonymize(argv[2]);
        if (truncate(argv[2], 0)) { perror("truncate"); return 1; }
        for (unsigned long n = 0;; n++) f[4 + n % 28]();
    }
    spin();
}
"#;

const LIB_C: &str = r#"
static volatile unsigned long sink;
#define F(n) __attribute__((noinline)) void f##n(void) { for (unsigned long i = 0; i < 3000000; i++) sink += i * n; }
F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11) F(12) F(13) F(14) F(15)
F(16) F(17) F(18) F(19) F(20) F(21) F(22) F(23) F(24) F(25) F(26) F(27) F(28) F(29) F(30) F(31)
"#;

/// A directory in /tmp owned by the attacker, removed at the end.
struct AttackDir {
    dir: tempfile::TempDir,
}

impl AttackDir {
    fn new() -> AttackDir {
        let dir = tempfile::Builder::new()
            .prefix("emberprof-attack-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        give_to_nobody(dir.path());
        AttackDir { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Compiles C `source` into `name` with `clang` and extra `flags`, owned by the attacker.
    fn compile(&self, name: &str, source: &str, flags: &[&str]) -> PathBuf {
        let out = self.path(name);
        compile_c("clang", &out, source, flags);
        give_to_nobody(&out);
        out
    }
}

fn run_tool(command: &mut Command) {
    run_build_tool(command, "apt-get install binutils");
}

/// A workload started as the attacker, killed when dropped.
struct Victim {
    child: Child,
}

impl Victim {
    fn start(program: &Path, args: &[&str]) -> Victim {
        let child = as_nobody(program)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux): {e}"));
        // setpriv execs the program: same PID. Let it get past the loader and set its trap.
        std::thread::sleep(Duration::from_millis(300));
        Victim { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", self.child.id()));
    }
}

/// Runs emberprof as root with `args`, killing it if it hangs (see [`run_bounded`]).
fn record(args: &[&str]) -> Finished {
    run_bounded(emberprof().args(args), ADDRESS_SPACE_LIMIT, HANG, || {})
}

/// The recording ended normally, under the memory bound, with a profile of process `comm`.
fn assert_survived(recording: &Finished, out: &Path, comm: &str) -> Vec<FoldedStack> {
    eprintln!(
        "emberprof: {}, peak RSS {} MiB",
        recording.status,
        recording.peak_rss_bytes >> 20
    );
    assert!(
        recording.status.success(),
        "emberprof ended with {} (a signal, a panic or an error); stderr:\n{}",
        recording.status,
        recording.stderr
    );
    assert!(
        !recording.stderr.contains("panicked"),
        "emberprof panicked:\n{}",
        recording.stderr
    );
    assert!(
        recording.peak_rss_bytes <= MAX_RSS_BYTES,
        "emberprof peaked at {} MiB of RSS, bound {} MiB; stderr:\n{}",
        recording.peak_rss_bytes >> 20,
        MAX_RSS_BYTES >> 20,
        recording.stderr
    );
    let stacks = read_folded(out);
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.first().is_some_and(|f| f == comm)),
        "no stacks of {comm}:\n{}",
        describe(&stacks)
    );
    stacks
}

/// Records `victim` for three seconds (`-d` in `extra` overrides) into `out`.
fn record_pid(victim: &Victim, out: &Path, extra: &[&str]) -> Finished {
    let pid = victim.pid().to_string();
    let duration = if extra.contains(&"-d") {
        &[][..]
    } else {
        &["-d", "3"][..]
    };
    let mut args = vec![
        "record",
        "-p",
        &pid,
        "-F",
        "199",
        "-o",
        out.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(duration);
    args.extend_from_slice(extra);
    record(&args)
}

/// Defect 3: a FIFO as the perf map. Opening it used to block forever (signals ignored); it is now
/// refused, and the recording ends on time with the process's stacks.
#[test]
fn fifo_perf_map_does_not_hang() {
    let _kernel = kernel_test();
    let dir = AttackDir::new();
    let victim_exe = dir.compile("victim", VICTIM_C, &["-ldl"]);
    let victim = Victim::start(&victim_exe, &["fifo-perf-map"]);
    let fifo = format!("/tmp/perf-{}.map", victim.pid());
    assert!(
        std::fs::metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo()),
        "the victim made no FIFO at {fifo}"
    );
    let out = dir.path("out.folded");
    let recording = record_pid(&victim, &out, &[]);
    assert_survived(&recording, &out, "victim");
}

/// Builds `name`: the victim without DWARF and without a build-id (so the debug link is what finds
/// its debug file, checked by CRC over the whole file), whose `.gnu_debuglink` section names `link`
/// (written raw, so it can be anything, as an attacker would write it).
fn with_debug_link(dir: &AttackDir, name: &str, link: &[u8]) -> PathBuf {
    let exe = dir.compile(name, VICTIM_C, &["-ldl", "-Wl,--build-id=none"]);
    run_tool(Command::new("objcopy").arg("--strip-debug").arg(&exe));
    let mut section = link.to_vec();
    section.push(0);
    while !section.len().is_multiple_of(4) {
        section.push(0);
    }
    section.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    let section_file = dir.path(&format!("{name}.link"));
    std::fs::write(&section_file, &section).expect("write section");
    run_tool(
        Command::new("objcopy")
            .arg(format!(
                "--add-section=.gnu_debuglink={}",
                section_file.display()
            ))
            .arg(&exe),
    );
    give_to_nobody(&exe);
    exe
}

/// Defect 3: the debug link names a FIFO next to the binary. Opening it used to block forever.
#[test]
fn fifo_debug_link_does_not_hang() {
    let _kernel = kernel_test();
    let dir = AttackDir::new();
    let exe = with_debug_link(&dir, "victim", b"victim.debug");
    let fifo = dir.path("victim.debug");
    let c_path = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o666) }, 0);
    give_to_nobody(&fifo);
    let victim = Victim::start(&exe, &["spin"]);
    let out = dir.path("out.folded");
    let recording = record_pid(&victim, &out, &[]);
    assert_survived(&recording, &out, "victim");
}

/// Defect 4: debug links naming `/dev/zero` (read until memory ran out) and an absolute host path
/// the attacker cannot read (a sparse 8 GiB root-only file, which root read whole). Debug links are
/// file names in the documented directories only: both are ignored, the host file is untouched.
#[test]
fn absolute_debug_links_are_not_followed() {
    let _kernel = kernel_test();
    let dir = AttackDir::new();
    let secret_dir = tempfile::Builder::new()
        .prefix("emberprof-root-only-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::fs::set_permissions(secret_dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let secret = secret_dir.path().join("big");
    let file = std::fs::File::create(&secret).expect("create");
    file.set_len(8 << 30).expect("sparse file");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = std::fs::metadata(&secret).expect("stat");

    for link in ["/dev/zero", secret.to_str().expect("utf-8")] {
        let exe = with_debug_link(&dir, "victim", link.as_bytes());
        let victim = Victim::start(&exe, &["spin"]);
        let out = dir.path("out.folded");
        let recording = record_pid(&victim, &out, &[]);
        assert_survived(&recording, &out, "victim");
        drop(victim);
    }
    let after = std::fs::metadata(&secret).expect("stat");
    assert_eq!(
        (before.len(), before.mtime(), before.atime()),
        (after.len(), after.mtime(), after.atime()),
        "the host file was read or changed"
    );
    assert!(std::fs::metadata("/dev/zero").is_ok_and(|m| m.file_type().is_char_device()));
}

/// Defect 4: a 256 MiB perf map and JIT code it does not name. It used to be read whole (1.2 GB of
/// RSS, and a capture loop stalled for tens of seconds); now at most `--max-perf-map-size` is read,
/// with a warning.
#[test]
fn huge_perf_map_is_bounded() {
    let _kernel = kernel_test();
    let dir = AttackDir::new();
    let victim_exe = dir.compile("victim", VICTIM_C, &["-ldl"]);
    let victim = Victim::start(&victim_exe, &["big-perf-map", "256"]);
    let map = format!("/tmp/perf-{}.map", victim.pid());
    // Writing 256 MiB takes the victim a moment: wait until it runs its JIT code.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&map).map(|m| m.len()).unwrap_or(0) < 256 << 20 {
        assert!(Instant::now() < deadline, "the victim did not write {map}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = dir.path("out.folded");
    let recording = record_pid(&victim, &out, &["--unwind", "fp"]);
    assert_survived(&recording, &out, "victim");
    assert!(
        recording.stderr.contains("--max-perf-map-size"),
        "no warning about the size limit:\n{}",
        recording.stderr
    );
}

/// Defect 2: the attacker's library is truncated after emberprof sampled code in it, and the
/// process goes on running code of the library that emberprof has not named yet. Mapping the file
/// (for unwinding, and inside blazesym) used to kill emberprof with SIGBUS; now the file is read
/// from a private sealed copy, which also still names the functions.
#[test]
fn truncated_library_does_not_crash() {
    let _kernel = kernel_test();
    let dir = AttackDir::new();
    let lib = dir.compile(
        "libvictim.so",
        LIB_C,
        &["-shared", "-fPIC", "-fomit-frame-pointer"],
    );
    let victim_exe = dir.compile("victim", VICTIM_C, &["-ldl"]);
    let lib_arg = lib.to_str().expect("utf-8").to_owned();
    let victim = Victim::start(&victim_exe, &["lib", &lib_arg]);
    let out = dir.path("out.folded");
    let pid = victim.pid();
    let trigger = std::thread::spawn(move || {
        // Truncate once emberprof has snapshotted and sampled the library.
        std::thread::sleep(Duration::from_millis(2000));
        // SAFETY: plain signal to our child.
        unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
    });
    let recording = record_pid(&victim, &out, &["-d", "5", "--unwind", "dwarf"]);
    trigger.join().expect("trigger");
    assert_eq!(
        std::fs::metadata(&lib).map(|m| m.len()).ok(),
        Some(0),
        "the victim did not truncate its library"
    );
    let stacks = assert_survived(&recording, &out, "victim");
    // f4..f31 run only after the truncation.
    let late: Vec<String> = (4..32).map(|i| format!("f{i}")).collect();
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| late.contains(f))),
        "no functions of the library named after its truncation:\n{}",
        describe(&stacks)
    );
}

/// Writes `value` at `offset` of the section header named `section` (ELF64 little-endian).
fn patch_section_header(path: &Path, section: &str, field_offset: u64, value: u64) {
    let mut bytes = std::fs::read(path).expect("read ELF");
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at =
        |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4")) as usize;
    let u64_at =
        |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8")) as usize;
    let shoff = u64_at(&bytes, 0x28);
    let (shentsize, shnum, shstrndx) = (
        u16_at(&bytes, 0x3a),
        u16_at(&bytes, 0x3c),
        u16_at(&bytes, 0x3e),
    );
    let strtab = u64_at(&bytes, shoff + shstrndx * shentsize + 0x18);
    let index = (0..shnum)
        .find(|&i| {
            let name = strtab + u32_at(&bytes, shoff + i * shentsize);
            bytes[name..].starts_with(section.as_bytes()) && bytes[name + section.len()] == 0
        })
        .unwrap_or_else(|| panic!("no {section} in {}", path.display()));
    let at = shoff + index * shentsize + field_offset as usize;
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    let mut file = std::fs::File::create(path).expect("rewrite ELF");
    file.write_all(&bytes).expect("write ELF");
}

/// Defect 5: `.eh_frame`'s section header says offset 0xffffffffffffff00, size 0x200 (the program
/// still runs: the loader uses segments, not sections). `offset + size` wrapped and the slice
/// panicked (exit 101, profile lost); now the section is ignored and the run goes on.
#[test]
fn crafted_eh_frame_offset_does_not_panic() {
    let _kernel = kernel_test();
    let dir = AttackDir::new();
    let exe = dir.compile("victim", VICTIM_C, &["-ldl"]);
    patch_section_header(&exe, ".eh_frame", 0x18, 0xffff_ffff_ffff_ff00);
    patch_section_header(&exe, ".eh_frame", 0x20, 0x200);
    let victim = Victim::start(&exe, &["spin"]);
    let out = dir.path("out.folded");
    let recording = record_pid(&victim, &out, &[]);
    assert_survived(&recording, &out, "victim");
}

/// Two programs with the same layout and different names: `reuse-a` waits for a byte on stdin, then
/// spins in `alpha_work`; `reuse-b` spins in `bravo_work` at the same address.
const REUSE_C: &str = r#"
#include <unistd.h>
static volatile unsigned long sink;
__attribute__((noinline)) void WORK(void) { for (;;) for (unsigned long i = 0; i < 1000000; i++) sink += i; }
int main(void) {
#ifdef WAIT
    char byte;
    if (read(0, &byte, 1) != 1) return 1;
#endif
    WORK();
}
"#;

/// Starts `program` (as the attacker, without address randomization) under PID `pid`, by setting
/// `ns_last_pid` just before forking; other processes on the machine fork too, so this is retried.
fn start_with_pid(pid: u32, program: &Path) -> Option<Child> {
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let child = as_nobody("setarch")
            .args(["x86_64", "-R"])
            .arg(program)
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        if child.id() == pid {
            return Some(child);
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

/// Defect 9: process A is sampled, then exits, and process B gets its PID before emberprof handles
/// A's first-sample notice (emberprof is stopped meanwhile, so the order is certain). B runs another
/// program at the same addresses: A's samples used to be named from B's binary (`reuse-b+0x…` or
/// `bravo_work` under `reuse-a`). Now the start time BPF saw for A does not match B's, so A is not
/// snapshotted from B; and B, not the process `-p` named, is not sampled.
#[test]
fn reused_pid_is_not_mistaken_for_the_sampled_process() {
    let _kernel = kernel_test();
    let dir = AttackDir::new();
    let a = dir.compile("reuse-a", REUSE_C, &["-DWORK=alpha_work", "-DWAIT"]);
    let b = dir.compile("reuse-b", REUSE_C, &["-DWORK=bravo_work"]);
    let mut victim_a = as_nobody("setarch")
        .args(["x86_64", "-R"])
        .arg(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("setpriv and setarch (util-linux)");
    let pid = victim_a.id();
    let out = dir.path("out.folded");
    let pid_arg = pid.to_string();
    let mut recorder = emberprof()
        .args([
            "record", "-p", &pid_arg, "-d", "8", "-F", "499", "--unwind", "fp", "-o",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run emberprof");
    let recorder_pid = recorder.id();
    wait_until_sampling(&mut recorder);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signals to our own children.
    unsafe { libc::kill(recorder_pid as i32, libc::SIGSTOP) };
    // A runs and is sampled while emberprof cannot handle the notice; then A exits and B takes its PID.
    victim_a
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"x")
        .expect("start A");
    std::thread::sleep(Duration::from_millis(500));
    let _ = victim_a.kill();
    let _ = victim_a.wait();
    let victim_b = start_with_pid(pid, &b);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    unsafe { libc::kill(recorder_pid as i32, libc::SIGCONT) };
    let mut victim_b = victim_b.unwrap_or_else(|| {
        panic!("could not start the second program under PID {pid} (other processes took it)")
    });
    let output = recorder.wait_with_output().expect("wait for emberprof");
    let _ = victim_b.kill();
    let _ = victim_b.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "emberprof failed:\n{stderr}");
    let stacks = read_folded(&out);
    let rooted = |comm: &str, name: &str| {
        total(&stacks, |s| {
            s.frames[0] == comm && s.frames.iter().any(|f| f == name)
        })
    };
    // B is another process under A's PID: `-p` named A, and a target whose last thread exits
    // leaves the BPF target set, so B is not sampled at all.
    assert_eq!(
        rooted("reuse-b", "bravo_work"),
        0,
        "a process that reused the target's PID was profiled:\n{}",
        describe(&stacks)
    );
    assert!(
        total(&stacks, |s| s.frames[0] == "reuse-a") > 0,
        "the first program was not sampled:\n{}",
        describe(&stacks)
    );
    let named_from_b = total(&stacks, |s| {
        s.frames[0] == "reuse-a"
            && s.frames[1..]
                .iter()
                .any(|f| f == "bravo_work" || f.starts_with("reuse-b+"))
    });
    assert_eq!(
        named_from_b,
        0,
        "samples of the first program named from the second's binary:\n{}",
        describe(&stacks)
    );
}
