//! Defences no end-to-end test guarded (issue 19, last section): with any one of them removed, every
//! other test still passed. Each test here fails when its defence is taken out (seen red by hand):
//!
//! - `untrusted::open_in_root` refusing anything but a regular file: a debug link led to a device
//!   only root can read, which reads forever;
//! - `RESOLVE_IN_ROOT` in `open_in_root`: a process in a chroot whose build-id debug file is an
//!   absolute symlink, or a `..` symlink, to a root-only file of the host;
//! - `O_EXCL | O_NOFOLLOW` on the temporary output file: a name planted where it is created;
//! - source lines and the `[truncated]` location in pprof output, read by Go's own pprof.
//!
//! The attacker is uid 65534; emberprof runs as root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// A recording of `-d 3` that has not ended after this is hung.
const HANG: Duration = Duration::from_secs(60);
/// Address space granted to emberprof: far above a normal recording.
const ADDRESS_SPACE_LIMIT: u64 = 3 << 30;

/// Spins in `NAME` (set with `-D`) forever.
const SPIN_C: &str = r#"
static volatile unsigned long sink;
__attribute__((noinline)) void NAME(void) { for (;;) sink++; }
int main(void) { NAME(); }
"#;

/// A directory in /tmp, owned by the attacker (`owner` 65534) or root-only (mode 0700).
fn directory(prefix: &str, attacker: bool) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("temp dir");
    let mode = if attacker { 0o755 } else { 0o700 };
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
    if attacker {
        give_to_nobody(dir.path());
    }
    dir
}

/// A symlink at `link` to `target`, owned by the attacker.
fn attacker_symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
    std::os::unix::fs::lchown(link, Some(NOBODY), Some(NOBODY)).expect("lchown");
}

