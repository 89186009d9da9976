//! The descriptor budget of the module table: which modules hold descriptors, in the order they
//! were last used, and how many descriptors that is.
//!
//! Every open module holds its file (and its separate debug file) open, and blazesym's file cache
//! opens each once more to read it. A process can map tens of thousands of distinct one-page files:
//! unbounded, the modules took every descriptor emberprof may have, after which it could read no
//! process's memory map at all. The table keeps the modules' descriptors within a budget (by
//! default half the open-file limit, which `record` raises to the hard limit at start), closing the
//! least recently used module to open another; a closed module is reopened, by path and identity,
//! when an address is found in it again. This type only keeps the books: the table opens and
//! closes.

use std::collections::BTreeMap;

use crate::module_id::ModuleId;

/// Fewest descriptors the budget allows: room for a module and its debug file next to the vDSO
/// image, however small the limit.
pub(crate) const MIN_DESCRIPTORS: usize = 8;

/// Descriptors a module is counted for: each file it holds (itself, its debug file), twice, since
/// blazesym's file cache keeps a handle of each file it reads.
pub(crate) fn descriptors_of(files: usize) -> usize {
    files * 2
}

/// The default budget: half the soft open-file limit (the other half is for the BPF side, perf
/// events, `/proc` reads and outputs).
pub fn default_max_descriptors() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid struct.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    (soft / 2).max(MIN_DESCRIPTORS)
}

/// What the module table did over the session, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModuleStats {
    /// Modules released because no live process mapped them any more.
    pub released: u64,
    /// Modules closed to stay within the descriptor budget.
    pub closed: u64,
    /// Closed modules opened again for an address found in them.
    pub reopened: u64,
    /// Closed modules that were needed again but could not be reopened (no live process maps
    /// them, or the file changed): their addresses are unnamed.
    pub not_reopened: u64,
    /// Most descriptors held for modules at once.
    pub most_descriptors: usize,
    /// The budget.
    pub max_descriptors: usize,
    /// Modules whose parsed symbols were dropped to stay within `--max-parsed-size` (see
    /// `namer::parsed_budget`); filled in by the symbolizer.
    pub parsed_dropped: u64,
    /// That budget, in bytes of files.
    pub max_parsed_bytes: u64,
    /// Modules whose parsed symbols were dropped to be parsed anew, for what they had come to keep
    /// past their first round's (see `namer::parsed_budget`); filled in by the symbolizer.
    pub parsed_rebuilt: u64,
    /// Modules with DWARF named from their symbol tables only: their compressed DWARF sections
    /// claimed or inflated to more than blazesym may inflate, or not as they claimed, or they
    /// link to files blazesym would look for outside emberprof's checks (see
    /// `namer::file_check`); filled in by the symbolizer.
    pub dwarf_refused: u64,
}

/// Open modules by last use, and the descriptors they hold.
#[derive(Debug)]
pub(crate) struct OpenModules {
    /// Stamp of last use to module; the first is the least recently used.
    by_use: BTreeMap<u64, ModuleId>,
    clock: u64,
    descriptors: usize,
    max_descriptors: usize,
    pub stats: ModuleStats,
}

impl OpenModules {
    pub fn new(max_descriptors: usize) -> Self {
        let max_descriptors = max_descriptors.max(MIN_DESCRIPTORS);
        OpenModules {
            by_use: BTreeMap::new(),
            clock: 0,
            descriptors: 0,
            max_descriptors,
            stats: ModuleStats {
                max_descriptors,
                ..ModuleStats::default()
            },
        }
    }

    /// Counts a module opened now, holding `descriptors`; returns its stamp of last use.
    /// `evictable: false` for modules that are never closed (the vDSO image).
    pub fn opened(&mut self, id: ModuleId, descriptors: usize, evictable: bool) -> u64 {
        self.descriptors += descriptors;
        self.stats.most_descriptors = self.stats.most_descriptors.max(self.descriptors);
        if !evictable {
            return 0;
        }
        self.clock += 1;
        self.by_use.insert(self.clock, id);
        self.clock
    }

    /// Marks module `id` (last used at `stamp`) used now; returns its new stamp.
    pub fn touch(&mut self, id: ModuleId, stamp: u64) -> u64 {
        if self.by_use.remove(&stamp).is_none() {
            return stamp;
        }
        self.clock += 1;
        self.by_use.insert(self.clock, id);
        self.clock
    }

    /// Uncounts a module closed or released (last used at `stamp`, holding `descriptors`).
    pub fn closed(&mut self, stamp: u64, descriptors: usize) {
        self.by_use.remove(&stamp);
        self.descriptors = self.descriptors.saturating_sub(descriptors);
    }

    /// The least recently used open module, while `more` descriptors do not fit in the budget.
    pub fn over_budget(&self, more: usize) -> Option<ModuleId> {
        if self.descriptors + more <= self.max_descriptors {
            return None;
        }
        self.by_use.values().next().copied()
    }

    /// Whether `more` descriptors fit now.
    pub fn fits(&self, more: usize) -> bool {
        self.descriptors + more <= self.max_descriptors
    }

    pub fn descriptors(&self) -> usize {
        self.descriptors
    }

    pub fn max_descriptors(&self) -> usize {
        self.max_descriptors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least recently used module is the one to close, a use moves a module to the back, and
    /// the books balance.
    #[test]
    fn least_recently_used_is_closed_first() {
        let mut open = OpenModules::new(12);
        let a = open.opened(ModuleId(1), 4, true);
        let _b = open.opened(ModuleId(2), 4, true);
        open.opened(ModuleId(0), 4, false);
        assert_eq!(open.over_budget(0), None);
        assert_eq!(open.over_budget(1), Some(ModuleId(1)));
        let a = open.touch(ModuleId(1), a);
        assert_eq!(open.over_budget(1), Some(ModuleId(2)));
        open.closed(a, 4);
        assert_eq!(open.descriptors(), 8);
        assert_eq!(open.stats.most_descriptors, 12);
        assert!(open.fits(4) && !open.fits(5));
    }
}
