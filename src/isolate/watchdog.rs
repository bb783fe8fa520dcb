//! The watchdog: one thread that terminates a handler's JavaScript when one event runs longer
//! than allowed, and the record of why an isolate was terminated (CPU time or heap), kept here
//! because the engine's own error text does not say.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use deno_core::v8;
use parking_lot::Mutex;

/// Why an isolate's execution was terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// One event ran longer than the event time limit.
    TooLong(Duration),
    /// The isolate's heap reached its limit.
    OutOfHeap(usize),
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::TooLong(limit) => write!(
                f,
                "it ran longer than the {} ms allowed per event",
                limit.as_millis()
            ),
            Termination::OutOfHeap(limit) => write!(
                f,
                "it used more than the {} MiB of heap allowed per handler",
                limit >> 20
            ),
        }
    }
}

/// `Watched::reason`: not terminated.
const NONE: u8 = 0;
/// `Watched::reason`: terminated for running too long.
const TOO_LONG: u8 = 1;
/// `Watched::reason`: terminated at the heap limit.
const OUT_OF_HEAP: u8 = 2;

/// One isolate under watch.
pub struct Watched {
    /// Terminates the isolate's JavaScript from any thread.
    handle: v8::IsolateHandle,
    /// When the running event started, in microseconds since the watchdog's epoch; 0 when idle.
    busy_since: AtomicU64,
    /// Whether this isolate is counted in the watchdog's number of busy isolates: from the
    /// first event of a batch to [`Watched::end`], not per event (the count is shared by every
    /// isolate's thread, and changing it is a locked instruction).
    counted_busy: AtomicBool,
    /// Why it was last terminated ([`NONE`], [`TOO_LONG`] or [`OUT_OF_HEAP`]), until taken.
    reason: AtomicU8,
    /// How long one event may run.
    event_limit: Duration,
    /// The isolate's heap limit, for the message.
    heap_limit: usize,
}

impl Watched {
    /// Marks the start of JavaScript work (an event, timers, a module's top level); returns
    /// the start time, for callers that also measure the work.
    pub fn begin(&self) -> Instant {
        let now = Instant::now();
        self.begin_at(now);
        now
    }

    /// Marks the start of JavaScript work that began at `start` (a clock reading the caller
    /// already has, such as the end of the previous event).
    ///
    /// Only the isolate's own thread writes `busy_since` and `counted_busy` (the watchdog reads
    /// them), so plain loads and stores do what a swap would, without a locked instruction per
    /// event.
    pub fn begin_at(&self, start: Instant) {
        let since_epoch = start.saturating_duration_since(epoch()).as_micros() as u64;
        self.busy_since.store(since_epoch.max(1), Ordering::Release);
        if !self.counted_busy.load(Ordering::Relaxed) {
            self.counted_busy.store(true, Ordering::Relaxed);
            watchdog().now_busy();
        }
    }

    /// Marks the end of one event of several run together: the event's time no longer counts,
    /// and the watchdog keeps watching for the next (until [`Watched::end`]).
    pub fn end_event(&self) {
        self.busy_since.store(0, Ordering::Release);
    }

    /// Marks the end of JavaScript work.
    pub fn end(&self) {
        self.busy_since.store(0, Ordering::Release);
        if self.counted_busy.load(Ordering::Relaxed) {
            self.counted_busy.store(false, Ordering::Relaxed);
            watchdog().now_idle();
        }
    }

    /// Called from the engine's near-heap-limit callback: it must not allocate, log or panic.
    pub fn out_of_heap(&self) {
        let _ =
            self.reason
                .compare_exchange(NONE, OUT_OF_HEAP, Ordering::AcqRel, Ordering::Acquire);
        self.handle.terminate_execution();
    }

    /// Why the isolate was terminated, if it was; clears the record.
    pub fn take_termination(&self) -> Option<Termination> {
        match self.reason.swap(NONE, Ordering::AcqRel) {
            TOO_LONG => Some(Termination::TooLong(self.event_limit)),
            OUT_OF_HEAP => Some(Termination::OutOfHeap(self.heap_limit)),
            _ => None,
        }
    }
}

impl Drop for Watched {
    /// An isolate dropped in the middle of its work (its thread ended) no longer counts as busy.
    fn drop(&mut self) {
        self.end();
    }
}

/// The watchdog thread's list.
struct Watchdog {
    /// Every isolate under watch (dropped isolates are pruned on the next check).
    watched: Mutex<Vec<Weak<Watched>>>,
    /// How many isolates are running JavaScript: while none is, the thread sleeps until one
    /// begins, so that idle isolates (a thousand handlers waiting for connections) cost no
    /// thread time at all.
    busy: AtomicUsize,
    /// The watchdog thread, woken when the first isolate gets busy.
    thread: OnceLock<std::thread::Thread>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let watchdog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            watched: Mutex::new(Vec::new()),
            busy: AtomicUsize::new(0),
            thread: OnceLock::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                // `now_busy` unparks after counting, so a wake-up between this load and the
                // park is not lost (park returns at once when unparked before).
                if watchdog.busy.load(Ordering::Acquire) == 0 {
                    std::thread::park();
                    continue;
                }
                std::thread::sleep(Duration::from_millis(20));
                watchdog.check();
            });
        match spawned {
            Ok(handle) => {
                let _ = watchdog.thread.set(handle.thread().clone());
            }
            Err(error) => tracing::error!("cannot start the watchdog thread: handlers will not be stopped when they run too long: {error}"),
        }
        watchdog
    })
}

impl Watchdog {
    /// Counts one more isolate running JavaScript; wakes the thread for the first.
    fn now_busy(&self) {
        if self.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    /// Counts one isolate less running JavaScript (the thread parks when none is).
    fn now_idle(&self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }

    fn check(&self) {
        let now = epoch().elapsed().as_micros() as u64;
        let mut watched = self.watched.lock();
        watched.retain(|weak| {
            let Some(entry) = weak.upgrade() else {
                return false;
            };
            let since = entry.busy_since.load(Ordering::Acquire);
            if since != 0 && now.saturating_sub(since) > entry.event_limit.as_micros() as u64 {
                let first = entry
                    .reason
                    .compare_exchange(NONE, TOO_LONG, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if first {
                    entry.handle.terminate_execution();
                }
            }
            true
        });
    }
}

/// Puts an isolate under watch with its limits.
pub fn watch(handle: v8::IsolateHandle, event_limit: Duration, heap_limit: usize) -> Arc<Watched> {
    let watched = Arc::new(Watched {
        handle,
        busy_since: AtomicU64::new(0),
        counted_busy: AtomicBool::new(false),
        reason: AtomicU8::new(NONE),
        event_limit,
        heap_limit,
    });
    watchdog().watched.lock().push(Arc::downgrade(&watched));
    watched
}
