//! Programs nobody here wrote, built the way their users get them, under `--unwind dwarf`: OpenSSL's
//! hand-written assembly (CFI with expressions and CFAs on scratch registers), Python 3.12+ `-X perf`
//! trampolines, and V8 builtins without CFI called from JIT code.

use std::path::{Path, PathBuf};

use crate::support::*;

/// Share of OpenSSL samples whose stack must reach the program's entry.
const MIN_OPENSSL_COMPLETE: f64 = 0.95;
/// Share of Python samples that must carry the whole Python call chain.
const MIN_PYTHON_CHAIN: f64 = 0.80;
/// Share of node samples that may show an `[unknown]` frame between JIT code and the leaf.
const MAX_NODE_UNKNOWN_ABOVE_LEAF: f64 = 0.05;

/// Records `command` (run in `dir`) on `backend` with DWARF unwinding: the folded stacks of
/// processes named `comm`, as many as the command's CPU time calls for, and emberprof's stderr.
fn record_dwarf(
    backend: Backend,
    dir: &Path,
    comm: &str,
    command: &[&str],
) -> (Vec<FoldedStack>, String) {
    let folded = dir.join("out.folded");
    let args = backend
        .record()
        .args(&["-v"])
        .frequency(999)
        .unwind("dwarf")
        .output(&folded);
    let (output, cpu) = launch_measuring(Some(dir), &args.strs(), command);
    let stacks = rooted(&read_folded(&folded), |root| root == comm);
    assert_samples_match_cpu(comm, all_samples(&stacks), cpu, 999, &stacks);
    (stacks, stderr_text(&output))
}

/// The user frames of a stack, outermost first (without the process name and kernel frames).
fn user_frames(stack: &FoldedStack) -> Vec<&str> {
    stack.frames[1..]
        .iter()
        .map(String::as_str)
        .filter(|f| !f.ends_with("_[k]"))
        .collect()
}

both_backends! {
    /// `openssl speed rsa2048` spends its time in libcrypto's assembly (bignum Montgomery code), whose
    /// CFI computes the CFA from a stack pointer saved in the frame or from rax/rsi/r9/r11: nearly every
    /// stack must still reach `_start` (perf reaches it in all of them).
    fn openssl_assembly_unwinds_to_start(backend) {
        let _kernel = kernel_test();
        let openssl = debian_openssl();
        let entry = entry_point(&openssl);
        let dir = scratch();
        let (stacks, stderr) = record_dwarf(
            backend,
            dir.path(),
            "openssl",
            &[
                openssl.to_str().expect("UTF-8 path"),
                "speed",
                "-seconds",
                "2",
                "rsa2048",
            ],
        );
        let all = all_samples(&stacks);
        // Stripped: `_start` shows as `openssl+0xOFF`, a return address a few bytes past the entry point.
        let is_start = |frame: &str| {
            frame == "_start"
                || frame
                    .strip_prefix("openssl+0x")
                    .and_then(|offset| u64::from_str_radix(offset, 16).ok())
                    .is_some_and(|offset| (entry..entry + 0x40).contains(&offset))
        };
        let complete = total(&stacks, |s| {
            user_frames(s).first().is_some_and(|f| is_start(f))
        });
        assert!(
            complete as f64 >= MIN_OPENSSL_COMPLETE * all as f64,
            "only {complete}/{all} openssl stacks reach _start (entry {entry:#x}):\n{stderr}\n{}",
            describe(&stacks)
        );
        let bignum = total(&stacks, |s| {
            user_frames(s).contains(&"BN_mod_exp_mont_consttime_x2")
        });
        assert!(
            bignum * 20 >= all,
            "BN_mod_exp_mont_consttime_x2 in only {bignum}/{all} stacks:\n{}",
            describe(&stacks)
        );
    }
}

/// A Python 3.12 or 3.13 interpreter (for `-X perf`; Debian 12 has only 3.11).
fn python_with_perf_trampolines() -> PathBuf {
    python_interpreter_of(&["3.12", "3.13"])
}

