//! Truncated user stacks: judged by the rule of `emberprof_symbolizer::stack_root` (the outermost
//! frame must be a process or thread entry), flagged on the profile's sample (folded output puts a
//! `[truncated]` frame under the root), and counted per unwinding path and per module where they
//! stop, for the summary.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use emberprof_symbolizer::{
    stack_root, FrameAddress, FrameKind, Symbol, Symbolizer, UnwindEnd, UnwindFailure, UserLocation,
};

use crate::sample::{StackSample, UserStackSource};

/// Samples by unwinding path, and those whose user stack is truncated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Truncation {
    /// Samples whose user stack was walked through frame pointers, truncated or not.
    pub frame_pointer_stacks: u64,
    /// Samples whose user stack was unwound with DWARF, truncated or not.
    pub dwarf_stacks: u64,
    /// Truncated, walked through frame pointers.
    pub frame_pointer: u64,
    /// Unwound with DWARF, by how the unwinder said it ended.
    pub dwarf: HashMap<UnwindEnd, u64>,
    /// By the module (basename) of the outermost frame: where the unwinding stopped.
    pub by_module: BTreeMap<Arc<str>, u64>,
}

impl Truncation {
    /// Adds the counts of `other` (the truncation of another part of the same capture).
    pub fn add(&mut self, other: Truncation) {
        self.frame_pointer_stacks += other.frame_pointer_stacks;
        self.dwarf_stacks += other.dwarf_stacks;
        self.frame_pointer += other.frame_pointer;
        for (end, count) in other.dwarf {
            *self.dwarf.entry(end).or_default() += count;
        }
        for (module, count) in other.by_module {
            *self.by_module.entry(module).or_default() += count;
        }
    }

    pub fn total(&self) -> u64 {
        self.frame_pointer + self.dwarf_total()
    }

    pub fn dwarf_total(&self) -> u64 {
        self.dwarf.values().sum()
    }

    pub fn dwarf_ended(&self, end: UnwindEnd) -> u64 {
        self.dwarf.get(&end).copied().unwrap_or(0)
    }

    /// Truncated DWARF unwinds that stopped for want of a working rule, by reason, most first.
    pub fn dwarf_failures(&self) -> Vec<(UnwindFailure, u64)> {
        let mut failures: Vec<(UnwindFailure, u64)> = self
            .dwarf
            .iter()
            .filter_map(|(end, count)| match end {
                UnwindEnd::Failed(reason) => Some((*reason, *count)),
                _ => None,
            })
            .collect();
        failures.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        failures
    }

    /// The modules where most truncated stacks stop, most first (ties by name).
    pub fn top_modules(&self, count: usize) -> Vec<(Arc<str>, u64)> {
        let mut modules: Vec<(Arc<str>, u64)> = self
            .by_module
            .iter()
            .map(|(module, samples)| (module.clone(), *samples))
            .collect();
        modules.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        modules.truncate(count);
        modules
    }

    /// Counts `sample` by its unwinding path, whatever its stack.
    pub fn count_path(&mut self, sample: &StackSample) {
        match sample.user_stack {
            UserStackSource::FramePointers => self.frame_pointer_stacks += sample.count,
            UserStackSource::Dwarf(_) => self.dwarf_stacks += sample.count,
            UserStackSource::None => {}
        }
    }

    /// Counts `sample` as truncated, stopping at `outermost` (its outermost user symbol).
    pub fn count(&mut self, sample: &StackSample, outermost: &Symbol, symbolizer: &Symbolizer) {
        match sample.user_stack {
            UserStackSource::FramePointers => self.frame_pointer += sample.count,
            UserStackSource::Dwarf(end) => *self.dwarf.entry(end).or_default() += sample.count,
            UserStackSource::None => {}
        }
        let module = stop_module(sample, outermost, symbolizer);
        *self.by_module.entry(module).or_default() += sample.count;
    }
}

/// Whether a sample's user stack, whose outermost address symbolized to `outermost`, is truncated.
/// Samples without a user stack (kernel threads, `--no-user`) are not judged.
pub fn is_truncated(sample: &StackSample, outermost: &Symbol) -> bool {
    sample.user_stack != UserStackSource::None && !stack_root::completes_stack(outermost)
}

