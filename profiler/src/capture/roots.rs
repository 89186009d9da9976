//! `--unwind auto`: one root per thread whichever way a stack was unwound.
//!
//! glibc calls `main` from `__libc_start_call_main` and thread functions from `start_thread`, both
//! frameless and both leaving a non-frame value in RBP (argc, or 0 after `clone3`). A frame-pointer
//! walk therefore ends at their return address, while a DWARF unwind carries on to `_start` or
//! `clone3`: the same program would show two towers. The BPF program copies the stack of a sample
//! whose frame-pointer chain ends at such a frameless return address R until R is *known*; this
//! module learns R's outer frames from those DWARF unwinds (redoing the frame-pointer walk on the
//! copied stack to find where the kernel's walk would have stopped), tells BPF that R is known, and
//! appends the learned frames to frame-pointer stacks ending at R.

use std::collections::HashMap;

use emberprof_symbolizer::{is_frameless, FramelessMapping, ProcessKey, StackCopy};

use crate::sample::StackSample;

/// Outer frames a root may have (`__libc_start_main_impl`, `_start`; `clone3`).
const MAX_ROOT_FRAMES: usize = 4;
/// Frames the kernel walks at most (`MAX_STACK_DEPTH`).
const MAX_WALK: usize = emberprof_bpf::MAX_STACK_DEPTH;

#[derive(Default)]
pub struct Roots {
    /// Frameless code of each judged process, as sent to BPF; `None`: every stack is copied.
    plans: HashMap<ProcessKey, Option<Vec<FramelessMapping>>>,
    /// Outer frames after each learned root; `None` once two unwinds disagreed.
    learned: HashMap<(ProcessKey, u64), Option<Vec<u64>>>,
}

/// What BPF must be told after a DWARF unwind: root `address` is now known, or no longer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootChange {
    pub address: u64,
    pub known: bool,
}

impl Roots {
    /// Entries held, for the debug log of long runs.
    pub fn sizes(&self) -> String {
        format!("{} plans, {} learned", self.plans.len(), self.learned.len())
    }

    /// The process's frameless code, as its plan in BPF; `None` when every stack is copied.
    pub fn set_plan(&mut self, key: ProcessKey, ranges: Option<Vec<FramelessMapping>>) {
        self.plans.insert(key, ranges);
    }

    pub fn has_plan(&self, key: ProcessKey) -> bool {
        self.plans.contains_key(&key)
    }

    /// An ended instance gets no new stacks: its plan is no longer needed (what was learned stays,
    /// for the stacks it already has).
    pub fn instance_ended(&mut self, key: ProcessKey) {
        self.plans.remove(&key);
    }

    /// Forgets an instance whose stacks are all completed (see [`Roots::complete`]); returns the roots
    /// BPF holds as known for it, to be removed there too. Plans and learned roots are per live (or
    /// not yet released) instance: bounded by the processes alive at once.
    pub fn release(&mut self, key: ProcessKey) -> Vec<u64> {
        self.plans.remove(&key);
        let mut known = Vec::new();
        self.learned.retain(|&(owner, root), outer| {
            if owner != key {
                return true;
            }
            if outer.is_some() {
                known.push(root);
            }
            false
        });
        known
    }

    /// Learns from one complete DWARF unwind (`frames`, innermost first) of a stack copy taken
    /// with registers `ip`/`bp`.
    pub fn learn(
        &mut self,
        key: ProcessKey,
        ip: u64,
        bp: u64,
        stack: StackCopy<'_>,
        frames: &[u64],
    ) -> Option<RootChange> {
        let ranges = self.plans.get(&key)?.as_ref()?;
        let root = chain_root(ranges, ip, bp, stack)?;
        let at = frames.iter().skip(1).position(|&f| f == root)? + 1;
        let outer = frames[at + 1..].to_vec();
        // Only start-up code is a root: a few frames, all frameless but the outermost (`_start`,
        // exempt from the frameless list, or `clone3`). A frameless function called from
        // frame-pointer code (libc's qsort under `run`) can end a chain too, with outer frames that
        // change from call to call: never learn it, its stacks stay copied.
        let start_up = outer.len() <= MAX_ROOT_FRAMES
            && outer.iter().rev().skip(1).all(|&f| is_frameless(ranges, f));
        if !start_up {
            return None;
        }
        match self.learned.get_mut(&(key, root)) {
            None => {
                self.learned.insert((key, root), Some(outer));
                Some(RootChange {
                    address: root,
                    known: true,
                })
            }
            Some(Some(known)) if *known != outer => {
                log::debug!("process {} root {root:#x}: outer frames differ", key.pid);
                self.learned.insert((key, root), None);
                Some(RootChange {
                    address: root,
                    known: false,
                })
            }
            Some(_) => None,
        }
    }