fn mknod_char(path: &Path, mode: u32, major: u32, minor: u32) {
    let name = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: a NUL-terminated path; makedev is plain arithmetic.
    let made = unsafe {
        libc::mknod(
            name.as_ptr(),
            libc::S_IFCHR | mode,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        made,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Records processes `pids` for three seconds into folded `out`, as root, bounded (see
/// [`run_bounded`]); asserts a clean exit and returns the stacks.
fn record_bounded(pids: &[u32], out: &Path) -> Vec<FoldedStack> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut command = emberprof();
    command.args([
        "record",
        "-p",
        &pids.join(","),
        "-d",
        "3",
        "-F",
        "199",
        "-o",
    ]);
    command.arg(out);
    let recording = run_bounded(&mut command, ADDRESS_SPACE_LIMIT, HANG, || {});
    eprintln!(
        "emberprof: {}, peak RSS {} MiB, wall {:.1} s",
        recording.status,
        recording.peak_rss_bytes >> 20,
        recording.wall.as_secs_f64()
    );
    assert!(
        recording.status.success(),
        "emberprof ended with {}; stderr:\n{}",
        recording.status,
        recording.stderr
    );
    read_folded(out)
}

/// `open_in_root` accepts only regular files. A root-owned program run from a directory the attacker
/// can write (a shared build directory) names its debug file by `.gnu_debuglink`; the attacker makes
/// the `.debug` directory beside it a symlink to a directory holding a root-only character device
/// of that name (as `/dev/cpu/0/cpuid` is; here a node of /dev/zero, mode 0600). Accepted, the device
/// would be checked by CRC, read to its end, which never comes: the recording hung.
#[test]
fn a_device_named_as_a_debug_file_is_refused() {
    let _kernel = kernel_test();
    let shared = directory("emberprof-shared-build-", true);
    let exe = shared.path().join("victim");
    compile_c(
        "cc",
        &exe,
        SPIN_C,
        &["-DNAME=spin_with_debug_link", "-Wl,--build-id=none"],
    );
    // The debug link's CRC is of some file of that name; only the name matters here.
    let stand_in = directory("emberprof-debug-", false);
    let link_name = stand_in.path().join("victim.debug");
    std::fs::write(&link_name, b"stand-in").expect("write");
    run_build_tool(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(format!("--add-gnu-debuglink={}", link_name.display()))
            .arg(&exe),
        "apt-get install binutils",
    );
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let devices = directory("emberprof-root-devices-", false);
    mknod_char(&devices.path().join("victim.debug"), 0o600, 1, 5);
    attacker_symlink(devices.path(), &shared.path().join(".debug"));

    let victim = KillOnDrop(
        as_nobody(&exe)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux): {e}")),
    );
    std::thread::sleep(Duration::from_millis(300));
    let stacks = record_bounded(&[victim.pid()], &shared.path().join("out.folded"));
    assert!(
        total(&stacks, |s| s
            .frames
            .iter()
            .any(|f| f == "spin_with_debug_link"))
            > 0,
        "the program is not named from its own symbols:\n{}",
        describe(&stacks)
    );
}

/// The GNU build-id of ELF file `path`, as hex (from `readelf -n`).
fn build_id(path: &Path) -> String {
    let output = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run readelf: {e} (apt-get install binutils)"));
    let notes = String::from_utf8_lossy(&output.stdout);
    notes
        .lines()
        .find_map(|line| line.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("{} has no build-id:\n{notes}", path.display()))
        .to_owned()
}

/// A static program spinning in `function`, at `/NAME` in a new jail owned by the attacker, without
/// symbols; its debug file (`objcopy --only-keep-debug`) is returned with its build-id path
/// (`xx/yyyy.debug`) for the caller to place.
struct Jailed {
    jail: tempfile::TempDir,
    name: &'static str,
    debug_file: PathBuf,
    build_id_path: PathBuf,
}

impl Jailed {
    fn build(name: &'static str, function: &str, build_dir: &Path) -> Jailed {
        let jail = directory("emberprof-jail-", true);
        let exe = jail.path().join(name);
        compile_c(
            "cc",
            &exe,
            SPIN_C,
            &["-static", &format!("-DNAME={function}")],
        );
        let debug_file = build_dir.join(format!("{name}.debug"));
        run_build_tool(
            Command::new("objcopy")
                .arg("--only-keep-debug")
                .arg(&exe)
                .arg(&debug_file),
            "apt-get install binutils",
        );
        run_build_tool(
            Command::new("strip").arg("--strip-all").arg(&exe),
            "apt-get install binutils",
        );
        give_to_nobody(&exe);
        let id = build_id(&exe);
        let build_id_path = PathBuf::from(&id[..2]).join(format!("{}.debug", &id[2..]));
        Jailed {
            jail,
            name,
            debug_file,
            build_id_path,
        }
    }

    /// `usr/lib/debug/.build-id/xx` in the jail, made.
    fn build_id_dir(&self) -> PathBuf {
        let dir = self.jail.path().join("usr/lib/debug/.build-id");
        std::fs::create_dir_all(&dir).expect("mkdir build-id tree");
        dir
    }

    /// Runs the program in its jail as the attacker.
    fn start(&self) -> KillOnDrop {
        let child = Command::new("chroot")
            .arg(format!("--userspec={NOBODY}:{NOBODY}"))
            .arg(self.jail.path())
            .arg(format!("/{}", self.name))
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run chroot (coreutils): {e}"));
        KillOnDrop(child)
    }
}

/// Gives everything under `dir` (symlinks themselves included) to the attacker.
fn give_tree_to_nobody(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        std::os::unix::fs::lchown(&path, Some(NOBODY), Some(NOBODY)).expect("lchown");
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            give_tree_to_nobody(&path);
        }
    }
}