/// Basename of the module holding the outermost user address of `sample`.
fn stop_module(sample: &StackSample, outermost: &Symbol, symbolizer: &Symbolizer) -> Arc<str> {
    if let Symbol::Unknown {
        module: Some(module),
        ..
    } = outermost
    {
        return module.clone();
    }
    if let Symbol::Named(frames) = outermost {
        if frames.first().is_some_and(|f| f.kind == FrameKind::Jit) {
            return Arc::from("[JIT code]");
        }
    }
    let Some(index) = sample.user_ips.len().checked_sub(1) else {
        return Arc::from("[unknown]");
    };
    let address = FrameAddress::from_stack_index(index, sample.user_ips[index]).lookup_address();
    match symbolizer
        .processes()
        .get(sample.process())
        .map(|snapshot| snapshot.locate(address))
    {
        Some(UserLocation::Module { module, .. }) => {
            symbolizer.modules().get(module).display_name.clone()
        }
        Some(UserLocation::UnreadableModule { name, .. }) => name,
        _ => Arc::from("[unknown]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{fold, FoldOptions};
    use crate::profile::{build, Metadata};
    use emberprof_symbolizer::ProcessKey;

    /// The address of a function of this process found by its symbol name.
    fn function_address(name: &std::ffi::CStr) -> u64 {
        // SAFETY: dlsym with a valid C string on the default namespace.
        let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        assert!(!address.is_null(), "{name:?} not found");
        address as u64
    }

    /// Folding real addresses of this process: a stack whose outermost frame is the C library's
    /// start-up is complete; one that stops in an ordinary function gets `[truncated]` right under
    /// the root and is counted by path and module; a kernel-only sample is not judged.
    #[test]
    fn marks_and_counts_truncated_stacks() {
        let pid = std::process::id();
        let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
        let process = ProcessKey { pid, instance: 1 };
        symbolizer
            .process_seen(process)
            .expect("snapshot of this test process");
        let leaf = marks_and_counts_truncated_stacks as *const () as usize as u64;
        // Return addresses inside the callers (looked up one byte earlier).
        let ordinary = function_address(c"qsort") + 1;
        let entry = function_address(c"__libc_start_main") + 1;
        let sample = |tid, user_ips: Vec<u64>, user_stack, count| StackSample {
            pid,
            tid,
            instance: 1,
            process_name: "tester".into(),
            thread_name: "t".into(),
            kernel_ips: vec![],
            user_ips,
            user_stack,
            python: None,
            count,
            off_cpu: false,
        };
        let samples = [
            sample(1, vec![leaf, entry], UserStackSource::FramePointers, 5),
            sample(2, vec![leaf, ordinary], UserStackSource::FramePointers, 3),
            sample(
                3,
                vec![leaf, ordinary],
                UserStackSource::Dwarf(UnwindEnd::StackCopyExhausted),
                2,
            ),
            sample(4, vec![], UserStackSource::None, 7),
        ];

        let profile = build(&samples, &mut symbolizer, Metadata::default());
        let folded = fold(&profile, &FoldOptions::default()).expect("fold");
        let lines: Vec<String> = folded.lines().collect();
        let truncated: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("tester;[truncated];"))
            .collect();
        assert_eq!(truncated.len(), 1, "{lines:#?}");
        assert!(truncated[0].contains("qsort"), "{lines:#?}");
        assert!(truncated[0].ends_with(" 5"), "{lines:#?}");
        assert_eq!(
            lines.iter().filter(|l| l.contains("[truncated]")).count(),
            1,
            "only right under the root: {lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("tester;__libc_start_main")),
            "{lines:#?}"
        );
        assert!(lines.contains(&"tester 7".to_owned()), "{lines:#?}");

        let counted = &profile.metadata.truncation;
        assert_eq!(counted.frame_pointer_stacks, 8);
        assert_eq!(counted.dwarf_stacks, 2);
        assert_eq!(counted.frame_pointer, 3);
        assert_eq!(counted.dwarf_ended(UnwindEnd::StackCopyExhausted), 2);
        assert_eq!(counted.total(), 5);
        let (module, samples) = &counted.top_modules(1)[0];
        assert!(module.starts_with("libc.so"), "{module}");
        assert_eq!(*samples, 5);
    }
}