    /// Appends the learned outer frames to every stack that ends at a known root.
    pub fn complete(&self, samples: &mut [StackSample]) {
        if self.learned.is_empty() {
            return;
        }
        for sample in samples {
            let key = ProcessKey {
                pid: sample.pid,
                instance: sample.instance,
            };
            let Some(&last) = sample.user_ips.last() else {
                continue;
            };
            if let Some(Some(outer)) = self.learned.get(&(key, last)) {
                sample.user_ips.extend_from_slice(outer);
            }
        }
    }
}

/// Where the kernel's frame-pointer walk of this stack would end in frameless code: the frameless
/// return address after which the chain breaks (saved RBP 0, or not a frame on the copied stack).
/// `None` if the walk meets frameless code before (the stack is copied for that reason), never meets
/// any, or leaves the copy.
fn chain_root(ranges: &[FramelessMapping], ip: u64, bp: u64, stack: StackCopy<'_>) -> Option<u64> {
    if is_frameless(ranges, ip) {
        return None;
    }
    let mut fp = bp;
    for _ in 0..MAX_WALK {
        let [next, return_address] = read_frame(stack, fp)?;
        if is_frameless(ranges, return_address) {
            let outermost = next == 0 || read_frame(stack, next).is_none();
            return outermost.then_some(return_address);
        }
        fp = next;
    }
    None
}

