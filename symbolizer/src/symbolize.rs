//! Batch symbolization with caches, over blazesym.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Sym, Symbolized};

use crate::demangle::{demangle, NameStyle};
use crate::entry_point::entry_function;
use crate::frame::{Frame, FrameAddress, FrameKind, Symbol, UnknownReason};
use crate::kallsyms::KernelSymbols;
use crate::modules::{ModuleId, ModuleTable};
use crate::plt::PltStubs;
use crate::process::{ProcessKey, ProcessTable, UserLocation};
use crate::released::ReleasedInstances;
use crate::runtimes::Runtimes;
use crate::strings::SharedStrings;
use crate::unwind::{FramePointers, Unwinders, UnwoundStack, UserRegisters};
use crate::Error;

/// Least time between two reads of one process's memory map: short while the process is young (its
/// loader is still mapping libraries), long after (only dlopen or JIT code remains to be found).
const YOUNG_REFRESH_INTERVAL: Duration = Duration::from_millis(5);
const REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// How long after its first snapshot a process counts as young.
const YOUNG_PROCESS: Duration = Duration::from_secs(1);

/// Most entries the per-address user symbol cache holds before it is emptied. The cache only
/// saves lookups: the profile keeps what each address was named. A program's hot addresses are a
/// few hundred to a few thousand, so emptying it costs one lookup of each (some milliseconds) a
/// few times an hour; unbounded, it kept an entry for every user instruction a long `--all` run
/// ever sampled (10,000 after ten minutes of a fork-heavy machine, a few hundred bytes each).
const USER_SYMBOLS: usize = 4096;

/// What to put in frames. Defaults: inlined functions as their own frames, no source lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolizerOptions {
    /// Report functions inlined at an address as frames of their own (kind [`FrameKind::Inlined`]).
    pub inlined_functions: bool,
    /// Look up source locations (`Frame::file`, `Frame::line`) even without inlined functions: for a
    /// function, the line it is at (the call into the next frame, inlined or not); for an inlined
    /// function, likewise within it. Outputs show them with `--lines`.
    pub source_lines: bool,
    /// How much of C++ names to keep (default: no return type, parameters or clone suffixes).
    pub name_style: NameStyle,
    /// Most bytes read from one process's perf map (`/tmp/perf-PID.map`), which the process writes
    /// and could make arbitrarily large; the rest is skipped with a warning. Default 64 MiB.
    pub max_perf_map_bytes: u64,
}

impl Default for SymbolizerOptions {
    fn default() -> Self {
        SymbolizerOptions {
            inlined_functions: true,
            source_lines: false,
            name_style: NameStyle::Short,
            max_perf_map_bytes: crate::jit::DEFAULT_MAX_PERF_MAP_BYTES,
        }
    }
}

