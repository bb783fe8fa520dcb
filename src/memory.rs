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

/// Gives back the pages of the calling thread's stack below the current frame, which a deep call
/// (an engine's parser and compiler, when a handler loads) touched and which would otherwise stay
/// resident for the thread's life; they are mapped again, zeroed, if a later call goes as deep.
/// Linux only; does nothing elsewhere.
#[inline(never)]
pub fn release_unused_stack() {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        // Pages within this distance below the current frame are kept: the only calls below it
        // (madvise's wrapper, a signal handler's red zone) use far less.
        const KEEP: usize = 2 * PAGE;
        // SAFETY: pthread_getattr_np fills `attr` for the calling thread (glibc and musl); the
        // stack it reports is this thread's mapping, and every address below the current frame
        // minus KEEP is unused by any live frame, so dropping those pages (MADV_DONTNEED on
        // private anonymous memory: the next touch maps a zeroed page) changes no live data.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return;
            }
            let mut base: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let found = libc::pthread_attr_getstack(&attr, &mut base, &mut size) == 0;
            libc::pthread_attr_destroy(&mut attr);
            if !found {
                return;
            }
            let here = &attr as *const libc::pthread_attr_t as usize;
            let low = (base as usize).div_ceil(PAGE) * PAGE;
            let high = here.saturating_sub(KEEP) / PAGE * PAGE;
            if high > low && here <= base as usize + size {
                libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
            }
        }
    }
}
