//! Batch symbolization with caches, over blazesym.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{CodeInfo, Input, Sym, Symbolized};
use blazesym::MaybeDefault;

use crate::frame::{Frame, FrameAddress, FrameKind, Symbol, UnknownReason};
use crate::modules::{ModuleId, ModuleTable};
use crate::process::{ProcessTable, UserLocation};
use crate::unwind::{Unwinders, UnwoundStack, UserRegisters};
use crate::Error;

/// Least time between two reads of one process's memory map: short while the process is young (its
/// loader is still mapping libraries), long after (only dlopen or JIT code remains to be found).
const YOUNG_REFRESH_INTERVAL: Duration = Duration::from_millis(5);
const REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// How long after its first snapshot a process counts as young.
const YOUNG_PROCESS: Duration = Duration::from_secs(1);

/// What to put in frames. Defaults: inlined functions as their own frames, no source lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolizerOptions {
    /// Report functions inlined at an address as frames of their own (kind [`FrameKind::Inlined`]).
    pub inlined_functions: bool,
    /// Append ` (file:line)` to each frame name when debug info has it.
    pub source_lines: bool,
}

impl Default for SymbolizerOptions {
    fn default() -> Self {
        SymbolizerOptions {
            inlined_functions: true,
            source_lines: false,
        }
    }
}

pub struct Symbolizer {
    options: SymbolizerOptions,
    blaze: blazesym::symbolize::Symbolizer,
    modules: ModuleTable,
    processes: ProcessTable,
    /// By (module, file offset looked up).
    user_cache: HashMap<(ModuleId, u64), Symbol>,
    /// By kernel address looked up.
    kernel_cache: HashMap<u64, Symbol>,
    /// When each process's memory map was first and last read. An address outside the snapshot (a
    /// library loaded after the first sample) triggers a re-read, rate-limited (see
    /// [`REFRESH_INTERVAL`]) so a truly unmapped address (JIT code) does not cost one per sample.
    snapshot_taken: HashMap<u32, (Instant, Instant)>,
    /// Processes snapshotted (first time or again) since the last [`Symbolizer::take_changed`].
    changed: Vec<u32>,
    unwinders: Unwinders,
}

/// Where a process runs code without frame pointers, for `--unwind auto`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FramelessCode {
    /// Every module keeps frame pointers.
    None,
    /// These address ranges (of frameless modules) do not.
    Ranges(Vec<std::ops::Range<u64>>),
    /// The main executable itself is frameless: unwind everything with DWARF.
    Everywhere,
}

impl Symbolizer {
    pub fn new(options: SymbolizerOptions) -> Result<Self, Error> {
        let mut modules = ModuleTable::default();
        let vdso = crate::vdso::extract_vdso()?.map(|file| modules.insert("[vdso]", file));
        let blaze = blazesym::symbolize::Symbolizer::builder()
            .enable_code_info(options.source_lines)
            .enable_inlined_fns(options.inlined_functions)
            .enable_demangling(true)
            .build();
        Ok(Symbolizer {
            options,
            blaze,
            modules,
            processes: ProcessTable::new(vdso),
            user_cache: HashMap::new(),
            kernel_cache: HashMap::new(),
            snapshot_taken: HashMap::new(),
            changed: Vec::new(),
            unwinders: Unwinders::default(),
        })
    }

    /// Called when a process is first sampled: snapshots its mappings while it is alive. A second call
    /// for the same PID keeps the first snapshot.
    pub fn process_seen(&mut self, pid: u32) -> Result<(), Error> {
        if self.processes.contains(pid) {
            return Ok(());
        }
        self.take_snapshot(pid)
    }

    /// Processes whose snapshot was taken or retaken since the last call.
    pub fn take_changed(&mut self) -> Vec<u32> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    fn take_snapshot(&mut self, pid: u32) -> Result<(), Error> {
        let now = Instant::now();
        self.snapshot_taken
            .entry(pid)
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
        self.unwinders.forget(pid);
        self.processes.snapshot(pid, &mut self.modules)?;
        self.changed.push(pid);
        Ok(())
    }

