//! Finding a process's CPython: the module that defines `_PyRuntime` (the `python3.X` executable
//! when libpython is linked in statically, as Debian does, or `libpython3.X.so`), its version, and
//! the layout to read it with.
//!
//! The module's symbols come from the file emberprof holds open for it (so a process in a container
//! is read through its own view), the version and 3.13's offsets from the process's memory. This
//! must not keep anything: the caller keeps the [`PythonRuntime`] with the process.

use std::ops::Range;

use object::{Object, ObjectSymbol};

use super::debug_offsets;
use super::layout::{self, Layout};
use super::memory::{Memory, ProcessMemory};
use super::{NotPython, PythonRuntime};
use crate::process::Mapping;
use crate::unwind::elf_info;
use crate::ModuleTable;

/// What a CPython module's symbols say, as absolute addresses in one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeSymbols {
    /// Display name of the module (for messages).
    pub module: String,
    /// `_PyRuntime`.
    pub runtime: u64,
    /// `Py_Version` (3.11+: a `const unsigned long` holding `PY_VERSION_HEX`).
    pub py_version: Option<u64>,
    /// `PyCode_Type`, or 0.
    pub code_type: u64,
    /// `_PyEval_EvalFrameDefault`, when its size is known.
    pub eval_frame: Option<Range<u64>>,
    /// The version the module's file name says (`libpython3.9.so.1.0`, `python3.11`).
    pub name_version: Option<(u8, u8)>,
}

/// Finds the CPython runtime of process `pid` among its executable `mappings` (as the process's
/// snapshot holds them) and their `modules`: `Ok(None)` if the process maps no CPython,
/// [`NotPython`] if it does but cannot be read (an unsupported version, say).
pub fn find_runtime(
    pid: u32,
    mappings: &[Mapping],
    modules: &ModuleTable,
) -> Result<Option<PythonRuntime>, NotPython> {
    // libpython first: pyenv's `python3.X` executable only links it, and names itself Python too.
    let mut candidates: Vec<&Mapping> = mappings
        .iter()
        .filter(|m| python_name(&modules.get(m.module).display_name).is_some())
        .collect();
    candidates.sort_by_key(|m| {
        let name = &modules.get(m.module).display_name;
        (!name.starts_with("libpython"), m.start)
    });
    candidates.dedup_by_key(|m| m.module);
    let mut unsupported = None;
    for mapping in candidates {
        let module = modules.get(mapping.module);
        let name = module.display_name.to_string();
        let name_version = python_name(&name).flatten();
        // A module closed for the descriptor budget is looked at again at the next snapshot.
        let Some(file) = module.file() else {
            continue;
        };
        match read_symbols(mapping, file, &name, name_version) {
            Some(symbols) => {
                let memory = ProcessMemory::open(pid).map_err(|_| NotPython::Unreadable {
                    module: name.clone(),
                    what: "process memory",
                })?;
                return runtime_from_symbols(&symbols, &memory).map(Some);
            }
            // No `_PyRuntime`: Python 2 and 3.6 and older, or not the interpreter itself.
            None => {
                if let Some(version) = name_version.filter(|v| layout::table(*v).is_none()) {
                    unsupported = Some(version);
                }
            }
        }
    }
    match unsupported {
        Some(version) => Err(NotPython::UnsupportedVersion { version }),
        None => Ok(None),
    }
}

/// The interpreter's layout from its symbols and memory (the part of [`find_runtime`] that tests can
/// feed with made-up memory).
pub fn runtime_from_symbols(
    symbols: &RuntimeSymbols,
    memory: &dyn Memory,
) -> Result<PythonRuntime, NotPython> {
    let module = || symbols.module.clone();
    let cookie = debug_offsets::has_cookie(memory, symbols.runtime);
    let version = symbols
        .py_version
        .and_then(|address| memory.read_u32(address))
        .map(|hex| debug_offsets::hex_version(u64::from(hex)))
        .or_else(|| {
            // A 3.13+ runtime without Py_Version in its symbols still says its version here.
            cookie
                .then(|| memory.read_u64(symbols.runtime.checked_add(8)?))
                .flatten()
                .map(debug_offsets::hex_version)
        })
        .or(symbols.name_version)
        .filter(|&(major, minor)| major == 3 && minor < 100)
        .ok_or_else(|| NotPython::UnknownVersion { module: module() })?;
    let layout: Layout = if version >= (3, 13) {
        if !cookie {
            return Err(NotPython::BadDebugOffsets {
                version,
                reason: "_PyRuntime does not start with the xdebugpy cookie".into(),
            });
        }
        let layout = debug_offsets::read(memory, symbols.runtime, &symbols.module)?;
        // The block's own version was checked to be 3.13; Py_Version must agree.
        if version != (3, 13) {
            return Err(NotPython::UnsupportedVersion { version });
        }
        layout
    } else {
        layout::table(version).ok_or(NotPython::UnsupportedVersion { version })?
    };
    // The interpreter list head may still be null (the process has not initialised Python yet),
    // but it must be readable, or `_PyRuntime` is not where the symbols say.
    let head = symbols
        .runtime
        .checked_add(u64::from(layout.runtime_interpreters_head));
    if head.and_then(|head| memory.read_u64(head)).is_none() {
        return Err(NotPython::Unreadable {
            module: module(),
            what: "_PyRuntime",
        });
    }
    if let Some(reason) = misfit(memory, &layout, symbols.runtime) {
        return Err(NotPython::LayoutMismatch {
            version,
            module: module(),
            reason,
        });
    }
    Ok(PythonRuntime {
        version,
        runtime_address: symbols.runtime,
        layout,
        code_type: symbols.code_type,
        eval_frame: symbols.eval_frame.clone(),
    })
}

