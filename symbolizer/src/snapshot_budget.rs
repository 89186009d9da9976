//! The work budget of snapshots: how much of the recording loop reading processes' memory maps may
//! take, and the mappings postponed past it.
//!
//! A snapshot opens every module its process maps that the table does not hold yet (open in the
//! process's root, `fstat`, a private copy if its owner can change it, a look for debug
//! information): about 0.4 ms each. A process that maps 20,000 distinct one-page files made one
//! snapshot take 9 s on the loop that also drains the ring buffer and watches for a stop signal.
//! So the caller gives each round of its loop a budget of CPU time ([`SnapshotBudget::start_round`]:
//! CPU time of the thread, not wall time, which a busy machine stretches whatever is done; and
//! [`WALL_FACTOR`] times as much wall time, for work that blocks rather than computes); past
//! it, the file mappings a snapshot has not reached are kept as [`Postponed`] (named
//! `file+0xOFFSET` meanwhile), opened in later rounds, smallest snapshots first, or at once when a
//! sample's address falls in one while the round still has time. So that an ordinary process (a
//! program, its libraries, a runtime's extensions) is not split when it is seen late in a round, a
//! snapshot may go on past the deadline to its first [`WHOLE_SNAPSHOT_MAPPINGS`] file mappings, as
//! long as the round's overdraft (as many, for all snapshots of the round) lasts: a round takes at
//! most its deadline plus that many openings (~100 ms of a hostile process's files). Without a
//! deadline (`report`, tests) nothing is postponed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::maps::MapsEntry;

/// File mappings a snapshot may open past its round's deadline, and all snapshots of a round
/// together: more than the executable mappings of python3 with its extensions, a JVM or node (tens
/// to a few hundred), and ~100 ms of opening a hostile process's distinct files.
pub const WHOLE_SNAPSHOT_MAPPINGS: usize = 256;

/// Wall time a round may take, as a multiple of its CPU time: a machine shared with builds (a load
/// of 4 on 2 cores) stretches CPU work twice or more, while opening files that block on a slow
/// disk costs wall time and hardly any CPU.
pub const WALL_FACTOR: u32 = 4;

/// What the budget did over the session, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotBudgetStats {
    /// Snapshots that had file mappings postponed.
    pub snapshots_postponed: u64,
    /// File mappings postponed past a round's deadline.
    pub postponed: u64,
    /// Postponed mappings opened in a later round, or for a sample's address.
    pub opened_later: u64,
    /// Postponed mappings never opened: their process ended (or exec'd) first. Frames in them
    /// are named `file+0xOFFSET`.
    pub dropped: u64,
    /// Mapping records (see `mapping_records`) that came past a round's budget.
    pub records_postponed: u64,
    /// ... of which merged in a later round.
    pub records_merged_later: u64,
    /// Mapping records never merged: past the per-process limit while waiting, or their process
    /// was released first.
    pub records_dropped: u64,
}

/// The deadline of the current round, and the books.
#[derive(Debug, Default)]
pub struct SnapshotBudget {
    /// In the thread's CPU time, and in wall time.
    deadline: Option<(Duration, Instant)>,
    /// Openings past the deadline left to this round.
    overdraft: usize,
    pub stats: SnapshotBudgetStats,
}

impl SnapshotBudget {
    /// A round of the caller's loop begins: snapshot work may take `work` of this thread's CPU
    /// time from now.
    pub fn start_round(&mut self, work: Duration) {
        self.deadline = Some((
            thread_cpu_time() + work,
            Instant::now() + work * WALL_FACTOR,
        ));
        self.overdraft = WHOLE_SNAPSHOT_MAPPINGS;
    }

    /// Whether a snapshot that opened `opened` file mappings so far may open one more.
    pub fn may_open(&mut self, opened: usize) -> bool {
        if !self.spent() {
            return true;
        }
        if opened < WHOLE_SNAPSHOT_MAPPINGS && self.overdraft > 0 {
            self.overdraft -= 1;
            return true;
        }
        false
    }

