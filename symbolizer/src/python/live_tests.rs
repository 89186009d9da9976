//! Real interpreters read from outside: pyenv's 3.8–3.13 and Debian's `python3.11` run a script that
//! stops in a known call chain; the test finds the runtime through the process's snapshot, walks
//! its frames ([`super::walk`]) and names them ([`super::CodeReader`]), and checks names, files,
//! lines and where each native eval call's frames end, all against the script's own text; and a
//! threaded script, whose threads must be found by the ids the BPF walker matches them with.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::dwarf_check::{pyenv_build, pyenv_libpython, pyenv_version_dir};
use super::walk::{self, RawFrame};
use super::{find_runtime, CodeReader, PythonRuntime};
use crate::{ModuleTable, ProcessKey, ProcessTable};

/// The workload. Each mode stops in `Klass.inner`'s sleep through a different chain.
const SCRIPT: &str = r#"import sys, time
class Klass:
    def inner(self):
        print("ready", flush=True)
        time.sleep(600)  # @inner
def middle():
    Klass().inner()  # @middle
def key_py(x):
    if x == 2:
        Klass().inner()  # @key_py
    return x
def gen():
    yield Klass().inner()  # @gen
def recurse(n):
    if n == 0:
        Klass().inner()
    else:
        recurse(n - 1)  # @recurse
async def coro_inner():
    Klass().inner()  # @coro_inner
async def coro_outer():
    await coro_inner()  # @coro_outer
def outer():
    mode = sys.argv[1]
    if mode == "sorted":
        sorted([3, 2, 1], key=key_py)  # @outer_sorted
    elif mode == "generator":
        next(gen())  # @outer_generator
    elif mode == "async":
        import asyncio
        asyncio.run(coro_outer())  # @outer_async
    elif mode == "deep":
        recurse(300)
    else:
        middle()  # @outer_chain
outer()  # @module
"#;

/// The line of the `# @tag` comment in [`SCRIPT`].
fn line_of(tag: &str) -> u32 {
    let marker = format!("# @{tag}");
    SCRIPT
        .lines()
        .position(|line| line.ends_with(&marker))
        .map(|index| index as u32 + 1)
        .unwrap_or_else(|| panic!("no {marker} in the script"))
}

/// A running interpreter, killed on drop.
struct Running {
    child: Child,
    _dir: tempfile::TempDir,
    script: PathBuf,
    /// The lines it printed before `ready`.
    output: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `python` on [`SCRIPT`] in `mode` and waits until it sleeps in `Klass.inner`.
fn start(python: &Path, mode: &str) -> Running {
    start_with(python, SCRIPT, |python, script| {
        let mut command = Command::new(python);
        command.arg(script).arg(mode);
        command
    })
}

/// Runs `text` as a script through the command `wrap` makes of the interpreter and the script's
/// path, and waits until it has printed `ready` and every thread sleeps.
fn start_with(python: &Path, text: &str, wrap: impl FnOnce(&Path, &Path) -> Command) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("workload.py");
    std::fs::write(&script, text).expect("write script");
    let mut child = wrap(python, &script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let stdout = child.stdout.take().expect("stdout");
    let mut running = Running {
        child,
        _dir: dir,
        script,
        output: Vec::new(),
    };
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the workload's output");
        if line == "ready" {
            break;
        }
        running.output.push(line);
    }
    if running.child.try_wait().ok().flatten().is_some() {
        panic!("{} exited: {:?}", python.display(), running.output);
    }
    // "ready" is printed just before the sleep: wait until every thread blocks, so the frames
    // stand still where the script says.
    let tasks = format!("/proc/{}/task", running.child.id());
    let state = |stat: String| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
    };
    let sleeping = (0..1000).any(|_| {
        let all = std::fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .flatten()
            .all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                state(stat).as_deref() == Some("S")
            });
        all || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            false
        }
    });
    assert!(sleeping, "{} never went to sleep", python.display());
    running
}

