//! The process's memory: how much is resident, and giving freed memory back to the system. The
//! allocator keeps what threads free in their own arenas; after a storm of connections or clients
//! (or a handler's heap freed at its limit), most of it is free but still resident until trimmed.

/// Resident set size, from /proc (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Gives the memory the allocator holds free back to the system, where the allocator allows it
/// (glibc's `malloc_trim`, all arenas); does nothing elsewhere.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim takes any pad value and only returns free memory of its
        // own arenas to the system; it touches no memory it has handed out (this block is
        // compiled only for glibc targets, where the symbol exists).
        unsafe {
            malloc_trim(0);
        }
    }
}
