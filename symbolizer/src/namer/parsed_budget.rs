//! The budget of what blazesym holds parsed: which modules have a live blazesym symbolizer, how
//! large the files it reads for each are, and in what order they were last used.
//!
//! A blazesym symbolizer keeps whatever it parsed of its module for as long as it lives: the symbol
//! table sorted, DWARF abbreviations of every unit, the units and line programs it looked into. A
//! module stays open while any process maps it, so on a build server (test binaries with hundreds
//! of MiB of DWARF, rustc's libraries) the parsed state of live modules alone took emberprof's heap
//! past 200 MiB (heaptrack: 74 of 117 MiB of heap in blazesym). A 90 s `--all` there held 392-529
//! MiB of files with 31-81 MiB of heap in all: the budget counts those files' sizes (known without
//! parsing anything, and well above what is parsed of them), plus what their compressed DWARF
//! sections inflate to (held whole in the heap; see `file_check`), and, past it,
//! drops the least recently used symbolizers. A dropped module is parsed again when one of its
//! addresses is next named: names already given stay in the profile, so the budget costs CPU on a
//! machine with more hot debug info than it allows, never names.
//!
//! The files' sizes are not always above what is parsed: a profiled process's file can hold DWARF
//! that blazesym builds into 25 times its size (a line program of one-byte rows, see
//! `dwarf_shape`, which bounds one unit's), in as many units as its code covers. So the heap each
//! module's lookups take is measured too (before and after each round: see `heap`), and a
//! module is counted for the larger of the two. One module past the whole budget alone has its
//! DWARF left out from then on (its symbol tables still name it), where the rule above would keep
//! it whatever it holds.

use std::collections::{BTreeMap, HashMap};

use crate::module_id::ModuleId;

#[derive(Debug)]
pub(super) struct ParsedBudget {
    max_bytes: u64,
    held_bytes: u64,
    /// What is counted for each module with a live symbolizer, and its last-use stamp.
    modules: HashMap<ModuleId, (Held, u64)>,
    /// The same modules by last-use stamp, oldest first.
    by_use: BTreeMap<u64, ModuleId>,
    clock: u64,
    /// Symbolizers dropped to stay within the budget, for the summary.
    pub dropped: u64,
}

/// What one module's symbolizer is counted for.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    /// The sizes of the files it reads, counted before anything is parsed.
    file_bytes: u64,
    /// The heap its lookups have taken so far (see [`crate::heap_in_use`]).
    heap_bytes: u64,
}

impl Held {
    /// The files' sizes, or the heap the parse took when that is more: blazesym builds many times
    /// the bytes of some DWARF (line programs: 25 times; see `dwarf_shape`), which a file's size
    /// alone would not count.
    fn counted(self) -> u64 {
        self.file_bytes.max(self.heap_bytes)
    }
}

impl ParsedBudget {
    pub fn new(max_bytes: u64) -> Self {
        ParsedBudget {
            max_bytes,
            held_bytes: 0,
            modules: HashMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
            dropped: 0,
        }
    }

    /// Whether `module` is counted (has a live symbolizer).
    pub fn holds(&self, module: ModuleId) -> bool {
        self.modules.contains_key(&module)
    }

    /// `module` was used now; `bytes` is counted for it the first time (the sizes of the files its
    /// symbolizer reads).
    pub fn used(&mut self, module: ModuleId, bytes: u64) {
        self.clock += 1;
        let stamp = self.clock;
        match self.modules.get_mut(&module) {
            Some((_, last_use)) => {
                self.by_use.remove(last_use);
                *last_use = stamp;
            }
            None => {
                let held = Held {
                    file_bytes: bytes,
                    heap_bytes: 0,
                };
                self.modules.insert(module, (held, stamp));
                self.held_bytes += held.counted();
            }
        }
        self.by_use.insert(stamp, module);
    }

