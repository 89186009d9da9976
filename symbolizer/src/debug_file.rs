//! Finding a module's separate debug information the way gdb does, while the process is alive: by
//! build-id under `/usr/lib/debug/.build-id/`, and by `.gnu_debuglink` next to the binary, in its
//! `.debug/` directory, or under `/usr/lib/debug/<dir>/`. Every path is tried in the process's own
//! view of the filesystem (resolved inside `/proc/PID/root`, so containers work) and the file is
//! opened at once, so it stays usable after the process has exited. blazesym finds the host's
//! build-id files by itself, but resolves debug links relative to the path it is given, which for our
//! `/proc/self/fd/N` handles is no directory at all.
//!
//! The module and its debug link are written by the profiled process's user: a debug link is a file
//! *name* (no `/`, no `..`, so `/dev/zero` or `/etc/shadow` cannot be named), looked up only in the
//! three directories above, opened under the rules of `untrusted` (regular files only, never
//! blocking), copied when its owner could change it, and used only if its CRC (or build-id) matches.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use crate::untrusted::{self, Follow, StableFile};

/// Longest build-id accepted (real ones are 20 bytes, SHA-1; a few linkers write 16 or 32).
const MAX_BUILD_ID_BYTES: usize = 64;

/// The debug file of the module `file`, mapped by process `pid` from `mapped_path`, if the module
/// lacks DWARF itself and one is found and verified (same build-id, or the debug link's CRC).
pub(crate) fn find_debug_file(
    pid: u32,
    mapped_path: &Path,
    file: &StableFile,
) -> Option<StableFile> {
    let map = file.map().ok()?;
    let elf = object::File::parse(&map[..]).ok()?;
    if elf
        .section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0)
    {
        return None;
    }
    let build_id = elf
        .build_id()
        .ok()
        .flatten()
        .filter(|id| (2..=MAX_BUILD_ID_BYTES).contains(&id.len()))
        .map(<[u8]>::to_vec);
    let link = elf.gnu_debuglink().ok().flatten().and_then(|(name, crc)| {
        let name = debug_link_name(name)?;
        Some((name, crc))
    });

    if let Some(id) = build_id.as_deref() {
        let relative = build_id_path(id);
        // Build-id trees are symlink farms on some distributions: follow, but inside the root.
        let in_process = untrusted::open_in_root(pid, &relative, Follow::Yes);
        let on_host = untrusted::open(&Path::new("/").join(&relative), Follow::Yes);
        for found in [in_process, on_host].into_iter().flatten() {
            if let Some(found) = verified(found, Some(id), None) {
                return Some(found);
            }
        }
    }
    let (name, crc) = link?;
    let dir = mapped_path.parent()?;
    let candidates = [
        dir.join(name),
        dir.join(".debug").join(name),
        Path::new("/usr/lib/debug")
            .join(dir.strip_prefix("/").ok()?)
            .join(name),
    ];
    candidates.iter().find_map(|candidate| {
        let file = untrusted::open_in_root(pid, candidate, Follow::No).ok()?;
        verified(file, build_id.as_deref(), Some(crc))
    })
}

/// `usr/lib/debug/.build-id/xx/yyyy….debug` for a build-id (hex digits only, whatever its bytes).
fn build_id_path(id: &[u8]) -> PathBuf {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    PathBuf::from(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ))
}

/// The debug link's file name, if it is one: a single path component of at most 255 bytes, UTF-8,
/// not `.` or `..`. Anything else (an absolute path, a path with directories) is refused: gdb's own
/// lookup joins the name to directories, and an absolute name would replace them.
pub(crate) fn debug_link_name(raw: &[u8]) -> Option<&Path> {
    let name = std::str::from_utf8(raw).ok()?;
    let valid = !name.is_empty()
        && name.len() <= 255
        && !name.contains('/')
        && !name.contains('\0')
        && name != "."
        && name != "..";
    valid.then(|| Path::new(name))
}

/// The debug file, made stable, if it is an ELF file with the expected build-id, or, when the
/// module has none, the expected CRC-32 of its whole contents.
fn verified(file: std::fs::File, build_id: Option<&[u8]>, crc: Option<u32>) -> Option<StableFile> {
    let stable = StableFile::new(file)
        .inspect_err(|error| log::debug!("debug file candidate refused: {error}"))
        .ok()?;
    match build_id {
        Some(expected) => {
            let map = stable.map().ok()?;
            let elf = object::File::parse(&map[..]).ok()?;
            let found = elf.build_id().ok().flatten();
            (found == Some(expected)).then_some(())?;
        }
        None => {
            (Some(crc32_of(stable.file())?) == crc).then_some(())?;
        }
    }
    log::debug!("using debug file {}", stable.readable_path().display());
    Some(stable)
}

/// CRC-32 of a whole file, read in pieces (the file is stable, so its size is bounded by what was
/// accepted as stable).
fn crc32_of(file: &std::fs::File) -> Option<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut offset = 0u64;
    loop {
        let read = std::os::unix::fs::FileExt::read_at(file, &mut buffer, offset).ok()?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        offset = offset.checked_add(read as u64)?;
    }
    Some(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Names with a directory, absolute names and dot names are refused; plain names pass.
    #[test]
    fn debug_link_names() {
        assert_eq!(
            debug_link_name(b"libx.so.debug"),
            Some(Path::new("libx.so.debug"))
        );
        for bad in [
            &b"/dev/zero"[..],
            b"../etc/shadow",
            b"a/b",
            b"..",
            b".",
            b"",
            b"\xff",
        ] {
            assert_eq!(debug_link_name(bad), None, "{bad:?}");
        }
        assert_eq!(debug_link_name(&[b'a'; 256]), None);
    }

    proptest! {
        /// Whatever the section holds, an accepted name joined to a directory stays in it.
        #[test]
        fn debug_link_name_stays_in_directory(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(name) = debug_link_name(&raw) {
                let joined = Path::new("/usr/lib/debug/x").join(name);
                prop_assert_eq!(joined.parent(), Some(Path::new("/usr/lib/debug/x")));
            }
        }

        /// A build-id path is always `usr/lib/debug/.build-id/` plus hex digits.
        #[test]
        fn build_id_path_is_hex(id in proptest::collection::vec(any::<u8>(), 2..64)) {
            let path = build_id_path(&id);
            let text = path.to_str().unwrap_or_default();
            let rest = text
                .strip_prefix("usr/lib/debug/.build-id/")
                .and_then(|rest| rest.strip_suffix(".debug"))
                .unwrap_or_default();
            let (dir, file) = rest.split_once('/').unwrap_or_default();
            prop_assert_eq!(dir.len(), 2);
            prop_assert_eq!(file.len(), 2 * id.len() - 2);
            prop_assert!(dir.chars().chain(file.chars()).all(|c| c.is_ascii_hexdigit()), "{}", text);
        }
    }
}
