//! Attacks from issue 8, run for real: the attacker is an unprivileged user (uid 65534 through
//! `setpriv`), emberprof runs as root, and each test asserts the outcome — victim files unchanged,
//! output valid, the right exit code. Victims are files the test creates, never real system files.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The user who "ran sudo" in the output-ownership attacks: someone other than the attacker.
const SUDO_USER: u32 = 12345;

/// A root-owned 0600 file in a root-only directory: what the attacker wants to own or overwrite.
struct Victim {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const VICTIM_CONTENT: &str = "root:secret-hash:19000:0:99999:7:::\n";

impl Victim {
    fn new() -> Victim {
        let dir = scratch();
        let path = dir.path().join("shadow");
        std::fs::write(&path, VICTIM_CONTENT).expect("test setup");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("test setup");
        Victim { _dir: dir, path }
    }

    fn assert_unchanged(&self) {
        let metadata = std::fs::symlink_metadata(&self.path).expect("victim still exists");
        assert!(metadata.is_file(), "victim replaced");
        assert_eq!(
            (metadata.uid(), metadata.gid()),
            (0, 0),
            "victim's owner changed: it was chowned through the planted symlink"
        );
        assert_eq!(metadata.mode() & 0o7777, 0o600, "victim's mode changed");
        assert_eq!(
            std::fs::read_to_string(&self.path).expect("test setup"),
            VICTIM_CONTENT,
            "victim's content changed"
        );
    }
}

/// emberprof as root under "sudo" by [`SUDO_USER`], profiling a workload for `seconds` into `out`.
fn record_as_sudo_user(workload: &Workload, seconds: &str, out: &Path) -> Output {
    emberprof()
        .env("SUDO_UID", SUDO_USER.to_string())
        .env("SUDO_GID", SUDO_USER.to_string())
        .args(["record", "-p", &workload.pid().to_string(), "-d", seconds])
        .arg("-o")
        .arg(out)
        .output()
        .expect("run emberprof")
}

/// Replaces every temporary output file in `dir` by a symlink to `victim`, as fast as it can.
fn start_symlink_planter(dir: &Path, victim: &Path) -> KillOnDrop {
    let script = format!(
        r#"while :; do for f in '{dir}'/.out.folded.*.tmp; do
             [ -f "$f" ] && [ ! -L "$f" ] && rm -f "$f" 2>/dev/null && ln -s '{victim}' "$f" && echo planted "$f";
           done; sleep 0.01; done"#,
        dir = dir.display(),
        victim = victim.display()
    );
    KillOnDrop(
        as_nobody("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the attacker"),
    )
}

/// `attacker_wins_the_name`: in a directory without the sticky bit the attacker can always replace
/// the temporary name during the run, and emberprof must then report it instead of succeeding.
fn planted_symlink_attack(mode: u32, attacker_wins_the_name: bool) {
    let _kernel = kernel_test();
    let victim = Victim::new();
    let scratch = reachable_scratch();
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).expect("test setup");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).expect("test setup");
    let workload = Workload::start("burn", &["10"]);
    let _planter = start_symlink_planter(&shared, &victim.path);
    let out = shared.join("out.folded");
    let output = record_as_sudo_user(&workload, "2", &out);
    victim.assert_unchanged();
    if !attacker_wins_the_name {
        assert!(output.status.success(), "{}", stderr_text(&output));
        let metadata = std::fs::symlink_metadata(&out).expect("test setup");
        assert!(metadata.is_file(), "output is not a regular file");
        assert_eq!(metadata.uid(), SUDO_USER, "output given to the sudo user");
        assert_eq!(metadata.mode() & 0o777, 0o644);
    } else {
        assert_eq!(output.status.code(), Some(1), "{}", stderr_text(&output));
        let stderr = stderr_text(&output);
        assert!(stderr.contains("replaced by another file"), "{stderr}");
    }
}

/// A symlink to a root-owned file planted over the temporary output file in a world-writable
/// directory, under sudo: the victim keeps its owner, mode and content, and emberprof says its
/// output was replaced.
#[test]
fn planted_symlink_in_world_writable_directory() {
    planted_symlink_attack(0o777, true);
}

/// The same in a sticky world-writable directory (like /tmp), where the attacker cannot remove
/// root's temporary file: the output is written and given to the sudo user.
#[test]
fn planted_symlink_in_sticky_directory() {
    planted_symlink_attack(0o1777, false);
}