    /// A budget with nothing left: its round's deadline passed and its overdraft is used up.
    #[cfg(test)]
    pub fn used_up() -> SnapshotBudget {
        SnapshotBudget {
            deadline: Some((thread_cpu_time(), Instant::now())),
            overdraft: 0,
            stats: SnapshotBudgetStats::default(),
        }
    }

    /// Whether the round's time is used up (never, without a deadline).
    pub fn spent(&self) -> bool {
        self.deadline
            .is_some_and(|(cpu, wall)| Instant::now() >= wall || thread_cpu_time() >= cpu)
    }
}

/// CPU time the calling thread has used (a system call: checked once per file opened, which costs
/// a thousand times more); also what the recording loop measures its iterations by.
pub fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid clock id and out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// A file mapping of a snapshot whose module was not opened yet (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postponed {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub inode: u64,
    /// As `/proc/PID/maps` showed it.
    pub path: Arc<str>,
    /// Basename, for frames named `file+0xOFFSET` until it is opened.
    pub name: Arc<str>,
}

impl Postponed {
    pub fn of(entry: &MapsEntry) -> Postponed {
        Postponed {
            start: entry.start,
            end: entry.end,
            offset: entry.offset,
            inode: entry.inode,
            path: Arc::from(entry.path.as_str()),
            name: display_name(&entry.path).into(),
        }
    }

    pub fn contains(&self, address: u64) -> bool {
        (self.start..self.end).contains(&address)
    }
}

/// The basename of a mapped path, as frames without a module show it.
pub fn display_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned())
}

/// The postponed mapping that holds `address`, in `postponed` sorted by start.
pub fn postponed_at(postponed: &[Postponed], address: u64) -> Option<usize> {
    let index = postponed.partition_point(|p| p.start <= address);
    let index = index.checked_sub(1)?;
    postponed[index].contains(address).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a deadline the budget is never spent; with one that passed, it is.
    #[test]
    fn deadline() {
        let mut budget = SnapshotBudget::default();
        assert!(!budget.spent());
        budget.start_round(Duration::ZERO);
        assert!(budget.spent());
        budget.start_round(Duration::from_secs(60));
        assert!(!budget.spent());
    }

    /// Past the deadline, one snapshot may open up to [`WHOLE_SNAPSHOT_MAPPINGS`], and all of a
    /// round's snapshots together as many.
    #[test]
    fn overdraft_is_per_snapshot_and_per_round() {
        let mut budget = SnapshotBudget::default();
        budget.start_round(Duration::ZERO);
        assert!(budget.may_open(0));
        assert!(!budget.may_open(WHOLE_SNAPSHOT_MAPPINGS));
        let opened = (1..WHOLE_SNAPSHOT_MAPPINGS)
            .take_while(|&n| budget.may_open(n))
            .count();
        assert_eq!(opened, WHOLE_SNAPSHOT_MAPPINGS - 1);
        assert!(!budget.may_open(0), "the round's overdraft is used up");
        budget.start_round(Duration::ZERO);
        assert!(budget.may_open(0));
    }

    #[test]
    fn finds_the_postponed_mapping_of_an_address() {
        let at = |start, end| Postponed {
            start,
            end,
            offset: 0,
            inode: 1,
            path: "/x".into(),
            name: "x".into(),
        };
        let postponed = [at(0x1000, 0x2000), at(0x3000, 0x4000)];
        assert_eq!(postponed_at(&postponed, 0x1800), Some(0));
        assert_eq!(postponed_at(&postponed, 0x3000), Some(1));
        assert_eq!(postponed_at(&postponed, 0x2800), None);
        assert_eq!(postponed_at(&postponed, 0x500), None);
        assert_eq!(postponed_at(&postponed, 0x4000), None);
    }
}