    /// Re-reads the memory map of a process that has code outside its snapshot, unless that was done
    /// too recently. Returns whether a new snapshot was taken.
    fn refresh_snapshot(&mut self, pid: u32) -> bool {
        let recent = self.snapshot_taken.get(&pid).is_some_and(|(first, last)| {
            let interval = if first.elapsed() < YOUNG_PROCESS {
                YOUNG_REFRESH_INTERVAL
            } else {
                REFRESH_INTERVAL
            };
            last.elapsed() < interval
        });
        !recent && self.take_snapshot(pid).is_ok()
    }

    /// Rebuilds a user stack from its registers and a copy of its top, with the modules' unwind
    /// information (see the `unwind` module).
    pub fn unwind(&mut self, pid: u32, registers: UserRegisters, stack: &[u8]) -> UnwoundStack {
        let unwound = self
            .unwinders
            .unwind(pid, registers, stack, &self.processes, &self.modules);
        // A frame outside the snapshot means code mapped since it was taken (the snapshot of a
        // process seen while the dynamic loader ran has no libc yet): without that module's CFI the
        // unwind went wrong from there. Retake the snapshot and unwind again.
        let outside_snapshot = match self.processes.get(pid) {
            Some(snapshot) => unwound
                .frames
                .iter()
                .any(|&a| snapshot.locate(a) == UserLocation::Unmapped),
            None => true,
        };
        if outside_snapshot && self.refresh_snapshot(pid) {
            return self
                .unwinders
                .unwind(pid, registers, stack, &self.processes, &self.modules);
        }
        unwound
    }

    /// Which code of a snapshotted process lacks frame pointers; `None` if there is no snapshot.
    pub fn frameless_code(&mut self, pid: u32) -> Option<FramelessCode> {
        let snapshot = self.processes.get(pid)?;
        let executable = snapshot.executable();
        let mut ranges = Vec::new();
        for mapping in snapshot.mappings().to_vec() {
            let frameless = self
                .unwinders
                .elf_info(mapping.module, &self.modules)
                .is_some_and(|info| !info.keeps_frame_pointers);
            if frameless {
                if Some(mapping.module) == executable {
                    return Some(FramelessCode::Everywhere);
                }
                ranges.push(mapping.start..mapping.end);
            }
        }
        Some(if ranges.is_empty() {
            FramelessCode::None
        } else {
            FramelessCode::Ranges(ranges)
        })
    }

    /// Called when a process exec'd: its snapshot and unwinder describe the old program, so they are
    /// dropped and the process is snapshotted again at its next first sample.
    pub fn process_exec(&mut self, pid: u32) {
        self.processes.remove(pid);
        self.unwinders.forget(pid);
        self.snapshot_taken.remove(&pid);
    }

    pub fn modules(&self) -> &ModuleTable {
        &self.modules
    }

    pub fn processes(&self) -> &ProcessTable {
        &self.processes
    }