/// Without an attacker, the output under sudo belongs to the invoking user, mode 0644.
#[test]
fn sudo_output_belongs_to_invoking_user() {
    let _kernel = kernel_test();
    let scratch = reachable_scratch();
    let workload = Workload::start("burn", &["5"]);
    let out = scratch.path().join("out.folded");
    let output = record_as_sudo_user(&workload, "0.5", &out);
    assert!(output.status.success(), "{}", stderr_text(&output));
    let metadata = std::fs::metadata(&out).unwrap();
    assert_eq!((metadata.uid(), metadata.gid()), (SUDO_USER, SUDO_USER));
    assert_eq!(metadata.mode() & 0o777, 0o644);
    assert!(!read_folded(&out).is_empty());
}

/// `-o` naming a character device (a private copy of /dev/null: the test must not risk the real
/// one) writes through it; it stays the same character device.
#[test]
fn device_output_stays_a_device() {
    let _kernel = kernel_test();
    let scratch = scratch();
    let null = scratch.path().join("null");
    let status = Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .status()
        .expect("run mknod");
    assert!(status.success(), "mknod failed");
    let workload = Workload::start("burn", &["5"]);
    let output = emberprof()
        .args(["record", "-p", &workload.pid().to_string(), "-d", "0.5"])
        .args(["--format", "folded", "-o"])
        .arg(&null)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_text(&output));
    let metadata = std::fs::symlink_metadata(&null).unwrap();
    assert!(
        metadata.file_type().is_char_device(),
        "the device node was replaced by a {:?}",
        metadata.file_type()
    );
    assert_eq!(metadata.rdev(), libc::makedev(1, 3));
}

/// `-o FIFO` with a reader: the reader gets the folded stacks, the FIFO stays a FIFO.
#[test]
fn fifo_output_reaches_its_reader() {
    let _kernel = kernel_test();
    let scratch = scratch();
    let fifo = scratch.path().join("pipe");
    let got = scratch.path().join("got");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let reader = KillOnDrop(
        Command::new("sh")
            // exec: the guard's kill must reach cat itself, which blocks in open until a writer comes.
            .args(["-c", r#"exec cat "$1" > "$2""#, "sh"])
            .arg(&fifo)
            .arg(&got)
            .spawn()
            .unwrap(),
    );
    // Let the reader open its end before emberprof checks for one.
    std::thread::sleep(Duration::from_millis(200));
    let workload = Workload::start("burn", &["5"]);
    let output = emberprof()
        .args(["record", "-p", &workload.pid().to_string(), "-d", "0.5"])
        .args(["--format", "folded", "-o"])
        .arg(&fifo)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_text(&output));
    let mut reader = reader;
    let deadline = Instant::now() + Duration::from_secs(5);
    while reader.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo(),
        "the FIFO was replaced"
    );
    let stacks = read_folded(&got);
    assert!(
        stacks.iter().any(|s| s.frames[0] == "burn"),
        "reader got no burn stacks:\n{}",
        describe(&stacks)
    );
}

/// An existing symlink at `-o` is refused before sampling, neither followed nor replaced.
#[test]
fn symlink_output_refused() {
    let _kernel = kernel_test();
    let victim = Victim::new();
    let scratch = scratch();
    let link = scratch.path().join("flame.svg");
    std::os::unix::fs::symlink(&victim.path, &link).unwrap();
    let output = emberprof()
        .args(["record", "--all", "-d", "1", "-o"])
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_text(&output));
    let stderr = stderr_text(&output);
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    victim.assert_unchanged();
}

/// The attacker's process, named `<x\x01\x1b[31m"&` with a thread named with controls, burning CPU.
fn start_hostile_names() -> KillOnDrop {
    let script = r#"
import ctypes, threading, time
libc = ctypes.CDLL(None)
PR_SET_NAME = 15
def burn(seconds):
    end = time.time() + seconds
    while time.time() < end:
        sum(range(1000))
def worker():
    libc.prctl(PR_SET_NAME, b"t\x02\n;\x7f\x1b]0;", 0, 0, 0)
    burn(10)
libc.prctl(PR_SET_NAME, b'<x\x01\x1b[31m"&', 0, 0, 0)
threading.Thread(target=worker).start()
burn(10)
"#;
    let child = as_nobody("/usr/bin/python3")
        .args(["-c", script])
        .spawn()
        .expect("run /usr/bin/python3 as the attacker (Debian package python3)");
    std::thread::sleep(Duration::from_millis(300));
    KillOnDrop(child)
}

fn assert_printable_folded(text: &str) {
    for line in text.lines() {
        assert!(
            !line.chars().any(char::is_control),
            "control character in folded line {line:?}"
        );
        let count = line.rsplit_once(' ').map(|(_, c)| c.parse::<u64>());
        assert!(matches!(count, Some(Ok(_))), "not a folded line: {line:?}");
    }
}

