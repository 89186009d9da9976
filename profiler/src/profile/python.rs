//! Where a sample's Python frames go among its native frames. Each native
//! `_PyEval_EvalFrameDefault` frame is replaced by the Python frames that call ran (3.8-3.10: one;
//! 3.11+: several, up to an entry frame), innermost call with innermost group; native frames
//! between interpreter calls (a builtin such as `sorted` calling back into Python) stay where they
//! are. The perf-map trampolines of `-X perf` (`py::function:file`) name the same Python calls again,
//! so they go. Python frames with no interpreter frame left to replace (the native stack was cut
//! short) go outside the outermost one that is there, or on top of the native frames when there
//! is none; a Python stack deeper than the walker's bound gets a marker where its outer frames are
//! missing.

use emberprof_symbolizer::{Frame, PythonStack};

/// What a native user frame is, as far as Python frames are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeKind {
    /// `_PyEval_EvalFrameDefault`: runs Python frames.
    Interpreter,
    /// A `-X perf` trampoline (`py::...` from the perf map): the Python call again.
    PerfTrampoline,
    Other,
}

/// The name of the interpreter's native frame that runs Python frames.
const INTERPRETER_FUNCTION: &str = "_PyEval_EvalFrameDefault";

impl NativeKind {
    /// The kind of a native frame named `name` (the function at the address, not its inlined
    /// callees), `jit` if it comes from a perf map.
    pub fn of(name: &str, jit: bool) -> NativeKind {
        if jit && name.starts_with("py::") {
            NativeKind::PerfTrampoline
        } else if name == INTERPRETER_FUNCTION
            || name
                .strip_prefix(INTERPRETER_FUNCTION)
                .is_some_and(|rest| rest.starts_with('.'))
        {
            // `.cold` and other compiler-split parts are the same call.
            NativeKind::Interpreter
        } else {
            NativeKind::Other
        }
    }
}

/// One frame of the merged stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// The native user frame at this index (innermost first, as in `user_ips`).
    Native(usize),
    Python(&'a Frame),
    /// Outer Python frames the walker did not reach.
    Truncated,
}

/// The merged user stack, outermost first. `kind(i)` is the kind of native frame `i` (innermost
/// first) of `native_len`.
pub fn interleave<'a>(
    native_len: usize,
    kind: impl Fn(usize) -> NativeKind,
    python: &'a PythonStack,
) -> Vec<Item<'a>> {
    let groups = python.by_native_call();
    let interpreters: Vec<usize> = (0..native_len)
        .filter(|&i| kind(i) == NativeKind::Interpreter)
        .collect();
    let matched = groups.len().min(interpreters.len());
    // Groups past the interpreter frames there are, and the marker, outermost first.
    let mut outer: Vec<Item<'a>> = Vec::new();
    if python.truncated {
        outer.push(Item::Truncated);
    }
    for group in groups[matched..].iter().rev() {
        outer.extend(group.iter().rev().map(|f| Item::Python(&f.frame)));
    }

    let mut items = Vec::with_capacity(native_len + python.frames.len() + 1);
    for index in (0..native_len).rev() {
        match kind(index) {
            NativeKind::PerfTrampoline => continue,
            NativeKind::Interpreter => {
                let call = interpreters.iter().position(|&i| i == index);
                match call.filter(|&call| call < matched) {
                    Some(call) => {
                        if call + 1 == matched {
                            items.append(&mut outer);
                        }
                        items.extend(groups[call].iter().rev().map(|f| Item::Python(&f.frame)));
                    }
                    // More interpreter calls than the walker saw groups for: stays native.
                    None => items.push(Item::Native(index)),
                }
            }
            NativeKind::Other => items.push(Item::Native(index)),
        }
    }
    items.append(&mut outer);
    items
}

#[cfg(test)]
mod tests {
    use emberprof_symbolizer::{FrameKind, PythonStackFrame};

    use super::*;

    fn python(frames: &[(&str, bool)], truncated: bool) -> PythonStack {
        PythonStack {
            frames: frames
                .iter()
                .map(|&(name, entry)| PythonStackFrame {
                    frame: Frame::new(name, FrameKind::User),
                    entry,
                })
                .collect(),
            truncated,
        }
    }

    /// The merged stack as names, outermost first; native frames by their name in `native`
    /// (innermost first).
    fn merged(native: &[&str], python: &PythonStack) -> Vec<String> {
        let kind = |i: usize| {
            let name = native[i];
            NativeKind::of(name.trim_start_matches("jit:"), name.starts_with("jit:"))
        };
        interleave(native.len(), kind, python)
            .into_iter()
            .map(|item| match item {
                Item::Native(i) => native[i].to_owned(),
                Item::Python(frame) => format!("{}_[p]", frame.name),
                Item::Truncated => "[cut]".to_owned(),
            })
            .collect()
    }

    /// 3.11: one interpreter call runs `<module>`, `outer`, `sort_py`; `sorted` (native) calls back
    /// into a second interpreter call running `key`. Native frames between stay.
    #[test]
    fn each_interpreter_frame_becomes_the_python_frames_it_ran() {
        let native = [
            "list_sort",
            "_PyEval_EvalFrameDefault",
            "builtin_sorted",
            "_PyEval_EvalFrameDefault",
            "Py_RunMain",
            "_start",
        ];
        // Innermost first: `key` is its call's entry, `<module>` the outer call's.
        let stack = python(
            &[
                ("key", true),
                ("sort_py", false),
                ("outer", false),
                ("<module>", true),
            ],
            false,
        );
        assert_eq!(
            merged(&native, &stack),
            [
                "_start",
                "Py_RunMain",
                "<module>_[p]",
                "outer_[p]",
                "sort_py_[p]",
                "builtin_sorted",
                "key_[p]",
                "list_sort"
            ]
        );
    }

    /// `-X perf` trampolines name the Python call again: they go, the interpreter frame is
    /// replaced as usual.
    #[test]
    fn perf_trampolines_are_not_duplicated() {
        let native = [
            "_PyEval_EvalFrameDefault",
            "jit:py::main:/app.py",
            "py_trampoline_evaluator",
            "_start",
        ];
        let stack = python(&[("main", true)], false);
        assert_eq!(
            merged(&native, &stack),
            ["_start", "py_trampoline_evaluator", "main_[p]"]
        );
    }

    /// A cut native stack: Python groups with no interpreter frame left go outside the outermost
    /// one; a cut Python stack is marked at its outer end; more interpreter frames than groups
    /// keep the outer ones native.
    #[test]
    fn leftovers_and_truncation_are_placed_outside() {
        let native = ["_PyEval_EvalFrameDefault", "call"];
        let stack = python(&[("c", true), ("b", true), ("a", true)], true);
        assert_eq!(
            merged(&native, &stack),
            ["call", "[cut]", "a_[p]", "b_[p]", "c_[p]"]
        );
        let no_interpreter = ["leaf", "[unknown]"];
        assert_eq!(
            merged(&no_interpreter, &python(&[("f", true)], false)),
            ["[unknown]", "leaf", "f_[p]"]
        );
        let more = [
            "_PyEval_EvalFrameDefault",
            "_PyEval_EvalFrameDefault.cold",
            "main",
        ];
        assert_eq!(
            merged(&more, &python(&[("f", true)], false)),
            ["main", "_PyEval_EvalFrameDefault.cold", "f_[p]"]
        );
    }
}