    /// `module`'s lookups took `bytes` more of the heap; returns whether that heap alone is now past
    /// the whole budget (its files' sizes past it are not: see [`ParsedBudget::over_budget`]).
    pub fn grew(&mut self, module: ModuleId, bytes: u64) -> bool {
        let Some((held, _)) = self.modules.get_mut(&module) else {
            return false;
        };
        self.held_bytes -= held.counted();
        held.heap_bytes += bytes;
        self.held_bytes += held.counted();
        held.heap_bytes > self.max_bytes
    }

    /// `module`'s symbolizer is gone (the module was closed or released).
    pub fn forget(&mut self, module: ModuleId) {
        if let Some((held, last_use)) = self.modules.remove(&module) {
            self.by_use.remove(&last_use);
            self.held_bytes -= held.counted();
        }
    }

    /// The modules whose symbolizers to drop, least recently used first, until what is held fits
    /// the budget; never `keep` (the module being named), so one module larger than the whole
    /// budget is still named.
    pub fn over_budget(&mut self, keep: ModuleId) -> Vec<ModuleId> {
        let mut drop = Vec::new();
        while self.held_bytes > self.max_bytes {
            let Some(oldest) = self.by_use.values().copied().find(|&module| module != keep) else {
                break;
            };
            self.forget(oldest);
            self.dropped += 1;
            drop.push(oldest);
        }
        drop
    }

    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ModuleId {
        ModuleId(n)
    }

    #[test]
    fn least_recently_used_go_first_until_the_rest_fits() {
        let mut budget = ParsedBudget::new(100);
        budget.used(id(1), 40);
        budget.used(id(2), 40);
        budget.used(id(1), 0); // 1 is now newer than 2
        budget.used(id(3), 40);
        assert_eq!(budget.over_budget(id(3)), vec![id(2)]);
        assert_eq!(budget.held_bytes(), 80);
        assert!(budget.holds(id(1)) && budget.holds(id(3)) && !budget.holds(id(2)));
        assert_eq!(budget.dropped, 1);
    }

    #[test]
    fn the_module_being_named_stays_even_past_the_budget() {
        let mut budget = ParsedBudget::new(10);
        budget.used(id(1), 5);
        budget.used(id(2), 500);
        assert_eq!(budget.over_budget(id(2)), vec![id(1)]);
        assert!(budget.over_budget(id(2)).is_empty());
        assert_eq!(budget.held_bytes(), 500);
    }

    /// A module is counted for its files, or for the heap its parse took when more: growth past
    /// the files makes room as the files' sizes do, and says when one module alone is past all.
    #[test]
    fn heap_taken_past_the_files_is_counted() {
        let mut budget = ParsedBudget::new(100);
        budget.used(id(1), 30);
        budget.used(id(2), 30);
        assert!(!budget.grew(id(2), 20), "within its files' 30");
        assert_eq!(budget.held_bytes(), 60);
        assert!(!budget.grew(id(2), 40), "60 of heap");
        assert_eq!(budget.held_bytes(), 90);
        assert!(budget.over_budget(id(2)).is_empty());
        assert!(!budget.grew(id(2), 20));
        assert_eq!(budget.over_budget(id(2)), vec![id(1)]);
        assert!(
            budget.grew(id(2), 30),
            "110 alone, past the 100 of the budget"
        );
        // Files past the whole budget are named still (see the test below); their heap is not.
        budget.used(id(3), 500);
        assert!(!budget.grew(id(3), 10), "500 of files, 10 of heap");
        budget.forget(id(2));
        budget.forget(id(3));
        assert_eq!(budget.held_bytes(), 0);
        assert!(!budget.grew(id(2), 1000), "not counted any more");
    }

    #[test]
    fn forgotten_modules_give_their_bytes_back() {
        let mut budget = ParsedBudget::new(100);
        budget.used(id(1), 60);
        budget.used(id(2), 60);
        budget.forget(id(1));
        assert!(budget.over_budget(id(2)).is_empty());
        assert_eq!(budget.dropped, 0);
        budget.forget(id(1)); // twice is harmless
        assert_eq!(budget.held_bytes(), 60);
    }
}