/// The runtime of a running process, found as the profiler finds it.
fn runtime_of(pid: u32) -> PythonRuntime {
    let mut modules = ModuleTable::default();
    let mut table = ProcessTable::new(None);
    let key = ProcessKey { pid, instance: 0 };
    let snapshot = table
        .snapshot(key, None, &mut modules)
        .expect("snapshot the interpreter");
    find_runtime(pid, snapshot.mappings(), &modules)
        .expect("a supported CPython")
        .expect("the process is Python")
}

/// (qualname, file name, line, entry) of one frame.
type Named = (String, String, Option<u32>, bool);

/// The main thread's frames, innermost first.
fn named_frames(running: &Running) -> (PythonRuntime, Vec<Named>) {
    let (runtime, frames, truncated) = named_frames_of(running);
    assert!(!truncated, "the walk reached the outermost frame");
    (runtime, frames)
}

/// The main thread's frames, innermost first, and whether the walk was cut short.
fn named_frames_of(running: &Running) -> (PythonRuntime, Vec<Named>, bool) {
    let pid = running.child.id();
    let runtime = runtime_of(pid);
    let memory = super::ProcessMemory::open(pid).expect("open memory");
    let threads = walk::threads(&memory, &runtime);
    assert_eq!(threads.len(), 1, "one Python thread: {threads:?}");
    let thread = &threads[0];
    if let Some(native) = thread.native_thread_id {
        assert_eq!(
            native,
            u64::from(pid),
            "the main thread's native id is the PID"
        );
    }
    let mut reader = CodeReader::new(pid, &runtime).expect("code reader");
    let frames = thread
        .frames
        .iter()
        .map(
            |&RawFrame {
                 code,
                 instruction,
                 check,
                 entry,
             }| {
                // Every supported version's code objects carry the check the walker takes.
                assert_ne!(check, 0, "no check of code object {code:#x}");
                let frame = reader.frame(code, instruction, check);
                (
                    frame.qualname.to_string(),
                    frame.filename.to_string(),
                    frame.line,
                    entry,
                )
            },
        )
        .collect();
    (runtime, frames, thread.truncated)
}

/// The frames the script must show in `mode`, innermost first: (qualname on 3.11+, name before,
/// line tag, entry on 3.11+).
fn expected(mode: &str) -> Vec<(&'static str, &'static str, &'static str, bool)> {
    match mode {
        "chain" => vec![
            ("Klass.inner", "inner", "inner", false),
            ("middle", "middle", "middle", false),
            ("outer", "outer", "outer_chain", false),
            ("<module>", "<module>", "module", true),
        ],
        // `sorted` and `next` are C functions: the Python function they call runs in a native eval
        // call of its own.
        "sorted" => vec![
            ("Klass.inner", "inner", "inner", false),
            ("key_py", "key_py", "key_py", true),
            ("outer", "outer", "outer_sorted", false),
            ("<module>", "<module>", "module", true),
        ],
        _ => vec![
            ("Klass.inner", "inner", "inner", false),
            ("gen", "gen", "gen", true),
            ("outer", "outer", "outer_generator", false),
            ("<module>", "<module>", "module", true),
        ],
    }
}

fn check(python: &Path, version: (u8, u8)) {
    for mode in ["chain", "sorted", "generator"] {
        let running = start(python, mode);
        let (runtime, frames) = named_frames(&running);
        assert_eq!(runtime.version, version, "{}", python.display());
        let script = running.script.to_string_lossy().into_owned();
        let want: Vec<Named> = expected(mode)
            .into_iter()
            .map(|(qualname, name, tag, entry)| {
                let interpreter_frames = version >= (3, 11);
                (
                    if interpreter_frames { qualname } else { name }.to_owned(),
                    script.clone(),
                    Some(line_of(tag)),
                    // Before 3.11 each Python frame has its own native eval call.
                    entry || !interpreter_frames,
                )
            })
            .collect();
        assert_eq!(
            frames,
            want,
            "{} ({mode}): frames read from outside",
            python.display()
        );
        if let Some(eval) = &runtime.eval_frame {
            assert!(eval.start < eval.end, "{eval:x?}");
        }
    }
    check_async(python, version);
    check_deep(python, version);
}

