//! Python frames (issue 21): CPython's own call stack in place of its interpreter's native frames,
//! for every supported version as users run them (Debian's stripped `python3.11`, pyenv's 3.8 to
//! 3.13), with nothing asked of the process. The workloads (`examples/python/workload.py`) have
//! known call trees and run until they used their CPU time, so shares hold on a busy machine.

use std::path::Path;

use crate::support::*;

/// CPU seconds each workload burns.
const CPU_SECONDS: &str = "3";
/// Expected share of `outer > middle` among `outer`'s two subtrees (the rest is `sort_py`), and
/// the tolerance (±10 points).
const MIDDLE_SHARE: f64 = 0.75;
const SHARE_TOLERANCE: f64 = 0.10;

/// Records `python workload.py MODE CPU_SECONDS` with the BPF backend; the stacks of the Python
/// process (roots `python...`) and stderr.
fn record_python(python: &Path, mode: &str, extra: &[&str]) -> (Vec<FoldedStack>, String) {
    let python = path_arg(python);
    let mut command = vec![python];
    command.extend(extra);
    command.extend([PYTHON_WORKLOAD, mode, CPU_SECONDS]);
    let args = Backend::Bpf
        .record()
        .frequency(499)
        .output_stdout()
        .command(&command);
    let output = run_ok(&args.strs());
    let stacks = folded_stdout(&output);
    let stderr = stderr_text(&output);
    (rooted(&stacks, |root| root.starts_with("python")), stderr)
}

fn is_python(frame: &str) -> bool {
    frame.ends_with("_[p]")
}

/// Most samples have Python frames, and the summary names the version.
fn assert_python_frames(stacks: &[FoldedStack], stderr: &str, version: &str) {
    let all = all_samples(stacks);
    let with_python = total(stacks, |s| s.frames.iter().any(|f| is_python(f)));
    assert!(
        all >= 100 && with_python * 10 >= all * 9,
        "{with_python} of {all} samples have Python frames:\n{}\n{stderr}",
        describe(stacks)
    );
    assert!(
        stderr.contains(&format!("CPython {version}, ")),
        "the summary does not name CPython {version}:\n{stderr}"
    );
}

/// The call tree of `calltree`: 75 % under `outer > middle > inner`, 25 % under `outer > sort_py >
/// (native sorted) > key_py`, every Python chain whole and in order under the native entry.
fn assert_call_tree(python: &Path, version: &str) {
    let _kernel = kernel_test();
    let (stacks, stderr) = record_python(python, "calltree", &[]);
    assert_python_frames(&stacks, &stderr, version);
    let shown = describe(&stacks);
    let middle = total(&stacks, |s| s.has_frame("middle_[p]"));
    let sort = total(&stacks, |s| s.has_frame("sort_py_[p]"));
    let share = middle as f64 / (middle + sort).max(1) as f64;
    assert!(
        (share - MIDDLE_SHARE).abs() <= SHARE_TOLERANCE,
        "outer > middle has {:.0} % of outer's samples ({middle} against {sort} under sort_py), \
         75 % expected:\n{shown}",
        share * 100.0
    );
    // The Python frames of each stack, native ones left out, are the whole chain in order (3.8
    // to 3.10 run each Python call in native calls of its own, which sit between them).
    for stack in &stacks {
        let python: Vec<&str> = stack
            .frames
            .iter()
            .filter(|f| is_python(f))
            .map(|f| f.trim_end_matches("_[p]"))
            .collect();
        let expected: &[&str] = if stack.has_frame("middle_[p]") {
            &["<module>", "main", "outer", "middle", "inner", "spin"]
        } else if stack.has_frame("sort_py_[p]") {
            &["<module>", "main", "outer", "sort_py", "key_py", "spin"]
        } else {
            continue;
        };
        assert!(
            python.len() >= 4 && expected.starts_with(&python),
            "a broken chain: {}\n{shown}",
            stack.frames.join(";")
        );
    }
    // `sorted` is native code between two Python calls: it stays where it runs.
    let keys: Vec<&FoldedStack> = stacks
        .iter()
        .filter(|s| s.has_frame("key_py_[p]"))
        .collect();
    assert!(!keys.is_empty(), "no sample in key_py:\n{shown}");
    for stack in keys {
        let at = |name: &str| stack.frames.iter().position(|f| f == name);
        let native_between = matches!((at("sort_py_[p]"), at("key_py_[p]")), (Some(s), Some(k))
            if s < k && stack.frames[s + 1..k].iter().any(|f| !is_python(f)));
        assert!(
            native_between,
            "no native frame (sorted) between sort_py and key_py: {}\n{shown}",
            stack.frames.join(";")
        );
    }
    // Native roots stay: the stacks reach the process entry, with the interpreter's frames above.
    let complete = complete_user_share(&stacks);
    assert!(
        complete >= 0.9,
        "{:.0} % of stacks reach _start:\n{shown}",
        complete * 100.0
    );
}

/// Debian's stripped, static `python3.11`.
#[test]
fn call_tree_debian_python_3_11() {
    assert_call_tree(&debian_python(), "3.11");
}

/// pyenv's 3.8 (`f_back` chains, one native call per frame).
#[test]
fn call_tree_python_3_8() {
    assert_call_tree(&python_interpreter("3.8"), "3.8");
}

#[test]
fn call_tree_python_3_10() {
    assert_call_tree(&python_interpreter("3.10"), "3.10");
}

/// pyenv's 3.11 (shared libpython; `cframe->current_frame`, entry frames marked).
#[test]
fn call_tree_python_3_11() {
    assert_call_tree(&python_interpreter("3.11"), "3.11");
}

/// 3.12: shim frames of the C stack end each native call's frames.
#[test]
fn call_tree_python_3_12() {
    assert_call_tree(&python_interpreter("3.12"), "3.12");
}

/// 3.13: the layout comes from the process's own `_Py_DebugOffsets`.
#[test]
fn call_tree_python_3_13() {
    assert_call_tree(&python_interpreter("3.13"), "3.13");
}
