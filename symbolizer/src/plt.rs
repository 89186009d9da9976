//! Names for PLT stubs (`read@plt`), which have no symbol of their own: without this they are
//! attributed to whatever symbol precedes them, usually `_init`, which is wrong and misleading.
//!
//! On x86-64 the stubs are 16 bytes each, in the order of the `R_X86_64_JUMP_SLOT` relocations of
//! `.rela.plt`: in `.plt.sec` when the binary has one (IBT-enabled builds), otherwise in `.plt`
//! after its 16-byte header. Lookups are by file offset, the address kind the symbolizer works with.

use std::ops::Range;
use std::sync::Arc;

use object::{
    Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationFlags, RelocationTarget,
};

use crate::untrusted::StableFile;

const STUB_SIZE: u64 = 16;
const R_X86_64_JUMP_SLOT: u32 = 7;

/// The PLT stubs of one module.
#[derive(Debug, Default)]
pub(crate) struct PltStubs {
    /// File-offset range of the stubs, and the name of each stub in order.
    stubs: Range<u64>,
    names: Vec<Arc<str>>,
    /// File-offset ranges of other PLT sections (`.plt.got`, or `.plt` when `.plt.sec` holds the
    /// stubs) whose entries are not individually named.
    other: Vec<Range<u64>>,
}

impl PltStubs {
    /// Section offsets and sizes come from the file: a range that overflows is left out.
    pub fn read(file: &StableFile) -> Self {
        let Ok(map) = file.map() else {
            return Self::default();
        };
        let Ok(elf) = object::File::parse(&map[..]) else {
            return Self::default();
        };
        let range = |name: &str| {
            let (offset, size) = elf.section_by_name(name)?.file_range()?;
            Some(offset..offset.checked_add(size)?)
        };
        let names: Vec<Arc<str>> = jump_slot_names(&elf).unwrap_or_default();
        // The stubs, and the PLT code around them that has no per-function entry: `.plt` whole when
        // `.plt.sec` holds the stubs, else just `.plt`'s 16-byte header.
        let (stubs, header) = match (range(".plt.sec"), range(".plt")) {
            (Some(sec), plt) => (sec, plt),
            (None, Some(plt)) => match plt.start.checked_add(STUB_SIZE) {
                Some(stubs_start) => (stubs_start..plt.end, Some(plt.start..stubs_start)),
                None => (0..0, None),
            },
            (None, None) => (0..0, None),
        };
        let other = header.into_iter().chain(range(".plt.got")).collect();
        PltStubs {
            stubs,
            names,
            other,
        }
    }

    /// `name@plt` for a file offset inside a PLT stub, `[plt]` inside other PLT code.
    pub fn name_at(&self, file_offset: u64) -> Option<Arc<str>> {
        if self.stubs.contains(&file_offset) {
            let index = ((file_offset - self.stubs.start) / STUB_SIZE) as usize;
            return match self.names.get(index) {
                Some(name) => Some(Arc::from(format!("{name}@plt"))),
                None => Some(Arc::from("[plt]")),
            };
        }
        self.other
            .iter()
            .any(|r| r.contains(&file_offset))
            .then(|| Arc::from("[plt]"))
    }
}

/// Names of the JUMP_SLOT relocations' symbols, in relocation order.
fn jump_slot_names(elf: &object::File<'_>) -> Option<Vec<Arc<str>>> {
    let symbols = elf.dynamic_symbol_table()?;
    let names = elf
        .dynamic_relocations()?
        .filter(|(_, r)| matches!(r.flags(), RelocationFlags::Elf { r_type } if r_type.0 == R_X86_64_JUMP_SLOT))
        .map(|(_, relocation)| match relocation.target() {
            RelocationTarget::Symbol(index) => symbols
                .symbol_by_index(index)
                .ok()
                .and_then(|s| s.name().ok().map(Arc::from))
                .unwrap_or_else(|| Arc::from("?")),
            _ => Arc::from("?"),
        })
        .collect();
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stub of a real binary is named after the function it jumps to, and the header is `[plt]`.
    #[test]
    fn names_stubs_of_example_binary() {
        let path = emberprof_examples::path("burn");
        let file = std::fs::File::open(&path).expect("open example");
        let stubs = PltStubs::read(&StableFile::own(file));
        let names: Vec<String> = (stubs.stubs.start..stubs.stubs.end)
            .step_by(STUB_SIZE as usize)
            .filter_map(|offset| stubs.name_at(offset + 3).map(|n| n.to_string()))
            .collect();
        assert!(names.contains(&"clock_gettime@plt".to_owned()), "{names:?}");
        assert!(names.iter().all(|n| n.ends_with("@plt")), "{names:?}");
        let header = stubs.other.first().expect("a .plt header").start;
        assert_eq!(stubs.name_at(header).as_deref(), Some("[plt]"));
        assert_eq!(stubs.name_at(0), None);
    }
}