/// The two words at `address` in the stack copy (which may start below sp: the red zone).
fn read_frame(stack: StackCopy<'_>, address: u64) -> Option<[u64; 2]> {
    let offset = usize::try_from(address.checked_sub(stack.start)?).ok()?;
    let bytes = stack.bytes.get(offset..offset.checked_add(16)?)?;
    let word = |b: &[u8]| b.try_into().ok().map(u64::from_ne_bytes);
    Some([word(&bytes[..8])?, word(&bytes[8..])?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    /// libc as a plan: frameless whole.
    fn libc_plan() -> Vec<FramelessMapping> {
        vec![FramelessMapping {
            range: LIBC,
            bias: LIBC.start,
            functions: None,
        }]
    }

    const KEY: ProcessKey = ProcessKey {
        pid: 7,
        instance: 1,
    };
    const SP: u64 = 0x7ffc_0000_1000;
    /// libc, frameless as a whole.
    const LIBC: Range<u64> = 0x7f00_0000_0000..0x7f00_0010_0000;
    const CALL_MAIN: u64 = 0x7f00_0000_124a;
    const START_MAIN: u64 = 0x7f00_0000_1305;
    const START: u64 = 0x5555_0000_10b1;

    /// A copy that starts at `SP`, as the perf backend takes it.
    fn at_sp(bytes: &[u8]) -> StackCopy<'_> {
        StackCopy { start: SP, bytes }
    }

    /// A stack as a frame-pointer program leaves it: leaf frame at `SP`, frames linked through RBP,
    /// `main`'s saved RBP = `main_saved_bp` (argc, as glibc leaves it), return into libc.
    fn stack(main_saved_bp: u64) -> (u64, Vec<u8>) {
        let words: [u64; 8] = [
            0,                // SP + 0: leaf's locals
            SP + 0x20,        // SP + 8: leaf frame: saved rbp -> run's frame
            0x5555_0000_1275, // return into run
            0,
            main_saved_bp, // SP + 0x20: run's frame... main's frame (simplified: one frame)
            CALL_MAIN,     // return into __libc_start_call_main
            START_MAIN,    // (what DWARF finds beyond)
            START,
        ];
        let bytes = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        (SP + 8, bytes)
    }

    fn dwarf_frames() -> Vec<u64> {
        vec![
            0x5555_0000_1180,
            0x5555_0000_1275,
            CALL_MAIN,
            START_MAIN,
            START,
        ]
    }

    /// The BPF copy starts at the red zone, 128 bytes below sp: frames are found by address from
    /// where the copy starts, so the same root is learned.
    #[test]
    fn learns_from_a_copy_that_starts_below_sp() {
        let mut roots = Roots::default();
        roots.set_plan(KEY, Some(libc_plan()));
        let (bp, bytes) = stack(2);
        let mut with_red_zone = vec![0xee_u8; 128];
        with_red_zone.extend_from_slice(&bytes);
        let copy = StackCopy {
            start: SP - 128,
            bytes: &with_red_zone,
        };
        assert_eq!(
            roots.learn(KEY, 0x5555_0000_1180, bp, copy, &dwarf_frames()),
            Some(RootChange {
                address: CALL_MAIN,
                known: true
            })
        );
    }

    #[test]
    fn learns_the_outer_frames_of_a_root_and_completes_stacks() {
        let mut roots = Roots::default();
        roots.set_plan(KEY, Some(libc_plan()));
        let (bp, bytes) = stack(2);
        let change = roots.learn(KEY, 0x5555_0000_1180, bp, at_sp(&bytes), &dwarf_frames());
        assert_eq!(
            change,
            Some(RootChange {
                address: CALL_MAIN,
                known: true
            })
        );
        // Learned once.
        assert_eq!(
            roots.learn(KEY, 0x5555_0000_1180, bp, at_sp(&bytes), &dwarf_frames()),
            None
        );
        let mut samples = vec![StackSample {
            pid: KEY.pid,
            tid: KEY.pid,
            instance: KEY.instance,
            process_name: "p".into(),
            thread_name: "p".into(),
            kernel_ips: Vec::new(),
            user_ips: vec![0x5555_0000_1190, 0x5555_0000_1275, CALL_MAIN],
            user_stack: crate::sample::UserStackSource::FramePointers,
            python: None,
            count: 1,
            off_cpu: false,
        }];
        roots.complete(&mut samples);
        assert_eq!(
            samples[0].user_ips,
            vec![
                0x5555_0000_1190,
                0x5555_0000_1275,
                CALL_MAIN,
                START_MAIN,
                START
            ]
        );
    }

    #[test]
    fn a_chain_that_goes_on_past_frameless_code_is_no_root() {
        let mut roots = Roots::default();
        roots.set_plan(KEY, Some(libc_plan()));
        // main's saved rbp points at a readable frame of the copy: the kernel would walk on.
        let (bp, bytes) = stack(SP + 0x30);
        assert_eq!(
            roots.learn(KEY, 0x5555_0000_1180, bp, at_sp(&bytes), &dwarf_frames()),
            None
        );
    }

    /// A frameless function called from frame-pointer code is no root, even when the chain ends
    /// there: its outer frames hold frame-pointer code.
    #[test]
    fn frameless_code_under_frame_pointer_code_is_no_root() {
        let mut roots = Roots::default();
        roots.set_plan(KEY, Some(libc_plan()));
        let (bp, bytes) = stack(2);
        let mut frames = dwarf_frames();
        // Outer frames: run (frame-pointer code), then libc and _start.
        frames.insert(3, 0x5555_0000_1300);
        assert_eq!(
            roots.learn(KEY, 0x5555_0000_1180, bp, at_sp(&bytes), &frames),
            None
        );
    }

    #[test]
    fn disagreeing_unwinds_forget_the_root() {
        let mut roots = Roots::default();
        roots.set_plan(KEY, Some(libc_plan()));
        let (bp, bytes) = stack(0);
        assert!(roots
            .learn(KEY, 0x5555_0000_1180, bp, at_sp(&bytes), &dwarf_frames())
            .is_some_and(|c| c.known));
        let mut other = dwarf_frames();
        other.insert(3, LIBC.start + 0x99);
        assert_eq!(
            roots.learn(KEY, 0x5555_0000_1180, bp, at_sp(&bytes), &other),
            Some(RootChange {
                address: CALL_MAIN,
                known: false
            })
        );
    }

    #[test]
    fn no_learning_without_a_plan_or_from_a_frameless_leaf() {
        let mut roots = Roots::default();
        let (bp, bytes) = stack(2);
        assert_eq!(
            roots.learn(KEY, 0x5555_0000_1180, bp, at_sp(&bytes), &dwarf_frames()),
            None
        );
        roots.set_plan(KEY, Some(libc_plan()));
        assert_eq!(
            roots.learn(KEY, LIBC.start + 5, bp, at_sp(&bytes), &dwarf_frames()),
            None
        );
    }
}
