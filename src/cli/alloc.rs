//! Process-wide allocator tuning: the one place the binary calls into libc directly.
#![allow(unsafe_code)]

/// glibc gives each thread that allocates its own arena (up to 8 per core), and freed chunk
/// buffers stay mapped in each: with a dozen pipeline and mount threads that is most of the
/// resident memory. Two arenas keep it near the live data at no measurable speed cost.
pub fn limit_arenas() {
    // SAFETY: mallopt only changes a tuning parameter of the allocator; it is called first
    // thing in main, before any other thread exists, and its result is advisory.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
