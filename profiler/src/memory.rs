//! emberprof's own memory: how glibc's allocator is set to behave, handing freed memory back, and
//! the RSS figures the `-vv` log shows.

use std::time::{Duration, Instant};

/// Allocations from this size up get their own mapping, unmapped when freed.
const MMAP_THRESHOLD: libc::c_int = 256 << 10;
/// Free memory at the top of the heap past this is handed back at once.
const TRIM_THRESHOLD: libc::c_int = 1 << 20;

/// Fixes glibc's thresholds at startup. By default glibc raises its mmap threshold to the size of
/// the largest mapped block freed (up to 32 MiB), and its trim threshold to twice that: after a
/// long recording's first large vector was freed, every later vector of up to that size grew
/// inside the heap, and the copies it left behind stayed resident until the next checkpoint's
/// trim. Beside a build that made RSS swing by 10-20 MiB between checkpoints, the largest part of
/// the peak's growth after the first minute. Fixed thresholds keep large blocks out of the heap
/// (a few thousand in a long recording: their mapping costs nothing measurable).
pub fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Hands memory freed on the heap back to the kernel (glibc keeps it otherwise), so peak RSS
/// reflects what is in use.
pub fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// How far the module file pages resident may grow past what was resident right after they were
/// last dropped. Unwinding reads each module's CFI and code through mappings (see the
/// symbolizer's `drop_file_pages`), and each page fault maps the 64 KiB around the page: beside a
/// build, rustc's and LLVM's pages piled up between two checkpoints to 10-20 MiB, the largest
/// swings of emberprof's RSS. The pages every unwind reads come back within 100 ms of a drop
/// (about 5 MiB beside a clang loop), so a slack below that drops them again at every check:
/// 40 s of `--all` beside a clang loop took 650 more page faults a second with 4 MiB (0.2-0.4 s
/// more system time), 350 with 6 MiB and 100 with 8 MiB, for peaks 2-4, 3 and 1 MiB lower.
const FILE_PAGES_SLACK: u64 = 6 << 20;
/// How often the resident file pages are read (`/proc/self/statm`, a few microseconds).
const FILE_PAGES_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Keeps the module file pages emberprof's own work leaves resident within [`FILE_PAGES_SLACK`]
/// of where the last drop left them: call [`FilePageBudget::exceeded`] from the recording loop,
/// and [`FilePageBudget::dropped`] after each drop.
pub struct FilePageBudget {
    after_drop: u64,
    checked: Instant,
    /// Drops so far, for the checkpoint log.
    pub drops: u64,
    /// Reads the resident file pages: [`resident_file_bytes`], or a test's figures.
    resident: fn() -> Option<u64>,
    /// Least time between two reads: [`FILE_PAGES_CHECK_INTERVAL`].
    interval: Duration,
}

impl FilePageBudget {
    pub fn new() -> Self {
        FilePageBudget::reading(resident_file_bytes, FILE_PAGES_CHECK_INTERVAL)
    }

    fn reading(resident: fn() -> Option<u64>, interval: Duration) -> Self {
        FilePageBudget {
            after_drop: resident().unwrap_or(0),
            checked: Instant::now(),
            drops: 0,
            resident,
            interval,
        }
    }

    /// Whether the file pages resident grew past the slack since the last drop (read at most
    /// every [`FILE_PAGES_CHECK_INTERVAL`]).
    pub fn exceeded(&mut self) -> bool {
        if self.checked.elapsed() < self.interval {
            return false;
        }
        self.checked = Instant::now();
        (self.resident)().is_some_and(|bytes| bytes > self.after_drop + FILE_PAGES_SLACK)
    }

    /// The pages were dropped: what is resident now is the new floor.
    pub fn dropped(&mut self) {
        self.after_drop = (self.resident)().unwrap_or(0);
        self.checked = Instant::now();
        self.drops += 1;
    }
}

/// This process's resident pages of files and shared memory, in bytes (`statm`'s third field).
fn resident_file_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(2)?.parse().ok()?;
    Some(pages * 4096)
}

/// emberprof's RSS and its peak so far, for the checkpoint log: what a checkpoint's work raised the
/// peak to shows between two checkpoints' lines.
pub fn own_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map_or("?", |value| value.trim().trim_end_matches(" kB"))
            .to_owned()
    };
    format!("RSS {} KiB (peak {} KiB)", field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// The resident file bytes the budget under test reads (`None`: unreadable).
        static RESIDENT: Cell<Option<u64>> = const { Cell::new(None) };
    }

    fn set_resident(bytes: Option<u64>) {
        RESIDENT.with(|resident| resident.set(bytes));
    }

    fn read_resident() -> Option<u64> {
        RESIDENT.with(Cell::get)
    }

    const MIB: u64 = 1 << 20;

    /// Past the slack over the level the last drop left, and only then, the pages are to be
    /// dropped; a drop sets the new level, whatever it was before.
    #[test]
    fn file_pages_are_dropped_past_the_slack_over_the_last_drop() {
        set_resident(Some(20 * MIB));
        let mut budget = FilePageBudget::reading(read_resident, Duration::ZERO);
        set_resident(Some(20 * MIB + FILE_PAGES_SLACK));
        assert!(!budget.exceeded(), "at the slack");
        set_resident(Some(20 * MIB + FILE_PAGES_SLACK + 4096));
        assert!(budget.exceeded(), "one page past the slack");
        // The drop left more than before (other pages came meanwhile): that is the new floor.
        set_resident(Some(24 * MIB));
        budget.dropped();
        set_resident(Some(24 * MIB + FILE_PAGES_SLACK));
        assert!(!budget.exceeded(), "at the slack over the new floor");
        // ... and less: the floor goes down too.
        set_resident(Some(18 * MIB));
        budget.dropped();
        set_resident(Some(18 * MIB + FILE_PAGES_SLACK + 4096));
        assert!(budget.exceeded(), "past the slack over the lower floor");
        assert_eq!(budget.drops, 2);
        // Unreadable figures never ask for a drop.
        set_resident(None);
        assert!(!budget.exceeded());
    }

    /// The figures are read at most once an interval: the recording loop runs many times faster.
    #[test]
    fn file_pages_are_read_at_most_once_an_interval() {
        set_resident(Some(20 * MIB));
        let mut budget = FilePageBudget::reading(read_resident, Duration::from_secs(3600));
        set_resident(Some(200 * MIB));
        assert!(!budget.exceeded());
    }

    /// This process's own figure is readable, and counts its mapped file (its binary at least).
    #[test]
    fn own_resident_file_pages_are_read() {
        assert!(resident_file_bytes().is_some_and(|bytes| bytes > 0));
    }
}