/// What each cache holds and what bounds it, for runs of hours: per-process state lives from a
/// process's first sample until [`Symbolizer::release`] (called once its samples are in the profile,
/// soon after it execs or exits), so it is bounded by the processes alive at once; per-module state
/// is bounded by the distinct executable files the profiled processes map (modules are shared, and
/// kept for the session: a fork-heavy loop re-runs the same few files); the user per-address cache
/// by [`USER_SYMBOLS`], the kernel one by the kernel's functions, and shared names and paths by the
/// code sampled.
pub struct Symbolizer {
    options: SymbolizerOptions,
    blaze: blazesym::symbolize::Symbolizer,
    modules: ModuleTable,
    processes: ProcessTable,
    /// By (module, file offset looked up). Emptied when it reaches [`USER_SYMBOLS`] entries (see
    /// there).
    user_cache: HashMap<(ModuleId, u64), Symbol>,
    /// The names and source paths of the frames handed out, one copy each (see [`SharedStrings`]).
    strings: SharedStrings,
    /// By start address of the kernel function looked up: bounded by the kernel functions sampled
    /// (keyed by address it grew with every instruction a long `--all` run hit).
    kernel_cache: HashMap<u64, Symbol>,
    /// When each process's memory map was first and last read. An address outside the snapshot (a
    /// library loaded after the first sample) triggers a re-read, rate-limited (see
    /// [`REFRESH_INTERVAL`]) so a truly unmapped address (JIT code) does not cost one per sample.
    snapshot_taken: HashMap<ProcessKey, (Instant, Instant)>,
    /// Processes snapshotted (first time or again) since the last [`Symbolizer::take_changed`].
    changed: Vec<ProcessKey>,
    /// Instances that exec'd or exited: their snapshots are final. Until released.
    ended: HashSet<ProcessKey>,
    /// Instances released: gone, and never to be snapshotted again (their PID may belong to
    /// another process by now). Bounded by the older instances still running (see
    /// [`ReleasedInstances`]), not by the processes released.
    released: ReleasedInstances,
    /// Start times (`/proc/PID/stat` ticks) the BPF side saw for instances, checked before each
    /// snapshot so a reused PID is not mistaken for the sampled process.
    start_ticks: HashMap<ProcessKey, u64>,
    /// PLT stubs per module, read when the module is first symbolized.
    plt: HashMap<ModuleId, PltStubs>,
    /// File-offset range of each module's entry function, if it is an executable (see
    /// `entry_point`), read when the module is first symbolized.
    entry: HashMap<ModuleId, Option<std::ops::Range<u64>>>,
    /// The runtimes of each process (JIT perf maps).
    runtimes: Runtimes,
    /// The kallsyms file kernel addresses are named from.
    kallsyms: PathBuf,
    /// Kernel symbols, read with the first kernel address.
    kernel_symbols: Option<KernelSymbols>,
    unwinders: Unwinders,
}

/// Where a process runs code without frame pointers, for `--unwind auto`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FramelessCode {
    /// Every module keeps frame pointers.
    None,
    /// These mappings (sorted, disjoint) hold frameless code.
    Mappings(Vec<FramelessMapping>),
    /// The main executable itself is frameless: unwind everything with DWARF.
    Everywhere,
}

/// One mapping of a process with frameless code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramelessMapping {
    pub range: std::ops::Range<u64>,
    /// An address minus `bias` is the module's own (file) address.
    pub bias: u64,
    /// `None`: the whole mapping is frameless. Otherwise only these functions of the module (its
    /// own addresses, sorted, disjoint), shared by every process mapping it.
    pub functions: Option<(ModuleId, Arc<[std::ops::Range<u64>]>)>,
}

impl FramelessMapping {
    pub fn contains(&self, address: u64) -> bool {
        if !self.range.contains(&address) {
            return false;
        }
        match &self.functions {
            None => true,
            Some((_, functions)) => {
                let svma = address.wrapping_sub(self.bias);
                let after = functions.partition_point(|f| f.start <= svma);
                after > 0 && functions[after - 1].contains(&svma)
            }
        }
    }
}

/// Whether `address` is in frameless code of these mappings (sorted, disjoint).
pub fn is_frameless(mappings: &[FramelessMapping], address: u64) -> bool {
    let after = mappings.partition_point(|m| m.range.start <= address);
    after > 0 && mappings[after - 1].contains(address)
}

