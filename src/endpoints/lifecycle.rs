//! Endpoint lifecycle and periodic global services (WEBDEV's "global service"): `onStart` when
//! an endpoint is bound, `onTick` at the descriptor's `service.interval`, `onStop` when it is
//! unbound (removed, rebound, its handler reloaded, or the server shutting down).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::event::ServiceCall;
use crate::isolate::HandlerSlot;
use crate::workspace::Endpoint;

/// How long `onStart`/`onStop` may take before the runtime stops waiting for them.
const LIFECYCLE_WAIT: Duration = Duration::from_secs(15);

/// One bound endpoint: its handler and its tick task.
#[derive(Debug)]
struct Bound {
    /// The endpoint, as bound.
    endpoint: Arc<Endpoint>,
    /// Its handler, which runs its lifecycle exports.
    handler: Arc<HandlerSlot>,
    /// The task running `onTick`, if it has a service.
    ticker: Option<JoinHandle<()>>,
}

/// The bound endpoints' lifecycles.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// The bound endpoints, by name.
    bound: Mutex<HashMap<String, Bound>>,
}

impl Lifecycle {
    /// Runs `onStart(endpoint)` and starts the endpoint's ticks, if it has a service.
    pub async fn bind(&self, endpoint: Arc<Endpoint>, handler: Arc<HandlerSlot>) {
        let name: Arc<str> = endpoint.name.as_str().into();
        let _ = tokio::time::timeout(
            LIFECYCLE_WAIT,
            handler.service(ServiceCall::Start, name.clone()),
        )
        .await;
        let ticker = endpoint
            .options
            .service_interval
            .map(|interval| tokio::spawn(tick(handler.clone(), name, interval)));
        let previous = self.bound.lock().insert(
            endpoint.name.clone(),
            Bound {
                endpoint,
                handler,
                ticker,
            },
        );
        if let Some(previous) = previous.and_then(|p| p.ticker) {
            previous.abort();
        }
    }

    /// Stops the endpoint's ticks and runs its `onStop(endpoint)`.
    pub async fn unbind(&self, name: &str) {
        let bound = self.bound.lock().remove(name);
        if let Some(bound) = bound {
            stop(bound).await;
        }
    }

    /// Unbinds every endpoint of the handler `handler_file` (before its code is replaced); they
    /// are bound again once the new code is in place.
    pub async fn unbind_handler(&self, handler_file: &std::path::Path) {
        let names: Vec<String> = self
            .bound
            .lock()
            .iter()
            .filter(|(_, bound)| bound.endpoint.handler_file == handler_file)
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            self.unbind(&name).await;
        }
    }

    /// Whether `name` is bound.
    pub fn is_bound(&self, name: &str) -> bool {
        self.bound.lock().contains_key(name)
    }

    /// Unbinds everything (server shutdown).
    pub async fn unbind_all(&self) {
        let all: Vec<Bound> = self.bound.lock().drain().map(|(_, b)| b).collect();
        for bound in all {
            stop(bound).await;
        }
    }
}

async fn stop(bound: Bound) {
    if let Some(ticker) = bound.ticker {
        ticker.abort();
    }
    let name: Arc<str> = bound.endpoint.name.as_str().into();
    let _ = tokio::time::timeout(
        LIFECYCLE_WAIT,
        bound.handler.service(ServiceCall::Stop, name),
    )
    .await;
}

/// Runs `onTick` every `interval`, never overlapping itself: the next tick is scheduled from the
/// end of a tick that ran longer than the interval, and the log says so.
async fn tick(handler: Arc<HandlerSlot>, endpoint: Arc<str>, interval: Duration) {
    let mut next = tokio::time::Instant::now() + interval;
    loop {
        tokio::time::sleep_until(next).await;
        let started = Instant::now();
        if !handler.service(ServiceCall::Tick, endpoint.clone()).await {
            return;
        }
        let took = started.elapsed();
        next += interval;
        let now = tokio::time::Instant::now();
        if next < now {
            tracing::warn!(
                "endpoint {endpoint}: onTick took {} ms, longer than its interval of {} ms; the next tick is delayed",
                took.as_millis(),
                interval.as_millis()
            );
            next = now + interval;
        }
    }
}