/// A coroutine awaited by another under `asyncio.run`: both appear, in order, between the code
/// that started the loop and the function they call, whatever asyncio runs in between.
fn check_async(python: &Path, version: (u8, u8)) {
    let running = start(python, "async");
    let (_, frames) = named_frames(&running);
    let inner = if version >= (3, 11) {
        "Klass.inner"
    } else {
        "inner"
    };
    let wanted = [
        (inner, "inner"),
        ("coro_inner", "coro_inner"),
        ("coro_outer", "coro_outer"),
        ("outer", "outer_async"),
        ("<module>", "module"),
    ];
    let mut rest = frames.iter();
    for (name, tag) in wanted {
        assert!(
            rest.any(|f| f.0 == name && f.2 == Some(line_of(tag))),
            "{} (async): no {name} at line {} in order in {frames:?}",
            python.display(),
            line_of(tag)
        );
    }
}

/// Recursion past the walker's bound: the innermost MAX_FRAMES frames, marked truncated.
fn check_deep(python: &Path, version: (u8, u8)) {
    let running = start(python, "deep");
    let (_, frames, truncated) = named_frames_of(&running);
    assert!(
        truncated,
        "{}: 300 calls deep is past the bound",
        python.display()
    );
    assert_eq!(frames.len(), walk::MAX_FRAMES);
    let inner = if version >= (3, 11) {
        "Klass.inner"
    } else {
        "inner"
    };
    assert_eq!(frames[0].0, inner);
    for frame in &frames[2..] {
        assert_eq!(
            (frame.0.as_str(), frame.2),
            ("recurse", Some(line_of("recurse")))
        );
    }
}

/// Three threads each sleeping in their own function, the main thread joining them; every thread
/// reports its `pthread_self`, kernel thread id and `fs` base (`arch_prctl(ARCH_GET_FS)`).
const THREADS_SCRIPT: &str = r#"import ctypes, threading, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p]
def fs_base():
    value = ctypes.c_ulong()
    assert libc.syscall(158, 0x1003, ctypes.byref(value)) == 0
    return value.value
started = threading.Barrier(4)
lock = threading.Lock()
def report(name):
    with lock:
        print("thread", name, threading.get_ident(), threading.get_native_id(), fs_base(), flush=True)
def worker_a():
    report("worker_a"); started.wait(); time.sleep(600)
def worker_b():
    report("worker_b"); started.wait(); time.sleep(600)
def worker_c():
    report("worker_c"); started.wait(); time.sleep(600)
threads = [threading.Thread(target=f) for f in (worker_a, worker_b, worker_c)]
for t in threads:
    t.start()
started.wait()
report("main")
print("ready", flush=True)
for t in threads:
    t.join()
"#;