/// Why the live interpreter does not fit `layout`, if it is set up enough to tell: its first
/// thread state must point back to it. A thread being created or torn down may be seen half-linked,
/// so a mismatch must hold over a few reads.
fn misfit(memory: &dyn Memory, layout: &Layout, runtime: u64) -> Option<String> {
    let read = |base: u64, offset: u32| memory.read_u64(base.checked_add(u64::from(offset))?);
    let mut reason = None;
    for _ in 0..3 {
        let interp = read(runtime, layout.runtime_interpreters_head)?;
        if interp == 0 {
            // Not initialised yet: nothing to check.
            return None;
        }
        let Some(tstate) = read(interp, layout.interp_threads_head) else {
            reason = Some(format!("its interpreter at {interp:#x} cannot be read"));
            continue;
        };
        if tstate == 0 {
            return None;
        }
        match read(tstate, layout.tstate_interp) {
            Some(back) if back == interp => return None,
            back => {
                reason = Some(format!(
                    "its first thread state at {tstate:#x} names interpreter {back:#x?}, not {interp:#x}"
                ))
            }
        }
    }
    reason
}

/// `Some(version from the name)` if `name` (a file name) names a Python interpreter or library:
/// `python3.11`, `libpython3.9.so.1.0`, `python3` (`Some(None)`).
fn python_name(name: &str) -> Option<Option<(u8, u8)>> {
    let rest = name.strip_prefix("lib").unwrap_or(name);
    let rest = rest.strip_prefix("python")?;
    let digits = |text: &str| -> Option<(u8, usize)> {
        let end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        Some((text[..end].parse().ok()?, end))
    };
    let version = (|| {
        let (major, end) = digits(rest)?;
        let (minor, _) = digits(rest[end..].strip_prefix('.')?)?;
        Some((major, minor))
    })();
    Some(version)
}

