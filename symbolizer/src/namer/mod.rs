//! The namer: names (module, file offset) pairs and kernel addresses.
//!
//! User code is named with blazesym's ELF source on each module's open file (or its separate debug
//! file), plus what blazesym does not see: PLT stubs, and a stripped executable's entry function;
//! kernel code from kallsyms. It caches what it named and shares each name's one copy
//! ([`SharedStrings`]). It never reads a process: turning a process's address into a module and
//! offset is the job of [`crate::Processes`] (blazesym keeps normalization apart from
//! symbolization the same way), so the namer works the same on live processes and on modules kept
//! after their processes exited.

mod dwarf_shape;
mod elf;
mod file_check;
mod file_pages;
mod parsed_budget;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use blazesym::symbolize::Input;

use crate::entry_point::entry_function;
use crate::frame::{Frame, FrameAddress, FrameKind, Symbol, UnknownReason};
use crate::kallsyms::KernelSymbols;
use crate::modules::{DroppedModule, ModuleId, ModuleTable};
use crate::options::SymbolizerOptions;
use crate::plt::PltStubs;
use crate::process::UserLocation;
use crate::strings::SharedStrings;
use file_check::FileCheck;
pub use file_check::{MAX_INFLATED_BYTES, MAX_SYMBOL_ENTRIES};
use file_pages::BlazeMappings;
use parsed_budget::{Growth, ParsedBudget};

/// Most entries the per-address user symbol cache holds before it is emptied. The cache only
/// saves lookups: the profile keeps what each address was named. A program's hot addresses are a
/// few hundred to a few thousand, so emptying it costs one lookup of each (some milliseconds) a
/// few times an hour, where unbounded it would keep an entry for every user instruction a long
/// `--all` run ever sampled.
const USER_SYMBOLS: usize = 4096;

/// Addresses of one module named between two drops of its file pages (see `file_pages`). Beside a
/// build, a round of 1,700-4,500 rustc addresses left 13-15 MiB of librustc_driver resident; in
/// chunks of 256, 4.4 MiB (median; at most 9 MiB), most of it pages every lookup passes: chunks
/// of 64 left 4.3 MiB, for four times the page faults.
const LOOKUPS_PER_TRIM: usize = 256;

/// What bounds each cache, for runs of hours: the user per-address cache by [`USER_SYMBOLS`], the
/// kernel one by the kernel's functions, per-module tables (PLT stubs, entry ranges) by the modules,
/// and shared names and paths by the code sampled.
pub struct Namer {
    options: SymbolizerOptions,
    /// One blazesym symbolizer per open module, dropped when the module is closed or released
    /// ([`Namer::forget_modules`]). blazesym 0.2.7 cannot evict what its caches hold (the parsed
    /// DWARF and symbol tables of each file, and an open handle of it): one symbolizer for the
    /// session kept every module ever named, and a descriptor for each. One per module costs an
    /// empty symbolizer each (a few hundred bytes) and nothing is parsed twice while the module
    /// stays open. With each, where it maps the module's files (see `file_pages`).
    blaze: HashMap<ModuleId, (blazesym::symbolize::Symbolizer, BlazeMappings)>,
    /// What those symbolizers hold parsed, in file bytes, within `--max-parsed-size`.
    parsed: ParsedBudget,
    /// By (module, file offset looked up). Emptied when it reaches [`USER_SYMBOLS`] entries (see
    /// there).
    user_cache: HashMap<(ModuleId, u64), Symbol>,
    /// The names and source paths of the frames handed out, one copy each (see [`SharedStrings`]).
    strings: SharedStrings,
    /// By start address of the kernel function looked up: keyed by the address itself it would
    /// grow with every kernel instruction sampled.
    kernel_cache: HashMap<u64, Symbol>,
    /// PLT stubs per module, read when the module is first named.
    plt: HashMap<ModuleId, PltStubs>,
    /// File-offset range of each module's entry function, if it is an executable (see
    /// `entry_point`), read when the module is first named.
    entry: HashMap<ModuleId, Option<std::ops::Range<u64>>>,
    /// The kallsyms file kernel addresses are named from.
    kallsyms: PathBuf,
    /// Kernel symbols, read with the first kernel address.
    kernel_symbols: Option<KernelSymbols>,
    /// [`LOOKUPS_PER_TRIM`]; tests compare it with whole rounds.
    lookups_per_trim: usize,
    /// What blazesym may read of each module (see `file_check`), checked when the module is first
    /// named and kept until it is released.
    checks: HashMap<ModuleId, FileCheck>,
    /// Modules whose DWARF was left out (see `file_check`), for the summary.
    dwarf_refused: u64,
}

