//! Frames for the addresses of one ELF file, through blazesym: the one place that turns blazesym's
//! symbols into [`Frame`]s (demangled, interned, inlined functions and source lines as the options
//! ask).

use std::path::PathBuf;
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Sym, Symbolized};

use crate::demangle::demangle;
use crate::frame::{Frame, FrameKind};
use crate::options::SymbolizerOptions;
use crate::strings::SharedStrings;

/// Frames for each address of one ELF file, `None` where it has no symbol. `dwarf`: whether its
/// DWARF may be read (see `file_check`); without it, names come from the symbol tables alone.
///
/// Two passes: DWARF (inlined functions, lines) and the symbol table. DWARF names are often bare
/// (`hot_loop`: rustc's line-tables-only debug info has no linkage names), while the symbol table
/// has the full demangled path (`rust_inline::hot_loop`,
/// `ns::Class<T>::method(T)`); a qualified symbol-table name that contains the DWARF name replaces
/// it. C names, and compiler clones such as `foo.cold`, keep the DWARF name.
pub(super) fn lookup(
    blaze: &blazesym::symbolize::Symbolizer,
    strings: &mut SharedStrings,
    options: SymbolizerOptions,
    path: PathBuf,
    dwarf: bool,
    input: Input<&[u64]>,
) -> Result<Looked, blazesym::Error> {
    let start = crate::thread_heap_balance();
    let dwarf_source = Source::Elf(Elf {
        debug_syms: dwarf,
        ..Elf::new(path.clone())
    });
    let read_dwarf = dwarf;
    let dwarf = blaze.symbolize(&dwarf_source, input)?;
    // Without DWARF the first pass was the symbol table's already.
    let symtab = if read_dwarf {
        let symtab_source = Source::Elf(Elf {
            debug_syms: false,
            ..Elf::new(path)
        });
        blaze.symbolize(&symtab_source, input).unwrap_or_default()
    } else {
        Vec::new()
    };
    let converting = crate::thread_heap_balance();
    let frames = dwarf
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
                    frames[0].system_name = system_name(&symtab_sym.name, &frames[0].name, strings);
                }
            }
            Some(frames)
        })
        .collect();
    let ours = crate::thread_heap_balance() - converting;
    drop((dwarf, symtab));
    // What blazesym allocated and did not free with its results: the state it parsed and keeps.
    // Our frames and names are not its: over a 600 s `--all` beside a build, counting them too
    // had put 16 MiB on libc and 184 MiB on all modules, growing with every address named.
    let kept = crate::thread_heap_balance() - start - ours;
    Ok(Looked {
        frames,
        parsed_heap: u64::try_from(kept).unwrap_or(0),
    })
}

/// What [`lookup`] found: one `Option` per address, and the heap blazesym kept from the call (see
/// `parsed_budget`).
pub(super) struct Looked {
    pub frames: Vec<Option<Vec<Frame>>>,
    pub parsed_heap: u64,
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
pub(super) fn frame(
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