both_backends! {
    /// Python 3.12+ `-X perf` runs each Python function through a small trampoline without CFI, named
    /// `py::function:file` in the perf map. Unwinding must step through them, so a sample in `c` shows
    /// the whole Python chain `<module>` → `a` → `b` → `c`, each under its own interpreter frame.
    fn python_perf_trampolines_keep_the_python_chain(backend) {
        let _kernel = kernel_test();
        let _maps = PerfMapCleanup::new();
        let python = python_with_perf_trampolines();
        let dir = scratch();
        let script = dir.path().join("chain.py");
        std::fs::write(
            &script,
            "import time\n\
             def c(n):\n    s = 0\n    for i in range(n):\n        s += i * i\n    return s\n\
             def b(n):\n    return c(n)\n\
             def a():\n    end = time.time() + 3\n    while time.time() < end:\n        b(20000)\n\
             a()\n",
        )
        .expect("write script");
        let comm = python
            .file_name()
            .and_then(|n| n.to_str())
            .expect("python file name")
            .to_owned();
        let (stacks, stderr) = record_dwarf(
            backend,
            dir.path(),
            &comm,
            &[
                python.to_str().expect("UTF-8 path"),
                "-X",
                "perf",
                script.to_str().expect("UTF-8 path"),
            ],
        );
        let all = all_samples(&stacks);
        let script_name = script.to_str().expect("UTF-8 path");
        let python_frame = |name: &str| format!("py::{name}:{script_name}_[j]");
        // The BPF backend walks the Python frames themselves: they replace the interpreter frames,
        // and the trampolines, which would name them twice, go (see tests/it/python.rs).
        let wanted: Vec<String> = match backend {
            Backend::Bpf => ["<module>", "a", "b", "c"]
                .iter()
                .map(|name| format!("{name}_[p]"))
                .collect(),
            Backend::Perf => ["<module>", "a", "b", "c"]
                .iter()
                .flat_map(|name| [python_frame(name), "_PyEval_EvalFrameDefault".to_owned()])
                .collect(),
        };
        // The Python frames and the interpreter frames between them, in order and nothing else of those
        // kinds in between (other native frames, e.g. the trampoline evaluator, may sit between them).
        let chain = total(&stacks, |s| {
            let kinds: Vec<&String> = s
                .frames
                .iter()
                .filter(|f| {
                    f.starts_with("py::") || *f == "_PyEval_EvalFrameDefault" || f.ends_with("_[p]")
                })
                .collect();
            kinds.len() >= wanted.len()
                && kinds[..wanted.len()]
                    .iter()
                    .zip(&wanted)
                    .all(|(a, b)| *a == b)
        });
        assert!(
            chain as f64 >= MIN_PYTHON_CHAIN * all as f64,
            "only {chain}/{all} samples carry {wanted:?}:\n{stderr}\n{}",
            describe(&stacks)
        );
    }
}

both_backends! {
    /// node's builtins are embedded in its text without CFI and are called from JIT code: a sample in
    /// one must return into the JIT caller, not into a made-up `[unknown]` frame.
    fn node_builtin_leaves_return_into_jit_code(backend) {
        let _kernel = kernel_test();
        let _maps = PerfMapCleanup::new();
        assert_node_installed();
        // node writes isolate-*.log into its working directory: a scratch one.
        let dir = scratch();
        let script = dir.path().join("maps.js");
        std::fs::write(
            &script,
            "function strwork(n) {\n  const m = new Map();\n  let s = 0;\n\
             \x20 for (let i = 0; i < n; i++) {\n    const k = 'k' + (i % 1000);\n\
             \x20   m.set(k, (m.get(k) || 0) + i);\n    s += m.get(k) & 7;\n  }\n  return s;\n}\n\
             const end = Date.now() + 3000;\nlet t = 0;\n\
             while (Date.now() < end) t += strwork(100000);\nif (t < 0) console.log(t);\n",
        )
        .expect("write script");
        let (stacks, _) = record_dwarf(
            backend,
            dir.path(),
            "node",
            &[
                "node",
                "--perf-basic-prof",
                script.to_str().expect("UTF-8 path"),
            ],
        );
        let all = all_samples(&stacks);
        let jit = total(&stacks, |s| s.frames.iter().any(|f| f.ends_with("_[j]")));
        assert!(
            jit * 2 >= all,
            "only {jit}/{all} samples under JIT code: the workload did not exercise the case:\n{}",
            describe(&stacks)
        );
        // An `[unknown]` anywhere below the innermost JIT frame: the leaf's return address was made up.
        let unknown_above_leaf = total(&stacks, |s| {
            let user = user_frames(s);
            let Some(last_jit) = user.iter().rposition(|f| f.ends_with("_[j]")) else {
                return false;
            };
            user[last_jit + 1..].contains(&"[unknown]")
        });
        assert!(
            unknown_above_leaf as f64 <= MAX_NODE_UNKNOWN_ABOVE_LEAF * all as f64,
            "{unknown_above_leaf}/{all} samples have an [unknown] frame between JIT code and the leaf:\n{}",
            describe(&stacks)
        );
    }
}