impl Namer {
    pub fn new(options: SymbolizerOptions) -> Self {
        Namer {
            options,
            blaze: HashMap::new(),
            parsed: ParsedBudget::new(options.max_parsed_bytes),
            user_cache: HashMap::new(),
            strings: SharedStrings::default(),
            kernel_cache: HashMap::new(),
            plt: HashMap::new(),
            entry: HashMap::new(),
            kallsyms: PathBuf::from("/proc/kallsyms"),
            kernel_symbols: None,
            lookups_per_trim: LOOKUPS_PER_TRIM,
            checks: HashMap::new(),
            dwarf_refused: 0,
        }
    }

    /// Names kernel addresses from this kallsyms file instead of `/proc/kallsyms` (a copy saved
    /// elsewhere, or a test's).
    pub fn with_kallsyms(mut self, path: impl Into<PathBuf>) -> Self {
        self.kallsyms = path.into();
        self.kernel_symbols = None;
        self
    }

    /// Loads the kernel's symbols now (tens of milliseconds), so the first kernel stacks of a
    /// recording do not stall the reader of the ring buffer.
    pub fn load_kernel_symbols(&mut self) {
        let symbols = loaded_kernel_symbols(&mut self.kernel_symbols, &self.kallsyms);
        match symbols.is_empty() {
            true => log::debug!("no kernel symbols in {}", self.kallsyms.display()),
            false => log::debug!("{} kernel symbols", symbols.len()),
        }
    }

    /// Names user code at these locations, in modules of `modules`; one result per input, in
    /// order. `None` for [`UserLocation::Unmapped`]: no module holds that code, only the process
    /// can say what does (see [`crate::Processes::name_unmapped`]).
    pub fn symbolize_user(
        &mut self,
        modules: &ModuleTable,
        locations: &[UserLocation],
    ) -> Vec<Option<Symbol>> {
        if self.user_cache.len() >= USER_SYMBOLS {
            // Emptied before the batch, not during it: the batch reads back every entry it adds.
            self.user_cache = HashMap::new();
        }
        let mut misses: HashMap<ModuleId, Vec<u64>> = HashMap::new();
        for location in locations {
            if let UserLocation::Module {
                module,
                file_offset,
            } = *location
            {
                if !self.user_cache.contains_key(&(module, file_offset)) {
                    misses.entry(module).or_default().push(file_offset);
                }
            }
        }
        for (module, mut offsets) in misses {
            offsets.sort_unstable();
            offsets.dedup();
            self.symbolize_module(modules, module, &offsets);
        }
        locations
            .iter()
            .map(|location| match location {
                UserLocation::Module {
                    module,
                    file_offset,
                } => Some(self.user_cache[&(*module, *file_offset)].clone()),
                UserLocation::UnreadableModule { name, file_offset } => Some(Symbol::Unknown {
                    module: Some(name.clone()),
                    offset: *file_offset,
                    reason: UnknownReason::ModuleUnreadable,
                }),
                UserLocation::Unmapped => None,
            })
            .collect()
    }

    /// Symbolizes kernel addresses with kallsyms; one result per input, in order.
    pub fn symbolize_kernel(&mut self, addresses: &[FrameAddress]) -> Vec<Symbol> {
        let options = self.options;
        let symbols = loaded_kernel_symbols(&mut self.kernel_symbols, &self.kallsyms);
        let kernel_cache = &mut self.kernel_cache;
        let strings = &mut self.strings;
        addresses
            .iter()
            .map(|a| {
                let address = a.lookup_address();
                let Some(symbol) = symbols.lookup(address) else {
                    return unknown_kernel(address);
                };
                kernel_cache
                    .entry(symbol.start)
                    .or_insert_with(|| {
                        let mut frame =
                            elf::frame(symbol.name, None, FrameKind::Kernel, options, strings);
                        if let Some(module) = symbol.module {
                            frame.name = strings.get(&format!("{} [{module}]", frame.name));
                        }
                        Symbol::Named(vec![frame])
                    })
                    .clone()
            })
            .collect()
    }

