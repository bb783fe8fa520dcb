//! `GET /metrics`: the runtime's own counters in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::state::AppState;
use crate::memory::resident_bytes;
use crate::stats::{CompressionCounters, HandlerFailures, Traffic, LATENCY_BUCKETS};

/// `GET /metrics`.
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
        state.runtime.isolates.live_isolates() as f64,
    );
    gauge(
        "switchboard_clients_open",
        "Outbound clients not yet closed.",
        state.runtime.clients.len() as f64,
    );
    gauge(
        "switchboard_stomp_sessions",
        "STOMP sockets open at /stomp (each also counts as a connection of every endpoint whose replies it subscribes to).",
        state.stomp.len() as f64,
    );
    gauge(
        "switchboard_reloads_total",
        "Workspace changes applied since start.",
        state.runtime.reloads.load(Ordering::Relaxed) as f64,
    );
    let broker = &state.runtime.stats.broker;
    if broker.configured.load(Ordering::Relaxed) {
        gauge(
            "switchboard_broker_up",
            "1 while the broker linking this node with the others is reachable, else 0.",
            u8::from(broker.up.load(Ordering::Relaxed)) as f64,
        );
        gauge(
            "switchboard_broker_nodes",
            "Live nodes known through the broker, this one included.",
            broker.nodes.load(Ordering::Relaxed) as f64,
        );
    }
    if let Some(bytes) = resident_bytes() {
        gauge(
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            bytes as f64,
        );
    }
    if broker.configured.load(Ordering::Relaxed) {
        for (name, help, value) in [
            (
                "switchboard_broker_messages_in_total",
                "Messages received from other nodes through the broker.",
                &broker.messages_in,
            ),
            (
                "switchboard_broker_messages_out_total",
                "Messages published to the broker for other nodes.",
                &broker.messages_out,
            ),
            (
                "switchboard_broker_messages_dropped_total",
                "Messages for other nodes not published: the broker was down or its queue full (delivery across nodes is at most once).",
                &broker.dropped,
            ),
            (
                "switchboard_broker_reconnects_total",
                "Times the link to the broker was re-established after it was lost.",
                &broker.reconnects,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_connections_open Inbound connections open, per endpoint.\n# TYPE switchboard_connections_open gauge"
    );
    let mut counts: Vec<_> = state
        .runtime
        .connections
        .counts_by_endpoint()
        .into_iter()
        .collect();
    counts.sort();
    for (endpoint, count) in counts {
        let _ = writeln!(
            out,
            "switchboard_connections_open{{endpoint=\"{}\"}} {count}",
            label(&endpoint)
        );
    }
    let mut slots = state.runtime.isolates.running().await;
    slots.retain(|slot| slot.instance_count() > 1);
    if !slots.is_empty() {
        let _ = writeln!(
            out,
            "# HELP switchboard_instance_connections Inbound connections each instance of a handler with several (\"instances\") serves.\n# TYPE switchboard_instance_connections gauge"
        );
        slots.sort_by(|a, b| a.handler.cmp(&b.handler));
        for slot in slots {
            for (instance, count) in slot.assigned_connections().into_iter().enumerate() {
                let _ = writeln!(
                    out,
                    "switchboard_instance_connections{{handler=\"{}\",instance=\"{instance}\"}} {count}",
                    label(&slot.handler)
                );
            }
        }
    }
    let traffic = endpoint_rows(
        state.runtime.stats.endpoints(),
        state.runtime.stats.clients.clone(),
    );
    write_counters(
        &mut out,
        &[
            (
                "switchboard_messages_received_total",
                "Messages received.",
                |t: &Traffic| &t.messages_in,
            ),
            (
                "switchboard_bytes_received_total",
                "Message bytes received.",
                |t: &Traffic| &t.bytes_in,
            ),
            (
                "switchboard_messages_sent_total",
                "Messages sent.",
                |t: &Traffic| &t.messages_out,
            ),
            (
                "switchboard_bytes_sent_total",
                "Message bytes sent.",
                |t: &Traffic| &t.bytes_out,
            ),
        ],
        &traffic,
    );
    compression_metrics(&mut out, &state);
    let handlers = state.runtime.stats.handlers();
    let failures: Vec<(String, Arc<HandlerFailures>)> = handlers
        .iter()
        .map(|(handler, failures)| (format!("handler=\"{}\"", label(handler)), failures.clone()))
        .collect();
    write_counters(
        &mut out,
        &[
            (
                "switchboard_handler_errors_total",
                "Handler events that threw or rejected.",
                |f: &HandlerFailures| &f.errors,
            ),
            (
                "switchboard_handler_terminations_total",
                "Handler events terminated for time or heap.",
                |f: &HandlerFailures| &f.terminations,
            ),
        ],
        &failures,
    );
    let name = "switchboard_event_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time handlers took per event: all handlers together, and each (the console's latency per endpoint).\n# TYPE {name} histogram"
    );
    let mut histograms = vec![(String::new(), &state.runtime.stats.event_latency)];
    for (handler, failures) in &handlers {
        histograms.push((format!("handler=\"{}\"", label(handler)), &failures.latency));
    }
    for (labels, histogram) in histograms {
        let (buckets, count, sum) = histogram.snapshot();
        let comma = if labels.is_empty() { "" } else { "," };
        for (bound, cumulative) in LATENCY_BUCKETS.iter().zip(&buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{comma}le=\"{bound}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{comma}le=\"+Inf\"}} {count}\n{name}_sum{braces} {sum}\n{name}_count{braces} {count}"
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

/// A label value with Prometheus' escapes.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// permessage-deflate: bytes before and after, per endpoint (endpoints that compressed or
/// inflated anything) and for outbound clients, and the memory of dedicated windows.
fn compression_metrics(out: &mut String, state: &AppState) {
    let stats = &state.runtime.stats;
    let _ = writeln!(
        out,
        "# HELP switchboard_compression_windows_bytes Memory reserved by dedicated permessage-deflate windows (bounded by --compression-memory-mib).\n# TYPE switchboard_compression_windows_bytes gauge\nswitchboard_compression_windows_bytes {}",
        stats.compression_windows.used()
    );
    let counters = endpoint_rows(stats.compressions(), stats.clients_compression.clone());
    write_counters(
        out,
        &[
            (
                "switchboard_compression_sent_bytes_total",
                "Bytes of sent messages that were compressed, before compression.",
                |c: &CompressionCounters| &c.sent_raw,
            ),
            (
                "switchboard_compression_sent_wire_bytes_total",
                "The same messages' payload bytes on the wire, compressed.",
                |c: &CompressionCounters| &c.sent_wire,
            ),
            (
                "switchboard_compression_received_wire_bytes_total",
                "Payload bytes of compressed messages received, as they came.",
                |c: &CompressionCounters| &c.received_wire,
            ),
            (
                "switchboard_compression_received_bytes_total",
                "The same messages' bytes, inflated.",
                |c: &CompressionCounters| &c.received_raw,
            ),
        ],
        &counters,
    );
}

/// A counter family: its name, its help text, and the counter it reads from each row.
type CounterFamily<T> = (&'static str, &'static str, fn(&T) -> &AtomicU64);

/// The rows of a per-endpoint counter family: each endpoint's counters under its `endpoint`
/// label, then outbound clients' under `endpoint="(outbound clients)"`.
fn endpoint_rows<T>(per_endpoint: Vec<(String, Arc<T>)>, clients: Arc<T>) -> Vec<(String, Arc<T>)> {
    per_endpoint
        .into_iter()
        .map(|(endpoint, counters)| (format!("endpoint=\"{}\"", label(&endpoint)), counters))
        .chain([("endpoint=\"(outbound clients)\"".to_string(), clients)])
        .collect()
}

/// Writes each family with one line per row (the row's labels, and its counters).
fn write_counters<T>(out: &mut String, families: &[CounterFamily<T>], rows: &[(String, Arc<T>)]) {
    for (name, help, read) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, counters) in rows {
            let _ = writeln!(
                out,
                "{name}{{{labels}}} {}",
                read(counters).load(Ordering::Relaxed)
            );
        }
    }
}