/// Every thread is found with the ids the walker matches threads by: `tstate->thread_id` is the
/// thread's `pthread_self()` and its `fs` base (what the BPF side reads from the task), and
/// `native_thread_id` (3.11+) its kernel id; each thread's frames are its own.
fn check_threads(python: &Path, version: (u8, u8)) {
    let running = start_with(python, THREADS_SCRIPT, |python, script| {
        let mut command = Command::new(python);
        command.arg(script);
        command
    });
    let pid = running.child.id();
    let runtime = runtime_of(pid);
    assert_eq!(runtime.version, version);
    let memory = super::ProcessMemory::open(pid).expect("open memory");
    let threads = walk::threads(&memory, &runtime);
    let mut reader = CodeReader::new(pid, &runtime).expect("code reader");
    assert_eq!(running.output.len(), 4, "{:?}", running.output);
    for line in &running.output {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, name, ident, native, fs] = fields[..] else {
            panic!("bad report {line:?}");
        };
        let (ident, native, fs): (u64, u64, u64) = (
            ident.parse().expect("ident"),
            native.parse().expect("native id"),
            fs.parse().expect("fs base"),
        );
        assert_eq!(ident, fs, "{name}: pthread_self is the fs base");
        let thread = threads
            .iter()
            .find(|t| t.thread_id == ident)
            .unwrap_or_else(|| {
                panic!("{name}: no thread state with thread_id {ident:#x}: {threads:x?}")
            });
        if version >= (3, 11) {
            assert_eq!(thread.native_thread_id, Some(native), "{name}");
        }
        let names: Vec<String> = thread
            .frames
            .iter()
            .map(|f| {
                reader
                    .frame(f.code, f.instruction, f.check)
                    .qualname
                    .to_string()
            })
            .collect();
        if name == "main" {
            assert_eq!(
                names.last().map(String::as_str),
                Some("<module>"),
                "{names:?}"
            );
        } else {
            // A worker may still be on its way out of the barrier into its sleep: its own
            // function is in its chain, called from Thread.run, whatever it runs at the moment.
            let at = names.iter().position(|n| n == name);
            let caller = at.and_then(|at| names.get(at + 1)).map(String::as_str);
            assert!(
                matches!(caller, Some("run" | "Thread.run")),
                "{name}: {names:?}"
            );
            assert!(names.iter().any(|n| n.ends_with("_bootstrap")), "{names:?}");
            // No other worker's function is in this thread's chain.
            let others = ["worker_a", "worker_b", "worker_c"]
                .into_iter()
                .filter(|w| *w != name);
            for other in others {
                assert!(!names.iter().any(|n| n == other), "{name}: {names:?}");
            }
        }
    }
    assert_eq!(threads.len(), 4, "{threads:x?}");
}

fn pyenv_python(minor: u8) -> PathBuf {
    pyenv_version_dir(minor).join(format!("bin/python3.{minor}"))
}

/// pyenv 3.8 read from outside: names, file, lines (lnotab), one frame per native eval call.
#[test]
fn python_live_3_8() {
    check(&pyenv_python(8), (3, 8));
    check_threads(&pyenv_python(8), (3, 8));
}

/// pyenv 3.9 read from outside (lnotab).
#[test]
fn python_live_3_9() {
    check(&pyenv_python(9), (3, 9));
    check_threads(&pyenv_python(9), (3, 9));
}

/// pyenv 3.10 read from outside (3.10 line table, f_lasti in code units).
#[test]
fn python_live_3_10() {
    check(&pyenv_python(10), (3, 10));
    check_threads(&pyenv_python(10), (3, 10));
}

/// pyenv 3.11 read from outside: qualified names, location table, `is_entry`.
#[test]
fn python_live_3_11() {
    check(&pyenv_python(11), (3, 11));
    check_threads(&pyenv_python(11), (3, 11));
}

/// pyenv 3.12 read from outside: shim frames end each native eval call's frames.
#[test]
fn python_live_3_12() {
    check(&pyenv_python(12), (3, 12));
    check_threads(&pyenv_python(12), (3, 12));
}

/// pyenv 3.13 read from outside through its own `_Py_DebugOffsets`.
#[test]
fn python_live_3_13() {
    check(&pyenv_python(13), (3, 13));
    check_threads(&pyenv_python(13), (3, 13));
}

/// Debian's stripped `/usr/bin/python3.11` (libpython linked in statically): found through the
/// executable's exported `_PyRuntime`, read with the 3.11 table.
#[test]
fn python_live_debian_3_11() {
    let python = Path::new("/usr/bin/python3.11");
    assert!(
        python.exists(),
        "{} is missing: install it with `apt-get install python3.11`",
        python.display()
    );
    check(python, (3, 11));
    check_threads(python, (3, 11));
}

