//! Which functions a user stack legitimately begins in: the one definition of a *complete* stack.
//!
//! A user stack is complete when its outermost frame is the entry of a process or a thread: the
//! ELF entry (`_start`, also the name given to the entry point of a stripped executable), the C
//! library's start-up code, or the function a new thread starts in. Anything else means the unwind
//! stopped early (a frameless function under a frame-pointer walk, no unwind rule, a short stack
//! copy): the stack is *truncated*, and its outermost frame is not really a root. Folding marks such
//! stacks, the summary counts them, and `--unwind auto` may use the same rule to judge its choices;
//! this module must stay free of any other policy.
//!
//! A frame-pointer walk cannot see frameless callers, so glibc's stacks walked that way end one
//! level above the real entry: in `__libc_start_call_main` (which glibc 2.34 split out of
//! `__libc_start_main`, the outermost frame such walks gave before), or in `start_thread` (called by
//! the frameless `clone3`). Nothing of the program's own code is missing above them, so they count
//! as entries too.

use crate::frame::Symbol;

/// Outermost functions of complete stacks, by exact name.
const ENTRY_FUNCTIONS: &[&str] = &[
    // Process entry (crt1, also ld.so's own `_start`) and glibc's start-up.
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_main_alias_2",
    "__libc_start_call_main",
    // The dynamic loader's entry code calling constructors (`_dl_start_user` is a label in `_start`).
    "_dl_start_user",
    // glibc threads.
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "__clone_internal",
    "start_thread",
    // musl: `__clone` above, then its static thread entries; `_start_c` for the main thread.
    // (`start` is a plain name: a program's own outermost `start` passes for an entry too.)
    "start",
    "start_c",
    "_start_c",
    // Go: goroutine stacks, the main thread's g0 stack, other threads' g0 stacks.
    "runtime.goexit",
    "runtime.goexit.abi0",
    "runtime.rt0_go",
    "runtime.rt0_go.abi0",
    "runtime.mstart",
    "runtime.mstart.abi0",
];

/// Whether a function of this name is where a process or thread starts running. `name` may carry a
/// source location (` (file.c:12)`, from `--lines`).
pub fn is_stack_root(name: &str) -> bool {
    let function = name.split_once(" (").map_or(name, |(function, _)| function);
    ENTRY_FUNCTIONS.contains(&function) || is_rust_thread_start(function)
}

/// Rust std's thread entry, whose module path changes between releases
/// (`std::sys::unix::thread::Thread::new::thread_start` up to 1.78,
/// `std::sys::pal::unix::thread::..`, `std::sys::thread::unix::..` in 1.95; v0 mangling writes the
/// type as `<std::sys::thread::unix::Thread>`).
fn is_rust_thread_start(function: &str) -> bool {
    let path = function.trim_start_matches('<');
    path.starts_with("std::sys::")
        && (path.ends_with("::Thread::new::thread_start")
            || path.ends_with("::Thread>::new::thread_start"))
}

/// Whether a user stack whose outermost address symbolized to `outermost` is complete.
pub fn completes_stack(outermost: &Symbol) -> bool {
    match outermost {
        // The function containing the address comes first; inlined callees follow it.
        Symbol::Named(frames) => frames.first().is_some_and(|f| is_stack_root(&f.name)),
        Symbol::Unknown { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameKind, UnknownReason};
    use std::sync::Arc;

    fn named(names: &[&str]) -> Symbol {
        Symbol::Named(
            names
                .iter()
                .map(|name| Frame::new(*name, FrameKind::User))
                .collect(),
        )
    }

    /// Process and thread entries of glibc, musl, Rust and Go are roots, with or without a line.
    #[test]
    fn entries_are_roots() {
        for name in [
            "_start",
            "__libc_start_main_impl",
            "__libc_start_call_main",
            "clone3",
            "start_thread",
            "start_thread (pthread_create.c:442)",
            "std::sys::thread::unix::Thread::new::thread_start",
            "<std::sys::thread::unix::Thread>::new::thread_start",
            "std::sys::pal::unix::thread::Thread::new::thread_start",
            "runtime.goexit.abi0",
            "runtime.mstart",
        ] {
            assert!(is_stack_root(name), "{name}");
        }
    }

    /// Functions that merely happen to be outermost, and look-alikes, are not.
    #[test]
    fn other_functions_are_not_roots() {
        for name in [
            "main",
            "spin",
            "build_trtable",
            "_start_thread_helper",
            "my::start",
            "mystd::sys::Thread::new::thread_start",
            "__libc_start_call_main_wrapper",
            "",
        ] {
            assert!(!is_stack_root(name), "{name}");
        }
    }

    /// The function, not its inlined callees, decides; an unnamed frame never completes a stack.
    #[test]
    fn judges_the_outermost_symbol() {
        assert!(completes_stack(&named(&["_start", "_dl_start_final"])));
        assert!(!completes_stack(&named(&["main", "start_thread"])));
        assert!(!completes_stack(&Symbol::Unknown {
            module: Some(Arc::from("sort")),
            offset: 0x8911,
            reason: UnknownReason::NoSymbol,
        }));
        assert!(!completes_stack(&Symbol::Named(Vec::new())));
    }
}
