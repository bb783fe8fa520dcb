//! Watching the workspace: file-system changes, as batches of changed paths that have settled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

/// How long the file-system events of one file are gathered before they are reported (an
/// editor's save by rename is a few events within milliseconds); settling is ours, see
/// [`WorkspaceWatcher::next_change`].
const EVENT_GATHERING: Duration = Duration::from_millis(50);

/// Watches a workspace; dropping it stops watching.
pub struct WorkspaceWatcher {
    /// The watch itself, held only to be kept alive.
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    /// Changed paths, as the file system reports them.
    batches: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    /// How long the workspace must stay quiet before a change is reported.
    settle: Duration,
}

/// Watches `root` recursively. Reads are not changes: loading a module must not look like
/// editing it.
pub fn watch(root: &Path, settle: Duration) -> Result<WorkspaceWatcher, notify::Error> {
    let (sender, batches) = mpsc::unbounded_channel();
    let gathering = EVENT_GATHERING.min(settle);
    let tick = (gathering / 4).max(Duration::from_millis(5));
    let mut debouncer = new_debouncer(
        gathering,
        Some(tick),
        move |result: DebounceEventResult| match result {
            Ok(events) => {
                let paths: Vec<PathBuf> = events
                    .into_iter()
                    .filter(|event| !event.kind.is_access())
                    .flat_map(|event| event.event.paths)
                    .collect();
                if !paths.is_empty() {
                    let _ = sender.send(paths);
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
    Ok(WorkspaceWatcher {
        _debouncer: debouncer,
        batches,
        settle,
    })
}

impl WorkspaceWatcher {
    /// The next change, once the files have settled: every path changed from the first event
    /// until the workspace stayed quiet for the settle time (a file written in several steps, or
    /// rewritten again and again, is reported once it stays unchanged). `None` once the watch has
    /// ended.
    pub async fn next_change(&mut self) -> Option<Vec<PathBuf>> {
        let mut paths = self.batches.recv().await?;
        loop {
            match tokio::time::timeout(self.settle, self.batches.recv()).await {
                Ok(Some(more)) => paths.extend(more),
                Ok(None) | Err(_) => return Some(paths),
            }
        }
    }
}
