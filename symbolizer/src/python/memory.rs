//! Reading another process's memory, the only way this module learns anything about a running
//! interpreter.
//!
//! Everything read is what the profiled process wrote, so it may be anything: callers size every
//! buffer themselves (never from a length they read without capping it first), and a failed read is
//! an answer ("unknown"), not an error to propagate. [`Memory`] lets tests feed made-up memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A process's address space, read-only.
pub trait Memory {
    /// Fills `buf` with the bytes at `address`; false if any of them cannot be read (unmapped, the
    /// process is gone, the range wraps around).
    fn read(&self, address: u64, buf: &mut [u8]) -> bool;

    fn read_u64(&self, address: u64) -> Option<u64> {
        let mut bytes = [0; 8];
        self.read(address, &mut bytes)
            .then(|| u64::from_le_bytes(bytes))
    }

    fn read_u32(&self, address: u64) -> Option<u32> {
        let mut bytes = [0; 4];
        self.read(address, &mut bytes)
            .then(|| u32::from_le_bytes(bytes))
    }
}

/// `/proc/PID/mem`, opened once: the handle stays bound to the address space the process had when it
/// was opened, so a reused PID or an exec never makes it read another program's memory (reads fail
/// instead once the process is gone).
#[derive(Debug)]
pub struct ProcessMemory {
    file: File,
}

impl ProcessMemory {
    pub fn open(pid: u32) -> io::Result<Self> {
        Ok(ProcessMemory {
            file: File::open(format!("/proc/{pid}/mem"))?,
        })
    }
}

impl Memory for ProcessMemory {
    fn read(&self, address: u64, buf: &mut [u8]) -> bool {
        // Addresses past i64::MAX are kernel addresses, and pread takes a signed offset.
        let Some(end) = address.checked_add(buf.len() as u64) else {
            return false;
        };
        if end > i64::MAX as u64 {
            return false;
        }
        // A short read means the range crossed into unmapped memory: not all of it is there.
        self.file.read_exact_at(buf, address).is_ok()
    }
}

/// Made-up memory for tests: a few regions at chosen addresses.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct FakeMemory {
    regions: Vec<(u64, Vec<u8>)>,
    /// Reads done, to check that a defence stops early.
    pub reads: std::cell::Cell<usize>,
}

#[cfg(test)]
impl FakeMemory {
    pub fn with(mut self, address: u64, bytes: Vec<u8>) -> Self {
        self.regions.push((address, bytes));
        self
    }

    /// Overwrites `bytes` at `address` inside an existing region.
    pub fn put(&mut self, address: u64, bytes: &[u8]) {
        let (start, region) = self
            .regions
            .iter_mut()
            .find(|(start, region)| {
                address >= *start && address + bytes.len() as u64 <= start + region.len() as u64
            })
            .expect("a region holds the bytes");
        let at = (address - *start) as usize;
        region[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

#[cfg(test)]
impl Memory for FakeMemory {
    fn read(&self, address: u64, buf: &mut [u8]) -> bool {
        self.reads.set(self.reads.get() + 1);
        let Some(end) = address.checked_add(buf.len() as u64) else {
            return false;
        };
        for (start, region) in &self.regions {
            if address >= *start && end <= start + region.len() as u64 {
                let at = (address - start) as usize;
                buf.copy_from_slice(&region[at..at + buf.len()]);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own memory reads back what we wrote; an unmapped or wrapping range is refused.
    #[test]
    fn python_memory_reads_own_process() {
        let memory = ProcessMemory::open(std::process::id()).expect("open own mem");
        let value: u64 = 0x1122_3344_5566_7788;
        let address = &value as *const u64 as u64;
        assert_eq!(memory.read_u64(address), Some(value));
        assert_eq!(memory.read_u64(0), None, "page zero is unmapped");
        assert_eq!(memory.read_u64(u64::MAX - 3), None, "wraps around");
        assert_eq!(
            memory.read_u64(0xffff_ffff_ff60_0000),
            None,
            "kernel address"
        );
    }
}