    /// Drops what was built from modules closed or released since the last call: blazesym's
    /// parsed files and open handles of both, and every name of a released one.
    pub fn forget_modules(&mut self, dropped: &[DroppedModule]) {
        let mut released = HashSet::new();
        for module in dropped {
            self.blaze.remove(&module.id);
            self.parsed.forget(module.id);
            if module.released {
                self.plt.remove(&module.id);
                self.entry.remove(&module.id);
                self.checks.remove(&module.id);
                released.insert(module.id);
            }
        }
        if !released.is_empty() {
            self.user_cache
                .retain(|(module, _), _| !released.contains(module));
        }
    }

    /// Forgets the names and source paths that neither a cache here nor a profile holds any more
    /// (see [`SharedStrings::forget_unused`]).
    pub fn forget_unused_names(&mut self) {
        self.strings.forget_unused();
    }

    /// Caches these offsets of one module as unnamed, for `reason`.
    fn leave_unnamed(
        &mut self,
        modules: &ModuleTable,
        module_id: ModuleId,
        offsets: &[u64],
        reason: UnknownReason,
    ) {
        let module = Some(modules.get(module_id).display_name.clone());
        for &offset in offsets {
            let symbol = Symbol::Unknown {
                module: module.clone(),
                offset,
                reason,
            };
            self.user_cache.insert((module_id, offset), symbol);
        }
    }

    /// Drops the symbolizer of a module whose parse took more heap than the whole
    /// `--max-parsed-size` (counted as a drop for the budget), and leaves its DWARF out from then
    /// on: its next symbolizer reads its symbol tables only. Names it gave stay.
    fn refuse_dwarf(&mut self, modules: &ModuleTable, module_id: ModuleId) {
        self.blaze.remove(&module_id);
        self.parsed.forget(module_id);
        self.parsed.dropped += 1;
        let Some(check) = self.checks.get_mut(&module_id) else {
            return;
        };
        if !(check.module_file || check.debug_file) {
            // Its symbol tables alone were past it: parsed again when needed, as any drop.
            return;
        }
        check.module_file = false;
        check.debug_file = false;
        check.inflated = 0;
        if !check.refused {
            // Not counted yet (one of its files may have been, at its check).
            check.refused = true;
            self.dwarf_refused += 1;
        }
        log::info!(
            "{}: named from its symbol tables only from now on: parsing its DWARF took more heap \
             than --max-parsed-size ({} MiB)",
            modules.get(module_id).display_name,
            self.options.max_parsed_bytes >> 20
        );
    }

