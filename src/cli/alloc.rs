//! Process-wide tuning (allocator, open-file limit): the one place the binary calls into libc
//! directly.
#![allow(unsafe_code)]

/// glibc gives each thread that allocates its own arena (up to 8 per core), and freed chunk
/// buffers stay mapped in each: with a dozen pipeline and mount threads that is most of the
/// resident memory. Two arenas keep it near the live data at no measurable speed cost.
///
/// glibc also raises its mmap threshold to the size of the largest block freed, up to 32 MiB:
/// after Argon2 frees its 32 MiB, every chunk buffer would come from the arenas, which only
/// shrink from the top, and resident memory would stay ~15 MiB above the live data. A fixed
/// threshold keeps buffers of 256 KiB and more in their own mappings, returned when freed.
///
/// The mount is the exception (`for_mount`): its block cache stays near its budget for as long
/// as it runs, so what an eviction frees is wanted again at once. In their own mappings, every
/// block fetched was mapped, faulted in and zeroed page by page, then unmapped: the cold read
/// of a 1 GiB file ran at 550-590 MB/s, 680-830 MB/s with blocks from the arena. One arena,
/// not two, keeps the slack of blocks of many sizes within the cache + 64 MiB bound (peak RSS
/// 304-312 MiB with a 256 MiB cache; two arenas reached 331-350 MiB).
pub fn tune_allocator(for_mount: bool) {
    let (arenas, mmap_threshold) = if for_mount { (1, 32 << 20) } else { (2, 256 << 10) };
    // SAFETY: mallopt only changes a tuning parameter of the allocator; it is called in main
    // before any other thread exists, and its result is advisory.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold);
    }
}

/// Raises the soft limit of open files to the hard one (as Go programs such as restic do).
/// The backup scanner keeps a folder open while its entries wait to be described, a few
/// hundred at most, which a soft limit of 1024 would leave little room beside.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed; a failure leaves
    // the limit as it was, which is only less room.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