impl Symbolizer {
    pub fn new(options: SymbolizerOptions) -> Result<Self, Error> {
        let mut modules = ModuleTable::default();
        let vdso = crate::vdso::extract_vdso()?.map(|file| modules.insert("[vdso]", file));
        let blaze = blazesym::symbolize::Symbolizer::builder()
            .enable_code_info(options.source_lines || options.inlined_functions)
            .enable_inlined_fns(options.inlined_functions)
            // Done by `demangle`, which can leave out C++ parameter lists.
            .enable_demangling(false)
            .build();
        Ok(Symbolizer {
            options,
            blaze,
            modules,
            processes: ProcessTable::new(vdso),
            user_cache: HashMap::new(),
            strings: SharedStrings::default(),
            kernel_cache: HashMap::new(),
            snapshot_taken: HashMap::new(),
            changed: Vec::new(),
            ended: HashSet::new(),
            released: ReleasedInstances::default(),
            start_ticks: HashMap::new(),
            runtimes: Runtimes::new(options.max_perf_map_bytes),
            plt: HashMap::new(),
            entry: HashMap::new(),
            kallsyms: PathBuf::from("/proc/kallsyms"),
            kernel_symbols: None,
            unwinders: Unwinders::default(),
        })
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

    /// Names kernel addresses from this kallsyms file instead of `/proc/kallsyms` (a copy saved
    /// elsewhere, or a test's).
    pub fn with_kallsyms(mut self, path: impl Into<PathBuf>) -> Self {
        self.kallsyms = path.into();
        self.kernel_symbols = None;
        self
    }

    /// Called when a process instance is first sampled: snapshots its mappings while it is alive.
    /// Later calls for the same instance keep the snapshot.
    pub fn process_seen(&mut self, key: ProcessKey) -> Result<(), Error> {
        if self.processes.contains(key) || self.is_released(key) {
            return Ok(());
        }
        self.take_snapshot(key)
    }

    /// Like [`Symbolizer::process_seen`], with the start time the sampled process had
    /// (`start_boottime` in nanoseconds since boot, as the BPF side reads it): the process under this
    /// PID is snapshotted only if it is that one, now and when the snapshot is retaken.
    pub fn process_seen_started(
        &mut self,
        key: ProcessKey,
        start_boottime_ns: u64,
    ) -> Result<(), Error> {
        self.start_ticks
            .insert(key, crate::process::start_ticks_from_ns(start_boottime_ns));
        self.process_seen(key)
    }

    /// Called when a process instance ends (exec or exit): its snapshot stays, for the samples it
    /// already has, but is never retaken, and its unwinder is dropped.
    pub fn instance_ended(&mut self, key: ProcessKey) {
        self.ended.insert(key);
        self.runtimes.instance_ended(key);
        self.unwinders.forget(key);
    }

    /// Forgets an ended instance whose samples have all been symbolized: its snapshot (and so its
    /// place among the module table's users), perf map, unwinder, start time and timers. Its symbols
    /// stay in the per-module caches, shared with other processes; its addresses are unknown now.
    pub fn release(&mut self, key: ProcessKey) {
        self.processes.remove(key);
        self.snapshot_taken.remove(&key);
        self.ended.remove(&key);
        self.start_ticks.remove(&key);
        self.unwinders.forget(key);
        self.runtimes.forget(key);
        self.released.insert(key.instance);
    }

    fn is_released(&self, key: ProcessKey) -> bool {
        self.released.contains(key.instance)
    }

    /// How many entries each cache holds, for the debug log of long runs (see the bounds above).
    pub fn cache_sizes(&self) -> String {
        format!(
            "{} modules, {} process snapshots, {} ended, {} ranges of released instances, {} start times, \
             {} snapshot times, {} user symbols, {} kernel symbols, {} names and paths, {} PLT tables, \
             {} entry ranges, unwinders: {}, perf maps: {}",
            self.modules.len(),
            self.processes.len(),
            self.ended.len(),
            self.released.ranges(),
            self.start_ticks.len(),
            self.snapshot_taken.len(),
            self.user_cache.len(),
            self.kernel_cache.len(),
            self.strings.len(),
            self.plt.len(),
            self.entry.len(),
            self.unwinders.sizes(),
            self.runtimes.sizes(),
        )
    }

    /// What perf maps cost that was not used (over the size or entry limits).
    pub fn jit_stats(&self) -> crate::JitStats {
        self.runtimes.jit_stats()
    }

    /// Processes whose snapshot was taken or retaken since the last call.
    pub fn take_changed(&mut self) -> Vec<ProcessKey> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    fn take_snapshot(&mut self, key: ProcessKey) -> Result<(), Error> {
        let now = Instant::now();
        self.snapshot_taken
            .entry(key)
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
        self.unwinders.forget(key);
        let start_ticks = self.start_ticks.get(&key).copied();
        self.processes
            .snapshot(key, start_ticks, &mut self.modules)?;
        self.runtimes.snapshotted(key, start_ticks);
        self.changed.push(key);
        Ok(())
    }

    /// Retakes the snapshots of young processes taken while the dynamic loader was still mapping
    /// their libraries (only the executable and `ld-linux` mapped): a process's first sample often
    /// comes from the loader, and a short-lived one may be gone by the time a stack copy needing
    /// libc's CFI is unwound. Returns whether any such snapshot is still waiting (call again soon).
    pub fn retake_loader_snapshots(&mut self) -> bool {
        let loading: Vec<ProcessKey> = self
            .snapshot_taken
            .iter()
            .filter(|(key, (first, _))| {
                first.elapsed() < YOUNG_PROCESS
                    && !self.ended.contains(key)
                    && self
                        .processes
                        .get(**key)
                        .is_some_and(|snapshot| self.only_loader_mapped(snapshot))
            })
            .map(|(key, _)| *key)
            .collect();
        let mut waiting = false;
        for key in loading {
            self.refresh_snapshot(key);
            waiting |= self
                .processes
                .get(key)
                .is_some_and(|snapshot| self.only_loader_mapped(snapshot));
        }
        waiting
    }

    /// Whether a snapshot holds nothing but the executable and the dynamic loader (and the vDSO).
    fn only_loader_mapped(&self, snapshot: &crate::process::ProcessSnapshot) -> bool {
        let mut has_loader = false;
        for mapping in snapshot.mappings() {
            if Some(mapping.module) == snapshot.executable() {
                continue;
            }
            let name = &self.modules.get(mapping.module).display_name;
            if name.starts_with("ld-linux") || name.starts_with("ld-musl") {
                has_loader = true;
            } else if &**name != "[vdso]" {
                return false;
            }
        }
        has_loader
    }

    /// Re-reads the memory map of a process that has code outside its snapshot, unless that was done
    /// too recently, the instance has ended, or the process has exec'd another program since (the
    /// notice may still be on its way). Returns whether a new snapshot was taken.
    fn refresh_snapshot(&mut self, key: ProcessKey) -> bool {
        if self.ended.contains(&key) || self.is_released(key) {
            return false;
        }
        let recent = self.snapshot_taken.get(&key).is_some_and(|(first, last)| {
            let interval = if first.elapsed() < YOUNG_PROCESS {
                YOUNG_REFRESH_INTERVAL
            } else {
                REFRESH_INTERVAL
            };
            last.elapsed() < interval
        });
        // A snapshot of the loader at work is retaken at once: the libraries are on their way.
        let recent = recent
            && !self
                .processes
                .get(key)
                .is_some_and(|snapshot| self.only_loader_mapped(snapshot));
        let other_program = self
            .processes
            .get(key)
            .is_some_and(|s| !s.same_program(key.pid));
        !recent && !other_program && self.take_snapshot(key).is_ok()
    }

    /// Rebuilds a user stack from its registers and a copy of its top, with the modules' unwind
    /// information (see the `unwind` module).
    pub fn unwind(
        &mut self,
        key: ProcessKey,
        registers: UserRegisters,
        stack: &[u8],
    ) -> UnwoundStack {
        let start_ticks = self.start_ticks.get(&key).copied();
        // A released instance's PID may be another process's now: its perf map is not opened.
        let released = self.is_released(key);
        let unwound = self.unwinders.unwind(
            key,
            registers,
            stack,
            &self.processes,
            &self.modules,
            (!released)
                .then(|| {
                    self.runtimes
                        .perf_map_for_unwinding(key, start_ticks, false)
                })
                .flatten(),
        );
        // A frame outside the snapshot and the perf map means code mapped since they were read (the
        // snapshot of a process seen while the dynamic loader ran has no libc yet; a JIT writes its
        // map as it compiles): without it the unwind may have gone wrong from there. Read both again
        // and unwind again.
        let jit = (!released)
            .then(|| {
                self.runtimes
                    .perf_map_for_unwinding(key, start_ticks, false)
            })
            .flatten();
        let outside_snapshot = match self.processes.get(key) {
            Some(snapshot) => {
                let mut jit = jit;
                unwound.frames.iter().any(|&a| {
                    snapshot.locate(a) == UserLocation::Unmapped
                        && jit.as_mut().is_none_or(|map| map.lookup(a).is_none())
                })
            }
            None => true,
        };
        if outside_snapshot && self.refresh_snapshot(key) {
            return self.unwinders.unwind(
                key,
                registers,
                stack,
                &self.processes,
                &self.modules,
                (!released)
                    .then(|| self.runtimes.perf_map_for_unwinding(key, start_ticks, true))
                    .flatten(),
            );
        }
        unwound
    }

    /// Which code of a snapshotted process lacks frame pointers; `None` if there is no snapshot.
    pub fn frameless_code(&mut self, key: ProcessKey) -> Option<FramelessCode> {
        let snapshot = self.processes.get(key)?;
        let executable = snapshot.executable();
        let mut mappings = Vec::new();
        for mapping in snapshot.mappings().to_vec() {
            let Some(info) = self.unwinders.elf_info(mapping.module, &self.modules) else {
                continue;
            };
            let functions = match &info.frame_pointers {
                FramePointers::Frameless if Some(mapping.module) == executable => {
                    return Some(FramelessCode::Everywhere);
                }
                FramePointers::Frameless => None,
                FramePointers::Kept { frameless } if frameless.is_empty() => continue,
                FramePointers::Kept { frameless } => Some((mapping.module, Arc::clone(frameless))),
            };
            let bias = info.base_address(mapping.start, mapping.offset);
            let Some(bias) = bias.or(functions.is_none().then_some(0)) else {
                continue;
            };
            mappings.push(FramelessMapping {
                range: mapping.start..mapping.end,
                bias,
                functions,
            });
        }
        mappings.sort_unstable_by_key(|m| m.range.start);
        Some(if mappings.is_empty() {
            FramelessCode::None
        } else {
            FramelessCode::Mappings(mappings)
        })
    }

    pub fn modules(&self) -> &ModuleTable {
        &self.modules
    }

    pub fn processes(&self) -> &ProcessTable {
        &self.processes
    }

    /// Symbolizes user addresses of the given processes; one result per input, in order.
    pub fn symbolize_user(&mut self, addresses: &[(ProcessKey, FrameAddress)]) -> Vec<Symbol> {
        if self.user_cache.len() >= USER_SYMBOLS {
            // Emptied before the batch, not during it: the batch reads back every entry it adds.
            self.user_cache = HashMap::new();
        }
        let locations: Vec<UserLocation> = addresses
            .iter()
            .map(|&(key, address)| self.locate_user(key, address.lookup_address()))
            .collect();

        let mut misses: HashMap<ModuleId, Vec<u64>> = HashMap::new();
        for location in &locations {
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
            self.symbolize_module(module, &offsets);
        }

        locations
            .into_iter()
            .zip(addresses)
            .map(|(location, &(key, address))| match location {
                UserLocation::Module {
                    module,
                    file_offset,
                } => self.user_cache[&(module, file_offset)].clone(),
                UserLocation::UnreadableModule { name, file_offset } => Symbol::Unknown {
                    module: Some(name),
                    offset: file_offset,
                    reason: UnknownReason::ModuleUnreadable,
                },
                UserLocation::Unmapped => {
                    let start_ticks = self.start_ticks.get(&key).copied();
                    // A released instance's PID may be another process's now: its map is not read.
                    let jit = if self.is_released(key) {
                        None
                    } else {
                        self.runtimes
                            .name(key, start_ticks, address.lookup_address())
                    };
                    if let Some(name) = jit {
                        return Symbol::Named(vec![Frame::new(name, FrameKind::Jit)]);
                    }
                    let reason = if self.processes.contains(key) {
                        UnknownReason::NotInModule
                    } else {
                        UnknownReason::ProcessNotSnapshotted
                    };
                    Symbol::Unknown {
                        module: None,
                        offset: address.lookup_address(),
                        reason,
                    }
                }
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
                            frame(symbol.name, None, FrameKind::Kernel, options, strings);
                        if let Some(module) = symbol.module {
                            frame.name = strings.get(&format!("{} [{module}]", frame.name));
                        }
                        Symbol::Named(vec![frame])
                    })
                    .clone()
            })
            .collect()
    }

    fn locate_user(&mut self, key: ProcessKey, address: u64) -> UserLocation {
        let location = match self.processes.get(key) {
            Some(snapshot) => snapshot.locate(address),
            None => UserLocation::Unmapped,
        };
        // Not found: the process may have mapped it after its snapshot, or never been snapshotted.
        if location != UserLocation::Unmapped || !self.refresh_snapshot(key) {
            return location;
        }
        match self.processes.get(key) {
            Some(snapshot) => snapshot.locate(address),
            None => UserLocation::Unmapped,
        }
    }

    fn symbolize_module(&mut self, module_id: ModuleId, offsets: &[u64]) {
        let module = self.modules.get(module_id);
        let plt = self
            .plt
            .entry(module_id)
            .or_insert_with(|| PltStubs::read(module.file()));
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
            .or_insert_with(|| entry_function(module.file()))
            .clone();
        // A separate debug file is addressed by virtual offsets; what it cannot name (or everything,
        // without one) is looked up in the module itself by file offset.
        let mut found: Vec<Option<Vec<Frame>>> = vec![None; offsets.len()];
        if let Some(debug_path) = module.debug_readable_path() {
            let virtual_offsets: Vec<u64> = offsets
                .iter()
                .map(|&offset| module.virtual_offset(offset).unwrap_or(u64::MAX))
                .collect();
            if let Ok(frames) = Self::lookup(
                &self.blaze,
                &mut self.strings,
                self.options,
                debug_path,
                Input::VirtOffset(&virtual_offsets),
            ) {
                found = frames;
            }
        }
        let missing: Vec<u64> = offsets
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(&o, _)| o)
            .collect();
        let mut from_module = Vec::new().into_iter();
        let mut module_readable = true;
        if !missing.is_empty() {
            match Self::lookup(
                &self.blaze,
                &mut self.strings,
                self.options,
                module.readable_path(),
                Input::FileOffset(&missing),
            ) {
                Ok(frames) => from_module = frames.into_iter(),
                Err(error) => {
                    log::warn!("cannot symbolize {}: {error}", module.mapped_path.display());
                    module_readable = false;
                }
            }
        }
        for (&offset, frames) in offsets.iter().zip(found) {
            let frames = frames.or_else(|| from_module.next().flatten());
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

    /// Frames for each address of one ELF file, `None` where it has no symbol.
    ///
    /// Two passes: DWARF (inlined functions, lines) and the symbol table. DWARF names are often bare
    /// (`hot_loop`: rustc's line-tables-only debug info has no linkage names), while the symbol table
    /// has the full demangled path (`rust_inline::hot_loop`,
    /// `ns::Class<T>::method(T)`); a qualified symbol-table name that contains the DWARF name replaces
    /// it. C names, and compiler clones such as `foo.cold`, keep the DWARF name.
    fn lookup(
        blaze: &blazesym::symbolize::Symbolizer,
        strings: &mut SharedStrings,
        options: SymbolizerOptions,
        path: PathBuf,
        input: Input<&[u64]>,
    ) -> Result<Vec<Option<Vec<Frame>>>, blazesym::Error> {
        let dwarf = blaze.symbolize(&Source::Elf(Elf::new(path.clone())), input)?;
        let symtab_source = Source::Elf(Elf {
            debug_syms: false,
            ..Elf::new(path)
        });
        let symtab = blaze.symbolize(&symtab_source, input).unwrap_or_default();
        Ok(dwarf
            .iter()
            .enumerate()
            .map(|(index, symbolized)| {
                let sym = symbolized.as_sym()?;
                let mut frames = frames_of(sym, options, strings);
                let symtab_sym = symtab.get(index).and_then(Symbolized::as_sym);
                let qualified = symtab_sym.map(|s| demangle(&s.name, options.name_style));
                let name = demangle(&sym.name, options.name_style);
                if let (Some(qualified), Some(symtab_sym)) = (qualified, symtab_sym) {
                    if qualified.contains("::")
                        && qualified.contains(name.as_ref())
                        && qualified != name
                    {
                        frames[0].name = strings.get(&qualified);
                        frames[0].system_name =
                            system_name(&symtab_sym.name, &frames[0].name, strings);
                    }
                }
                Some(frames)
            })
            .collect())
    }
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

/// The function at the address, then the functions inlined into it, outermost first.
///
/// blazesym 0.2.7 moves locations up one level as it walks the inline chain
/// (`dwarf/resolver.rs`, `fill_code_info`): `Sym::code_info` is where the function itself is (the
/// call site of its first inlined callee, or the address's own line when nothing is inlined there),
/// and each `InlinedFn::code_info` is where that inlined function is (the call site of the next one,
/// or the address's line for the innermost), which is what each frame shows, as perf does.
fn frames_of(sym: &Sym<'_>, options: SymbolizerOptions, strings: &mut SharedStrings) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    frames.push(frame(
        &sym.name,
        sym.code_info.as_deref(),
        FrameKind::User,
        options,
        strings,
    ));
    if options.inlined_functions {
        for inlined in sym.inlined.iter() {
            frames.push(frame(
                &inlined.name,
                inlined.code_info.as_ref(),
                FrameKind::Inlined,
                options,
                strings,
            ));
        }
    }
    frames
}

