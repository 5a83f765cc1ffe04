//! glibc's malloc, told to give memory back.
//!
//! Two habits of glibc keep a large policy's memory in xds-ext's RSS after
//! it is freed: memory freed below the top of a heap is returned only by
//! `malloc_trim`; and the threshold above which an allocation gets its own
//! mapping (returned on free) rises to the size of any such block freed,
//! so the second 2 MB resource encoded for a push lands in the heap and its
//! pages stay. Measured in the bench's policy-size scenario (bench/README.md).

/// Fixes the mapping threshold at glibc's initial 128 KiB: large blocks
/// (a resource, a file's text) are mapped and unmapped, never left in a heap.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and changes glibc's own settings.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Hands the heaps' free pages back to the system: after a load parsed
/// files, after a render (each leaves more freed than it keeps).
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
