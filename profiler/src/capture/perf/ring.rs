//! The memory-mapped ring buffer of one perf event: a metadata page, then `2^n` data pages the
//! kernel writes records into. The kernel advances `data_head`; the reader copies records out and
//! advances `data_tail`, which frees the space. A record may wrap around the end of the data area,
//! so each is copied out whole (samples with stack copies are ~17 KiB; the copy is cheap next to
//! unwinding them).
//!
//! This is the only `unsafe` memory access of the perf backend: everything read here is bounded by
//! `data_size` and every record length checked against what the kernel published.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Result};
use perf_event_open_sys::bindings::perf_event_mmap_page;

use super::records::HEADER_BYTES;

pub struct RingBuffer {
    /// The event the buffer belongs to; kept open as long as the mapping.
    fd: OwnedFd,
    base: NonNull<u8>,
    mapped_bytes: usize,
    data_offset: usize,
    data_size: usize,
}

// SAFETY: the mapping is owned by this value alone; the kernel is the only other writer, and the
// head/tail protocol below is the synchronisation it expects.
unsafe impl Send for RingBuffer {}

impl RingBuffer {
    /// Maps `data_pages` (a power of two) data pages of `fd`'s buffer.
    pub fn map(fd: OwnedFd, data_pages: usize) -> Result<Self> {
        if !data_pages.is_power_of_two() {
            bail!("the ring buffer needs a power of two of pages, not {data_pages}");
        }
        let page = page_size();
        let Some(mapped_bytes) = data_pages
            .checked_add(1)
            .and_then(|pages| pages.checked_mul(page))
        else {
            bail!("ring buffer of {data_pages} pages is too large");
        };
        // SAFETY: a fresh shared mapping of a perf event fd; checked for failure below.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EPERM) {
                bail!(
                    "cannot map a perf ring buffer of {} KiB: above this user's limit \
                     (kernel.perf_event_mlock_kb, per CPU); lower --mmap-pages",
                    data_pages * page / 1024
                );
            }
            return Err(anyhow::Error::new(error).context("cannot map the perf ring buffer"));
        }
        let base = NonNull::new(address.cast::<u8>())
            .ok_or_else(|| anyhow::anyhow!("mmap returned a null ring buffer"))?;
        let mut ring = RingBuffer {
            fd,
            base,
            mapped_bytes,
            data_offset: page,
            data_size: data_pages * page,
        };
        // Kernels since 4.1 publish where the data area is; older ones put it right after the
        // metadata page, which is the default above.
        let page_meta = ring.meta();
        // SAFETY: the metadata page is mapped and these fields are plain u64s the kernel set at mmap.
        let (offset, size) = unsafe {
            (
                std::ptr::addr_of!((*page_meta).data_offset).read_volatile(),
                std::ptr::addr_of!((*page_meta).data_size).read_volatile(),
            )
        };
        if offset != 0 && size != 0 {
            let (Ok(offset), Ok(size)) = (usize::try_from(offset), usize::try_from(size)) else {
                bail!("the kernel reported a ring buffer beyond the address space");
            };
            if offset.checked_add(size) != Some(mapped_bytes) || !size.is_power_of_two() {
                bail!("the kernel laid the perf ring buffer out unexpectedly ({offset}+{size})");
            }
            ring.data_offset = offset;
            ring.data_size = size;
        }
        Ok(ring)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn meta(&self) -> *mut perf_event_mmap_page {
        self.base.as_ptr().cast()
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: data_head is an aligned u64 in the mapped metadata page, written by the kernel;
        // reading it with Acquire orders the reads of the records after it (the kernel's
        // smp_store_release pairs with it).
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.meta()).data_head)) }
    }

    fn tail(&self) -> &AtomicU64 {
        // SAFETY: data_tail is an aligned u64 in the mapped metadata page that only we write.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.meta()).data_tail)) }
    }

    /// Copies every record published so far into `out` (header included, one `Vec` each) and frees
    /// their space. Returns how many bytes were skipped because a record header made no sense
    /// (which should not happen; the caller counts it).
    pub fn drain(&mut self, out: &mut Vec<Vec<u8>>) -> u64 {
        let head = self.head().load(Ordering::Acquire);
        let mut tail = self.tail().load(Ordering::Relaxed);
        let mut skipped = 0;
        while tail < head {
            let available = head - tail;
            let mut header = [0u8; HEADER_BYTES];
            self.copy_out(tail, &mut header);
            let size = u64::from(u16::from_le_bytes([header[6], header[7]]));
            if size < HEADER_BYTES as u64 || size > available {
                skipped += available;
                tail = head;
                break;
            }
            let mut record = vec![0u8; size as usize];
            self.copy_out(tail, &mut record);
            out.push(record);
            tail += size;
        }
        // Release: our reads of the records happen before the kernel may overwrite them.
        self.tail().store(tail, Ordering::Release);
        skipped
    }

    /// Copies `out.len()` bytes starting at ring position `position`, across the wrap if needed.
    fn copy_out(&self, position: u64, out: &mut [u8]) {
        let start = (position % self.data_size as u64) as usize;
        let first = out.len().min(self.data_size - start);
        // SAFETY: `start + first <= data_size` and `out.len() - first <= data_size` (a record is at
        // most 64 KiB and never larger than the buffer the kernel wrote it into); both ranges lie in
        // the mapped data area.
        unsafe {
            let data = self.base.as_ptr().add(self.data_offset);
            std::ptr::copy_nonoverlapping(data.add(start), out.as_mut_ptr(), first);
            let rest = (out.len() - first).min(self.data_size);
            std::ptr::copy_nonoverlapping(data, out.as_mut_ptr().add(first), rest);
        }
    }
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `map`, once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped_bytes) };
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}
