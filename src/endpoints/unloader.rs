//! `serve --load lazy --unload-idle SECONDS`: a handler nothing has used for that long is
//! unloaded (its endpoints' `onStop` runs, its isolates stop, their memory goes back to the
//! system), and its next use loads it afresh, as `--load lazy` loads it the first time. For
//! workspaces of many handlers of which few are in use at a time: memory follows the handlers in
//! use, not the handlers ever used.
//!
//! "Unused" means, for the whole period: no event ran (no message, no timer, no promise), no
//! connection is open on any of its endpoints (STOMP links included), no outbound client runs
//! its code or was created by it, and none of its endpoints ticks (a `service`, which loads at
//! start and stays).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::runtime::Runtime;
use crate::isolate::HandlerSlot;
use crate::memory::give_back_free_memory;
use crate::workspace::RegistryState;

/// How long an unloaded handler's `onStop` (and what it started) may take to finish before the
/// unload gives up for this time, binding the handler again.
const ONSTOP_SETTLES: Duration = Duration::from_secs(2);

/// How often handlers are looked at, as a fraction of the idle time: an unused handler is
/// unloaded between `after` and `after` plus this.
fn check_every(after: Duration) -> Duration {
    (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(15))
}

/// Runs for the life of the server, unloading handlers unused for `after`.
pub async fn unload_idle_handlers(runtime: Arc<Runtime>, after: Duration) {
    // Per handler: its activity count when last looked at, and since when it has not moved.
    let mut quiet_since: HashMap<PathBuf, (u64, Instant)> = HashMap::new();
    let mut checks = tokio::time::interval(check_every(after));
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        checks.tick().await;
        let now = Instant::now();
        let mut unloaded = Vec::new();
        let running = runtime.isolates.running().await;
        let holds = Holds::now(&runtime);
        quiet_since.retain(|file, _| running.iter().any(|slot| &slot.handler_file == file));
        for slot in running {
            let file = &slot.handler_file;
            let activity = slot.activity();
            let quiet = match quiet_since.get(file) {
                Some(&(seen, since)) if seen == activity => since,
                _ => {
                    quiet_since.insert(file.clone(), (activity, now));
                    continue;
                }
            };
            if now.duration_since(quiet) < after || holds.hold(&runtime, file, &slot.handler) {
                continue;
            }
            runtime.lifecycle.unbind_handler(file).await;
            if unload_after_on_stop(&runtime, &slot).await {
                quiet_since.remove(file);
                unloaded.push(slot.handler.clone());
            } else {
                // Something came in meanwhile: its endpoints are bound again, onStart included.
                runtime.bind_unbound(Some(file)).await;
            }
        }
        if !unloaded.is_empty() {
            let _ = tokio::task::spawn_blocking(give_back_free_memory).await;
            tracing::info!(
                "unloaded after {} s unused (--unload-idle): {}",
                after.as_secs_f64(),
                unloaded.join(", ")
            );
        }
    }
}

/// Unloads a handler whose endpoints were just unbound, once its `onStop` turn is over: the
/// isolate reports itself idle only after that turn (and what `onStop` started) has finished,
/// and the flag read right after `onStop` answered may still be the one from before it; so
/// it is waited for, and asked twice.
async fn unload_after_on_stop(runtime: &Runtime, slot: &HandlerSlot) -> bool {
    for _ in 0..2 {
        let _ = tokio::time::timeout(ONSTOP_SETTLES, slot.until_idle()).await;
        if runtime.isolates.unload_if_unused(&slot.handler_file).await {
            return true;
        }
        if slot.assigned_connections().iter().any(|&count| count > 0) {
            return false;
        }
    }
    false
}

/// What holds on to handlers right now: connections open per endpoint, and the handlers that
/// outbound clients run or were created by.
struct Holds {
    /// The endpoints served.
    snapshot: Arc<RegistryState>,
    /// Open connections (STOMP links included), per endpoint.
    open: HashMap<String, usize>,
    /// Handlers that clients run.
    client_handlers: std::collections::HashSet<String>,
}

impl Holds {
    fn now(runtime: &Runtime) -> Self {
        let client_handlers = runtime
            .clients
            .list()
            .into_iter()
            .map(|client| client.handler)
            .collect();
        Self {
            snapshot: runtime.endpoints.snapshot(),
            open: runtime.connections.counts_by_endpoint(),
            client_handlers,
        }
    }

    /// Whether anything holds on to the handler: an endpoint that ticks, a connection open on
    /// one of its endpoints, an outbound client running its code or created by it.
    fn hold(&self, runtime: &Runtime, handler_file: &Path, handler: &str) -> bool {
        self.snapshot
            .endpoints
            .values()
            .filter(|endpoint| endpoint.handler_file == handler_file)
            .any(|endpoint| {
                runtime.loads_at_start(endpoint)
                    || self.open.get(endpoint.name.as_str()).copied().unwrap_or(0) > 0
            })
            || self.client_handlers.contains(handler)
            || !runtime.clients.created_by(handler).is_empty()
    }
}