/// A Python whose libpython exists only in the process's own mount namespace (as in a container):
/// the runtime is found through the file the process maps, not a path on the host.
#[test]
fn python_live_in_another_mount_namespace() {
    let python = pyenv_python(12);
    let library = pyenv_libpython(12);
    let private = tempfile::tempdir().expect("temp dir");
    let dir = private.path().to_owned();
    let running = start_with(&python, SCRIPT, |python, script| {
        // A tmpfs mounted in a new mount namespace holds the only copy of libpython the process
        // loads; on the host, the directory stays empty.
        let shell = format!(
            "mount -t tmpfs none {dir} && cp {library} {dir}/ && \
             LD_LIBRARY_PATH={dir} exec {python} {script} chain",
            dir = dir.display(),
            library = library.with_extension("so.1.0").display(),
            python = python.display(),
            script = script.display(),
        );
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private", "sh", "-c", &shell]);
        command
    });
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", running.child.id())).expect("maps");
    assert!(
        maps.contains(&format!("{}/libpython3.12.so.1.0", dir.display())),
        "the process maps the private copy: {maps}"
    );
    assert!(
        std::fs::read_dir(&dir).expect("list").next().is_none(),
        "the copy is not visible on the host"
    );
    let (runtime, frames) = named_frames(&running);
    assert_eq!(runtime.version, (3, 12));
    let names: Vec<&str> = frames.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["Klass.inner", "middle", "outer", "<module>"]);
}

/// What the snapshot of a process running `command` says about its Python, once the process has
/// mapped a module whose name contains `module`.
fn discover(mut command: Command, module: &str) -> Result<Option<PythonRuntime>, super::NotPython> {
    let mut child = command
        .stdout(Stdio::null())
        .spawn()
        .expect("start the process");
    let pid = child.id();
    let maps = format!("/proc/{pid}/maps");
    let mapped = (0..1000).any(|_| {
        std::fs::read_to_string(&maps).is_ok_and(|text| text.contains(module)) || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            false
        }
    });
    let result = mapped.then(|| {
        let mut modules = ModuleTable::default();
        let mut table = ProcessTable::new(None);
        let key = ProcessKey { pid, instance: 0 };
        let snapshot = table.snapshot(key, None, &mut modules).expect("snapshot");
        find_runtime(pid, snapshot.mappings(), &modules)
    });
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap_or_else(|| panic!("the process never mapped {module}"))
}

/// Interpreters older than 3.8 (pyenv's 2.7, 3.6, 3.7) are recognised and refused with their
/// version, for the summary.
#[test]
fn python_unsupported_versions_say_why() {
    for (version, library) in [
        ("2.7", "libpython2.7.so"),
        ("3.6", "libpython3.6m.so"),
        ("3.7", "libpython3.7m.so"),
    ] {
        let dir = pyenv_build(version, library);
        let mut command = Command::new(dir.join(format!("bin/python{version}")));
        command.args(["-c", "import time; time.sleep(600)"]);
        let (major, minor) = version.split_once('.').expect("x.y");
        let expected = (major.parse().expect("major"), minor.parse().expect("minor"));
        let result = discover(command, library);
        assert_eq!(
            result,
            Err(super::NotPython::UnsupportedVersion { version: expected }),
            "pyenv {version}"
        );
        let message = result.expect_err("refused").to_string();
        assert!(
            message.contains(&format!("CPython {version} is not supported")),
            "{message}"
        );
    }
}

/// A program that only has a Python-like name is not Python.
#[test]
fn python_named_program_without_runtime_is_not_python() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("python3.12");
    std::fs::copy("/bin/sleep", &fake).expect("copy sleep");
    let mut command = Command::new(&fake);
    command.arg("600");
    assert_eq!(discover(command, "python3.12"), Ok(None));
}

/// Under `-X perf` (3.12+), every Python call goes through a perf trampoline into a native eval
/// call of its own, so every frame is an entry frame; names and lines are unchanged.
#[test]
fn python_live_x_perf_makes_every_frame_an_entry() {
    for minor in [12u8, 13] {
        let python = pyenv_python(minor);
        let running = start_with(&python, SCRIPT, |python, script| {
            let mut command = Command::new(python);
            command.args(["-X", "perf"]).arg(script).arg("chain");
            command
        });
        let (_, frames) = named_frames(&running);
        let script = running.script.to_string_lossy().into_owned();
        let want: Vec<Named> = expected("chain")
            .into_iter()
            .map(|(qualname, _, tag, _)| {
                (
                    qualname.to_owned(),
                    script.clone(),
                    Some(line_of(tag)),
                    true,
                )
            })
            .collect();
        assert_eq!(frames, want, "3.{minor} -X perf");
    }
}