/// `RESOLVE_IN_ROOT`: paths in a process's view are resolved inside its root. Three programs run
/// chrooted in jails their user owns, without symbols. In `alpha`'s jail the build-id debug file is
/// an absolute symlink to a root-only debug file of the host, in `bravo`'s the build-id directory is
/// a `..` symlink climbing to the host's root-only directory: resolved on the host, either would name
/// their functions from files the attacker cannot read. `charlie`'s absolute symlink leads to its
/// own debug file inside its jail, which names it: the lookup works, inside the root.
#[test]
fn paths_in_a_chroot_stay_inside_it() {
    let _kernel = kernel_test();
    let secrets = directory("emberprof-root-only-", false);
    let build = directory("emberprof-build-", false);
    let alpha = Jailed::build("alpha", "host_secret_alpha", build.path());
    let bravo = Jailed::build("bravo", "host_secret_bravo", build.path());
    let charlie = Jailed::build("charlie", "in_jail_charlie", build.path());

    // alpha: usr/lib/debug/.build-id/xx/yyyy.debug -> /tmp/<root-only>/yyyy.debug
    let host_alpha = secrets
        .path()
        .join(alpha.build_id_path.file_name().expect("name"));
    std::fs::rename(&alpha.debug_file, &host_alpha).expect("place alpha's debug file");
    let dir = alpha
        .build_id_dir()
        .join(alpha.build_id_path.parent().expect("xx"));
    std::fs::create_dir_all(&dir).expect("mkdir xx");
    std::os::unix::fs::symlink(
        &host_alpha,
        alpha
            .jail
            .path()
            .join("usr/lib/debug/.build-id")
            .join(&alpha.build_id_path),
    )
    .expect("symlink");

    // bravo: usr/lib/debug/.build-id/xx -> ../../../../../../../../tmp/<root-only>
    let host_bravo = secrets
        .path()
        .join(bravo.build_id_path.file_name().expect("name"));
    std::fs::rename(&bravo.debug_file, &host_bravo).expect("place bravo's debug file");
    let climb =
        PathBuf::from("../".repeat(16)).join(secrets.path().strip_prefix("/").expect("absolute"));
    std::os::unix::fs::symlink(
        &climb,
        bravo
            .build_id_dir()
            .join(bravo.build_id_path.parent().expect("xx")),
    )
    .expect("symlink");

    // charlie: usr/lib/debug/.build-id/xx/yyyy.debug -> /debug/charlie.debug, in the jail
    std::fs::create_dir(charlie.jail.path().join("debug")).expect("mkdir");
    std::fs::rename(
        &charlie.debug_file,
        charlie.jail.path().join("debug/charlie.debug"),
    )
    .expect("place charlie's debug file");
    let dir = charlie
        .build_id_dir()
        .join(charlie.build_id_path.parent().expect("xx"));
    std::fs::create_dir_all(&dir).expect("mkdir xx");
    std::os::unix::fs::symlink(
        "/debug/charlie.debug",
        charlie
            .jail
            .path()
            .join("usr/lib/debug/.build-id")
            .join(&charlie.build_id_path),
    )
    .expect("symlink");

    for jailed in [&alpha, &bravo, &charlie] {
        give_tree_to_nobody(jailed.jail.path());
    }
    // The attacker cannot read the host's files, not even through its symlinks.
    let unreadable = as_nobody("/bin/cat")
        .arg(
            alpha
                .jail
                .path()
                .join("usr/lib/debug/.build-id")
                .join(&alpha.build_id_path),
        )
        .output()
        .expect("cat as the attacker");
    assert!(
        !unreadable.status.success(),
        "the attacker can read the host's debug file"
    );

    let victims = [alpha.start(), bravo.start(), charlie.start()];
    std::thread::sleep(Duration::from_millis(300));
    let pids: Vec<u32> = victims.iter().map(KillOnDrop::pid).collect();
    let stacks = record_bounded(&pids, &build.path().join("out.folded"));
    let of = |comm: &str, frame: &str| {
        total(&stacks, |s| {
            s.frames[0] == comm && s.frames.iter().any(|f| f.contains(frame))
        })
    };
    for comm in ["alpha", "bravo"] {
        assert!(
            of(comm, "") > 0,
            "{comm} was not sampled:\n{}",
            describe(&stacks)
        );
        assert_eq!(
            of(comm, "host_secret"),
            0,
            "{comm} was named from a root-only file of the host, reached from its jail:\n{}",
            describe(&stacks)
        );
    }
    assert!(
        of("charlie", "in_jail_charlie") > 0,
        "the debug file inside the jail did not name its program:\n{}",
        describe(&stacks)
    );
}

/// A `getrandom` that gives zeros, so the temporary output file's name can be known in advance (the
/// name a failed `getrandom` would leave guessable), and a constructor that holds emberprof before
/// `main` until the file `EMBERPROF_TEST_GO` exists, so the name is planted before it is created.
const PREDICTABLE_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
ssize_t getrandom(void *buffer, size_t length, unsigned int flags) {
    (void)flags;
    memset(buffer, 0, length);
    return (ssize_t)length;
}
__attribute__((constructor)) static void hold(void) {
    const char *go = getenv("EMBERPROF_TEST_GO");
    while (go && access(go, F_OK) != 0) usleep(10000);
}
"#;

/// Field 22 of `/proc/PID/stat`: the start time in clock ticks, as the temporary name has it.
fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    after_name
        .split_whitespace()
        .nth(19)
        .and_then(|field| field.parse().ok())
        .expect("start time")
}

