//! Applying workspace changes to what is served, without a restart: endpoints bound, rebound
//! and unbound; handler isolates replaced when their code changes, keeping open connections.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::runtime::{Loading, ReloadRecord, Runtime};
use crate::event::{epoch_millis, HandlerLoadError};
use crate::workspace::{self, Endpoint, Problem};

/// Close code and reasons used when the workspace takes something away.
const GOING_AWAY: u16 = 1001;

/// Applies workspace changes; one per server.
pub struct Reloader {
    /// What the changes are applied to.
    state: Arc<Runtime>,
    /// Serialises reloads: a batch is applied whole before the next one starts.
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// The reloader of `state`.
    pub fn new(state: Arc<Runtime>) -> Arc<Self> {
        Arc::new(Self {
            state,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Starts the handlers of the current endpoints that load at start (all of them, or with
    /// `--load lazy` those with a service), recording load errors. Used at start-up.
    pub async fn start_all(&self) {
        let _guard = self.lock.lock().await;
        let started = Instant::now();
        self.state.want_instances();
        let handlers = self.handlers_loaded_now();
        for handler_file in &handlers {
            // A failure is logged and recorded in the registry; the other handlers still start.
            let _ = self.start_handler(handler_file).await;
        }
        self.state.bind_unbound(None).await;
        let seconds = started.elapsed().as_secs_f64();
        if self.state.loading == Loading::Eager && (handlers.len() >= 100 || seconds >= 5.0) {
            tracing::info!(
                "{} handlers loaded in {seconds:.1} s (--load lazy loads each on first use instead)",
                handlers.len()
            );
        }
    }

    /// The handlers of the current endpoints that are loaded without waiting for a first use:
    /// all of them, or with `--load lazy` those of endpoints with a service (they tick).
    fn handlers_loaded_now(&self) -> BTreeSet<PathBuf> {
        self.state
            .endpoints
            .snapshot()
            .endpoints
            .values()
            .filter(|endpoint| self.state.loads_at_start(endpoint))
            .map(|endpoint| endpoint.handler_file.clone())
            .collect()
    }

    /// Rescans the workspace and applies the difference. Logs one line saying what changed.
    pub async fn apply(&self, changed: &[PathBuf]) {
        let _guard = self.lock.lock().await;
        let started = Instant::now();
        let state = &self.state;
        let before = state.endpoints.snapshot();
        let scan = workspace::scan(&state.workspace);
        log_new_problems(
            &before.problems,
            &scan.problems,
            &before.warnings,
            &scan.warnings,
        );
        let change = state.endpoints.apply(scan);
        state.want_instances();
        let mut report: Vec<String> = Vec::new();
        // Whether a handler failed to load or reload (the console's history marks it).
        let mut failed = false;

        for endpoint in &change.removed {
            state.lifecycle.unbind(&endpoint.name).await;
            let closed = self.close_endpoint_connections(
                &endpoint.name,
                &format!("endpoint {} removed", endpoint.name),
            );
            report.push(format!(
                "endpoint {} removed ({}{})",
                endpoint.name,
                endpoint.declared_in,
                closed_note(closed)
            ));
        }
        for (old, new) in &change.changed {
            state.lifecycle.unbind(&old.name).await;
            let closed = if old.handler_file != new.handler_file {
                self.close_endpoint_connections(
                    &new.name,
                    &format!("endpoint {} rebound to {}", new.name, new.handler),
                )
            } else {
                0
            };
            report.push(format!(
                "endpoint {} rebound ({} -> {}{})",
                new.name,
                new.declared_in,
                self.state.workspace.display(&new.handler_file),
                closed_note(closed)
            ));
        }
        for endpoint in &change.added {
            report.push(format!(
                "endpoint {} bound ({} -> {})",
                endpoint.name,
                endpoint.declared_in,
                self.state.workspace.display(&endpoint.handler_file)
            ));
        }

        // Handlers whose code (or a module they import) changed get it replaced in their isolate.
        let referenced = self.referenced_handlers();
        for slot in state.isolates.running().await {
            let file = slot.handler_file.clone();
            if !file.exists() || (!referenced.contains(&file) && !self.has_clients(&slot.handler)) {
                state.isolates.stop(&file).await;
                state.endpoints.set_handler_error(&file, None);
                report.push(format!("handler {} unloaded", slot.handler));
                continue;
            }
            // What the code (or its last failed load) read and has changed since: the same broken
            // text is not tried again, and a missing file that appears is a change.
            let edited = slot.changed_files();
            if edited.is_empty() {
                continue;
            }
            if slot.failure().is_some() {
                // Never served: there is no old code to unbind or whose clients to close.
                match state.isolates.reload(&file).await {
                    Ok(()) => {
                        state.endpoints.set_handler_error(&file, None);
                        report.push(format!(
                            "handler {} loaded, its error is fixed ({} changed)",
                            slot.handler,
                            self.names(&edited)
                        ));
                    }
                    Err(error) => {
                        state
                            .endpoints
                            .set_handler_error(&file, Some(error.clone()));
                        report.push(format!(
                            "handler {} still fails to load: {error}",
                            slot.handler
                        ));
                    }
                }
                continue;
            }
            let previous_clients = state.clients.created_by(&slot.handler);
            state.lifecycle.unbind_handler(&file).await;
            match state.isolates.reload(&file).await {
                Ok(()) => {
                    state.endpoints.set_handler_error(&file, None);
                    for id in &previous_clients {
                        state.clients.close(
                            *id,
                            GOING_AWAY,
                            format!("handler {} reloaded", slot.handler),
                        );
                    }
                    report.push(format!(
                        "handler {} reloaded ({} changed{})",
                        slot.handler,
                        self.names(&edited),
                        match previous_clients.len() {
                            0 => String::new(),
                            n => format!(", {n} client(s) of the old code closed"),
                        }
                    ));
                }
                Err(error) => {
                    state
                        .endpoints
                        .set_handler_error(&file, Some(error.clone()));
                    failed = true;
                    report.push(format!(
                        "handler {} NOT reloaded, the last good version keeps serving: {error}",
                        slot.handler
                    ));
                }
            }
        }

        // Handlers whose endpoints now ask for another number of instances.
        for slot in state.isolates.running().await {
            let file = &slot.handler_file;
            if slot.instance_count() == state.isolates.wanted_instances(file) {
                continue;
            }
            state.lifecycle.unbind_handler(file).await;
            match state.isolates.resize(file).await {
                Ok(Some((before, after))) => report.push(format!(
                    "handler {} runs {after} instance(s) (was {before}{})",
                    slot.handler,
                    if after < before {
                        "; the connections of the removed ones closed with 1001"
                    } else {
                        ""
                    }
                )),
                Ok(None) => {}
                Err(error) => {
                    failed = true;
                    report.push(format!(
                        "handler {}: a new instance failed to load, it keeps {} instance(s): {error}",
                        slot.handler,
                        slot.instance_count()
                    ));
                }
            }
        }

        // Handlers of new endpoints (with `--load lazy`, only those that tick).
        for file in &self.handlers_loaded_now() {
            // Handlers with an isolate were checked for edits above.
            if state.isolates.has_isolate(file).await {
                continue;
            }
            let had_error = state.endpoints.handler_error(file);
            match self.start_handler(file).await {
                Ok(()) if had_error.is_some() => report.push(format!(
                    "handler {} loaded, its error is fixed",
                    state.workspace.display(file)
                )),
                Ok(()) => {}
                Err(error) if had_error.as_ref() != Some(&error) => {
                    failed = true;
                    report.push(format!("handler failed to load: {error}"))
                }
                Err(_) => {}
            }
        }

        self.state.bind_unbound(None).await;
        self.state.reloads.fetch_add(1, Ordering::Relaxed);
        let milliseconds = started.elapsed().as_secs_f64() * 1000.0;
        // Tenths of a millisecond: a reload of a cached module takes about one.
        let elapsed = format!("{milliseconds:.1}");
        if report.is_empty() {
            tracing::debug!(
                "workspace change ({}) needed no reload ({elapsed} ms)",
                self.names(changed)
            );
        } else {
            tracing::info!("reload in {elapsed} ms: {}", report.join("; "));
            self.state.record_reload(ReloadRecord {
                time: epoch_millis(std::time::SystemTime::now()),
                milliseconds,
                changed: self.names(changed),
                report,
                failed,
            });
        }
    }

    /// Starts a handler's isolate and records the outcome in the registry.
    async fn start_handler(&self, handler_file: &Path) -> Result<(), HandlerLoadError> {
        match self.state.isolates.isolate_for(handler_file).await {
            Ok(_) => {
                self.state.endpoints.set_handler_error(handler_file, None);
                Ok(())
            }
            Err(error) => {
                tracing::error!("{error}");
                self.state
                    .endpoints
                    .set_handler_error(handler_file, Some(error.clone()));
                Err(error)
            }
        }
    }

    fn referenced_handlers(&self) -> BTreeSet<PathBuf> {
        self.state
            .endpoints
            .snapshot()
            .endpoints
            .values()
            .map(|endpoint: &Arc<Endpoint>| endpoint.handler_file.clone())
            .collect()
    }

    fn has_clients(&self, handler: &str) -> bool {
        self.state
            .clients
            .list()
            .iter()
            .any(|client| client.handler == handler)
    }

    fn close_endpoint_connections(&self, endpoint: &str, reason: &str) -> usize {
        let ids = self.state.connections.ids_of_endpoint(endpoint);
        for id in &ids {
            let _ = self
                .state
                .connections
                .close(*id, GOING_AWAY, reason.to_string());
        }
        ids.len()
    }

    fn names(&self, paths: &[PathBuf]) -> String {
        let names: BTreeSet<String> = paths
            .iter()
            .map(|p| self.state.workspace.display(p))
            .collect();
        names.into_iter().collect::<Vec<_>>().join(", ")
    }
}

fn closed_note(closed: usize) -> String {
    match closed {
        0 => String::new(),
        n => format!(", {n} connection(s) closed with 1001"),
    }
}

/// Logs problems and warnings that were not there before, so an unrelated edit does not repeat
/// every known problem.
fn log_new_problems(
    old_problems: &[Problem],
    new_problems: &[Problem],
    old_warnings: &[Problem],
    new_warnings: &[Problem],
) {
    for problem in new_problems.iter().filter(|p| !old_problems.contains(p)) {
        tracing::error!("{}: {} (skipped)", problem.file, problem.message);
    }
    for warning in new_warnings.iter().filter(|w| !old_warnings.contains(w)) {
        tracing::warn!("{}: {}", warning.file, warning.message);
    }
    for fixed in old_problems.iter().filter(|p| !new_problems.contains(p)) {
        tracing::info!("{}: no longer a problem", fixed.file);
    }
}
