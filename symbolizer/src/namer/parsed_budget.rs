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
//! `dwarf_shape`, which bounds one unit's), in as many units as its code covers. So the heap
//! blazesym keeps from each module's lookups is measured too (what it allocated in a call and did
//! not free with the results: see `elf::Looked` and `heap`), and a module is counted for the larger
//! of the two. One module past the whole budget alone has its DWARF left out from then on (its
//! symbol tables still name it), where the rule above would keep it whatever it holds.
//!
//! What blazesym keeps of a module only grows: each lookup in a unit not seen before parses that
//! unit (its functions, inlined frames and line rows), and nothing is ever let go. Over a long
//! `--all`, a module every process uses comes to hold the parse of every unit any sample landed
//! in: Debian's libc with its debug file kept 11 MiB after the first round of a run beside a build,
//! 16 MiB 100 s later, and 36 MiB once all of its code had been named. So a symbolizer that has
//! come to keep [`REBUILD_GROWTH`] more than after its first round (and at least
//! [`REBUILD_FLOOR`]), and was built a while ago, is dropped once its round ends: the next round
//! builds it anew and parses what that round names, so it holds what recent samples need rather
//! than what all samples ever needed. Names already given stay; the cost is one parse of the
//! module again (libc: 92 ms for a first round of 256 addresses spread over all of it, its 9.6 MiB
//! of compressed DWARF inflated again among it, which is also why it keeps 11 MiB after any first
//! round), at most once a [`REBUILD_AGE`] per module: after a rebuild, a round of a few addresses
//! would make a small first round, and the growth back to the module's usual set would call for
//! another. Beside a build, libc was rebuilt every 30 s with an age of 30 s (each time at 14-15
//! MiB), and 9 times in 600 s with 60 s (at 15.5 MiB).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::module_id::ModuleId;

/// What a symbolizer may come to keep past what it kept after its first round before it is
/// rebuilt, at least: a quarter of that first round's is allowed when more.
pub(super) const REBUILD_GROWTH: u64 = 2 << 20;
/// Symbolizers keeping less are never rebuilt: small modules' parse costs little memory, and a
/// rebuild costs a parse.
pub(super) const REBUILD_FLOOR: u64 = 4 << 20;
/// The least time between a symbolizer's first round and its rebuild.
pub(super) const REBUILD_AGE: Duration = Duration::from_secs(60);

/// When a symbolizer is rebuilt (see [`Growth::Rebuild`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct RebuildRule {
    /// [`REBUILD_GROWTH`].
    pub growth: u64,
    /// [`REBUILD_FLOOR`].
    pub floor: u64,
    /// [`REBUILD_AGE`].
    pub age: Duration,
}

impl RebuildRule {
    pub const DEFAULT: RebuildRule = RebuildRule {
        growth: REBUILD_GROWTH,
        floor: REBUILD_FLOOR,
        age: REBUILD_AGE,
    };
}

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
    /// Symbolizers dropped for what they had come to keep (see [`Growth::Rebuild`]).
    pub rebuilt: u64,
    /// [`RebuildRule::DEFAULT`]; tests set smaller modules and less time.
    pub rebuild: RebuildRule,
}

/// What a round of lookups left a module's symbolizer keeping, in the budget's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Growth {
    Within,
    /// It keeps [`REBUILD_GROWTH`] (or a quarter) more than after its first round, at least
    /// [`REBUILD_AGE`] ago: drop it, the next round builds it anew.
    Rebuild,
    /// Its parse alone is past the whole budget.
    PastBudget,
}