/// `O_EXCL | O_NOFOLLOW` on the temporary output file. root writes its output into a directory the
/// attacker owns (`sudo emberprof record -o ~/flame.folded`); the attacker, knowing the temporary name,
/// plants there a file of its own, then (second run) a symlink to a root-only file. Created without
/// `O_EXCL`, the first would make the attacker the owner of root's output (and its reader while it
/// is written); without `O_EXCL | O_NOFOLLOW`, the second would write root's profile into the
/// root-only file and make it world-readable. With them, both are refused in one line, and neither
/// file is touched.
#[test]
fn a_planted_temporary_name_is_never_written_through() {
    let _kernel = kernel_test();
    let build = directory("emberprof-build-", false);
    let library = build.path().join("libpredictable.so");
    compile_c("cc", &library, PREDICTABLE_C, &["-shared", "-fPIC"]);
    let home = directory("emberprof-home-", true);
    let secrets = directory("emberprof-root-only-", false);
    let target = secrets.path().join("target");
    std::fs::write(&target, "root's own data\n").expect("write target");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let planted_file = home.path().join("planted");
    std::fs::write(&planted_file, "the attacker's file\n").expect("write planted file");
    give_to_nobody(&planted_file);

    type Plant = fn(&Path, &Path, &Path);
    let plants: [(&str, Plant); 2] = [
        ("a file of the attacker's", |name, _, planted| {
            std::fs::hard_link(planted, name).expect("link the attacker's file")
        }),
        ("a symlink to a root-only file", |name, target, _| {
            attacker_symlink(target, name)
        }),
    ];
    for (what, plant) in plants {
        let go = build.path().join("go");
        let _ = std::fs::remove_file(&go);
        let out = home.path().join("flame.folded");
        let child = emberprof()
            .env("LD_PRELOAD", &library)
            .env("EMBERPROF_TEST_GO", &go)
            .args(["record", "-d", "1", "-o"])
            .arg(&out)
            .args(["--", &example("burn"), "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run emberprof");
        let pid = child.id();
        let name = format!(
            ".flame.folded.emberprof-{pid}-{}-{:016x}.tmp",
            start_ticks(pid),
            0
        );
        plant(&home.path().join(&name), &target, &planted_file);
        std::fs::write(&go, "").expect("let emberprof go");
        let output = child.wait_with_output().expect("wait for emberprof");
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("{what}: emberprof {}: {stderr}", output.status);
        let target_meta = std::fs::metadata(&target).expect("target");
        assert_eq!(
            (
                std::fs::read_to_string(&target).expect("read target"),
                target_meta.mode() & 0o777
            ),
            ("root's own data\n".to_owned(), 0o600),
            "{what}: the root-only file was written through the planted name"
        );
        assert_eq!(
            std::fs::read_to_string(&planted_file).expect("read planted file"),
            "the attacker's file\n",
            "{what}: root's profile went into the attacker's file"
        );
        assert!(
            std::fs::metadata(&out).is_err(),
            "{what}: an output was put in place from the planted name"
        );
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.trim().lines().count() == 1 && stderr.contains("already exists"),
            "{what}: one line saying the name exists expected:\n{stderr}"
        );
        let _ = std::fs::remove_file(home.path().join(&name));
    }
}

/// One location of `go tool pprof -raw`: its function, file and line, innermost first.
type RawLocation = Vec<(String, String, u32)>;
/// Each sample of `go tool pprof -raw`: its count and location ids, innermost first.
type RawSamples = Vec<(u64, Vec<u64>)>;

