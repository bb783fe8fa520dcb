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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Touches `depth` KiB of stack, one page at a time, and returns their sum (so that no
    /// frame is optimised away).
    #[inline(never)]
    fn go_deep(depth: usize) -> u64 {
        let mut page = [0u8; 1024];
        page[0] = depth as u8;
        let below = if depth > 1 { go_deep(depth - 1) } else { 0 };
        std::hint::black_box(&mut page);
        below + u64::from(page[0])
    }

    /// Whether the page holding `address` is resident (`mincore`).
    fn resident(address: usize) -> bool {
        let page = address / 4096 * 4096;
        let mut state = 0u8;
        // SAFETY: the page lies in this thread's stack mapping (mincore reads only its state).
        let done = unsafe { libc::mincore(page as *mut libc::c_void, 4096, &mut state) };
        assert_eq!(done, 0, "mincore failed");
        state & 1 == 1
    }

    /// The pages a deep call touched are not resident after the release, and a call as deep
    /// works again afterwards (the pages come back zeroed, as any unused stack).
    #[test]
    fn stack_touched_by_a_deep_call_is_given_back() {
        std::thread::spawn(|| {
            let sum = go_deep(256);
            let marker = 0u8;
            let here = std::hint::black_box(&marker) as *const u8 as usize;
            let deep = here - 128 * 1024;
            assert!(resident(deep), "the deep call did not touch the stack");
            release_unused_stack();
            assert!(!resident(deep), "the deep call's stack is still resident");
            assert_eq!(go_deep(256), sum);
        })
        .join()
        .unwrap();
    }
}