/// What one module's symbolizer is counted for.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    /// The sizes of the files it reads, counted before anything is parsed.
    file_bytes: u64,
    /// The heap blazesym kept from its lookups so far (see `elf::Looked`).
    heap_bytes: u64,
    /// `heap_bytes` after its first round, and when that round ended, once it had one.
    first_round: Option<(u64, Instant)>,
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
            rebuilt: 0,
            rebuild: RebuildRule::DEFAULT,
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
                    ..Held::default()
                };
                self.modules.insert(module, (held, stamp));
                self.held_bytes += held.counted();
            }
        }
        self.by_use.insert(stamp, module);
    }

    /// A round of `module`'s lookups, ending `now`, left blazesym keeping `bytes` more of the heap:
    /// whether its parse alone is now past the whole budget (its files' sizes past it are not: see
    /// [`ParsedBudget::over_budget`]), or has grown enough since its first round to be rebuilt
    /// (then it is forgotten here, and counted in `rebuilt`).
    pub fn grew(&mut self, module: ModuleId, bytes: u64, now: Instant) -> Growth {
        let Some((held, _)) = self.modules.get_mut(&module) else {
            return Growth::Within;
        };
        self.held_bytes -= held.counted();
        held.heap_bytes += bytes;
        self.held_bytes += held.counted();
        if held.heap_bytes > self.max_bytes {
            return Growth::PastBudget;
        }
        let (first, built) = *held.first_round.get_or_insert((held.heap_bytes, now));
        let rule = self.rebuild;
        let allowed = first + rule.growth.max(first / 4);
        if held.heap_bytes >= rule.floor
            && held.heap_bytes > allowed
            && now.duration_since(built) >= rule.age
        {
            self.forget(module);
            self.rebuilt += 1;
            return Growth::Rebuild;
        }
        Growth::Within
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

    /// The heap `module`'s lookups took so far (0 when it is not counted).
    pub fn heap_bytes(&self, module: ModuleId) -> u64 {
        self.modules
            .get(&module)
            .map_or(0, |(held, _)| held.heap_bytes)
    }

    /// The heap all counted modules' lookups took so far, for the debug log.
    pub fn total_heap_bytes(&self) -> u64 {
        self.modules.values().map(|(held, _)| held.heap_bytes).sum()
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
        let now = Instant::now();
        let mut budget = ParsedBudget::new(100);
        budget.used(id(1), 30);
        budget.used(id(2), 30);
        assert_eq!(
            budget.grew(id(2), 20, now),
            Growth::Within,
            "within its files' 30"
        );
        assert_eq!(budget.held_bytes(), 60);
        assert_eq!(budget.grew(id(2), 40, now), Growth::Within, "60 of heap");
        assert_eq!(budget.held_bytes(), 90);
        assert!(budget.over_budget(id(2)).is_empty());
        assert_eq!(budget.grew(id(2), 20, now), Growth::Within);
        assert_eq!(budget.over_budget(id(2)), vec![id(1)]);
        assert_eq!(
            budget.grew(id(2), 30, now),
            Growth::PastBudget,
            "110 alone, past the 100 of the budget"
        );
        // Files past the whole budget are named still (see the test below); their heap is not.
        budget.used(id(3), 500);
        assert_eq!(
            budget.grew(id(3), 10, now),
            Growth::Within,
            "500 of files, 10 of heap"
        );
        budget.forget(id(2));
        budget.forget(id(3));
        assert_eq!(budget.held_bytes(), 0);
        assert_eq!(
            budget.grew(id(2), 1000, now),
            Growth::Within,
            "not counted any more"
        );
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

    /// A symbolizer is rebuilt when it keeps [`REBUILD_GROWTH`] (or a quarter of its first round)
    /// more than after its first round, keeps [`REBUILD_FLOOR`] at least, and was built
    /// [`REBUILD_AGE`] ago; it is then forgotten, and counted for its files again when next used.
    #[test]
    fn a_symbolizer_that_grew_is_rebuilt_at_most_once_an_age() {
        const MIB: u64 = 1 << 20;
        let start = Instant::now();
        let later = start + REBUILD_AGE;
        let mut budget = ParsedBudget::new(1 << 30);
        budget.used(id(1), MIB);
        assert_eq!(
            budget.grew(id(1), 12 * MIB, start),
            Growth::Within,
            "first round"
        );
        // Allowed: 12 + 3 MiB (a quarter of 12 is more than 2).
        assert_eq!(budget.grew(id(1), 3 * MIB, later), Growth::Within);
        assert_eq!(
            budget.grew(id(1), 1, start + REBUILD_AGE / 2),
            Growth::Within,
            "past the growth allowed, but built too recently"
        );
        assert_eq!(budget.grew(id(1), 1, later), Growth::Rebuild);
        assert!(!budget.holds(id(1)));
        assert_eq!((budget.rebuilt, budget.held_bytes()), (1, 0));
        // Built again: its new first round is what it is measured against.
        budget.used(id(1), MIB);
        assert_eq!(budget.grew(id(1), MIB, later), Growth::Within);
        assert_eq!(
            budget.grew(id(1), 2 * MIB, later + REBUILD_AGE),
            Growth::Within,
            "3 MiB: below the floor"
        );
        assert_eq!(
            budget.grew(id(1), 2 * MIB, later + REBUILD_AGE),
            Growth::Rebuild,
            "5 MiB: 4 past 1"
        );
        // Small first rounds are allowed REBUILD_GROWTH.
        budget.used(id(2), MIB);
        assert_eq!(budget.grew(id(2), 3 * MIB, start), Growth::Within);
        assert_eq!(
            budget.grew(id(2), 2 * MIB, later),
            Growth::Within,
            "5 MiB: 2 past 3"
        );
        assert_eq!(budget.grew(id(2), 1, later), Growth::Rebuild);
    }
}