/// Control characters in process and thread names and the title: the SVG is well-formed XML (checked
/// by expat through Python's minidom), folded output has exactly one line per stack.
#[test]
fn hostile_names_keep_output_valid() {
    let _kernel = kernel_test();
    let attacker = start_hostile_names();
    let pid = attacker.0.id().to_string();
    let scratch = scratch();
    let svg = scratch.path().join("flame.svg");
    run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "1",
        "--per-thread",
        "--title",
        "title \u{1}\u{1b}[2J<",
        "-o",
        svg.to_str().unwrap(),
    ]);
    let parsed = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(&svg)
        .output()
        .expect("run python3");
    assert!(
        parsed.status.success(),
        "the SVG is not well-formed XML: {}",
        stderr_text(&parsed)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("&lt;x\u{FFFD}\u{FFFD}[31m"), "process name");

    for per_thread in [false, true] {
        let mut args = vec!["record", "-p", &pid, "-d", "1", "-o", "-"];
        if per_thread {
            args.push("--per-thread");
        }
        let output = run_ok(&args);
        let folded = String::from_utf8(output.stdout).expect("folded output is UTF-8");
        assert_printable_folded(&folded);
        let stacks = parse_folded(&folded);
        let root = if per_thread {
            "t\u{FFFD} :\u{FFFD}\u{FFFD}]0:-"
        } else {
            "<x\u{FFFD}\u{FFFD}[31m\"&"
        };
        assert!(
            stacks.iter().any(|s| s.frames[0].starts_with(root)),
            "no stack rooted at {root:?}:\n{}",
            describe(&stacks)
        );
    }
}

fn launched_id(extra: &[&str]) -> (String, Output) {
    let scratch = scratch();
    let out = scratch.path().join("id.folded");
    let output = emberprof()
        .env("SUDO_UID", NOBODY.to_string())
        .env("SUDO_GID", NOBODY.to_string())
        .arg("record")
        .args(extra)
        .arg("-o")
        .arg(&out)
        .args(["--", "id", "-u"])
        .output()
        .expect("run emberprof");
    (
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        output,
    )
}

/// Under sudo the launched command runs as the invoking user; `--run-as-root` keeps root.
#[test]
fn launched_command_runs_as_sudo_user() {
    let _kernel = kernel_test();
    let (uid, output) = launched_id(&[]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(uid, NOBODY.to_string(), "{}", stderr_text(&output));
    let (uid, output) = launched_id(&["--run-as-root"]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(uid, "0");
    let (uid, output) = launched_id(&["--user", "nobody"]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert_eq!(uid, NOBODY.to_string());
}

/// `-d 1e20` and `-d -1`: a clear error naming --duration, no panic.
#[test]
fn bad_durations() {
    let stderr = run_error_line(&["record", "--all", "-d", "1e20", "-o", "-"]);
    assert!(stderr.contains("--duration 1e20 is too long"), "{stderr}");
    let stderr = run_error_line(&["record", "--all", "-d", "inf", "-o", "-"]);
    assert!(stderr.contains("--duration must be a positive"), "{stderr}");
    let stderr = run_error_line(&["record", "--all", "-d", "-1", "-o", "-"]);
    assert!(
        stderr.contains("--duration must be a positive number of seconds, not -1"),
        "{stderr}"
    );
}

/// `-p TID` of a thread names the thread's process.
#[test]
fn thread_id_names_its_process() {
    let _kernel = kernel_test();
    let workload = Workload::start("threads", &["5"]);
    let pid = workload.pid();
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&tid| tid != pid)
        .expect("a thread other than the main one");
    let stderr = run_error_line(&["record", "-p", &tid.to_string(), "-d", "1", "-o", "-"]);
    assert!(
        stderr.contains(&format!("{tid} is a thread of process {pid}")),
        "{stderr}"
    );
}

/// An output name of 250 bytes is written; 256 bytes is refused as too long, not as an unwritable
/// directory.
#[test]
fn long_output_names() {
    let _kernel = kernel_test();
    let scratch = scratch();
    let workload = Workload::start("burn", &["5"]);
    let long = scratch
        .path()
        .join(format!("{}.folded", "n".repeat(250 - 7)));
    run_ok(&[
        "record",
        "-p",
        &workload.pid().to_string(),
        "-d",
        "0.3",
        "-o",
        long.to_str().unwrap(),
    ]);
    assert!(!read_folded(&long).is_empty());
    let too_long = scratch
        .path()
        .join(format!("{}.folded", "n".repeat(256 - 7)));
    let stderr = run_error_line(&[
        "record",
        "--all",
        "-d",
        "1",
        "-o",
        too_long.to_str().unwrap(),
    ]);
    assert!(stderr.contains("file name is too long"), "{stderr}");
    assert!(!stderr.contains("not writable"), "{stderr}");
}
