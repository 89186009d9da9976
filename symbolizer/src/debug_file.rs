//! Finding a module's separate debug information the way gdb does, while the process is alive: by
//! build-id under `/usr/lib/debug/.build-id/`, and by `.gnu_debuglink` next to the binary, in its
//! `.debug/` directory, or under `/usr/lib/debug/<dir>/`. Every path is tried in the process's own
//! view of the filesystem (`/proc/PID/root`, so containers work) and the file is opened at once, so it
//! stays usable after the process has exited. blazesym finds the host's build-id files by itself, but
//! resolves debug links relative to the path it is given, which for our `/proc/self/fd/N` handles is
//! no directory at all.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use object::{Object, ObjectSection};

/// The debug file of the module `file`, mapped by process `pid` from `mapped_path`, if the module
/// lacks DWARF itself and one is found and verified (same build-id, or the debug link's CRC).
pub(crate) fn find_debug_file(pid: u32, mapped_path: &Path, file: &File) -> Option<File> {
    // SAFETY: a module file held open for the session; see ElfUnwindInfo::read.
    let map = unsafe { Mmap::map(file) }.ok()?;
    let elf = object::File::parse(&map[..]).ok()?;
    if elf
        .section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0)
    {
        return None;
    }
    let build_id = elf.build_id().ok().flatten().map(<[u8]>::to_vec);
    let link = elf
        .gnu_debuglink()
        .ok()
        .flatten()
        .map(|(name, crc)| (name.to_vec(), crc));
    let root = PathBuf::from(format!("/proc/{pid}/root"));

    if let Some(id) = build_id.as_deref().filter(|id| id.len() > 1) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let relative = format!("usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..]);
        for base in [root.as_path(), Path::new("/")] {
            if let Some(found) = open_matching(&base.join(&relative), build_id.as_deref(), None) {
                return Some(found);
            }
        }
    }
    let (name, crc) = link?;
    let name = Path::new(std::str::from_utf8(&name).ok()?);
    let dir = mapped_path.parent()?.strip_prefix("/").ok()?;
    let candidates = [
        dir.join(name),
        dir.join(".debug").join(name),
        Path::new("usr/lib/debug").join(dir).join(name),
    ];
    candidates
        .iter()
        .find_map(|candidate| open_matching(&root.join(candidate), build_id.as_deref(), Some(crc)))
}

/// Opens `path` if it is an ELF file with the expected build-id, or, when the module has none, the
/// expected CRC-32 of its whole contents.
fn open_matching(path: &Path, build_id: Option<&[u8]>, crc: Option<u32>) -> Option<File> {
    let mut file = File::open(path).ok()?;
    match build_id {
        Some(expected) => {
            // SAFETY: read-only map of a file we just opened.
            let map = unsafe { Mmap::map(&file) }.ok()?;
            let elf = object::File::parse(&map[..]).ok()?;
            let found = elf.build_id().ok().flatten();
            (found == Some(expected)).then_some(())?;
        }
        None => {
            let mut contents = Vec::new();
            file.read_to_end(&mut contents).ok()?;
            (Some(crc32fast::hash(&contents)) == crc).then_some(())?;
        }
    }
    log::debug!("using debug file {}", path.display());
    File::open(path).ok()
}
