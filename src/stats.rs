//! The runtime's own counters, kept with atomics on the hot paths and rendered by `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

/// Traffic of one endpoint (or of all outbound clients), or of one connection within its
/// endpoint's (counted in both).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Messages received.
    pub messages_in: AtomicU64,
    /// Payload bytes received.
    pub bytes_in: AtomicU64,
    /// Messages sent (counted as they are handed to the socket).
    pub messages_out: AtomicU64,
    /// Payload bytes sent.
    pub bytes_out: AtomicU64,
    /// The endpoint's traffic, when this is one connection's.
    pub within: Option<Arc<Traffic>>,
}

impl Traffic {
    /// One connection's traffic, counted in its endpoint's too.
    pub fn within(endpoint: Arc<Traffic>) -> Self {
        Self {
            within: Some(endpoint),
            ..Self::default()
        }
    }

    /// Counts a message received.
    pub fn received(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        if let Some(endpoint) = &self.within {
            endpoint.received(bytes);
        }
    }

    /// Counts a message sent.
    pub fn sent(&self, bytes: usize) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        if let Some(endpoint) = &self.within {
            endpoint.sent(bytes);
        }
    }

    /// Takes back a [`Traffic::sent`] for a message that was not written after all.
    pub fn not_sent(&self, bytes: usize) {
        self.messages_out.fetch_sub(1, Ordering::Relaxed);
        self.bytes_out.fetch_sub(bytes as u64, Ordering::Relaxed);
        if let Some(endpoint) = &self.within {
            endpoint.not_sent(bytes);
        }
    }
}

/// Upper bounds (seconds) of the event latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0,
];

/// How long handler events took to run, as a Prometheus histogram.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Events per bucket of [`LATENCY_BUCKETS`] (not cumulative).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Events observed.
    count: AtomicU64,
    /// Their total duration.
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one event that took `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Cumulative bucket counts, the total count, and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                cumulative += b.load(Ordering::Relaxed);
                cumulative
            })
            .collect();
        (
            buckets,
            self.count.load(Ordering::Relaxed),
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }
}

/// Failures of one handler module.
#[derive(Debug, Default)]
pub struct HandlerFailures {
    /// Events that threw or rejected.
    pub errors: AtomicU64,
    /// Events terminated for running too long or allocating too much.
    pub terminations: AtomicU64,
    /// How long this handler's events took (the web console shows it per endpoint).
    pub latency: LatencyHistogram,
}

/// All counters of the runtime.
#[derive(Debug, Default)]
pub struct Stats {
    /// Traffic per endpoint.
    endpoints: RwLock<BTreeMap<String, Arc<Traffic>>>,
    /// Failures per handler module.
    handlers: RwLock<BTreeMap<String, Arc<HandlerFailures>>>,
    /// Traffic of outbound clients, all together.
    pub clients: Arc<Traffic>,
    /// How long handler events took, all handlers together.
    pub event_latency: LatencyHistogram,
    /// The link to other nodes through a broker (`serve --broker`).
    pub broker: BrokerCounters,
    /// What handlers logged, kept for the web console.
    pub logs: crate::logbook::LogBook,
    /// permessage-deflate bytes per endpoint.
    compression: RwLock<BTreeMap<String, Arc<CompressionCounters>>>,
    /// permessage-deflate bytes of outbound clients, all together.
    pub clients_compression: Arc<CompressionCounters>,
    /// The memory of dedicated compression windows (per socket), bounded.
    pub compression_windows: Arc<WindowBudget>,
}

/// permessage-deflate's bytes before and after, for `/metrics` (per endpoint, and for all
/// outbound clients).
#[derive(Debug, Default)]
pub struct CompressionCounters {
    /// Sent messages that were compressed: their size.
    pub sent_raw: AtomicU64,
    /// The same messages on the wire (payloads, compressed).
    pub sent_wire: AtomicU64,
    /// Received compressed messages: their payloads on the wire.
    pub received_wire: AtomicU64,
    /// The same messages inflated.
    pub received_raw: AtomicU64,
}

/// The memory all per-socket compression windows may take together, and what they take now.
#[derive(Debug)]
pub struct WindowBudget {
    /// The most, in bytes.
    limit: AtomicUsize,
    /// Reserved now, in bytes.
    used: AtomicUsize,
}

impl Default for WindowBudget {
    fn default() -> Self {
        Self {
            limit: AtomicUsize::new(crate::limits::Limits::default().compression_memory),
            used: AtomicUsize::new(0),
        }
    }
}

impl WindowBudget {
    /// Sets the most that may be reserved (`serve --compression-memory-mib`).
    pub fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// The most that may be reserved, in bytes.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, if they fit; they are given back when the reservation is dropped.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<WindowReservation> {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= limit).then_some(used + bytes)
            })
            .ok()?;
        Some(WindowReservation {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Memory held from a [`WindowBudget`], given back when dropped.
#[derive(Debug)]
pub struct WindowReservation {
    /// Where it came from.
    budget: Arc<WindowBudget>,
    /// How much.
    bytes: usize,
}

impl Drop for WindowReservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The link to other nodes, for `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerCounters {
    /// A broker is configured (the other counters mean something).
    pub configured: AtomicBool,
    /// The broker is reachable now.
    pub up: AtomicBool,
    /// Envelopes received from other nodes (own ones coming back not counted).
    pub messages_in: AtomicU64,
    /// Envelopes published to the broker.
    pub messages_out: AtomicU64,
    /// Envelopes not published: the broker was down or its queue full (delivery across nodes is
    /// at most once).
    pub dropped: AtomicU64,
    /// Times the link was re-established after it was lost.
    pub reconnects: AtomicU64,
    /// Live nodes known, this one included.
    pub nodes: AtomicU64,
}

impl Stats {
    /// The traffic counters of `endpoint`, created on first use.
    pub fn endpoint(&self, endpoint: &str) -> Arc<Traffic> {
        counters_of(&self.endpoints, endpoint)
    }

    /// The failure counters of `handler`, created on first use.
    pub fn handler(&self, handler: &str) -> Arc<HandlerFailures> {
        counters_of(&self.handlers, handler)
    }

    /// The compression counters of `endpoint`, created on first use.
    pub fn compression(&self, endpoint: &str) -> Arc<CompressionCounters> {
        counters_of(&self.compression, endpoint)
    }

    /// Every endpoint's compression counters, by name (endpoints that compressed or inflated).
    pub fn compressions(&self) -> Vec<(String, Arc<CompressionCounters>)> {
        all_counters(&self.compression)
    }

    /// Every endpoint's traffic, by name.
    pub fn endpoints(&self) -> Vec<(String, Arc<Traffic>)> {
        all_counters(&self.endpoints)
    }

    /// Every handler's failures, by handler.
    pub fn handlers(&self) -> Vec<(String, Arc<HandlerFailures>)> {
        all_counters(&self.handlers)
    }
}

/// The counters kept under `name`, created on first use (a read lock on the usual path).
fn counters_of<T: Default>(map: &RwLock<BTreeMap<String, Arc<T>>>, name: &str) -> Arc<T> {
    if let Some(counters) = map.read().get(name) {
        return counters.clone();
    }
    map.write().entry(name.to_string()).or_default().clone()
}

/// Every name's counters, in name order.
fn all_counters<T>(map: &RwLock<BTreeMap<String, Arc<T>>>) -> Vec<(String, Arc<T>)> {
    map.read()
        .iter()
        .map(|(name, counters)| (name.clone(), counters.clone()))
        .collect()
}