    /// Names these offsets (sorted, distinct) of one module into the user cache.
    fn symbolize_module(&mut self, modules: &ModuleTable, module_id: ModuleId, offsets: &[u64]) {
        let module = modules.get(module_id);
        let Some(file) = module.file() else {
            // Closed for the descriptor budget, and not reopened (see `Processes::locate`).
            self.leave_unnamed(modules, module_id, offsets, UnknownReason::ModuleClosed);
            return;
        };
        let options = self.options;
        let check = *self.checks.entry(module_id).or_insert_with(|| {
            let check = file_check::check_module(module, file);
            self.dwarf_refused += u64::from(check.refused);
            check
        });
        if check.too_many_symbols.is_some() {
            self.leave_unnamed(
                modules,
                module_id,
                offsets,
                UnknownReason::SymbolTablesTooLarge,
            );
            return;
        }
        if !self.parsed.holds(module_id) {
            // Counted before it is parsed: what its symbolizer may come to hold.
            let bytes = file.size() + module.debug_file_bytes() + check.inflated;
            self.parsed.used(module_id, bytes);
            for dropped in self.parsed.over_budget(module_id) {
                self.blaze.remove(&dropped);
            }
        } else {
            self.parsed.used(module_id, 0);
        }
        let (blaze, blaze_mappings) = self.blaze.entry(module_id).or_insert_with(|| {
            (
                new_blazesym(options),
                BlazeMappings::new(module.open_file_identities()),
            )
        });
        let plt = self
            .plt
            .entry(module_id)
            .or_insert_with(|| PltStubs::read(file));
        let mut offsets = offsets.to_vec();
        offsets.retain(|&offset| match plt.name_at(offset) {
            Some(name) => {
                let frame = Frame::new(name, FrameKind::User);
                self.user_cache
                    .insert((module_id, offset), Symbol::Named(vec![frame]));
                false
            }
            None => true,
        });
        let offsets = &offsets[..];
        let display_name = module.display_name.clone();
        let entry = self
            .entry
            .entry(module_id)
            .or_insert_with(|| entry_function(file))
            .clone();
        // In chunks, each one's pages dropped after it: a round names thousands of a large
        // module's addresses, each name on a page of its own of the string table (rustc's
        // 16 MiB one was 13-15 MiB resident after such rounds, most of emberprof's RSS swings
        // beside a build).
        let mut found: Vec<Option<Vec<Frame>>> = Vec::with_capacity(offsets.len());
        let mut module_readable = true;
        blaze_mappings.most_resident = 0;
        let mut heap_kept = 0;
        for chunk in offsets.chunks(self.lookups_per_trim) {
            let before = blaze_mappings.before_round();
            let (frames, readable, parsed_heap) = lookup(
                blaze,
                &mut self.strings,
                options,
                module,
                file,
                check,
                chunk,
            );
            heap_kept += parsed_heap;
            blaze_mappings.after_round(before);
            found.extend(frames);
            if !readable {
                module_readable = false;
                found.resize(offsets.len(), None);
                break;
            }
        }
        if blaze_mappings.most_resident > 1 << 20 {
            log::debug!(
                "{display_name}: {} KiB of its files resident after {LOOKUPS_PER_TRIM} lookups",
                blaze_mappings.most_resident >> 10
            );
        }
        let heap_was = self.parsed.heap_bytes(module_id);
        if passes_a_power_of_two_mib(heap_was, heap_was + heap_kept) {
            log::debug!(
                "{display_name}: blazesym keeps {} KiB of heap parsed from it",
                (heap_was + heap_kept) >> 10
            );
        }
        match self.parsed.grew(module_id, heap_kept, Instant::now()) {
            Growth::Within => {}
            Growth::Rebuild => {
                // Parsed anew by the next round, for the addresses it names (see `parsed_budget`).
                self.blaze.remove(&module_id);
                log::debug!(
                    "{display_name}: blazesym kept {} KiB parsed from it: rebuilt when next needed",
                    (heap_was + heap_kept) >> 10
                );
            }
            Growth::PastBudget => self.refuse_dwarf(modules, module_id),
        }
        for dropped in self.parsed.over_budget(module_id) {
            self.blaze.remove(&dropped);
        }
        for (&offset, frames) in offsets.iter().zip(found) {
            let at_entry = entry.as_ref().is_some_and(|entry| entry.contains(&offset));
            let symbol = match frames {
                Some(frames) => Symbol::Named(frames),
                // A stripped executable's entry point: its `_start` (see `entry_point`).
                None if at_entry && module_readable => {
                    Symbol::Named(vec![Frame::new("_start", FrameKind::User)])
                }
                None => Symbol::Unknown {
                    module: Some(display_name.clone()),
                    offset,
                    reason: if module_readable {
                        UnknownReason::NoSymbol
                    } else {
                        UnknownReason::ModuleUnreadable
                    },
                },
            };
            self.user_cache.insert((module_id, offset), symbol);
        }
    }

    /// The budget of parsed symbols, in bytes of files.
    pub fn max_parsed_bytes(&self) -> u64 {
        self.options.max_parsed_bytes
    }

    /// Modules with DWARF named from their symbol tables only (see `file_check`), for the
    /// summary.
    pub fn dwarf_refused(&self) -> u64 {
        self.dwarf_refused
    }

    /// Symbolizers dropped to keep parsed symbols within `--max-parsed-size`, for the summary.
    pub fn parsed_dropped(&self) -> u64 {
        self.parsed.dropped
    }

