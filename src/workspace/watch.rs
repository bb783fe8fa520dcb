//! Watching the workspace: file-system changes, as batches of changed paths that have settled.
//! A workspace folder that is deleted and created again is watched again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How often the workspace folder itself is checked: the file system's events stop with the
/// folder, so its disappearance and return are noticed this way.
const FOLDER_CHECK: Duration = Duration::from_millis(500);

/// The file system's watch of one folder.
type FolderWatch = RecommendedWatcher;

/// Watches a workspace; dropping it stops watching.
pub struct WorkspaceWatcher {
    /// The workspace folder.
    root: PathBuf,
    /// The watch of the folder as it is now; `None` while the folder is gone.
    watch: Option<FolderWatch>,
    /// Which folder is watched (device and inode): a folder created again is another one.
    folder: Option<(u64, u64)>,
    /// Where a new watch sends its changes.
    sender: mpsc::UnboundedSender<Vec<PathBuf>>,
    /// Changed paths, as the file system reports them.
    batches: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    /// How long the workspace must stay quiet before a change is reported.
    settle: Duration,
}

/// Watches `root` recursively. Reads are not changes: loading a module must not look like
/// editing it.
pub fn watch(root: &Path, settle: Duration) -> Result<WorkspaceWatcher, notify::Error> {
    let (sender, batches) = mpsc::unbounded_channel();
    let watch = watch_folder(root, sender.clone())?;
    Ok(WorkspaceWatcher {
        root: root.to_path_buf(),
        watch: Some(watch),
        folder: folder_identity(root),
        sender,
        batches,
        settle,
    })
}

/// The file system's watch of `root`, sending the paths of each change to `sender` as it happens
/// (settling them is [`WorkspaceWatcher::next_change`]'s).
fn watch_folder(
    root: &Path,
    sender: mpsc::UnboundedSender<Vec<PathBuf>>,
) -> Result<FolderWatch, notify::Error> {
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.kind.is_access() => {}
            Ok(event) => {
                if !event.paths.is_empty() {
                    let _ = sender.send(event.paths);
                }
            }
            Err(error) => tracing::warn!("watching the workspace: {error}"),
        })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// The folder at `path` (device and inode), if there is one.
fn folder_identity(path: &Path) -> Option<(u64, u64)> {
    let metadata = std::fs::metadata(path).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((metadata.dev(), metadata.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        Some((0, 0))
    }
}

impl WorkspaceWatcher {
    /// The next change, once the files have settled: every path changed from the first event
    /// until the workspace stayed quiet for the settle time (a file written in several steps, or
    /// rewritten again and again, is reported once it stays unchanged). The workspace folder
    /// going away, or coming back, is a change of the folder itself. `None` once the watch has
    /// ended.
    pub async fn next_change(&mut self) -> Option<Vec<PathBuf>> {
        let mut checks = tokio::time::interval(FOLDER_CHECK);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut paths = loop {
            tokio::select! {
                batch = self.batches.recv() => break batch?,
                _ = checks.tick() => {
                    if let Some(change) = self.check_folder() {
                        break change;
                    }
                }
            }
        };
        loop {
            match tokio::time::timeout(self.settle, self.batches.recv()).await {
                Ok(Some(more)) => paths.extend(more),
                Ok(None) | Err(_) => return Some(paths),
            }
        }
    }

    /// Notices the workspace folder going away or coming back (a new folder at its path), and
    /// watches the new one.
    fn check_folder(&mut self) -> Option<Vec<PathBuf>> {
        let now = folder_identity(&self.root);
        if now == self.folder {
            return None;
        }
        self.folder = now;
        self.watch = None;
        let root = self.root.display();
        if now.is_none() {
            tracing::warn!(
                "the workspace {root} is gone: its endpoints are removed; it is watched again when it comes back"
            );
        } else {
            match watch_folder(&self.root, self.sender.clone()) {
                Ok(watch) => {
                    self.watch = Some(watch);
                    tracing::info!("the workspace {root} is back: watching it again");
                }
                Err(error) => {
                    // Tried again at the next check.
                    self.folder = None;
                    tracing::warn!("the workspace {root} is back but cannot be watched: {error}");
                }
            }
        }
        Some(vec![self.root.clone()])
    }
}
