//! Folding: symbolized stacks to `process;outermost;...;leaf COUNT` lines, the FlameGraph format.
//! User frames come first (outermost first), then kernel frames suffixed `_[k]`; inlined functions are
//! suffixed `_[i]`. A user stack that does not reach a process or thread entry gets a `[truncated]`
//! frame right under the root (see `truncation`). Lines are kept sorted so output is deterministic.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use emberprof_symbolizer::{FrameKind, Symbol, Symbolizer, UnknownReason};

use super::truncation::{is_truncated, Truncation, TRUNCATED_FRAME};
use crate::sample::StackSample;
use crate::symbols::symbolize_stacks;

#[derive(Clone, Copy, Debug, Default)]
pub struct FoldOptions {
    /// Root stacks at `threadname-PID/TID` instead of the process name.
    pub per_thread: bool,
}

/// Folded stacks and what folding them found.
#[derive(Debug, Default)]
pub struct Folded {
    /// Folded line (without count) to sample count, sorted.
    pub stacks: BTreeMap<String, u64>,
    /// Samples per reason for frames that could not be named (a sample counts once per such frame).
    pub unknown_frames: BTreeMap<UnknownReason, u64>,
    /// Samples whose user stack is truncated.
    pub truncated: Truncation,
}

impl Folded {
    pub fn total_samples(&self) -> u64 {
        self.stacks.values().sum()
    }

    /// The folded text, one `stack COUNT` line per distinct stack.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.stacks
            .iter()
            .map(|(stack, count)| format!("{stack} {count}"))
    }
}

/// Symbolizes every address of `samples` (see [`symbolize_stacks`]) and folds.
pub fn fold(samples: &[StackSample], symbolizer: &mut Symbolizer, options: FoldOptions) -> Folded {
    let symbols = symbolize_stacks(samples, symbolizer);
    let mut folded = Folded::default();
    let mut line = String::new();
    for sample in samples {
        line.clear();
        if options.per_thread {
            let _ = write!(
                line,
                "{}-{}/{}",
                sanitize(&sample.thread_name),
                sample.pid,
                sample.tid
            );
        } else {
            line.push_str(&sanitize(&sample.process_name));
        }
        folded.truncated.count_path(sample);
        // An empty user stack (a kernel thread) is not judged.
        if let Some(outermost) = symbols.user_outermost_first(sample).next() {
            if is_truncated(sample, outermost) {
                let _ = write!(line, ";{TRUNCATED_FRAME}");
                folded.truncated.count(sample, outermost, symbolizer);
            }
        }
        let user = symbols.user_outermost_first(sample).map(|s| (s, false));
        let kernel = symbols.kernel_outermost_first(sample).map(|s| (s, true));
        for (symbol, in_kernel) in user.chain(kernel) {
            append_symbol(&mut line, symbol, in_kernel);
            if let Symbol::Unknown { reason, .. } = symbol {
                *folded.unknown_frames.entry(*reason).or_default() += sample.count;
            }
        }
        *folded.stacks.entry(line.clone()).or_default() += sample.count;
    }
    folded
}

fn append_symbol(line: &mut String, symbol: &Symbol, in_kernel: bool) {
    let kernel_suffix = if in_kernel { "_[k]" } else { "" };
    match symbol {
        Symbol::Named(frames) => {
            for frame in frames {
                let suffix = match frame.kind {
                    FrameKind::Kernel => "_[k]",
                    FrameKind::Inlined => "_[i]",
                    FrameKind::Jit => "_[j]",
                    FrameKind::User => "",
                };
                let _ = write!(line, ";{}{suffix}", sanitize(&frame.name));
            }
        }
        Symbol::Unknown {
            module: Some(module),
            offset,
            ..
        } => {
            let _ = write!(line, ";{}+{offset:#x}{kernel_suffix}", sanitize(module));
        }
        Symbol::Unknown { module: None, .. } => {
            let _ = write!(line, ";[unknown]{kernel_suffix}");
        }
    }
}