/// A frame named `raw` (as the module spells it), at `location`. The source location is kept apart
/// from the name, so that each output decides whether to show it (folded output with `--lines`).
fn frame(
    raw: &str,
    location: Option<&CodeInfo<'_>>,
    kind: FrameKind,
    options: SymbolizerOptions,
    strings: &mut SharedStrings,
) -> Frame {
    let name = strings.get(&demangle(raw, options.name_style));
    let system_name = system_name(raw, &name, strings);
    let (file, line) = match location {
        Some(CodeInfo { file, line, .. }) => (Some(strings.get(&file.to_string_lossy())), *line),
        None => (None, None),
    };
    Frame {
        name,
        kind,
        system_name,
        file,
        line,
    }
}

/// The raw name, when it is not what is shown.
fn system_name(raw: &str, name: &str, strings: &mut SharedStrings) -> Option<Arc<str>> {
    (raw != name && !raw.is_empty()).then(|| strings.get(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::parse_maps;

    /// Addresses spread over this test program's own code, in its own process.
    fn own_code_addresses(count: u64) -> Vec<(ProcessKey, FrameAddress)> {
        let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").expect("own maps"));
        let exe = std::fs::read_link("/proc/self/exe").expect("own executable");
        let text = maps
            .iter()
            .filter(|m| m.executable && std::path::Path::new(&m.path) == exe)
            .max_by_key(|m| m.end - m.start)
            .expect("an executable mapping of the test program");
        let step = ((text.end - text.start) / count).max(1);
        let key = ProcessKey {
            pid: std::process::id(),
            instance: 1,
        };
        (0..count)
            .map(|i| text.start + i * step)
            .take_while(|&address| address < text.end)
            .map(|address| (key, FrameAddress::InstructionPointer(address)))
            .collect()
    }

    fn names(symbols: &[Symbol]) -> Vec<Vec<Arc<str>>> {
        symbols
            .iter()
            .map(|symbol| match symbol {
                Symbol::Named(frames) => frames.iter().map(|f| f.name.clone()).collect(),
                Symbol::Unknown { .. } => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn user_symbol_cache_is_emptied_at_its_bound_and_names_are_shared() {
        const BATCH: usize = 1000;
        let addresses = own_code_addresses(3 * USER_SYMBOLS as u64);
        assert!(addresses.len() > 2 * USER_SYMBOLS, "too few addresses");
        let mut symbolizer = Symbolizer::new(SymbolizerOptions::default()).expect("symbolizer");
        symbolizer
            .process_seen(addresses[0].0)
            .expect("own snapshot");
        let first = symbolizer.symbolize_user(&addresses[..BATCH]);
        let mut most_cached = 0;
        for batch in addresses.chunks(BATCH) {
            symbolizer.symbolize_user(batch);
            most_cached = most_cached.max(symbolizer.user_cache.len());
        }
        assert!(
            most_cached <= USER_SYMBOLS + BATCH,
            "cache held {most_cached} entries, bound {USER_SYMBOLS} plus a batch of {BATCH}"
        );
        assert!(most_cached >= USER_SYMBOLS, "the bound was never reached");
        // Emptied since: looked up again, named the same.
        let again = symbolizer.symbolize_user(&addresses[..BATCH]);
        assert_eq!(names(&again), names(&first));

        // Neighbouring addresses in one function share one copy of its name.
        let names = names(&again);
        let same_function: Vec<(&Arc<str>, &Arc<str>)> = names
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
