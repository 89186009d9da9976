//! The heap each thread allocated, counted as it is allocated: what the parsed budget measures
//! blazesym's work by (see `namer::parsed_budget`). glibc's own count (`mallinfo2`) walks every free
//! chunk: 20 us with 5,000 of them, 0.76 ms with 50,000, too slow to read around every round of
//! lookups, and it counts every thread's allocations. Counting costs an add to a thread-local
//! counter per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Bytes this thread allocated through [`CountingAllocator`], less those it freed (whichever
    /// thread had allocated them). Per thread, so that what another thread allocates meanwhile is
    /// not counted as the symbolizer's. `const` and without a destructor: it can be read in any
    /// allocation, even as the thread ends.
    static BALANCE: Cell<i64> = const { Cell::new(0) };
}

fn add(bytes: usize) {
    let _ = BALANCE.try_with(|balance| balance.set(balance.get().wrapping_add(bytes as i64)));
}

fn sub(bytes: usize) {
    let _ = BALANCE.try_with(|balance| balance.set(balance.get().wrapping_sub(bytes as i64)));
}

/// The system allocator, counting what each thread allocates and frees. A program that wants its
/// symbolizer's parsed state measured installs it (`#[global_allocator]`); without it
/// [`thread_heap_balance`] stays 0, and the parsed budget counts files' sizes alone.
pub struct CountingAllocator;

// SAFETY: every call is passed on to `System` unchanged; only the counter is added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            add(layout.size());
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let block = unsafe { System.alloc_zeroed(layout) };
        if !block.is_null() {
            add(layout.size());
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: as `alloc`.
        unsafe { System.dealloc(block, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `alloc`.
        let moved = unsafe { System.realloc(block, layout, new_size) };
        if !moved.is_null() {
            add(new_size);
            sub(layout.size());
        }
        moved
    }
}

/// Bytes the calling thread has allocated and not freed, net of what it freed of other threads'
/// blocks, if [`CountingAllocator`] is installed (0 otherwise): only differences mean anything.
pub fn thread_heap_balance() -> i64 {
    BALANCE.try_with(Cell::get).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The symbolizer's unit tests run with the allocator installed (see `lib.rs`). Other tests
    /// allocate meanwhile, in other threads: this thread's count is exact all the same.
    #[test]
    fn allocations_are_counted_until_freed() {
        let before = thread_heap_balance();
        let block = vec![7u8; 1 << 20];
        assert_eq!(
            thread_heap_balance() - before,
            1 << 20,
            "the block is counted"
        );
        drop(block);
        assert_eq!(thread_heap_balance(), before, "and no longer once freed");
    }

    /// A block freed by another thread than the one that allocated it is taken off the count of
    /// the thread that frees it.
    #[test]
    fn frees_count_on_the_freeing_thread() {
        let block = std::thread::spawn(|| vec![7u8; 1 << 20])
            .join()
            .expect("thread");
        let before = thread_heap_balance();
        drop(block);
        assert_eq!(before - thread_heap_balance(), 1 << 20);
    }
}
