//! Keeps the file pages blazesym maps out of emberprof's RSS.
//!
//! blazesym 0.2.7 maps every file it symbolizes, whole, and reads it only through that mapping (it
//! takes a path, not bytes or a reader). Its first lookup in a module reads all of the symbol
//! table and its string table to sort them (librustc_driver: 20 MiB of `.symtab` and `.strtab`
//! resident, LLVM: 18 MiB), and DWARF lookups leave the units they walked resident; later lookups
//! touch a page or so of the string table for each address (a round of 3,000 rustc addresses left
//! 13-15 MiB of it resident). Those pages stayed in emberprof's RSS (`RssFile`) while the module's
//! symbolizer lived: on a build server about 60 MiB, counted in every RSS limit and in the OOM
//! killer's view of emberprof, though they are page cache the build keeps anyway.
//!
//! So after each round of lookups in a module (a round is at most `LOOKUPS_PER_TRIM` addresses),
//! the pages of blazesym's mappings of that module's
//! files are dropped (`MADV_DONTNEED`: the next lookup faults in the few it needs from the page
//! cache). blazesym does not say where its mappings are: they are found in `/proc/self/maps` as
//! the read-only shared mappings of the module's files that appeared during the symbolizer's first
//! lookups, and live exactly as long as that symbolizer, which is built without auto-reload (the
//! files are stable, see `untrusted`), so it never remaps them. No other mapping is ever touched:
//! the dynamic loader maps privately, and emberprof's own shared mappings of module files are made
//! under the lock those lookups hold ([`mapping_lock`]), so none can appear meanwhile, from any
//! thread. (A range taken for blazesym's that other code later unmapped could be reused by the
//! heap, and MADV_DONTNEED would zero it: that is what the lock rules out.)

use std::io;
use std::ops::Range;
use std::sync::MutexGuard;

use crate::maps::parse_maps;
use crate::untrusted::{mapping_lock, resident_pages};

/// Rounds of lookups in which a symbolizer's mappings are looked for, at most: blazesym maps the
/// module file and its debug file the first time each is read, and a module whose debug file it
/// never opens must not cost two reads of `/proc/self/maps` on every round.
const SEARCH_ROUNDS: u8 = 3;

/// Where one module's blazesym symbolizer maps that module's files.
#[derive(Debug, Default)]
pub(super) struct BlazeMappings {
    ranges: Vec<Range<usize>>,
    /// Rounds left in which to look for mappings.
    search_rounds: u8,
    /// The files blazesym may map, by (device, inode): the module and its debug file.
    files: Vec<(u64, u64)>,
    /// Whether to count the pages each round left resident (for the debug log; reading a large
    /// module's page tables costs more than dropping its pages), and the most any round left.
    pub measure: bool,
    pub most_resident: usize,
}

/// The shared mappings of `files` before a round of lookups, to tell which ones the round made,
/// and the lock that keeps any other code in this process from mapping them meanwhile.
pub(super) struct Before(Option<(Vec<Range<usize>>, MutexGuard<'static, ()>)>);

impl BlazeMappings {
    pub fn new(files: Vec<(u64, u64)>) -> Self {
        BlazeMappings {
            ranges: Vec::new(),
            search_rounds: SEARCH_ROUNDS,
            files,
            measure: log::log_enabled!(log::Level::Debug),
            most_resident: 0,
        }
    }

    /// The mappings found so far.
    #[cfg(test)]
    pub fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.ranges.iter().cloned()
    }

    /// Call before a round of lookups with this module's symbolizer.
    pub fn before_round(&self) -> Before {
        let looking = self.search_rounds > 0 && self.ranges.len() < self.files.len();
        Before(looking.then(|| {
            let lock = mapping_lock();
            (shared_file_mappings(&self.files).unwrap_or_default(), lock)
        }))
    }

    /// Call after the round: notes the mappings it made, and drops the pages of all of them.
    pub fn after_round(&mut self, before: Before) {
        if let Some((before, _lock)) = before.0 {
            self.search_rounds -= 1;
            if let Ok(after) = shared_file_mappings(&self.files) {
                for range in after {
                    if !before.contains(&range) && !self.ranges.contains(&range) {
                        self.ranges.push(range);
                    }
                }
            }
        }
        // Each range must still be exactly a mapping of one of the files, checked on this
        // thread after the round (the only code that could unmap one is blazesym's, and it runs
        // here): a range it unmapped and the heap took would be zeroed by MADV_DONTNEED. Where
        // `/proc/self/map_files` cannot be read (it needs CAP_SYS_ADMIN or
        // CAP_CHECKPOINT_RESTORE, which a `setcap` install lacks), no page is dropped.
        let files = &self.files;
        self.ranges.retain(|range| maps_one_of(range, files));
        let mut resident = 0;
        for range in &self.ranges {
            if self.measure {
                resident += resident_pages(range.clone()).unwrap_or(0) * 4096;
            }
            // SAFETY: a read-only shared mapping of a stable file that the module's symbolizer
            // holds for as long as `self` lives (see the module documentation): dropping its pages
            // only makes the next read fault them in again, with the same bytes.
            let result = unsafe {
                libc::madvise(
                    range.start as *mut libc::c_void,
                    range.end - range.start,
                    libc::MADV_DONTNEED,
                )
            };
            if result != 0 {
                log::debug!(
                    "madvise(MADV_DONTNEED) on a blazesym mapping: {}",
                    io::Error::last_os_error()
                );
            }
        }
        self.most_resident = self.most_resident.max(resident);
    }
}

/// Whether `range` is exactly one mapping of this process, of one of `files` (device, inode).
fn maps_one_of(range: &Range<usize>, files: &[(u64, u64)]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let entry = format!("/proc/self/map_files/{:x}-{:x}", range.start, range.end);
    std::fs::metadata(entry).is_ok_and(|file| files.contains(&(file.dev(), file.ino())))
}

/// The address ranges of this process's read-only shared mappings of `files` (device, inode).
fn shared_file_mappings(files: &[(u64, u64)]) -> io::Result<Vec<Range<usize>>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    Ok(parse_maps(&maps)
        .into_iter()
        .filter(|entry| entry.readable && !entry.writable && !entry.executable && entry.shared)
        .filter(|entry| files.contains(&(entry.dev, entry.inode)))
        .filter_map(|entry| {
            Some(usize::try_from(entry.start).ok()?..usize::try_from(entry.end).ok()?)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range that is no longer a mapping of the module's files (blazesym unmapped it and the
    /// heap took the addresses) keeps its bytes: MADV_DONTNEED would have zeroed them.
    #[test]
    fn a_range_taken_by_other_memory_is_left_alone() {
        let mut heap = vec![7u8; 1 << 20];
        let start = heap.as_ptr() as usize;
        let page = 4096;
        let range = start.next_multiple_of(page)..(start + heap.len()) / page * page;
        let mut mappings = BlazeMappings::new(vec![(1, 1)]);
        mappings.ranges.push(range.clone());
        mappings.search_rounds = 0;
        mappings.after_round(mappings.before_round());
        assert!(
            heap.iter().all(|&byte| byte == 7),
            "heap bytes were dropped"
        );
        assert!(mappings.ranges.is_empty());
        heap.clear();
    }
}
