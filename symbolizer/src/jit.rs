//! Names for JIT code from the perf map files runtimes write (`/tmp/perf-PID.map`: Node.js
//! `--perf-basic-prof`, Python 3.12 `-X perf`, JVM agents).
//!
//! The file is looked up in the process's own mount namespace (`/proc/PID/root/tmp/`, named with the
//! PID the process has in its own PID namespace) and opened while the process is alive; the handle is
//! kept and read from where the last read stopped, since the runtime appends as it compiles. A map is
//! trusted only if it is a regular file owned by the process's user (anyone can write into /tmp); a
//! map that fails that check, or has malformed lines, gets one warning.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::perf_map::PerfMap;
use crate::process::ProcessKey;

/// Bytes read from a perf map file per refresh; a runtime that writes faster is caught up with at the
/// next lookup.
const MAX_READ_PER_REFRESH: u64 = 64 << 20;

struct JitMap {
    file: File,
    path: String,
    map: PerfMap,
    /// The start of a UTF-8 sequence cut by the end of the last read.
    partial_utf8: Vec<u8>,
    /// When the file was last read.
    last_read: Instant,
    malformed_warned: bool,
}

#[derive(Default)]
pub(crate) struct JitMaps {
    maps: HashMap<ProcessKey, JitMap>,
    /// Processes whose perf map was rejected (warned once).
    rejected: std::collections::HashSet<ProcessKey>,
    /// When opening was last tried for processes without a map: a runtime creates its map some time
    /// after it starts, so a missing one is looked for again, but not at every lookup.
    last_attempt: HashMap<ProcessKey, Instant>,
}

/// Least time between two attempts to open a process's perf map.
const OPEN_RETRY: Duration = Duration::from_millis(200);

/// Least time between two reads of a perf map for unwinding: stacks come at sampling rate, and a
/// map that grew since is read again when a stack meets code it does not know yet.
const UNWIND_REREAD: Duration = Duration::from_millis(100);

impl JitMaps {
    /// Opens the perf map of a live process if it has one and it is not open yet.
    pub fn open(&mut self, key: ProcessKey) {
        if self.maps.contains_key(&key) || self.rejected.contains(&key) {
            return;
        }
        self.last_attempt.insert(key, Instant::now());
        let Some((uid, namespace_pid)) = process_ids(key.pid) else {
            return;
        };
        let path = format!("/proc/{}/root/tmp/perf-{namespace_pid}.map", key.pid);
        // O_NOFOLLOW: a symlink planted in /tmp must not make us read another file.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => file,
            Err(_) => return, // no JIT, or not started writing yet
        };
        let shown = format!("/tmp/perf-{namespace_pid}.map of process {}", key.pid);
        match file.metadata() {
            Ok(meta) if meta.is_file() && meta.uid() == uid => {}
            Ok(meta) => {
                log::warn!(
                    "ignoring {shown}: owned by uid {} but the process runs as uid {uid}",
                    meta.uid()
                );
                self.rejected.insert(key);
                return;
            }
            Err(_) => return,
        }
        self.maps.insert(
            key,
            JitMap {
                file,
                path: shown,
                map: PerfMap::new(),
                partial_utf8: Vec::new(),
                last_read: Instant::now(),
                malformed_warned: false,
            },
        );
    }

    /// The JIT symbol covering `address` in process `key`, reading what the runtime appended since the
    /// last lookup first.
    pub fn lookup(&mut self, key: ProcessKey, address: u64) -> Option<Arc<str>> {
        let retry = self
            .last_attempt
            .get(&key)
            .is_none_or(|last| last.elapsed() >= OPEN_RETRY);
        if retry {
            self.open(key);
        }
        let jit = self.maps.get_mut(&key)?;
        jit.read_new_lines();
        jit.map
            .lookup(address)
            .map(|entry| Arc::from(entry.name.as_str()))
    }
}

impl JitMaps {
    /// The perf map of process `key` for the unwinder (which needs its code ranges, and Python's
    /// trampolines), read again only if `refresh` or if the last read is old.
    pub fn for_unwinding(&mut self, key: ProcessKey, refresh: bool) -> Option<&mut PerfMap> {
        let retry = self
            .last_attempt
            .get(&key)
            .is_none_or(|last| last.elapsed() >= OPEN_RETRY);
        if retry {
            self.open(key);
        }
        let jit = self.maps.get_mut(&key)?;
        if refresh || jit.last_read.elapsed() >= UNWIND_REREAD {
            jit.read_new_lines();
        }
        Some(&mut jit.map)
    }
}

impl JitMap {
    fn read_new_lines(&mut self) {
        self.last_read = Instant::now();
        let mut bytes = std::mem::take(&mut self.partial_utf8);
        let before = bytes.len();
        let mut reader = std::io::Read::by_ref(&mut self.file).take(MAX_READ_PER_REFRESH);
        if reader.read_to_end(&mut bytes).is_err() || bytes.len() == before {
            self.partial_utf8 = bytes;
            return;
        }
        // The parser keeps a partial last line for the next read; a UTF-8 sequence cut by the end of
        // this read is kept back here the same way, so names are never mangled at the cut.
        let complete = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(error) if error.error_len().is_none() => error.valid_up_to(),
            Err(_) => bytes.len(),
        };
        self.partial_utf8 = bytes.split_off(complete);
        let text = String::from_utf8_lossy(&bytes);
        let malformed = self.map.extend_from_text(&text);
        if malformed > 0 && !self.malformed_warned {
            log::warn!("{}: {malformed} malformed lines ignored", self.path);
            self.malformed_warned = true;
        }
    }
}

/// The process's effective uid and its PID inside its own PID namespace (the number it writes into
/// the perf map's name), from `/proc/PID/status`.
fn process_ids(pid: u32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::split_whitespace)
    };
    let uid = field("Uid:")?.nth(1)?.parse().ok()?;
    let namespace_pid = field("NSpid:")?.last()?.parse().ok()?;
    Some((uid, namespace_pid))
}
