//! `GET /metrics`: the runtime's own counters in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "switchboard_isolates_alive",
        "Handler isolate threads alive.",
        state.isolates.live_isolates() as f64,
    );
    gauge(
        "switchboard_clients_open",
        "Outbound clients not yet closed.",
        state.clients.len() as f64,
    );
    gauge(
        "switchboard_reloads_total",
        "Workspace changes applied since start.",
        state.reloads.load(Ordering::Relaxed) as f64,
    );
    if let Some(bytes) = resident_memory_bytes() {
        gauge(
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            bytes as f64,
        );
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_connections_open Inbound connections open, per endpoint.\n# TYPE switchboard_connections_open gauge"
    );
    let mut counts: Vec<_> = state.connections.counts_by_endpoint().into_iter().collect();
    counts.sort();
    for (endpoint, count) in counts {
        let _ = writeln!(
            out,
            "switchboard_connections_open{{endpoint=\"{}\"}} {count}",
            endpoint.replace('\\', "\\\\").replace('"', "\\\"")
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// Resident set size from /proc (Linux); None elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
