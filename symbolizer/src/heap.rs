//! The heap in use, counted as it is allocated: what the parsed budget measures blazesym's work by
//! (see `namer::parsed_budget`). glibc's own count (`mallinfo2`) walks every free chunk: 20 us with
//! 5,000 of them, 0.76 ms with 50,000, too slow to read around every round of lookups. Counting
//! costs an atomic add per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes allocated through [`CountingAllocator`] and not freed.
static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting what is in use. A program that wants its symbolizer's parsed
/// state measured installs it (`#[global_allocator]`); without it [`heap_in_use`] stays 0, and the
/// parsed budget counts files' sizes alone.
pub struct CountingAllocator;

// SAFETY: every call is passed on to `System` unchanged; only the counter is added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let block = unsafe { System.alloc_zeroed(layout) };
        if !block.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: as `alloc`.
        unsafe { System.dealloc(block, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `alloc`.
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if !moved.is_null() {
            IN_USE.fetch_add(new_size, Ordering::Relaxed);
            IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        moved
    }
}

/// Bytes of heap in use, if [`CountingAllocator`] is installed (0 otherwise).
pub fn heap_in_use() -> u64 {
    IN_USE.load(Ordering::Relaxed) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The symbolizer's unit tests run with the allocator installed (see `lib.rs`).
    #[test]
    fn allocations_are_counted_until_freed() {
        // Other tests allocate meanwhile, in other threads: only a large block stands out.
        let before = heap_in_use();
        let block = vec![7u8; 64 << 20];
        assert!(heap_in_use() >= before + (32 << 20), "the block is counted");
        drop(block);
        assert!(
            heap_in_use() < before + (32 << 20),
            "and no longer once freed"
        );
    }
}
