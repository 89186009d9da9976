//! What a long recording keeps, as two small policies of `MergedProfile`: which processes keep
//! their pid and tid labels ([`LabelBudget`]) and when the profile gives up exact addresses for one
//! location per code point ([`Compaction`]). Both bound the profile by what its output shows rather
//! than by the run's length or the processes it saw.

use std::collections::HashSet;

use super::Profile;

/// How many processes (pids) keep their pid and tid labels. Each costs about a hundred bytes
/// (a sample, its index entry, a stack node or two) per distinct stack it had: some MB in all.
pub const LABELLED_PROCESSES: usize = 10_000;

/// How many distinct addresses get a location of their own: a 10 s capture of one program has
/// some thousands, a busy machine's `--all` reaches it in minutes.
pub const EXACT_LOCATIONS: usize = 16_384;

/// How many samples (distinct stack and labels) the profile holds with exact addresses: at about a
/// hundred bytes each, ~2 MB; a capture of one program stays far below it.
pub const EXACT_SAMPLES: usize = 16_384;

/// Default `--max-profile-size`: the most bytes (estimated) the profile holds while recording.
/// What a profiled program can make it hold is otherwise unbounded (distinct stacks, JIT names):
/// `--all` beside a release build of this workspace (rustc's deep, often truncated stacks) held
/// 24 MB after 150 s and grew all along. Past it the heaviest samples stay whole (see
/// `intern::prune`), so the flame graph keeps what takes the time; a 10 s capture of one program
/// (some thousand distinct stacks at most) holds about 1 MB or less by the same estimate.
pub const MAX_PROFILE_BYTES: u64 = 16 << 20;

/// Whether samples keep their pid and tid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedLabels {
    /// Every one (`--per-thread`: a tower per thread needs them).
    All,
    /// Those of the first [`LABELLED_PROCESSES`] processes.
    Bounded,
}

/// Which processes keep their pid and tid: the first [`LABELLED_PROCESSES`] met, running or
/// ended; later ones are merged by process name, thread name and stack, so that a fork-heavy
/// machine adds new stacks, not a copy of the same stacks per process (a process still running at
/// a map switch is a new pid there too).
#[derive(Debug)]
pub struct LabelBudget {
    /// The running processes whose samples keep their labels; `None`: every process keeps them.
    labelled_pids: Option<HashSet<u32>>,
    /// Processes given labels so far, running or ended. Counted apart from the pids: a pid is
    /// reused by later processes, which must not inherit its labels.
    given: usize,
    pub(super) budget: usize,
}

impl LabelBudget {
    pub fn new(labels: EndedLabels) -> Self {
        LabelBudget {
            labelled_pids: match labels {
                EndedLabels::All => None,
                EndedLabels::Bounded => Some(HashSet::new()),
            },
            given: 0,
            budget: LABELLED_PROCESSES,
        }
    }

    /// Whether every process keeps its labels (`--per-thread`).
    pub fn keeps_all(&self) -> bool {
        self.labelled_pids.is_none()
    }

    /// Removes pid and tid from the samples of pids past the budget; how many distinct pids that
    /// was.
    pub fn strip(&mut self, part: &mut Profile) -> u64 {
        let Some(labelled) = &mut self.labelled_pids else {
            return 0;
        };
        let mut stripped = HashSet::new();
        for sample in &mut part.samples {
            let Some(pid) = sample.pid else {
                continue;
            };
            let keep = if labelled.contains(&pid) {
                true
            } else if self.given < self.budget {
                labelled.insert(pid);
                self.given += 1;
                true
            } else {
                false
            };
            if !keep {
                stripped.insert(pid);
                sample.pid = None;
                sample.tid = None;
            }
        }
        stripped.len() as u64
    }

    /// The processes of `part` have ended: their pids may come back as other processes.
    pub fn ended(&mut self, part: &Profile) {
        if let Some(labelled) = &mut self.labelled_pids {
            for pid in part.samples.iter().filter_map(|s| s.pid) {
                labelled.remove(&pid);
            }
        }
    }
}

/// When to compact: once there are [`EXACT_LOCATIONS`] locations or [`EXACT_SAMPLES`] samples
/// (the samples that exact addresses multiply, one per combination of instructions hit, usually
/// reach their bound first). Folded stacks and SVG show frames, not addresses, so compaction
/// changes only pprof, where samples that differed only in the instruction they hit become one.
#[derive(Clone, Copy, Debug)]
pub struct Compaction {
    pub locations: usize,
    pub samples: usize,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            locations: EXACT_LOCATIONS,
            samples: EXACT_SAMPLES,
        }
    }
}

impl Compaction {
    pub fn due(&self, profile: &Profile) -> bool {
        profile.locations.len() >= self.locations || profile.samples.len() >= self.samples
    }
}
