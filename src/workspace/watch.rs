//! Watching the workspace: file-system events, debounced, as batches of changed paths.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops watching.
pub struct WorkspaceWatcher {
    /// The watch itself, held only to be kept alive.
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// Watches `root` recursively. Each batch holds the paths that changed and then stayed quiet
/// for `debounce` (a folder copied file by file, an editor's save by rename). Reads are not
/// changes: loading a module must not look like editing it.
pub fn watch(
    root: &Path,
    debounce: Duration,
) -> Result<(WorkspaceWatcher, mpsc::UnboundedReceiver<Vec<PathBuf>>), notify::Error> {
    let (batches, receiver) = mpsc::unbounded_channel();
    let tick = (debounce / 4).max(Duration::from_millis(10));
    let mut debouncer =
        new_debouncer(
            debounce,
            Some(tick),
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let paths: Vec<PathBuf> = events
                        .into_iter()
                        .filter(|event| !event.kind.is_access())
                        .flat_map(|event| event.event.paths)
                        .collect();
                    if !paths.is_empty() {
                        let _ = batches.send(paths);
                    }
                }
                Err(errors) => {
                    for error in errors {
                        tracing::warn!("watching the workspace: {error}");
                    }
                }
            },
        )?;
    debouncer.watch(root, RecursiveMode::Recursive)?;
    Ok((
        WorkspaceWatcher {
            _debouncer: debouncer,
        },
        receiver,
    ))
}