    /// Symbolizers rebuilt for what they had come to keep (see `parsed_budget`), for the summary.
    pub fn parsed_rebuilt(&self) -> u64 {
        self.parsed.rebuilt
    }

    /// How many entries each cache holds, for the debug log of long runs.
    pub fn cache_sizes(&self) -> String {
        format!(
            "{} blazesym symbolizers ({} MiB of files, {} KiB of heap parsed), {} user symbols, {} kernel symbols, {} names and paths, {} PLT \
             tables, {} entry ranges",
            self.blaze.len(),
            self.parsed.held_bytes() >> 20,
            self.parsed.total_heap_bytes() >> 10,
            self.user_cache.len(),
            self.kernel_cache.len(),
            self.strings.len(),
            self.plt.len(),
            self.entry.len(),
        )
    }
}

/// Names `offsets` of `module` with its blazesym symbolizer, one `Option` each, whether the module
/// could be read, and the heap blazesym kept doing it (see `elf::Looked`). A separate debug file
/// is addressed by virtual offsets; what it cannot name (or everything, without one) is looked up
/// in the module itself by file offset.
fn lookup(
    blaze: &blazesym::symbolize::Symbolizer,
    strings: &mut SharedStrings,
    options: SymbolizerOptions,
    module: &crate::modules::Module,
    file: &crate::untrusted::StableFile,
    dwarf: FileCheck,
    offsets: &[u64],
) -> (Vec<Option<Vec<Frame>>>, bool, u64) {
    let mut found: Vec<Option<Vec<Frame>>> = vec![None; offsets.len()];
    let mut parsed_heap = 0;
    if let Some(debug_path) = module.debug_readable_path() {
        let virtual_offsets: Vec<u64> = offsets
            .iter()
            .map(|&offset| module.virtual_offset(offset).unwrap_or(u64::MAX))
            .collect();
        if let Ok(looked) = elf::lookup(
            blaze,
            strings,
            options,
            debug_path,
            dwarf.debug_file,
            Input::VirtOffset(&virtual_offsets),
        ) {
            found = looked.frames;
            parsed_heap += looked.parsed_heap;
        }
    }
    let missing: Vec<u64> = offsets
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(&o, _)| o)
        .collect();
    if missing.is_empty() {
        return (found, true, parsed_heap);
    }
    match elf::lookup(
        blaze,
        strings,
        options,
        file.readable_path(),
        dwarf.module_file,
        Input::FileOffset(&missing),
    ) {
        Ok(looked) => {
            let mut from_module = looked.frames.into_iter();
            for slot in found.iter_mut().filter(|f| f.is_none()) {
                *slot = from_module.next().flatten();
            }
            (found, true, parsed_heap + looked.parsed_heap)
        }
        Err(error) => {
            log::warn!("cannot symbolize {}: {error}", module.mapped_path.display());
            (found, false, parsed_heap)
        }
    }
}

/// Whether `now` bytes passed 1, 2, 4, ... MiB that `was` had not: when the debug log names what
/// a module's parse keeps, a few lines per module, not one per round.
fn passes_a_power_of_two_mib(was: u64, now: u64) -> bool {
    let (was, now) = (was >> 20, now >> 20);
    now > 0 && (was == 0 || now.ilog2() > was.ilog2())
}

/// A blazesym symbolizer for one module.
fn new_blazesym(options: SymbolizerOptions) -> blazesym::symbolize::Symbolizer {
    blazesym::symbolize::Symbolizer::builder()
        .enable_code_info(options.source_lines || options.inlined_functions)
        .enable_inlined_fns(options.inlined_functions)
        // Done by `demangle`, which can leave out C++ parameter lists.
        .enable_demangling(false)
        // The files are stable (see `untrusted`): nothing to reload. A reload would also remap a
        // file behind the range `file_pages` drops pages of.
        .enable_auto_reload(false)
        .build()
}

/// The kernel's symbols in `slot`, read from `kallsyms` on first use.
fn loaded_kernel_symbols<'a>(
    slot: &'a mut Option<KernelSymbols>,
    kallsyms: &std::path::Path,
) -> &'a KernelSymbols {
    slot.get_or_insert_with(|| KernelSymbols::read(kallsyms))
}