/// A `;` would split a frame in two and a line break would end the line: replace both, and every
/// other control character (see [`crate::text::printable`]): names come from the profiled process.
/// Empty names (an unnamed thread) would make an empty frame.
fn sanitize(name: &str) -> std::borrow::Cow<'_, str> {
    if name.is_empty() {
        return "[unnamed]".into();
    }
    match crate::text::printable(name) {
        std::borrow::Cow::Borrowed(name) if !name.contains(';') => name.into(),
        printable => printable.replace(';', ":").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emberprof_symbolizer::Frame;
    use std::sync::Arc;

    fn named(name: &str, kind: FrameKind) -> Symbol {
        Symbol::Named(vec![Frame {
            name: Arc::from(name),
            kind,
        }])
    }

    /// User frames outermost first, then kernel frames marked `_[k]`; inlined frames marked `_[i]`;
    /// unknown frames as module+offset or [unknown].
    #[test]
    fn orders_and_marks_frames() {
        let mut line = String::from("proc");
        // Outermost user frame with an inlined callee, then an unknown one.
        append_symbol(
            &mut line,
            &Symbol::Named(vec![
                Frame {
                    name: Arc::from("main"),
                    kind: FrameKind::User,
                },
                Frame {
                    name: Arc::from("helper"),
                    kind: FrameKind::Inlined,
                },
            ]),
            false,
        );
        append_symbol(
            &mut line,
            &Symbol::Unknown {
                module: Some(Arc::from("libfoo.so")),
                offset: 0x1a2b,
                reason: UnknownReason::NoSymbol,
            },
            false,
        );
        append_symbol(&mut line, &named("do_syscall_64", FrameKind::Kernel), true);
        append_symbol(
            &mut line,
            &Symbol::Unknown {
                module: None,
                offset: 0xffff,
                reason: UnknownReason::UnknownKernelAddress,
            },
            true,
        );
        assert_eq!(
            line,
            "proc;main;helper_[i];libfoo.so+0x1a2b;do_syscall_64_[k];[unknown]_[k]"
        );
    }

    /// Separators inside names cannot break the format.
    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("a;b\nc"), "a:b c");
        assert_eq!(sanitize(""), "[unnamed]");
        assert_eq!(sanitize("std::vec::Vec<T>::push"), "std::vec::Vec<T>::push");
        assert_eq!(sanitize("a\r\tb;\u{1b}[31m"), "a  b:\u{FFFD}[31m");
        // Every C0 control: never a line break, a tab or the raw control in a folded frame.
        for code in 0u8..0x20 {
            let name = format!("x{}y", char::from(code));
            let clean = sanitize(&name);
            assert!(!clean.chars().any(char::is_control), "{code:#x}: {clean:?}");
            assert!(clean.starts_with('x') && clean.ends_with('y'), "{clean:?}");
        }
    }

    /// Folding a real process's own addresses: the root is the process name (or thread-PID/TID),
    /// frames come outermost first, counts of identical stacks add up, lines come out sorted.
    #[test]
    fn folds_real_addresses_of_this_process() {
        let pid = std::process::id();
        let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
        symbolizer
            .process_seen(emberprof_symbolizer::ProcessKey { pid, instance: 1 })
            .expect("snapshot of this test process");
        let leaf = folds_real_addresses_of_this_process as *const () as usize as u64;
        let caller = Symbolizer::new as *const () as usize as u64;
        let sample = |tid, count| StackSample {
            pid,
            tid,
            instance: 1,
            process_name: "tester".into(),
            thread_name: "worker;1".into(),
            kernel_ips: vec![],
            // A return address points after a call: the fold looks it up one byte earlier.
            user_ips: vec![leaf, caller + 1],
            // Not judged for truncation (see `truncation`'s tests).
            user_stack: crate::sample::UserStackSource::None,
            count,
        };
        let samples = [sample(7, 2), sample(7, 3), sample(8, 1)];

        let folded = fold(&samples, &mut symbolizer, FoldOptions::default());
        assert_eq!(folded.stacks.len(), 1, "{:?}", folded.stacks);
        let (line, count) = folded.stacks.iter().next().unwrap();
        assert_eq!(*count, 6);
        assert!(line.starts_with("tester;"), "{line}");
        let caller_at = line
            .find("Symbolizer::new")
            .unwrap_or_else(|| panic!("caller named: {line}"));
        let leaf_at = line
            .find("folds_real_addresses_of_this_process")
            .unwrap_or_else(|| panic!("leaf named: {line}"));
        assert!(caller_at < leaf_at, "outermost first: {line}");

        let folded = fold(&samples, &mut symbolizer, FoldOptions { per_thread: true });
        let roots: Vec<&str> = folded
            .stacks
            .keys()
            .map(|l| l.split(';').next().unwrap())
            .collect();
        assert_eq!(
            roots,
            [format!("worker:1-{pid}/7"), format!("worker:1-{pid}/8")]
        );
        assert_eq!(folded.lines().last().unwrap().rsplit(' ').next(), Some("1"));
    }
}
