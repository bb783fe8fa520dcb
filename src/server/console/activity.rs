//! The console's chart: connections and messages per second, sampled every second for the last
//! ten minutes, all endpoints together and per endpoint (the rates of the endpoint table). It
//! starts with the server when the console is on (one small pass a second), so the chart shows
//! the minutes before anyone opened it; a server without a console samples nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::endpoints::Runtime;
use crate::event::epoch_millis;

/// Samples kept: ten minutes at one a second.
const KEPT: usize = 600;

/// One second of the whole server.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch.
    pub time: u64,
    /// Connections open.
    pub connections: usize,
    /// Messages received per second.
    pub messages_in: f64,
    /// Messages sent per second.
    pub messages_out: f64,
}

/// What the sampler keeps.
#[derive(Debug, Default)]
struct Samples {
    /// The last [`KEPT`] samples.
    series: VecDeque<Sample>,
    /// Each endpoint's message counts (in, out) at the last sample.
    totals: HashMap<String, (u64, u64)>,
    /// Each endpoint's rates (in, out) over the last second.
    rates: HashMap<String, (f64, f64)>,
    /// When the last sample was taken.
    taken: Option<Instant>,
}

/// The sampler and what it found.
#[derive(Debug, Default)]
pub struct Activity {
    /// The samples.
    samples: Mutex<Samples>,
    /// Set once the sampling task runs.
    started: OnceLock<()>,
}

impl Activity {
    /// Starts sampling `runtime` (once; later calls do nothing).
    pub fn start(self: &Arc<Self>, runtime: &Arc<Runtime>) {
        if self.started.set(()).is_err() {
            return;
        }
        let activity = Arc::downgrade(self);
        let runtime = Arc::downgrade(runtime);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (Some(activity), Some(runtime)) = (activity.upgrade(), runtime.upgrade())
                else {
                    return;
                };
                activity.sample(&runtime);
            }
        });
    }

    /// Takes one sample.
    fn sample(&self, runtime: &Runtime) {
        let now = Instant::now();
        let mut samples = self.samples.lock();
        let seconds = samples
            .taken
            .map(|taken| now.duration_since(taken).as_secs_f64())
            .unwrap_or(0.0);
        let (mut all_in, mut all_out) = (0.0, 0.0);
        for (endpoint, traffic) in runtime.stats.endpoints() {
            let totals = (
                traffic.messages_in.load(Ordering::Relaxed),
                traffic.messages_out.load(Ordering::Relaxed),
            );
            let rates = match (samples.totals.get(&endpoint), seconds > 0.0) {
                (Some(before), true) => (
                    totals.0.saturating_sub(before.0) as f64 / seconds,
                    totals.1.saturating_sub(before.1) as f64 / seconds,
                ),
                _ => (0.0, 0.0),
            };
            all_in += rates.0;
            all_out += rates.1;
            samples.rates.insert(endpoint.clone(), rates);
            samples.totals.insert(endpoint, totals);
        }
        samples.taken = Some(now);
        if samples.series.len() == KEPT {
            samples.series.pop_front();
        }
        samples.series.push_back(Sample {
            time: epoch_millis(SystemTime::now()),
            connections: runtime.connections.len(),
            messages_in: all_in,
            messages_out: all_out,
        });
    }

    /// Every sample kept, oldest first.
    pub fn series(&self) -> Vec<Sample> {
        self.samples.lock().series.iter().copied().collect()
    }

    /// The latest sample.
    pub fn latest(&self) -> Option<Sample> {
        self.samples.lock().series.back().copied()
    }

    /// An endpoint's messages in and out per second, over the last second.
    pub fn rates(&self, endpoint: &str) -> (f64, f64) {
        self.samples
            .lock()
            .rates
            .get(endpoint)
            .copied()
            .unwrap_or((0.0, 0.0))
    }
}