    /// Symbolizes user addresses of the given processes; one result per input, in order.
    pub fn symbolize_user(&mut self, addresses: &[(u32, FrameAddress)]) -> Vec<Symbol> {
        let locations: Vec<UserLocation> = addresses
            .iter()
            .map(|&(pid, address)| self.locate_user(pid, address.lookup_address()))
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
            .map(|(location, &(pid, address))| match location {
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
                    let reason = if self.processes.contains(pid) {
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
        let mut misses: Vec<u64> = addresses
            .iter()
            .map(|a| a.lookup_address())
            .filter(|a| !self.kernel_cache.contains_key(a))
            .collect();
        misses.sort_unstable();
        misses.dedup();
        if !misses.is_empty() {
            let source = Source::Kernel(Kernel {
                // kallsyms only: searching the disk for a vmlinux image is slow and rarely fruitful.
                vmlinux: MaybeDefault::None,
                debug_syms: false,
                ..Kernel::default()
            });
            let results = self.blaze.symbolize(&source, Input::AbsAddr(&misses));
            let options = self.options;
            for (index, &address) in misses.iter().enumerate() {
                let symbol = match &results {
                    Ok(results) => match &results[index] {
                        Symbolized::Sym(sym) => {
                            Symbol::Named(frames_of(sym, FrameKind::Kernel, options))
                        }
                        Symbolized::Unknown(_) => unknown_kernel(address),
                    },
                    Err(error) => {
                        log::debug!("kernel symbolization failed: {error}");
                        unknown_kernel(address)
                    }
                };
                self.kernel_cache.insert(address, symbol);
            }
        }
        addresses
            .iter()
            .map(|a| self.kernel_cache[&a.lookup_address()].clone())
            .collect()
    }

    fn locate_user(&mut self, pid: u32, address: u64) -> UserLocation {
        let location = match self.processes.get(pid) {
            Some(snapshot) => snapshot.locate(address),
            None => UserLocation::Unmapped,
        };
        // Not found: the process may have mapped it after its snapshot, or never been snapshotted.
        if location != UserLocation::Unmapped || !self.refresh_snapshot(pid) {
            return location;
        }
        match self.processes.get(pid) {
            Some(snapshot) => snapshot.locate(address),
            None => UserLocation::Unmapped,
        }
    }

    fn symbolize_module(&mut self, module_id: ModuleId, offsets: &[u64]) {
        let module = self.modules.get(module_id);
        let source = Source::Elf(Elf::new(module.readable_path()));
        let display_name = module.display_name.clone();
        let results = self.blaze.symbolize(&source, Input::FileOffset(offsets));
        let options = self.options;
        if let Err(error) = &results {
            log::warn!("cannot symbolize {}: {error}", module.mapped_path.display());
        }
        for (index, &offset) in offsets.iter().enumerate() {
            let symbol = match &results {
                Ok(results) => match &results[index] {
                    Symbolized::Sym(sym) => Symbol::Named(frames_of(sym, FrameKind::User, options)),
                    Symbolized::Unknown(_) => Symbol::Unknown {
                        module: Some(display_name.clone()),
                        offset,
                        reason: UnknownReason::NoSymbol,
                    },
                },
                Err(_) => Symbol::Unknown {
                    module: Some(display_name.clone()),
                    offset,
                    reason: UnknownReason::ModuleUnreadable,
                },
            };
            self.user_cache.insert((module_id, offset), symbol);
        }
    }
}

fn unknown_kernel(address: u64) -> Symbol {
    Symbol::Unknown {
        module: None,
        offset: address,
        reason: UnknownReason::UnknownKernelAddress,
    }
}

/// The function at the address, then the functions inlined into it, outermost first.
fn frames_of(sym: &Sym<'_>, kind: FrameKind, options: SymbolizerOptions) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    let outer_location = if sym.inlined.is_empty() {
        sym.code_info.as_deref()
    } else {
        None
    };
    frames.push(Frame {
        name: frame_name(&sym.name, outer_location, options),
        kind,
    });
    if options.inlined_functions {
        let inlined_kind = if kind == FrameKind::Kernel {
            FrameKind::Kernel
        } else {
            FrameKind::Inlined
        };
        for inlined in sym.inlined.iter() {
            frames.push(Frame {
                name: frame_name(&inlined.name, inlined.code_info.as_ref(), options),
                kind: inlined_kind,
            });
        }
    }
    frames
}

fn frame_name(name: &str, location: Option<&CodeInfo<'_>>, options: SymbolizerOptions) -> Arc<str> {
    match location.filter(|_| options.source_lines) {
        Some(CodeInfo {
            file,
            line: Some(line),
            ..
        }) => Arc::from(format!("{name} ({}:{line})", file.to_string_lossy())),
        _ => Arc::from(name),
    }
}
