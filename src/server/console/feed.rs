//! The console's live feed (Server-Sent Events at `/console/feed`): the state of every endpoint
//! once a second (`state`), the chart's samples (all of them first, then one a second), and for
//! an endpoint page (`?endpoint=NAME`) the endpoint's handler log lines as they are written
//! (`log`) and its connections (`connections`). The page renders; nothing here is HTML.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use super::activity::{Activity, Sample};
use crate::endpoints::runtime::ReloadRecord;
use crate::endpoints::Runtime;
use crate::logbook::LogLine;
use crate::net::connections::ConnectionInfo;
use crate::net::remote::NodeInfo;
use crate::stats::LATENCY_BUCKETS;

/// Log lines an endpoint page gets when it opens.
const BACKLOG: usize = 200;

/// Connections an endpoint page lists (the oldest), however many are open: the list goes out
/// every second, so it must stay small.
const LISTED: usize = 500;

/// An endpoint's connections, as its page lists them.
#[derive(Debug, Serialize)]
struct Listing {
    /// How many are open.
    total: usize,
    /// The oldest of them, at most [`LISTED`].
    shown: Vec<ConnectionInfo>,
}

/// Event durations of a handler, as a histogram.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Upper bounds of the buckets, in seconds.
    pub bounds: &'static [f64],
    /// Events per bucket, cumulative (the last one is every event up to the largest bound).
    pub cumulative: Vec<u64>,
    /// Events counted.
    pub count: u64,
    /// Their total duration, in seconds.
    pub sum: f64,
}

/// One endpoint, as the console shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointState {
    /// The endpoint's name.
    pub endpoint: String,
    /// Its project folder.
    pub project: String,
    /// Its description.
    pub description: String,
    /// The file declaring it (descriptor, or `@Websocket` module).
    pub declared_in: String,
    /// The handler module, relative to the workspace.
    pub handler: String,
    /// The URL path to connect to.
    pub path: String,
    /// Why its handler does not serve (`file:line:column: message`), if it does not.
    pub error: Option<String>,
    /// When a reload last touched it, in milliseconds since the Unix epoch.
    pub last_reload: Option<u64>,
    /// Connections open.
    pub connections: usize,
    /// How many isolates run its handler (its descriptor's `instances`, 1 when not set).
    pub instances: usize,
    /// Messages received per second (last second).
    pub in_per_second: f64,
    /// Messages sent per second (last second).
    pub out_per_second: f64,
    /// Messages received since start.
    pub messages_in: u64,
    /// Messages sent since start.
    pub messages_out: u64,
    /// Handler events that threw or rejected.
    pub errors: u64,
    /// Handler events terminated for time or heap.
    pub terminations: u64,
    /// How long the handler's events took.
    pub latency: Latency,
}

/// Everything the console's overview shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleState {
    /// This node.
    pub node: NodeInfo,
    /// The engine running handlers.
    pub engine: &'static str,
    /// The endpoints, by name.
    pub endpoints: Vec<EndpointState>,
    /// Descriptor problems of the workspace, as `file: message`.
    pub problems: Vec<String>,
    /// Descriptor warnings.
    pub warnings: Vec<String>,
    /// The last reloads, newest last.
    pub reloads: Vec<ReloadRecord>,
    /// Isolates running.
    pub isolates: usize,
}

/// The console's view of the runtime now.
pub fn state(runtime: &Runtime, activity: &Activity) -> ConsoleState {
    let snapshot = runtime.endpoints.snapshot();
    let counts = runtime.connections.counts_by_endpoint();
    let reloads: Vec<ReloadRecord> = runtime.reload_history.lock().iter().cloned().collect();
    let endpoints = snapshot
        .endpoints
        .values()
        .map(|e| {
            let handler = runtime.workspace.display(&e.handler_file);
            let traffic = runtime.stats.endpoint(&e.name);
            let failures = runtime.stats.handler(&handler);
            let (cumulative, count, sum) = failures.latency.snapshot();
            let (in_per_second, out_per_second) = activity.rates(&e.name);
            let named = format!("endpoint {} ", e.name);
            let last_reload = reloads
                .iter()
                .rev()
                .find(|r| {
                    r.report
                        .iter()
                        .any(|line| line.contains(&named) || line.contains(&handler))
                })
                .map(|r| r.time);
            EndpointState {
                endpoint: e.name.clone(),
                project: e.project.clone(),
                description: e.description.clone(),
                declared_in: e.declared_in.clone(),
                path: format!("/websockets/v4/service/{}", e.name),
                error: runtime
                    .endpoints
                    .handler_error(&e.handler_file)
                    .map(|error| error.to_string()),
                last_reload,
                connections: counts.get(&e.name).copied().unwrap_or(0),
                instances: e.options.instance_count(),
                in_per_second,
                out_per_second,
                messages_in: traffic.messages_in.load(Ordering::Relaxed),
                messages_out: traffic.messages_out.load(Ordering::Relaxed),
                errors: failures.errors.load(Ordering::Relaxed),
                terminations: failures.terminations.load(Ordering::Relaxed),
                latency: Latency {
                    bounds: &LATENCY_BUCKETS,
                    cumulative,
                    count,
                    sum,
                },
                handler,
            }
        })
        .collect();
    ConsoleState {
        node: runtime.connections.this_node(),
        engine: crate::isolate::ENGINE_NAME,
        endpoints,
        problems: snapshot.problems.iter().map(|p| p.to_string()).collect(),
        warnings: snapshot
            .warnings
            .iter()
            .map(|w| format!("{}: {}", w.file, w.message))
            .collect(),
        reloads,
        isolates: runtime.isolates.live_isolates(),
    }
}

fn event<T: Serialize>(name: &str, value: &T) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(value).unwrap_or_default())
}

/// The feed for one console page (`endpoint`: an endpoint page's endpoint).
pub fn feed(
    runtime: Arc<Runtime>,
    activity: Arc<Activity>,
    endpoint: Option<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (events, receiver) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut logs = runtime.stats.logs.subscribe();
        let send = |event: Event| events.try_send(event).is_ok() || !events.is_closed();
        let series: Vec<Sample> = activity.series();
        if !send(event("series", &series)) {
            return;
        }
        let handler = endpoint.as_ref().and_then(|name| {
            let snapshot = runtime.endpoints.snapshot();
            let file = &snapshot.endpoints.get(name)?.handler_file;
            Some(runtime.workspace.display(file))
        });
        if let Some(handler) = &handler {
            let backlog = runtime.stats.logs.recent(handler, BACKLOG);
            if !send(event("logs", &backlog)) {
                return;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let mut open = send(event("state", &state(&runtime, &activity)));
                    if let Some(sample) = activity.latest() {
                        open &= send(event("sample", &sample));
                    }
                    if let Some(name) = &endpoint {
                        let (shown, total) = runtime.connections.list_first(Some(name), LISTED);
                        open &= send(event("connections", &Listing { total, shown }));
                    }
                    if !open {
                        return;
                    }
                }
                line = logs.recv(), if handler.is_some() => match line {
                    Ok(line) => {
                        if Some(&*line.handler) == handler.as_deref() && !send(event("log", &*line)) {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let note = LogLine {
                            seq: 0,
                            time: 0,
                            handler: Arc::from(handler.as_deref().unwrap_or("")),
                            level: "warn",
                            text: format!("({missed} log lines of all handlers went by too fast to show)"),
                        };
                        if !send(event("log", &note)) {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = events.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
