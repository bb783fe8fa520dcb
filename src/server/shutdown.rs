//! Graceful shutdown: on Ctrl-C or SIGTERM, no new upgrades; every connection gets what is
//! queued for it, then 1001; clients close; endpoints run `onStop`; isolates finish their queued
//! events; all within the shutdown timeout.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::state::AppState;

/// Shuts everything down, within the shutdown timeout.
pub(super) async fn shut_down(state: &AppState) {
    let runtime = &state.runtime;
    let limit = runtime.limits.shutdown_timeout;
    let started = Instant::now();
    let deadline = started + limit;
    state.shutting_down.store(true, Ordering::SeqCst);
    let connections = runtime.connections.close_all(1001, "server shutting down");
    let clients = runtime.clients.close_all(1001, "server shutting down");
    let sessions = state.stomp.close_all(1001, "server shutting down");
    tracing::info!(
        "shutting down: closing {connections} connection(s), {sessions} STOMP session(s) and {clients} client(s) (at most {} s)",
        limit.as_secs_f64()
    );
    state.tasks.close();
    let remaining = |deadline: Instant| deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(remaining(deadline), state.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: some connections did not close in time");
    }
    let _ = tokio::time::timeout(remaining(deadline), runtime.clients.until_all_finished()).await;
    let _ = tokio::time::timeout(remaining(deadline), runtime.lifecycle.unbind_all()).await;
    // Handlers run the onClose events already queued, then their isolates stop.
    runtime.isolates.shutdown(remaining(deadline)).await;
    tracing::info!("shut down in {} ms", started.elapsed().as_millis());
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("signal received");
}