fn unknown_kernel(address: u64) -> Symbol {
    Symbol::Unknown {
        module: None,
        offset: address,
        reason: UnknownReason::UnknownKernelAddress,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::maps::parse_maps;
    use crate::process::ProcessKey;
    use crate::Processes;

    /// Addresses spread over this test program's own code, in its own process.
    fn own_code_addresses(count: u64) -> Vec<(ProcessKey, u64)> {
        let exe = std::fs::read_link("/proc/self/exe").expect("own executable");
        let key = ProcessKey {
            pid: std::process::id(),
            instance: 1,
        };
        let text = program_text(key.pid, &exe).expect("an executable mapping of the test program");
        spread_over(key, &text, count)
    }

    /// The largest executable mapping of `program` in process `pid`.
    fn program_text(pid: u32, program: &std::path::Path) -> Option<crate::maps::MapsEntry> {
        let maps = parse_maps(&std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps"));
        maps.into_iter()
            .filter(|m| m.executable && std::path::Path::new(&m.path) == program)
            .max_by_key(|m| m.end - m.start)
    }

    /// `count` addresses of process `key` spread evenly over `text`.
    fn spread_over(
        key: ProcessKey,
        text: &crate::maps::MapsEntry,
        count: u64,
    ) -> Vec<(ProcessKey, u64)> {
        let step = ((text.end - text.start) / count).max(1);
        (0..count)
            .map(|i| text.start + i * step)
            .take_while(|&address| address < text.end)
            .map(|address| (key, address))
            .collect()
    }

    /// The namer's names of these addresses, located by `processes` (an address no module holds
    /// gets no names).
    fn names(
        namer: &mut Namer,
        processes: &mut Processes,
        addresses: &[(ProcessKey, u64)],
    ) -> Vec<Vec<Arc<str>>> {
        let locations: Vec<UserLocation> = addresses
            .iter()
            .map(|&(key, address)| processes.locate(key, address))
            .collect();
        namer
            .symbolize_user(processes.modules(), &locations)
            .into_iter()
            .map(|symbol| match symbol {
                Some(Symbol::Named(frames)) => frames.iter().map(|f| f.name.clone()).collect(),
                Some(Symbol::Unknown { .. }) | None => Vec::new(),
            })
            .collect()
    }

    /// The process table with this process's snapshot, `key` its key.
    fn own_processes(key: ProcessKey) -> Processes {
        let mut processes = Processes::new(
            crate::jit::DEFAULT_MAX_PERF_MAP_BYTES,
            crate::jit::DEFAULT_MAX_PERF_MAPS_TOTAL_BYTES,
        )
        .expect("processes");
        processes.process_seen(key).expect("own snapshot");
        processes
    }

    /// blazesym's mappings of a module hold no pages once a round of lookups is over (before, its
    /// symbol tables and the DWARF it walked stayed in emberprof's RSS), and naming again reads the
    /// same names through them.
    #[test]
    fn blazesym_mappings_leave_no_pages_resident() {
        let addresses = own_code_addresses(500);
        let mut processes = own_processes(addresses[0].0);
        let mut namer = Namer::new(SymbolizerOptions::default());
        let resident = |namer: &Namer| -> (usize, usize) {
            let ranges: Vec<_> = namer.blaze.values().flat_map(|(_, m)| m.ranges()).collect();
            let resident = ranges
                .iter()
                .map(|r| crate::untrusted::resident_pages(r.clone()).expect("own pagemap"))
                .sum();
            (ranges.len(), resident)
        };
        let first = names(&mut namer, &mut processes, &addresses);
        assert!(first.iter().filter(|n| !n.is_empty()).count() > 400);
        let (mappings, pages) = resident(&namer);
        assert!(
            mappings > 0,
            "blazesym's mapping of the test program was not found"
        );
        assert_eq!(pages, 0, "pages still resident in blazesym's mappings");
        namer.user_cache.clear();
        let again = names(&mut namer, &mut processes, &addresses);
        assert_eq!(again, first);
        assert_eq!(resident(&namer), (mappings, 0));
    }

    /// A long round of lookups drops its pages every [`LOOKUPS_PER_TRIM`] addresses: what it
    /// leaves resident at a time is a chunk's pages, not the whole round's (3,000 rustc addresses
    /// in one round left 13-15 MiB of its string table resident).
    #[test]
    fn a_long_round_drops_its_pages_as_it_goes() {
        let addresses = own_code_addresses(16 * LOOKUPS_PER_TRIM as u64);
        let mut processes = own_processes(addresses[0].0);
        let mut namer = Namer::new(SymbolizerOptions::default());
        // The most left resident by one round of all the addresses, in chunks of `per_trim`.
        let mut most_resident = |namer: &mut Namer, per_trim: usize| {
            namer.user_cache.clear();
            namer.lookups_per_trim = per_trim;
            for (_, mappings) in namer.blaze.values_mut() {
                mappings.measure = true;
            }
            let named = names(namer, &mut processes, &addresses);
            assert!(named.iter().filter(|n| !n.is_empty()).count() > named.len() / 2);
            let blaze = namer.blaze.values();
            blaze.map(|(_, mappings)| mappings.most_resident).max()
        };
        // Parsed first: the first lookups read the module's tables whole.
        most_resident(&mut namer, usize::MAX);
        let chunked = most_resident(&mut namer, LOOKUPS_PER_TRIM).expect("a symbolizer");
        let whole = most_resident(&mut namer, usize::MAX).expect("a symbolizer");
        assert!(
            // Less than half in this test program, whose DWARF each lookup walks.
            chunked > 0 && chunked * 4 < whole * 3,
            "{} KiB resident after a chunk of {LOOKUPS_PER_TRIM} lookups, {} KiB after all {}",
            chunked >> 10,
            whole >> 10,
            addresses.len()
        );
    }

    /// An example program stopped once it has started, and killed when dropped: its code has
    /// DWARF whatever profile the tests are built with (this test program has none under
    /// `--release`).
    struct StoppedExample(std::process::Child);

    impl Drop for StoppedExample {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `count` addresses spread over the code of the example `name`, started and stopped, and
    /// the process table with its snapshot.
    fn example_code(name: &str, count: u64) -> (StoppedExample, Vec<(ProcessKey, u64)>, Processes) {
        let path = emberprof_examples::path(name);
        let child = std::process::Command::new(&path)
            .arg("600")
            .spawn()
            .expect("example");
        let example = StoppedExample(child);
        let pid = example.0.id();
        let key = ProcessKey { pid, instance: 1 };
        let exe = path.canonicalize().expect("example path");
        // `spawn` returns once the child has its new address space, before exec has mapped the
        // program into it: wait for the mapping.
        let waited = std::time::Instant::now();
        let text = loop {
            if let Some(text) = program_text(pid, &exe) {
                break text;
            }
            assert!(
                waited.elapsed().as_secs() < 10,
                "{} never mapped its program",
                exe.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        // SAFETY: a signal to our own child, which `example` waits for.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        let addresses = spread_over(key, &text, count);
        let mut processes = Processes::new(
            crate::jit::DEFAULT_MAX_PERF_MAP_BYTES,
            crate::jit::DEFAULT_MAX_PERF_MAPS_TOTAL_BYTES,
        )
        .expect("processes");
        processes.process_seen(key).expect("example snapshot");
        (example, addresses, processes)
    }

    /// What blazesym parsed is counted against the budget, not the frames and names handed out:
    /// naming the same addresses again parses nothing new, and counts (almost) nothing. Before,
    /// every round's frames were counted, and a module named all day would have grown past any
    /// budget (libc: 16 MiB after 600 s of `--all`).
    #[test]
    fn only_what_blazesym_keeps_is_counted() {
        let (_example, addresses, mut processes) =
            example_code("rust-release", 4 * LOOKUPS_PER_TRIM as u64);
        let mut namer = Namer::new(SymbolizerOptions::default());
        names(&mut namer, &mut processes, &addresses);
        let module = *namer.blaze.keys().next().expect("a symbolizer");
        let parsed = namer.parsed.heap_bytes(module);
        assert!(
            parsed > 64 << 10,
            "{parsed} bytes parsed: the symbol tables at least"
        );
        namer.user_cache.clear();
        let named = names(&mut namer, &mut processes, &addresses);
        assert!(named.iter().filter(|n| !n.is_empty()).count() > addresses.len() / 2);
        let again = namer.parsed.heap_bytes(module) - parsed;
        assert!(
            again < 4 << 10,
            "{again} more bytes counted for naming {} addresses again ({parsed} the first time)",
            addresses.len()
        );
    }

    /// A symbolizer that came to keep much more than after its first round is dropped, the heap
    /// it kept freed, and built anew by the next round, which names as before.
    #[test]
    fn a_symbolizer_that_grew_is_rebuilt_and_names_the_same() {
        let (_example, addresses, mut processes) =
            example_code("rust-release", 16 * LOOKUPS_PER_TRIM as u64);
        let (first, rest) = addresses.split_at(LOOKUPS_PER_TRIM / 4);
        let mut namer = Namer::new(SymbolizerOptions::default());
        // Scaled to the example's 1 MB of DWARF, and no wait.
        namer.parsed.rebuild = parsed_budget::RebuildRule {
            growth: 256 << 10,
            floor: 512 << 10,
            age: std::time::Duration::ZERO,
        };
        let mut named = names(&mut namer, &mut processes, first);
        let module = *namer.blaze.keys().next().expect("a symbolizer");
        let after_first = namer.parsed.heap_bytes(module);
        let mut most_kept = after_first;
        let mut freed = 0;
        for batch in rest.chunks(LOOKUPS_PER_TRIM) {
            let (kept, balance) = (
                namer.parsed.heap_bytes(module),
                crate::thread_heap_balance(),
            );
            named.extend(names(&mut namer, &mut processes, batch));
            if namer.parsed.rebuilt > 0 && freed == 0 {
                freed = u64::try_from(balance - crate::thread_heap_balance()).unwrap_or(0);
                most_kept = most_kept.max(kept);
            }
            if freed == 0 {
                most_kept = most_kept.max(namer.parsed.heap_bytes(module));
            }
        }
        assert!(
            namer.parsed.rebuilt > 0,
            "never rebuilt: {after_first} bytes kept after the first round, {most_kept} at most"
        );
        assert!(
            freed > most_kept / 2,
            "a rebuild freed {freed} bytes of the {most_kept} the symbolizer kept"
        );
        let mut fresh = Namer::new(SymbolizerOptions::default());
        assert_eq!(names(&mut fresh, &mut processes, &addresses), named);
    }

    #[test]
    fn user_symbol_cache_is_emptied_at_its_bound_and_names_are_shared() {
        const BATCH: usize = 1000;
        let addresses = own_code_addresses(3 * USER_SYMBOLS as u64);
        assert!(addresses.len() > 2 * USER_SYMBOLS, "too few addresses");
        let mut processes = own_processes(addresses[0].0);
        let mut namer = Namer::new(SymbolizerOptions::default());
        let first = names(&mut namer, &mut processes, &addresses[..BATCH]);
        let mut most_cached = 0;
        for batch in addresses.chunks(BATCH) {
            names(&mut namer, &mut processes, batch);
            most_cached = most_cached.max(namer.user_cache.len());
        }
        assert!(
            most_cached <= USER_SYMBOLS + BATCH,
            "cache held {most_cached} entries, bound {USER_SYMBOLS} plus a batch of {BATCH}"
        );
        assert!(most_cached >= USER_SYMBOLS, "the bound was never reached");
        // Emptied since: looked up again, named the same.
        let again = names(&mut namer, &mut processes, &addresses[..BATCH]);
        assert_eq!(again, first);

        // Neighbouring addresses in one function share one copy of its name.
        let same_function: Vec<(&Arc<str>, &Arc<str>)> = again
            .windows(2)
            .filter_map(|pair| Some((pair[0].first()?, pair[1].first()?)))
            .filter(|(a, b)| a == b)
            .collect();
        assert!(
            !same_function.is_empty(),
            "no two addresses in one function"
        );
        assert!(same_function.iter().all(|(a, b)| Arc::ptr_eq(a, b)));
    }
}
