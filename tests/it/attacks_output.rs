//! Attacks on what emberprof writes, as root: a FIFO planted at the output name by another user, a
//! reader that never reads, and process names of characters XML forbids even escaped (issue 19,
//! items 6 and 7). The attacker is uid 65534 through `setpriv`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{as_nobody, emberprof, example, kernel_test, scratch, KillOnDrop};

fn mkfifo(path: &Path) {
    let name = CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(name.as_ptr(), 0o666) },
        0,
        "mkfifo {path:?}"
    );
}

/// A sticky, world-writable directory like /tmp.
fn shared_directory() -> tempfile::TempDir {
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod 1777");
    dir
}

/// The attacker plants a FIFO at the name root will write in a sticky world-writable directory, and
/// holds it open for reading: emberprof refuses it before sampling, in one line, rather than
/// sending root's profile to the attacker (or hanging on a reader that never reads).
#[test]
fn planted_fifo_in_a_shared_directory_is_refused() {
    let _kernel = kernel_test();
    let dir = shared_directory();
    let fifo = dir.path().join("flame.svg");
    let fifo_arg = fifo.to_str().expect("UTF-8 path");
    let planted = as_nobody("/usr/bin/mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo as the attacker");
    assert!(planted.success(), "the attacker could not plant the FIFO");
    let _reader = KillOnDrop(
        as_nobody("/bin/sh")
            .args(["-c", "exec 3<\"$1\"; exec sleep 60", "sh", fifo_arg])
            .spawn()
            .expect("a reader as the attacker"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let output = emberprof()
        .args(["record", "-d", "1", "-o", fifo_arg, "--"])
        .args([example("burn"), "1".into()])
        .output()
        .expect("run emberprof");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one error line: {stderr}");
    assert!(
        stderr.contains("owned by another user") && stderr.contains("flame.svg"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after sampling ({:?}): {stderr}",
        started.elapsed()
    );
}

/// A FIFO of one's own in one's own directory is still written through, as a shell's `>` does.
#[test]
fn own_fifo_is_written_through() {
    let _kernel = kernel_test();
    let dir = scratch();
    let fifo = dir.path().join("stacks.folded");
    mkfifo(&fifo);
    let reader = Command::new("cat")
        .arg(&fifo)
        .stdout(Stdio::piped())
        .spawn()
        .expect("cat");
    std::thread::sleep(Duration::from_millis(200));
    let output = emberprof()
        .args([
            "record",
            "-d",
            "1",
            "-o",
            fifo.to_str().expect("UTF-8"),
            "--",
        ])
        .args([example("burn"), "1".into()])
        .output()
        .expect("run emberprof");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read = reader.wait_with_output().expect("cat ends");
    let folded = String::from_utf8_lossy(&read.stdout);
    assert!(folded.contains("burn_a"), "{folded}");
}

/// A reader that opened the FIFO and never reads (a 4 KiB pipe) holds the output write, but a stop
/// signal ends it: emberprof exits soon after SIGTERM, with an error line, instead of never.
#[test]
fn stalled_fifo_reader_does_not_outlast_sigterm() {
    let _kernel = kernel_test();
    let dir = scratch();
    let fifo = dir.path().join("flame.svg");
    mkfifo(&fifo);
    let name = CString::new(fifo.as_os_str().as_bytes()).expect("no NUL");
    // The reader: this test, which never reads. Non-blocking so the open does not wait for a writer.
    // SAFETY: open with a NUL-terminated path; the fd is closed below.
    let reader = unsafe { libc::open(name.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    assert!(reader >= 0, "open the FIFO for reading");
    // SAFETY: fcntl on our own descriptor.
    let size = unsafe { libc::fcntl(reader, libc::F_SETPIPE_SZ, 4096) };
    assert!(size >= 4096, "pipe size {size}");
    let mut profiler = emberprof()
        .args([
            "record",
            "-d",
            "1",
            "-o",
            fifo.to_str().expect("UTF-8"),
            "--",
        ])
        .args([example("burn"), "2".into()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run emberprof");
    // Sampling ends after 1 s; the flame graph (tens of KiB) then fills the 4 KiB pipe and waits.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        profiler.try_wait().expect("try_wait").is_none(),
        "emberprof should be waiting on the reader by now"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(profiler.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = profiler.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(reader) };
    let Some(status) = status else {
        let _ = profiler.kill();
        let _ = profiler.wait();
        panic!("emberprof still waited on the FIFO 5 s after SIGTERM");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut profiler.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stopped reading"), "{stderr}");
}

/// U+FFFF, U+FFFE and an encoded surrogate in process names: XML 1.0 forbids them even escaped, so
/// they must not reach the SVG, whether written by `record` or by `report` from the pprof.
#[test]
fn noncharacters_in_names_keep_the_svg_valid() {
    let _kernel = kernel_test();
    let script = r#"
import ctypes, time
libc = ctypes.CDLL(None)
libc.prctl(15, b"n\xef\xbf\xbf\xef\xbf\xbe\xed\xa0\x80x", 0, 0, 0)
end = time.time() + 10
while time.time() < end:
    sum(range(1000))
"#;
    let attacker = KillOnDrop(
        as_nobody("/usr/bin/python3")
            .args(["-c", script])
            .spawn()
            .expect("run /usr/bin/python3 as the attacker (Debian package python3)"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let dir = scratch();
    let svg = dir.path().join("flame.svg");
    let pprof = dir.path().join("profile.pb.gz");
    let again = dir.path().join("again.svg");
    let pid = attacker.pid().to_string();
    let recorded = emberprof()
        .args(["record", "-p", &pid, "-d", "1", "--per-thread"])
        .args([
            "-o",
            svg.to_str().expect("UTF-8"),
            "-o",
            pprof.to_str().expect("UTF-8"),
        ])
        .output()
        .expect("run emberprof");
    assert!(
        recorded.status.success(),
        "{}",
        String::from_utf8_lossy(&recorded.stderr)
    );
    let reported = emberprof()
        .args(["report", pprof.to_str().expect("UTF-8"), "--per-thread"])
        .args(["-o", again.to_str().expect("UTF-8")])
        .output()
        .expect("run emberprof report");
    assert!(
        reported.status.success(),
        "{}",
        String::from_utf8_lossy(&reported.stderr)
    );
    for file in [&svg, &again] {
        let text = std::fs::read_to_string(file).expect("SVG is UTF-8");
        assert!(
            text.contains("n\u{FFFD}\u{FFFD}"),
            "the process's samples are in {file:?}"
        );
        assert!(
            !text.contains('\u{FFFF}') && !text.contains('\u{FFFE}'),
            "noncharacters in {file:?}"
        );
        let parsed = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])",
            ])
            .arg(file)
            .output()
            .expect("run python3");
        assert!(
            parsed.status.success(),
            "{file:?} is not well-formed XML: {}",
            String::from_utf8_lossy(&parsed.stderr)
        );
    }
}
