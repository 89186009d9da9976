//! How user stacks are obtained, for both backends: the unwinding mode, the choice between a
//! frame-pointer walk and a DWARF unwind of a stack copy, and the counts of each way.

use emberprof_symbolizer::{is_frameless, FramelessCode, UnwindEnd, UnwindFailure};

/// How user stacks are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindMode {
    /// The kernel walks frame pointers (`bpf_get_stackid`).
    FramePointers,
    /// Every user stack is copied and unwound with DWARF CFI in userspace.
    Dwarf,
    /// Copied only where a frame-pointer walk would go wrong: processes with a frameless main
    /// executable, processes not judged yet, and samples whose frame-pointer chain meets a
    /// frameless function (see `needs_stack_copy` in the BPF program).
    Auto,
}

impl UnwindMode {
    pub fn name(self) -> &'static str {
        match self {
            UnwindMode::FramePointers => "fp",
            UnwindMode::Dwarf => "dwarf",
            UnwindMode::Auto => "auto",
        }
    }
}

/// Which of a sample's two user stacks to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStackChoice {
    Callchain,
    Dwarf,
}

/// A sample that carries both the kernel's frame-pointer callchain and a copy of the stack (the
/// perf_event backend): `auto` keeps the callchain unless it passes through frameless code — the
/// sampled instruction or a return address in a frameless module, or a frameless main executable
/// — where a frame-pointer walk skips or invents callers; there it unwinds the copy with DWARF.
/// Without a snapshot (`frameless` is `None`: the process was gone before it could be read) DWARF
/// has nothing to work with.
pub fn choose_user_stack(
    mode: UnwindMode,
    frameless: Option<&FramelessCode>,
    callchain: &[u64],
) -> UserStackChoice {
    match (mode, frameless) {
        (UnwindMode::FramePointers, _) | (_, None) => UserStackChoice::Callchain,
        (UnwindMode::Dwarf, Some(_)) => UserStackChoice::Dwarf,
        (UnwindMode::Auto, Some(plan)) => {
            if callchain
                .iter()
                .any(|&address| in_frameless_code(plan, address))
            {
                UserStackChoice::Dwarf
            } else {
                UserStackChoice::Callchain
            }
        }
    }
}

/// Whether the code at `address` keeps no frame pointers, by the symbolizer's judgement.
fn in_frameless_code(plan: &FramelessCode, address: u64) -> bool {
    match plan {
        FramelessCode::None => false,
        FramelessCode::Everywhere => true,
        FramelessCode::Mappings(mappings) => is_frameless(mappings, address),
    }
}

/// How user stacks were obtained, in samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Copied and unwound with DWARF to the root of the stack.
    pub dwarf_complete: u64,
    /// ... that ended because the copy was too short (`--stack-size`).
    pub dwarf_stack_copy_exhausted: u64,
    /// ... that ended where no unwind rule worked.
    pub dwarf_failed: u64,
    /// `dwarf_failed` by reason, indexed like [`UnwindFailure::ALL`].
    pub dwarf_failures: [u64; UnwindFailure::ALL.len()],
    /// ... of processes that were never snapshotted (only the sampled instruction is known).
    pub dwarf_unknown_process: u64,
    /// Walked by the kernel through frame pointers.
    pub frame_pointer: u64,
}

impl UnwindStats {
    pub fn dwarf_total(&self) -> u64 {
        self.dwarf_complete
            + self.dwarf_stack_copy_exhausted
            + self.dwarf_failed
            + self.dwarf_unknown_process
    }

    pub fn count(&mut self, end: UnwindEnd, samples: u64) {
        match end {
            UnwindEnd::Complete => self.dwarf_complete += samples,
            UnwindEnd::StackCopyExhausted => self.dwarf_stack_copy_exhausted += samples,
            UnwindEnd::Failed(reason) => {
                self.dwarf_failed += samples;
                if let Some(i) = UnwindFailure::ALL.iter().position(|&r| r == reason) {
                    self.dwarf_failures[i] += samples;
                }
            }
            UnwindEnd::UnknownProcess => self.dwarf_unknown_process += samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fp never unwinds; dwarf always when there is a snapshot; auto only where the callchain
    /// touches frameless code or the executable is frameless.
    #[test]
    fn chooses_user_stack() {
        use UserStackChoice::*;
        let whole = |range| emberprof_symbolizer::FramelessMapping {
            range,
            bias: 0,
            functions: None,
        };
        let ranges = FramelessCode::Mappings(vec![whole(0x7000..0x8000), whole(0x9000..0x9800)]);
        let through_libc = [0x1000, 0x7100, 0x1200];
        let fp_only = [0x1000, 0x1100];
        let cases = [
            (
                UnwindMode::FramePointers,
                Some(&ranges),
                &through_libc[..],
                Callchain,
            ),
            (
                UnwindMode::Dwarf,
                Some(&FramelessCode::None),
                &fp_only[..],
                Dwarf,
            ),
            (UnwindMode::Dwarf, None, &fp_only[..], Callchain),
            (UnwindMode::Auto, None, &through_libc[..], Callchain),
            (UnwindMode::Auto, Some(&ranges), &through_libc[..], Dwarf),
            (UnwindMode::Auto, Some(&ranges), &fp_only[..], Callchain),
            (
                UnwindMode::Auto,
                Some(&FramelessCode::Everywhere),
                &fp_only[..],
                Dwarf,
            ),
            (
                UnwindMode::Auto,
                Some(&FramelessCode::None),
                &through_libc[..],
                Callchain,
            ),
        ];
        for (mode, frameless, callchain, want) in cases {
            assert_eq!(
                choose_user_stack(mode, frameless, callchain),
                want,
                "{mode:?} {frameless:?} {callchain:x?}"
            );
        }
    }
}