/// A Python in its own PID namespace (as in a container): `native_thread_id` is the namespace's
/// thread id (1 here), not the host's one the BPF side sees, while `thread_id` (pthread_self, the fs
/// base) does not depend on the namespace — which is why the walker matches threads by the latter.
#[test]
fn python_live_in_another_pid_namespace() {
    let python = pyenv_python(12);
    let running = start_with(&python, SCRIPT, |python, script| {
        let mut command = Command::new("unshare");
        command
            // Killing unshare (on drop) must kill the namespace's init, the Python, too.
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(python)
            .arg(script)
            .arg("chain");
        command
    });
    let parent = running.child.id();
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .expect("unshare's children");
    let pid: u32 = children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unshare has no child: {children:?}"));
    let stat = format!("/proc/{pid}/stat");
    let sleeping = (0..1000).any(|_| {
        std::fs::read_to_string(&stat).is_ok_and(|text| {
            text.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('S'))
        }) || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            false
        }
    });
    assert!(sleeping, "the namespaced python never went to sleep");
    let runtime = runtime_of(pid);
    let memory = super::ProcessMemory::open(pid).expect("open memory");
    let threads = walk::threads(&memory, &runtime);
    assert_eq!(threads.len(), 1, "{threads:x?}");
    assert_eq!(
        threads[0].native_thread_id,
        Some(1),
        "the namespace's own thread id"
    );
    assert_ne!(u64::from(pid), 1);
    assert_ne!(threads[0].thread_id, 0);
    let mut reader = CodeReader::new(pid, &runtime).expect("code reader");
    let names: Vec<String> = threads[0]
        .frames
        .iter()
        .map(|f| {
            reader
                .frame(f.code, f.instruction, f.check)
                .qualname
                .to_string()
        })
        .collect();
    assert_eq!(names, ["Klass.inner", "middle", "outer", "<module>"]);
}

/// What `find_runtime` says of `python` stopped right after its exec, before the dynamic loader
/// or the interpreter ran (as a launched process may be first seen), with the threads a walk finds
/// then.
fn discover_at_exec(python: &Path) -> (Result<Option<PythonRuntime>, super::NotPython>, usize) {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(python);
    command.args(["-c", "pass"]);
    // SAFETY: only async-signal-safe work between fork and exec: one ptrace call.
    unsafe {
        command.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start the interpreter");
    let pid = child.id();
    let mut status = 0;
    // SAFETY: waiting for our own child; the exec stops it with SIGTRAP.
    let waited = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    assert!(
        waited == pid as i32 && libc::WIFSTOPPED(status),
        "{} did not stop at its exec",
        python.display()
    );
    let mut modules = ModuleTable::default();
    let mut table = ProcessTable::new(None);
    let key = ProcessKey { pid, instance: 0 };
    let snapshot = table.snapshot(key, None, &mut modules).expect("snapshot");
    let result = find_runtime(pid, snapshot.mappings(), &modules);
    let threads = match &result {
        Ok(Some(runtime)) => {
            let memory = super::ProcessMemory::open(pid).expect("open memory");
            walk::threads(&memory, runtime).len()
        }
        _ => 0,
    };
    let _ = child.kill();
    let _ = child.wait();
    (result, threads)
}

/// A process seen at its exec, before anything ran: Debian's python3.11 (libpython inside the
/// executable) is found already, with no interpreter yet (nothing to walk, nothing refused); pyenv's
/// python3.12 (libpython not loaded yet) is not Python yet, so the caller looks again later.
#[test]
fn python_found_at_exec_or_later() {
    let (debian, threads) = discover_at_exec(Path::new("/usr/bin/python3.11"));
    let debian = debian
        .expect("Debian's python3.11 is supported")
        .expect("its _PyRuntime is in the executable");
    assert_eq!(debian.version, (3, 11));
    assert_eq!(threads, 0, "no interpreter before the process ran");
    assert_eq!(discover_at_exec(&pyenv_python(12)), (Ok(None), 0));
}