/// A pprof file as Go's pprof reads it (`go tool pprof -raw`, no symbolization): each sample's
/// count and location ids (innermost first), and each location's lines by id.
fn go_pprof_raw(file: &Path) -> (RawSamples, std::collections::HashMap<u64, RawLocation>) {
    let go = find_in_path("go").expect(
        "this test reads pprof with Go's own tool: `apt-get install golang-go` (.ci/run installs it)",
    );
    let home = scratch();
    let output = Command::new(go)
        .args(["tool", "pprof", "-raw", "-symbolize=none"])
        .arg(file)
        .env("HOME", home.path())
        .env("GOCACHE", home.path().join("cache"))
        .output()
        .expect("run go tool pprof");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && text.contains("Locations"),
        "go tool pprof -raw failed:\n{}{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (samples_text, rest) = text.split_once("\nLocations\n").expect("Locations");
    let samples = samples_text
        .lines()
        .filter_map(|line| {
            let (values, ids) = line.split_once(':')?;
            let count = values.split_whitespace().next()?.parse().ok()?;
            let ids = ids
                .split_whitespace()
                .map(|id| id.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            (!ids.is_empty()).then_some((count, ids))
        })
        .collect();
    let locations_text = rest.split("\nMappings\n").next().unwrap_or(rest);
    let mut locations = std::collections::HashMap::new();
    let mut current: Option<u64> = None;
    // `ID: 0xADDR M=N FUNCTION FILE:LINE s=0`, then one such line without the id per inlined caller.
    let line_of = |words: &[&str]| -> Option<(String, String, u32)> {
        let (file, line) = words.get(1)?.rsplit_once(':')?;
        Some((words[0].to_owned(), file.to_owned(), line.parse().ok()?))
    };
    for line in locations_text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(id) = words.first().and_then(|w| w.strip_suffix(':')) {
            let id: u64 = id.parse().expect("location id");
            current = Some(id);
            let start = words
                .iter()
                .position(|w| w.starts_with("M="))
                .map_or(2, |m| m + 1);
            let entry: &mut RawLocation = locations.entry(id).or_default();
            entry.extend(line_of(&words[start..]));
        } else if let Some(id) = current {
            let entry: &mut RawLocation = locations.entry(id).or_default();
            entry.extend(line_of(&words));
        }
    }
    (samples, locations)
}

/// pprof output keeps what folded output shows: the source line of each frame (`--lines`), and a
/// `[truncated]` location outermost in each stack that does not reach an entry (the frameless
/// `burn-nofp` walked by frame pointers). Read by Go's own pprof, not emberprof's reader.
#[test]
fn pprof_has_source_lines_and_truncated_stacks() {
    let body_line = source_line("c/burn.c", "x = x * 6364136223846793005UL") as u32;
    let loop_line =
        source_line("c/burn.c", "for (unsigned long i = 0; i < iterations; i++)") as u32;
    let dir = scratch();
    let (folded, pprof) = (dir.path().join("t.folded"), dir.path().join("t.pb.gz"));
    {
        let _kernel = kernel_test();
        run_ok(&[
            "record",
            "--unwind",
            "fp",
            "--lines",
            "-F",
            "499",
            "-d",
            "2",
            "-o",
            path_arg(&folded),
            "-o",
            path_arg(&pprof),
            "--",
            &example("burn-nofp"),
            "2",
        ]);
    }
    let stacks = read_folded(&folded);
    let all = total(&stacks, |_| true);
    let truncated_folded = total(&stacks, |s| {
        s.frames.get(1).is_some_and(|f| f == "[truncated]")
    });
    assert!(
        all >= 100 && truncated_folded * 10 >= all * 9,
        "burn-nofp walked by frame pointers: {truncated_folded}/{all} truncated:\n{}",
        describe(&stacks)
    );
    let spin_folded = total(&stacks, |s| {
        s.frames.iter().any(|f| {
            f == &format!("spin (burn.c:{body_line})") || f == &format!("spin (burn.c:{loop_line})")
        })
    });
    assert!(
        spin_folded * 2 >= all,
        "spin with its line in {spin_folded}/{all}:\n{}",
        describe(&stacks)
    );

    let (samples, locations) = go_pprof_raw(&pprof);
    let named = |id: &u64, function: &str| {
        locations
            .get(id)
            .is_some_and(|lines| lines.iter().any(|(f, _, _)| f == function))
    };
    let truncated_pprof: u64 = samples
        .iter()
        .filter(|(_, ids)| ids.last().is_some_and(|id| named(id, "[truncated]")))
        .map(|(count, _)| count)
        .sum();
    assert_eq!(
        truncated_pprof, truncated_folded,
        "samples whose outermost pprof location is [truncated], against the folded output"
    );
    assert!(
        samples.iter().all(|(_, ids)| ids[..ids.len() - 1]
            .iter()
            .all(|id| !named(id, "[truncated]"))),
        "[truncated] is only ever the outermost location"
    );
    let spin_pprof: u64 = samples
        .iter()
        .filter(|(_, ids)| {
            ids.iter().any(|id| {
                locations.get(id).is_some_and(|lines| {
                    lines.iter().any(|(f, file, line)| {
                        f == "spin"
                            && file.ends_with("burn.c")
                            && (*line == body_line || *line == loop_line)
                    })
                })
            })
        })
        .map(|(count, _)| count)
        .sum();
    assert_eq!(
        spin_pprof, spin_folded,
        "samples through spin at its source line in pprof, against the folded output"
    );
}