/// The CPython symbols of a module mapped by `mapping`, if it defines `_PyRuntime`.
fn read_symbols(
    mapping: &Mapping,
    file: &crate::untrusted::StableFile,
    name: &str,
    name_version: Option<(u8, u8)>,
) -> Option<RuntimeSymbols> {
    let map = file.map().ok()?;
    let elf = object::File::parse(&map[..]).ok()?;
    // The load bias: where the segment that holds the mapping's file offset was put.
    let segment = elf_info::load_segments(&elf).into_iter().find(|s| {
        (s.file_offset..s.file_offset.saturating_add(s.file_size)).contains(&mapping.offset)
    })?;
    let bias = mapping.start.wrapping_sub(
        segment
            .vaddr
            .wrapping_add(mapping.offset - segment.file_offset),
    );
    // One pass over `.dynsym` then `.symtab` (stripped builds, Debian's, keep only the first),
    // keeping the first definition of each name wanted.
    const WANTED: [&str; 4] = [
        "_PyRuntime",
        "Py_Version",
        "PyCode_Type",
        "_PyEval_EvalFrameDefault",
    ];
    let mut found: [Option<(u64, u64)>; 4] = [None; 4];
    for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
        if symbol.is_undefined() {
            continue;
        }
        let Ok(name) = symbol.name() else {
            continue;
        };
        if let Some(index) = WANTED.iter().position(|&wanted| wanted == name) {
            found[index].get_or_insert((symbol.address().wrapping_add(bias), symbol.size()));
            if found.iter().all(Option::is_some) {
                break;
            }
        }
    }
    let [runtime, py_version, code_type, eval_frame] = found;
    let (runtime, _) = runtime?;
    Some(RuntimeSymbols {
        module: name.to_owned(),
        runtime,
        py_version: py_version.map(|(address, _)| address),
        code_type: code_type.map_or(0, |(address, _)| address),
        eval_frame: eval_frame
            .filter(|&(_, size)| size > 0)
            .map(|(start, size)| start..start.wrapping_add(size)),
        name_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::memory::FakeMemory;

    /// File names: versions are read from interpreter and library names; other names are not Python.
    #[test]
    fn python_names_give_versions() {
        assert_eq!(python_name("python3.11"), Some(Some((3, 11))));
        assert_eq!(python_name("libpython3.9.so.1.0"), Some(Some((3, 9))));
        assert_eq!(python_name("libpython3.7m.so.1.0"), Some(Some((3, 7))));
        assert_eq!(python_name("python2.7"), Some(Some((2, 7))));
        assert_eq!(python_name("python3"), Some(None));
        assert_eq!(python_name("libc.so.6"), None);
        assert_eq!(python_name("pythonista"), Some(None));
    }

    const RUNTIME: u64 = 0x10_0000;
    const VERSION: u64 = 0x20_0000;

    fn symbols() -> RuntimeSymbols {
        RuntimeSymbols {
            module: "libpython-test.so".into(),
            runtime: RUNTIME,
            py_version: Some(VERSION),
            ..RuntimeSymbols::default()
        }
    }

    fn memory(hex_version: u32) -> FakeMemory {
        FakeMemory::default()
            .with(RUNTIME, vec![0; 4096])
            .with(VERSION, hex_version.to_le_bytes().to_vec())
    }

    /// `Py_Version` picks the table; an unsupported version is said so.
    #[test]
    fn python_version_symbol_picks_the_table() {
        let runtime = runtime_from_symbols(&symbols(), &memory(0x030c_01f0)).expect("3.12");
        assert_eq!(runtime.version, (3, 12));
        assert_eq!(runtime.layout, layout::table((3, 12)).expect("table"));
        assert_eq!(
            runtime_from_symbols(&symbols(), &memory(0x0307_10f0)),
            Err(NotPython::UnsupportedVersion { version: (3, 7) })
        );
    }

    /// Before 3.11 (no `Py_Version`) the file name decides; with neither, the version is unknown.
    #[test]
    fn python_version_falls_back_to_the_name() {
        let symbols = RuntimeSymbols {
            py_version: None,
            name_version: Some((3, 9)),
            ..symbols()
        };
        let runtime = runtime_from_symbols(&symbols, &memory(0)).expect("3.9");
        assert_eq!(runtime.version, (3, 9));
        let nameless = RuntimeSymbols {
            name_version: None,
            ..symbols
        };
        assert!(matches!(
            runtime_from_symbols(&nameless, &memory(0)),
            Err(NotPython::UnknownVersion { .. })
        ));
    }

    /// Defence: a `_PyRuntime` that is not readable memory (a symbol pointing anywhere) → NotPython.
    #[test]
    fn python_unreadable_runtime_is_refused() {
        let symbols = RuntimeSymbols {
            runtime: 0xdead_0000,
            ..symbols()
        };
        assert!(matches!(
            runtime_from_symbols(&symbols, &memory(0x030b_07f0)),
            Err(NotPython::Unreadable { .. })
        ));
    }

    /// An initialised interpreter is checked: its thread state must point back to it, or the
    /// layout does not fit the build.
    #[test]
    fn python_layout_is_checked_against_the_live_interpreter() {
        let layout = layout::table((3, 12)).expect("3.12");
        let (interp, tstate) = (0x30_0000u64, 0x40_0000u64);
        let mut memory = memory(0x030c_01f0)
            .with(interp, vec![0; 4096])
            .with(tstate, vec![0; 4096]);
        let at = |base: u64, offset: u32| base + u64::from(offset);
        memory.put(
            at(RUNTIME, layout.runtime_interpreters_head),
            &interp.to_le_bytes(),
        );
        memory.put(
            at(interp, layout.interp_threads_head),
            &tstate.to_le_bytes(),
        );
        memory.put(at(tstate, layout.tstate_interp), &interp.to_le_bytes());
        assert!(runtime_from_symbols(&symbols(), &memory).is_ok());
        memory.put(at(tstate, layout.tstate_interp), &0x1234u64.to_le_bytes());
        assert!(matches!(
            runtime_from_symbols(&symbols(), &memory),
            Err(NotPython::LayoutMismatch { .. })
        ));
    }

    /// Defence: a 3.13 `Py_Version` over a runtime without the cookie (a fake `_PyRuntime`) →
    /// NotPython; with a valid block → the block's layout.
    #[test]
    fn python_313_needs_its_debug_offsets() {
        let mut memory = memory(0x030d_00f0);
        assert!(matches!(
            runtime_from_symbols(&symbols(), &memory),
            Err(NotPython::BadDebugOffsets { .. })
        ));
        memory.put(RUNTIME, &debug_offsets::tests::block_313());
        let runtime = runtime_from_symbols(&symbols(), &memory).expect("3.13");
        assert_eq!(runtime.layout, layout::table((3, 13)).expect("table"));
    }
}
