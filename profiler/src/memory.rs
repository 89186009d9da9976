//! emberprof's own memory: how glibc's allocator is set to behave, handing freed memory back, and
//! the RSS figures the `-vv` log shows.

/// Allocations from this size up get their own mapping, unmapped when freed.
const MMAP_THRESHOLD: libc::c_int = 256 << 10;
/// Free memory at the top of the heap past this is handed back at once.
const TRIM_THRESHOLD: libc::c_int = 1 << 20;

/// Fixes glibc's thresholds at startup. By default glibc raises its mmap threshold to the size of
/// the largest mapped block freed (up to 32 MiB), and its trim threshold to twice that: after a
/// long recording's first large vector was freed, every later vector of up to that size grew
/// inside the heap, and the copies it left behind stayed resident until the next checkpoint's
/// trim. Beside a build that made RSS swing by 10-20 MiB between checkpoints, the largest part of
/// the peak's growth after the first minute. Fixed thresholds keep large blocks out of the heap
/// (a few thousand in a long recording: their mapping costs nothing measurable).
pub fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Hands memory freed on the heap back to the kernel (glibc keeps it otherwise), so peak RSS
/// reflects what is in use.
pub fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// emberprof's RSS and its peak so far, for the checkpoint log: what a checkpoint's work raised the
/// peak to shows between two checkpoints' lines.
pub fn own_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map_or("?", |value| value.trim().trim_end_matches(" kB"))
            .to_owned()
    };
    format!("RSS {} KiB (peak {} KiB)", field("VmRSS:"), field("VmHWM:"))
}
